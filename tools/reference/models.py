#!/usr/bin/python3
"""Reference outputs of whole SE-ResNet models, computed with timm (PyTorch).

Run with Debian's interpreter, which has torch, timm 1.0.31 and safetensors:

    /usr/bin/python3 tools/reference/models.py          # tiny fixtures + keys.json
    /usr/bin/python3 tools/reference/models.py --full   # also full-size fixtures-large/

Writes, for each tiny model family, ``__test__/fixtures/models/<name>.safetensors``
(random weights under timm's own state_dict names) and ``<name>.json`` (the
``SEResNetConfig`` the TypeScript side builds, the input spec and the expected logits),
plus ``__test__/fixtures/models/keys.json`` (state_dict names, shapes and parameter
counts of every named architecture, so the TS tests check naming without Python).

Every tiny model is built from timm's own classes (``timm.models.resnet.ResNet`` with
``block_args``, ``timm.models.senet`` block classes inside a SENet subclass whose only
change is configurable stage widths), so key names and forward code are timm's. The
SE-placement variants (SE-PRE, SE-POST, SE-Identity; Hu et al., "Squeeze-and-Excitation
Networks", TPAMI 2019, Sec. 6.5 / Fig. 5) exist in no timm class: they are timm
blocks with ``forward`` overridden, documented at each class below.

Note Cadene's ``SEResNetBlock`` (legacy basic block) applies a ReLU after bn2, before
the SE and the addition, unlike every other block; its config sets ``lastBranchReLU``.

Weights are random but not trivial: BN weight/bias/running_mean/running_var are all
randomised so that the BN folding is really exercised. Logits are computed in float64
from the float32-rounded weights and inputs, so the expectation is (nearly) exact and
the tolerance in the TS test measures only the float32 error of our executors.

Inputs follow a formula reproducible in TypeScript:
``x[i] = fround(sin(0.37 * i + 0.11 * seed))`` over the flat NCHW index i.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from collections import OrderedDict
from safetensors.torch import save_file

import timm
from timm.models.resnet import ResNet, BasicBlock, Bottleneck
from timm.models import senet as tsenet
from timm.layers import create_classifier
from timm.layers.squeeze_excite import SEModule as TimmSE

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
OUT = os.path.join(ROOT, '__test__', 'fixtures', 'models')
OUT_LARGE = os.path.join(ROOT, 'fixtures-large')

ARCHS = [
    'seresnet18', 'seresnet34', 'seresnet50', 'seresnet101', 'seresnet152',
    'seresnext50_32x4d', 'seresnext101_32x4d',
    'legacy_seresnet18', 'legacy_seresnet34', 'legacy_seresnet50', 'legacy_seresnet101',
    'legacy_seresnet152', 'legacy_seresnext50_32x4d', 'legacy_seresnext101_32x4d',
    'legacy_senet154', 'resnet50',
]


# ----------------------------------------------------------------------------- inputs

def make_input(shape, seed):
    """x[i] = fround(sin(0.37 i + 0.11 seed)), i the flat NCHW index (float64 then f32)."""
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.float64)
    return np.sin(0.37 * i + 0.11 * seed).astype(np.float32).reshape(shape)


# ----------------------------------------------------------------------------- models

class TinySENet(tsenet.SENet):
    """timm's legacy SENet with configurable stage widths (``planes``) and stem widths.

    ``SENet.__init__`` hard-codes planes 64/128/256/512 and the 3×3 stem's 64/64; this
    subclass re-runs the same construction with other numbers. Module names, the
    blocks, ``_make_layer`` and ``forward`` are timm's, unchanged.
    """

    def __init__(self, block, layers, groups, reduction, planes, inplanes=64, input_3x3=False,
                 stem_mid=64, downsample_kernel_size=1, downsample_padding=0, num_classes=10):
        nn.Module.__init__(self)
        self.inplanes = inplanes
        self.num_classes = num_classes
        self.drop_rate = 0.0
        if input_3x3:
            layer0 = [
                ('conv1', nn.Conv2d(3, stem_mid, 3, stride=2, padding=1, bias=False)),
                ('bn1', nn.BatchNorm2d(stem_mid)), ('relu1', nn.ReLU(inplace=True)),
                ('conv2', nn.Conv2d(stem_mid, stem_mid, 3, stride=1, padding=1, bias=False)),
                ('bn2', nn.BatchNorm2d(stem_mid)), ('relu2', nn.ReLU(inplace=True)),
                ('conv3', nn.Conv2d(stem_mid, inplanes, 3, stride=1, padding=1, bias=False)),
                ('bn3', nn.BatchNorm2d(inplanes)), ('relu3', nn.ReLU(inplace=True)),
            ]
        else:
            layer0 = [
                ('conv1', nn.Conv2d(3, inplanes, kernel_size=7, stride=2, padding=3, bias=False)),
                ('bn1', nn.BatchNorm2d(inplanes)), ('relu1', nn.ReLU(inplace=True)),
            ]
        self.layer0 = nn.Sequential(OrderedDict(layer0))
        self.pool0 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for i, (p, d) in enumerate(zip(planes, layers)):
            k, pad = (1, 0) if i == 0 else (downsample_kernel_size, downsample_padding)
            setattr(self, f'layer{i + 1}', self._make_layer(
                block, planes=p, blocks=d, groups=groups, reduction=reduction,
                stride=1 if i == 0 else 2, downsample_kernel_size=k, downsample_padding=pad))
        self.num_features = planes[-1] * block.expansion
        self.global_pool, self.last_linear = create_classifier(self.num_features, num_classes, pool_type='avg')


def _se_width(c):
    return TimmSE(c).fc1.out_channels


class SEPreBottleneck(Bottleneck):
    """SE-PRE (paper Fig. 5b): the SE unit acts on the residual branch's input, before
    the first convolution; the identity branch sees the block input unscaled. The SE
    therefore has ``inplanes`` channels (timm's default width rule)."""

    def __init__(self, inplanes, planes, *args, **kwargs):
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = TimmSE(inplanes)

    def forward(self, x):
        shortcut = x
        x = self.se(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


class SEPreBasicBlock(BasicBlock):
    """SE-PRE for the basic block (see :class:`SEPreBottleneck`)."""

    def __init__(self, inplanes, planes, *args, **kwargs):
        super().__init__(inplanes, planes, *args, **kwargs)
        self.se = TimmSE(inplanes)

    def forward(self, x):
        shortcut = x
        x = self.se(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(x + shortcut)


class SEPostBottleneck(Bottleneck):
    """SE-POST (paper Fig. 5c): the SE unit is moved after the summation with the
    identity branch, after the ReLU: ``y = SE(relu(F(x) + shortcut))``."""

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.se(self.act3(x + shortcut))


class SEIdentityBottleneck(Bottleneck):
    """SE-Identity (paper Fig. 5d): the SE unit is on the identity connection, parallel
    to the residual unit: ``y = relu(F(x) + SE(shortcut))``, shortcut after the
    projection when there is one (so the SE has the output's channels)."""

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + self.se(shortcut))


def randomize(model, seed):
    """Random weights with non-trivial BN statistics, scaled so logits stay O(1..10)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0, math.sqrt(2.0 / fan_in), generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.2, 0.2, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.2, generator=g)
                m.bias.uniform_(-0.3, 0.3, generator=g)
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, math.sqrt(1.0 / m.in_features), generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    return model.eval()


# Each family: (builder, SEResNetConfig for TS). Stage widths are small so that all
# fixtures stay < 4 MB, depths [2,1,1,1] give identity and projection blocks, and
# the SE width rules still differ (timm: make_divisible(C/16, 8) ≥ 8; legacy: C // 16).
NC = 10


def tiny_families():
    se = dict(attn_layer='se')
    base_timm = dict(stem='timm', keys='timm', seReduction=16, seWidth='timm', seBias=True,
                     numClasses=NC, inChans=3, stemWidth=64)
    base_legacy = dict(stem='legacy', keys='legacy', seReduction=16, seWidth='legacy', seBias=True,
                       numClasses=NC, inChans=3, downsampleKernel=1, downsamplePadding=0)
    return {
        'tiny_seresnet_basic': (
            lambda: ResNet(BasicBlock, (2, 1, 1, 1), channels=(8, 16, 32, 64), num_classes=NC, block_args=se),
            dict(base_timm, block='basic', layers=[2, 1, 1, 1], channels=[8, 16, 32, 64], se='standard')),
        'tiny_seresnet_bottleneck': (
            lambda: ResNet(Bottleneck, (2, 1, 1, 1), channels=(8, 16, 24, 32), num_classes=NC, block_args=se),
            dict(base_timm, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], se='standard',
                 strideOn='3x3')),
        'tiny_seresnext': (
            lambda: ResNet(Bottleneck, (2, 1, 1, 1), channels=(8, 16, 24, 32), cardinality=4, base_width=8,
                           num_classes=NC, block_args=se),
            dict(base_timm, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], groups=4,
                 baseWidth=8, se='standard', strideOn='3x3')),
        'tiny_resnet': (
            lambda: ResNet(Bottleneck, (2, 1, 1, 1), channels=(8, 16, 24, 32), num_classes=NC),
            dict(base_timm, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], se='none',
                 strideOn='3x3')),
        'tiny_legacy_seresnet_basic': (
            lambda: TinySENet(tsenet.SEResNetBlock, [2, 1, 1, 1], 1, 16, planes=[16, 16, 32, 64], inplanes=16),
            dict(base_legacy, block='basic', layers=[2, 1, 1, 1], channels=[16, 16, 32, 64], stemWidth=16, lastBranchReLU=True,
                 se='standard')),
        'tiny_legacy_seresnet_bottleneck': (
            lambda: TinySENet(tsenet.SEResNetBottleneck, [2, 1, 1, 1], 1, 16, planes=[8, 16, 24, 32], inplanes=16),
            dict(base_legacy, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], stemWidth=16,
                 se='standard', strideOn='1x1')),
        'tiny_legacy_seresnext': (
            lambda: TinySENet(tsenet.SEResNeXtBottleneck, [2, 1, 1, 1], 4, 16, planes=[16, 32, 48, 48], inplanes=16),
            dict(base_legacy, block='bottleneck', layers=[2, 1, 1, 1], channels=[16, 32, 48, 48], stemWidth=16,
                 groups=4, baseWidth=4, se='standard', strideOn='3x3')),
        'tiny_legacy_senet154': (
            lambda: TinySENet(tsenet.SEBottleneck, [2, 1, 1, 1], 4, 16, planes=[8, 8, 16, 16], inplanes=16,
                              input_3x3=True, stem_mid=8, downsample_kernel_size=3, downsample_padding=1),
            dict(base_legacy, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 8, 16, 16], stem='legacy3x3',
                 stemWidth=16, stemMidWidth=8, groups=4, bottleneckWidth='senet154', se='standard',
                 strideOn='3x3', downsampleKernel=3, downsamplePadding=1)),
        'tiny_se_pre': (
            lambda: ResNet(SEPreBasicBlock, (2, 1, 1, 1), channels=(8, 16, 32, 64), num_classes=NC, block_args=se),
            dict(base_timm, block='basic', layers=[2, 1, 1, 1], channels=[8, 16, 32, 64], se='pre')),
        'tiny_se_post': (
            lambda: ResNet(SEPostBottleneck, (2, 1, 1, 1), channels=(8, 16, 24, 32), num_classes=NC, block_args=se),
            dict(base_timm, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], se='post',
                 strideOn='3x3')),
        'tiny_se_identity': (
            lambda: ResNet(SEIdentityBottleneck, (2, 1, 1, 1), channels=(8, 16, 24, 32), num_classes=NC,
                           block_args=se),
            dict(base_timm, block='bottleneck', layers=[2, 1, 1, 1], channels=[8, 16, 24, 32], se='identity',
                 strideOn='3x3')),
    }


INPUTS = [dict(shape=[1, 3, 224, 224], seed=1), dict(shape=[2, 3, 193, 161], seed=2)]


def min_size(model):
    """Smallest square input PyTorch accepts (the spatial size stays ≥ 1 everywhere)."""
    for s in range(1, 64):
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, s, s))
            return s
        except (RuntimeError, ValueError):
            pass
    raise RuntimeError('no size up to 63 works')


def logits64(model, x):
    m64 = model.double()
    with torch.no_grad():
        y = m64(torch.from_numpy(x).double())
    model.float()
    return y


def write_fixture(name, model, config, out_dir, inputs):
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    save_file(sd, os.path.join(out_dir, name + '.safetensors'))
    cases = []
    for spec in inputs:
        x = make_input(spec['shape'], spec['seed'])
        y = logits64(model, x)
        cases.append(dict(shape=spec['shape'], seed=spec['seed'], logits=[round(float(v), 9) for v in y.flatten()]))
        print(f'  {name} {spec["shape"]}: max|logit| {float(y.abs().max()):.3f}')
    doc = dict(
        name=name, config=config,
        numParams=sum(p.numel() for p in model.parameters()),
        minSize=min_size(model),
        input='x[i] = fround(sin(0.37*i + 0.11*seed)), i = flat NCHW index',
        cases=cases)
    with open(os.path.join(out_dir, name + '.json'), 'w') as f:
        json.dump(doc, f, indent=1)


def write_keys():
    out = {}
    for arch in ARCHS:
        m = timm.create_model(arch, pretrained=False).eval()
        out[arch] = dict(
            numParams=sum(p.numel() for p in m.parameters()),
            minSize=min_size(m),
            keys=[[k, list(v.shape)] for k, v in m.state_dict().items()])
        print(f'  {arch}: {out[arch]["numParams"]} params, {len(out[arch]["keys"])} keys, min {out[arch]["minSize"]}')
        del m
    with open(os.path.join(OUT, 'keys.json'), 'w') as f:
        json.dump(out, f, separators=(',', ':'))


def write_large():
    os.makedirs(OUT_LARGE, exist_ok=True)
    for arch in ['seresnet50', 'resnet50', 'legacy_seresnet50', 'seresnext50_32x4d']:
        m = randomize(timm.create_model(arch, pretrained=False, num_classes=1000), seed=7)
        write_fixture(arch, m, arch, OUT_LARGE, [dict(shape=[1, 3, 224, 224], seed=1)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--full', action='store_true', help='also write full-size models to fixtures-large/')
    ap.add_argument('--no-keys', action='store_true', help='skip keys.json (slow: builds every arch)')
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(OUT, exist_ok=True)
    for i, (name, (build, config)) in enumerate(tiny_families().items()):
        torch.manual_seed(i)
        write_fixture(name, randomize(build(), seed=100 + i), config, OUT, INPUTS)
    if not args.no_keys:
        write_keys()
    if args.full:
        write_large()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f'fixtures in {OUT}: {total / 1e6:.2f} MB')


if __name__ == '__main__':
    sys.exit(main())
