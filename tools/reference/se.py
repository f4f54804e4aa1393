#!/usr/bin/python3
"""Reference outputs of the SE block, computed with PyTorch, for __test__/se.spec.ts.

Run from anywhere with Debian's interpreter (torch 1.13, timm 1.0.31, safetensors):

    /usr/bin/python3 tools/reference/se.py

Writes one ``__test__/fixtures/se/<name>.safetensors`` per case, all tensors F32:

    x         [N, C, H, W]   input (NCHW, as PyTorch holds it)
    residual  [N, C, H, W]   only in cases with a residual
    w1 [Cr, C]   b1 [Cr]     first FC (timm: fc1, a 1x1 conv with bias, reshaped)
    w2 [C, Cr]   b2 [C]      second FC; no b1/b2 for senet.pytorch (bias=False)
    z         [N, C]         squeeze: x.mean((2, 3))
    gates     [N, C]         excite: sigmoid(fc2(relu(fc1(z))))
    y         [N, C, H, W]   the SE module's output, x * gates
    y_residual_relu          relu(se(x) + residual), the SE bottleneck's tail

and ``__metadata__`` {"reference": JSON of {source, module, shape, cr, seed, torch, timm}}.

The two SE variants:
- timm's ``SEModule`` (``timm.layers.squeeze_excite``), the module ``seresnet*`` uses
  (``timm.models.resnet`` with ``attn_layer='se'``): fc1/fc2 are 1x1 convs *with* bias,
  and C/r is rounded by ``make_divisible(C/16, 8)``, so C = 72 gives Cr = 8, not 4.5:
  the kernels must take Cr from the weights.
- senet.pytorch's ``SELayer`` (moskomule/senet.pytorch, defined inline below):
  AdaptiveAvgPool2d(1) -> Linear(C, C//r, bias=False) -> ReLU -> Linear(C//r, C,
  bias=False) -> Sigmoid; x * y.

Everything is computed by PyTorch in float32 (what a PyTorch user gets). Inputs get a
random per-channel offset so that the channel means, hence the gates, are spread out
instead of all near sigmoid(b2). Seeded; the files are small (under 1 MB together).
"""
import json
import os

import timm
import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.layers.squeeze_excite import SEModule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "__test__", "fixtures", "se")


class SELayer(nn.Module):
    """senet.pytorch's SE layer (moskomule/senet.pytorch, senet/se_module.py)."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


def check_timm_uses_se_module():
    """Fails loudly if timm's seresnet stopped using SEModule (then revisit this file)."""
    model = timm.create_model("seresnet18", pretrained=False)
    se = model.layer1[0].se
    assert isinstance(se, SEModule), type(se)


def make_input(shape, gen):
    n, c, h, w = shape
    offset = torch.randn(1, c, 1, 1, generator=gen)
    return (torch.randn(n, c, h, w, generator=gen) + offset).contiguous()


def timm_case(name, shape, seed, residual):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, c, h, w = shape
    se = SEModule(c).eval()
    x = make_input(shape, gen)
    with torch.no_grad():
        # Default init leaves biases small; widen them so that a kernel ignoring a
        # bias fails clearly.
        se.fc1.bias.uniform_(-0.5, 0.5, generator=gen)
        se.fc2.bias.uniform_(-0.5, 0.5, generator=gen)
        z = x.mean((2, 3))
        hidden = torch.relu(se.fc1(z[:, :, None, None]))
        gates = torch.sigmoid(se.fc2(hidden))[:, :, 0, 0]
        y = se(x)
        cr = se.fc1.out_channels
        tensors = {
            "x": x,
            "w1": se.fc1.weight.reshape(cr, c),
            "b1": se.fc1.bias,
            "w2": se.fc2.weight.reshape(c, cr),
            "b2": se.fc2.bias,
            "z": z,
            "gates": gates,
            "y": y,
        }
        if residual:
            r = torch.randn(shape, generator=gen)
            tensors["residual"] = r
            tensors["y_residual_relu"] = torch.relu(se(x) + r)
    meta = {"source": "timm", "module": "timm.layers.squeeze_excite.SEModule"}
    write(name, tensors, shape, cr, seed, meta)


def senet_pytorch_case(name, shape, reduction, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n, c, h, w = shape
    se = SELayer(c, reduction).eval()
    x = make_input(shape, gen)
    with torch.no_grad():
        fc1, fc2 = se.fc[0], se.fc[2]
        z = se.avg_pool(x).view(n, c)
        gates = se.fc(z)
        y = se(x)
        tensors = {"x": x, "w1": fc1.weight, "w2": fc2.weight, "z": z, "gates": gates, "y": y}
    meta = {"source": "senet.pytorch", "module": "SELayer (inline copy)"}
    write(name, tensors, shape, c // reduction, seed, meta)


def write(name, tensors, shape, cr, seed, meta):
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    meta = dict(meta, shape=list(shape), cr=cr, seed=seed, torch=torch.__version__, timm=timm.__version__)
    # One key holding sorted JSON: safetensors writes its metadata map in hash order,
    # which would make the files differ from run to run.
    meta = {"reference": json.dumps(meta, sort_keys=True)}
    path = os.path.join(OUT, name + ".safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    check_timm_uses_se_module()
    os.makedirs(OUT, exist_ok=True)
    # C = 72: make_divisible(72/16, 8) = 8; 13x17 exercises odd, non-square planes.
    timm_case("timm_c72_13x17", [2, 72, 13, 17], seed=1, residual=True)
    # seresnet50 stage-2 width at a 7x7 map; Cr = 16.
    timm_case("timm_c256_7x7", [1, 256, 7, 7], seed=2, residual=False)
    # C = 64, r = 16: Cr = 4, no biases.
    senet_pytorch_case("senet_pytorch_c64_14x14", [3, 64, 14, 14], reduction=16, seed=3)
    # A 1x1 map (squeeze is the identity) and Cr = 2.
    senet_pytorch_case("senet_pytorch_c32_1x1", [4, 32, 1, 1], reduction=16, seed=4)


if __name__ == "__main__":
    main()
