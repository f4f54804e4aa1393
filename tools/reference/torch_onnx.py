#!/usr/bin/python3
"""PyTorch's own ONNX export of a timm architecture, for `bench/ort-exports.mjs`.

    /usr/bin/python3 tools/reference/torch_onnx.py seresnet50 /tmp/seresnet50_torch.onnx

Random weights with every BatchNorm's parameters and statistics randomised too (timm
zero-initialises each block's last BN scale, which makes those folded convolutions all
zeros: `torch.onnx.export` then stores one shared zero tensor for them, and a batch-1 run
reads a quarter fewer weight bytes than with real weights), eval mode, opset 13, input `input` [N, 3, 224, 224] with symbolic N,
`torch.onnx.export` with constant folding (BatchNorm stays a node; onnxruntime fuses
it into the convolution). Used to check that onnxruntime runs the graph `model.toOnnx()`
writes as fast as PyTorch's export of the same architecture, i.e. that the baseline of
`bench:model` is not slowed by our export.
"""
import sys

import timm
import torch


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: torch_onnx.py ARCH OUT.onnx")
    arch, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(
            model, x, out, opset_version=13, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, do_constant_folding=True,
        )
    print(f"wrote {out} ({arch})")


if __name__ == "__main__":
    main()
