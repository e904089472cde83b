"""``fp4wo``: FP4 e2m1 weights with fp8 block scales (NVFP4-like), activations untouched.

Numerics follow torchao 0.18's ``NVFP4WeightOnlyConfig()`` (two-level scaling) to the bit:

* per-tensor fp32 scale ``s_t = amax(|W|) / (448 * 6)``;
* per 16-element block along ``in_features``: ``s_b = e4m3(clamp(amax_block / 6 / s_t,
  2**-6, 448))``, an fp8 e4m3 code;
* values ``e2m1(clamp(w * ((1 / s_t) / s_b), -6, 6))``, nearest even, two codes per byte;
* the weight is ``e2m1 * (s_t * s_b)`` in fp32, cast to the weight's dtype; the forward is a
  plain ``F.linear`` with it.

Needs ``in_features`` divisible by 16 (``PrepareError`` otherwise). torchao additionally needs
``out_features`` divisible by 16 and bf16/fp32 weights; emulation also takes fp16 weights (it
quantizes in fp32 as torchao does internally).

Backends: ``torchao`` (dequantize + matmul in torchao on any device; auto-selected on CUDA only,
there is no fp4 weight-only GEMM before Blackwell) and ``emulated``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PrepareError
from . import _quant_math as qm
from ._backends import EmulatedBackend, TorchaoBackend
from ._module import QuantizedLinear
from .base import FormatSpec, register_backend, register_format

NAME = "fp4wo"
BLOCK = 16
E4M3_TINY = torch.finfo(qm.FP8_DTYPE).tiny  # 2**-6, the smallest normal e4m3 block scale

SPEC = register_format(
    FormatSpec(
        NAME,
        "FP4 e2m1 weight-only: fp8 e4m3 scale per 16 weights plus a per-tensor scale (NVFP4)",
        weight_bits=4 + 8 / BLOCK,
        activation_bits=16,
    ),
    aliases=("nvfp4wo", "nvfp4_weight_only", "fp4", "w4a16_fp4"),
)


def check_shape(linear: nn.Linear, *, torchao: bool = False) -> None:
    """``PrepareError`` naming the layer if its shape has no fp4 blocks (torchao: stricter)."""
    bad = linear.in_features % BLOCK or (torchao and linear.out_features % BLOCK)
    if bad:
        need = "in_features and out_features" if torchao else "in_features"
        raise PrepareError(
            f"fp4wo needs {need} divisible by {BLOCK}; layer Linear(in_features="
            f"{linear.in_features}, out_features={linear.out_features}) is not, so it cannot be "
            "quantized to fp4wo (it stays at its reference precision)"
        )


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NVFP4 two-level quantization. Build time only.

    Returns ``(codes (out, in) uint8 e2m1, block_scale (out, in // 16) e4m3fn, tensor_scale ()
    fp32)``.
    """
    weight = weight.detach()
    out_features, in_features = weight.shape
    tensor_scale = weight.abs().max().to(torch.float32) / (qm.FP8_E4M3_MAX * qm.FP4_E2M1_MAX)
    # an all-zero weight would give 0 / 0; any positive scale encodes it as zeros
    tensor_scale = torch.where(tensor_scale == 0, torch.ones_like(tensor_scale), tensor_scale)
    blocks = qm.group_view(weight.float(), BLOCK)
    block_scale = qm.absmax(blocks).squeeze(-1) / qm.FP4_E2M1_MAX
    block_scale = torch.clamp(block_scale / tensor_scale, min=E4M3_TINY, max=qm.FP8_E4M3_MAX)
    block_scale = block_scale.to(qm.FP8_DTYPE)
    # multiply by the reciprocal of the combined scale, as torchao (matching its triton kernel)
    reciprocal = (1.0 / tensor_scale) / block_scale.float()
    scaled = torch.clamp(blocks * reciprocal.unsqueeze(-1), -qm.FP4_E2M1_MAX, qm.FP4_E2M1_MAX)
    codes = qm.fp4_e2m1_encode(scaled).reshape(out_features, in_features)
    return codes, block_scale, tensor_scale


class Fp4WeightOnlyLinear(QuantizedLinear):
    """fp4 weight-only layer in emulation: packed codes, dequantized at each call."""

    format_name = NAME
    quantized_buffers = ("qdata", "block_scale", "tensor_scale")

    def __init__(self, linear: nn.Linear) -> None:
        check_shape(linear)
        super().__init__(linear)
        self.weight_dtype = linear.weight.dtype
        codes, block_scale, tensor_scale = quantize_weight(linear.weight)
        self.register_buffer("qdata", qm.pack_nibbles(codes))
        self.register_buffer("block_scale", block_scale)
        self.register_buffer("tensor_scale", tensor_scale)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantize().to(x.dtype)
        return torch.nn.functional.linear(x, weight, self.bias_as(x.dtype))

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        values = qm.fp4_e2m1_decode(qm.unpack_nibbles(self.qdata, signed=False))
        scale = self.tensor_scale * self.block_scale.float()
        weight = qm.group_view(values, BLOCK) * scale.unsqueeze(-1)
        return weight.reshape(self.out_features, self.in_features).to(dtype or self.weight_dtype)


def _torchao_config(linear: nn.Linear):
    check_shape(linear, torchao=True)
    from torchao.prototype.mx_formats import NVFP4WeightOnlyConfig

    return NVFP4WeightOnlyConfig()


register_backend(
    NAME,
    TorchaoBackend(
        NAME, _torchao_config, what="fp4 weight-only", dtypes=(torch.bfloat16, torch.float32)
    ),
)
register_backend(NAME, EmulatedBackend(Fp4WeightOnlyLinear))
