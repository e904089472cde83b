"""``int4wo``: 4-bit integer weights with group-wise scales, activations untouched.

Group size 128 along ``in_features``, else 64, else 32 (the first that divides it); a layer that
none divides cannot be built (``PrepareError``, which ``prepare`` reports and keeps the layer at
its reference precision).

Numerics follow torchao 0.18's ``IntxWeightOnlyConfig(weight_dtype=torch.int4,
granularity=PerGroup(g))`` to the bit: symmetric, scale ``amax / 7.5`` per group computed and
stored in the weight's dtype (clamped to >= its smallest normal), codes
``clamp(round_half_even(w * (1 / scale)), -8, 7)``; the forward dequantizes to the weight's dtype
and runs a plain ``F.linear``. Emulation stores the codes two per byte.

Backends: ``torchao`` and ``emulated``. On CUDA ``torchao`` is the real kernel,
``Int4WeightOnlyConfig(group_size=g)`` (mslk if installed, else tinygemm; bf16 weights, sm80+).
That kernel rounds *asymmetrically* (per-group min/max with a zero point), so its numbers differ
from emulation at the rounding level (same bits, same groups, similar error). On CPU, when forced,
``torchao`` is ``IntxWeightOnlyConfig``, which emulation matches exactly.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from ..errors import PrepareError
from . import _quant_math as qm
from ._backends import EmulatedBackend, TorchaoBackend
from ._module import QuantizedLinear
from .base import FormatSpec, register_backend, register_format

NAME = "int4wo"
QMIN, QMAX = qm.INT4_RANGE
GROUP_SIZES = (128, 64, 32)

SPEC = register_format(
    FormatSpec(
        NAME,
        "INT4 weight-only: symmetric group-wise scales (group 128, else 64 or 32)",
        weight_bits=4 + 16 / 128,
        activation_bits=16,
    ),
    aliases=("int4", "int4_weight_only", "w4a16"),
)


def group_size(linear: nn.Linear) -> int:
    """The group size for ``linear`` or a ``PrepareError`` naming the unsupported shape."""
    g = qm.group_size_for(linear.in_features, GROUP_SIZES)
    if g is None:
        raise PrepareError(
            f"int4wo needs in_features divisible by one of {GROUP_SIZES}; layer "
            f"Linear(in_features={linear.in_features}, out_features={linear.out_features}) is "
            "not, so it cannot be quantized to int4wo (it stays at its reference precision)"
        )
    return g


def quantize_weight(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise int4: ``(codes (out, in) int8 in [-8, 7], scale (out, in // group))``.

    The scale has the weight's dtype, as torchao's. Build time only.
    """
    out_features, in_features = weight.shape
    grouped = qm.group_view(weight.detach(), group)
    eps = torch.finfo(weight.dtype).smallest_normal
    codes, scale = qm.rowwise_int_quant(grouped, QMIN, QMAX, eps=eps, scale_dtype=weight.dtype)
    return codes.reshape(out_features, in_features), scale.reshape(out_features, -1)


class Int4WeightOnlyLinear(QuantizedLinear):
    """int4 weight-only layer in emulation: packed codes, dequantized at each call."""

    format_name = NAME
    quantized_buffers = ("qdata", "scale")

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        self.group_size = group_size(linear)
        self.weight_dtype = linear.weight.dtype
        codes, scale = quantize_weight(linear.weight, self.group_size)
        self.register_buffer("qdata", qm.pack_nibbles(codes))
        self.register_buffer("scale", scale)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantize().to(x.dtype)
        return torch.nn.functional.linear(x, weight, self.bias_as(x.dtype))

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        codes = qm.unpack_nibbles(self.qdata, signed=True).to(self.scale.dtype)
        weight = qm.group_view(codes, self.group_size) * self.scale.unsqueeze(-1)
        return weight.reshape(self.out_features, self.in_features).to(dtype or self.weight_dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


def _torchao_config(linear: nn.Linear):
    g = group_size(linear)
    if linear.weight.device.type != "cuda":
        from torchao.quantization import IntxWeightOnlyConfig, PerGroup

        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(g))
    from torchao.quantization import Int4WeightOnlyConfig
    from torchao.quantization.quantize_.workflows import Int4PackingFormat

    if linear.weight.dtype != torch.bfloat16:
        raise PrepareError(
            f"torchao's CUDA int4 kernel needs bf16 weights; layer Linear(in_features="
            f"{linear.in_features}, out_features={linear.out_features}) is {linear.weight.dtype}"
        )
    # mslk's "plain" kernel where installed (H100), else tinygemm's tile-packed layout (sm80+)
    packing = (
        Int4PackingFormat.PLAIN
        if importlib.util.find_spec("mslk") is not None
        else Int4PackingFormat.TILE_PACKED_TO_4D
    )
    return Int4WeightOnlyConfig(
        group_size=g, int4_packing_format=packing, set_inductor_config=False
    )


register_backend(
    NAME, TorchaoBackend(NAME, _torchao_config, what="int4 weight-only", cuda_cc=(8, 0))
)
register_backend(NAME, EmulatedBackend(Int4WeightOnlyLinear))
