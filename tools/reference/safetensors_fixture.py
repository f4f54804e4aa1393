#!/usr/bin/env python3
"""Writes __test__/fixtures/safetensors/mixed.safetensors with the reference `safetensors`
package (F32, F16, BF16, F64, I64 and an empty tensor), plus mixed.expected.json giving,
for each tensor, dtype, shape and the expected float32 values as uint32 bit patterns
(exact, and able to express -0, inf and NaN). Also writes writer.safetensors, which
writeSafetensors must reproduce byte for byte (F32 a.w = arange(6) as [2, 3], F32 b = [1, 2],
F16 h = [1]; metadata {"format": "pt"}). Run from the repo root:

    /usr/bin/python3 tools/reference/safetensors_fixture.py
"""
import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join("__test__", "fixtures", "safetensors")

special = [0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"), 65504.0,
           6.103515625e-05, 5.960464477539063e-08, 3.0517578125e-05, 0.1, 1e-3, 3.14159]
g = torch.Generator().manual_seed(1234)
tensors = {
    "conv.weight": torch.randn(4, 3, 3, 3, generator=g),                        # F32
    "conv.bias": torch.tensor(special, dtype=torch.float32),                   # F32 specials
    "half": torch.tensor(special, dtype=torch.float16).reshape(2, 7),          # F16 incl. subnormals
    "half.rand": torch.randn(5, 6, generator=g).to(torch.float16),
    "bf": torch.tensor(special + [1e38, -1e-40], dtype=torch.bfloat16).reshape(4, 4),
    "double": torch.tensor([1.0, 1e-50, 1e300, -3.25, 0.1], dtype=torch.float64),
    "steps": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
}
save_file(tensors, os.path.join(OUT, "mixed.safetensors"),
          metadata={"format": "pt", "source": "tools/reference/safetensors_fixture.py"})

dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.float64: "F64", torch.int64: "I64"}
expected = {}
for name, t in tensors.items():
    e = {"dtype": dtypes[t.dtype], "shape": list(t.shape)}
    if t.is_floating_point():
        bits = t.to(torch.float32).contiguous().view(torch.int32).flatten().tolist()
        e["f32_bits"] = [b & 0xFFFFFFFF for b in bits]
    else:
        e["values"] = t.flatten().tolist()
    expected[name] = e
with open(os.path.join(OUT, "mixed.expected.json"), "w") as f:
    json.dump({"metadata": {"format": "pt", "source": "tools/reference/safetensors_fixture.py"},
               "tensors": expected}, f, indent=1)
    f.write("\n")

save_file({"b": torch.tensor([1.0, 2.0]),
           "a.w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
           "h": torch.tensor([1.0], dtype=torch.float16)},
          os.path.join(OUT, "writer.safetensors"), metadata={"format": "pt"})
