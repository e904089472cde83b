"""The reference precisions: the layer runs exactly as the model was loaded.

``bf16``, ``fp16`` and ``fp32`` are all accepted in schedules and all mean "the unquantized layer";
the model's own dtype decides the arithmetic. Keeping them as one behaviour means a schedule written
for a bf16 pipeline also runs unchanged on an fp32 CPU test model, and ``prepare`` at a reference
precision is bit-identical to the unprepared model.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FormatSpec, register_backend, register_format

REFERENCE_NAMES = ("bf16", "fp16", "fp32")


class _Identity:
    """Backend that hands back the original layer: no copy, no quantization."""

    name = "reference"
    real_kernel = True

    def unavailable_reason(self, device: torch.device) -> str | None:
        return None

    def build(self, linear: nn.Linear) -> nn.Module:
        return linear


for _name, _bits in (("bf16", 16), ("fp16", 16), ("fp32", 32)):
    register_format(
        FormatSpec(_name, f"reference ({_name} or the model's own dtype)", _bits, _bits, True),
        aliases=({"bf16": ("bfloat16",), "fp16": ("float16", "half"), "fp32": ("float32",)}[_name]),
    )
    register_backend(_name, _Identity())
