"""``fp8``: FP8 e4m3 weights and dynamically quantized FP8 activations (W8A8).

Numerics (torchao ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``):

* weight: one fp32 scale per output row, ``amax / 448``; codes ``clamp(w / scale, ±448)`` cast to
  ``float8_e4m3fn`` (nearest even, saturating). Done once, at build time.
* activation: the same rule per token (a scale per row of the last dim), at every call.
* output: ``(x_q @ w_q^T) * x_scale * w_scale (+ bias)`` accumulated in fp32, cast to the input
  dtype once at the end.

Backends, in preference order:

* ``scaled_mm``: ``torch._scaled_mm`` with row-wise scales (CUDA, compute capability >= 8.9).
  Activation quantization and the matmul are separate functions so a fused kernel can replace
  either one.
* ``torchao``: the torchao config above (CUDA >= 8.9, bf16 weights; no CPU path).
* ``emulated``: fp32 matmul of the fp8 codes. Bit-exact quantization; the matmul differs from a
  real kernel only in accumulation order (and ``use_fast_accum`` on Hopper).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PrepareError
from . import _quant_math as qm
from ._backends import EmulatedBackend, TorchaoBackend, cuda_reason
from ._module import QuantizedLinear
from .base import FormatSpec, register_backend, register_format

NAME = "fp8"
FP8_MIN_CC = (8, 9)

SPEC = register_format(
    FormatSpec(
        NAME,
        "FP8 e4m3 W8A8: per-row weight scales, dynamic per-token activation scales",
        weight_bits=8.0,
        activation_bits=8,
    ),
    aliases=("fp8_e4m3", "fp8_e4m3fn", "float8", "fp8dq", "fp8_w8a8"),
)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-row fp8: ``(codes (out, in) e4m3fn, scale (out, 1) fp32)``. Build time only."""
    return qm.rowwise_fp8_quant(weight.detach())


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token fp8 of a ``(tokens, in)`` input: ``(codes e4m3fn, scale (tokens, 1) fp32)``."""
    return qm.rowwise_fp8_quant(x)


def emulated_mm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """fp32 ``(x_q @ w_q^T) * x_scale * w_scale + bias`` cast to ``out_dtype``.

    Products of e4m3 values are exact in fp32 (and in TF32), so only the summation order differs
    from a tensor-core kernel.
    """
    y = (x_q.float() @ w_q.float().T) * x_scale * w_scale.T
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def scaled_mm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    *,
    use_fast_accum: bool = True,
) -> torch.Tensor:
    """The same product through ``torch._scaled_mm`` with row-wise scales (CUDA sm89+).

    ``w_q.t()`` is the column-major ``(in, out)`` operand cuBLASLt wants, without a copy. The
    kernel takes a bf16/fp16 bias (added in its fp32 epilogue) but none for fp32 output, where
    the bias is added afterwards in fp32, which is the same arithmetic.
    """
    fused_bias = bias if out_dtype != torch.float32 else None
    y = torch._scaled_mm(
        x_q, w_q.t(), scale_a=x_scale, scale_b=w_scale.t(), bias=fused_bias,
        out_dtype=out_dtype, use_fast_accum=use_fast_accum,
    )  # fmt: skip
    if bias is not None and fused_bias is None:
        y = y + bias
    return y


class Fp8Linear(QuantizedLinear):
    """fp8 W8A8 layer; this class multiplies in emulation, subclasses swap ``matmul``."""

    format_name = NAME
    quantized_buffers = ("qdata", "scale")

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        self.weight_dtype = linear.weight.dtype
        qdata, scale = quantize_weight(linear.weight)
        self.register_buffer("qdata", qdata)
        self.register_buffer("scale", scale)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        x_q, x_scale = quantize_activation(x)
        return self.matmul(x_q, x_scale, self.bias_as(x.dtype), x.dtype)

    def matmul(
        self,
        x_q: torch.Tensor,
        x_scale: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        return emulated_mm(x_q, x_scale, self.qdata, self.scale, bias, out_dtype)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return (self.qdata.float() * self.scale).to(dtype or self.weight_dtype)


class Fp8ScaledMmLinear(Fp8Linear):
    """fp8 W8A8 through ``torch._scaled_mm``; quantization identical to ``Fp8Linear``."""

    use_fast_accum = True  # torchao's default for inference; the GPU engineer may revisit

    def matmul(
        self,
        x_q: torch.Tensor,
        x_scale: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        return scaled_mm(
            x_q,
            x_scale,
            self.qdata,
            self.scale,
            bias,
            out_dtype,
            use_fast_accum=self.use_fast_accum,
        )


class ScaledMmBackend:
    """``torch._scaled_mm`` with row-wise scales: CUDA compute capability >= 8.9."""

    name = "scaled_mm"
    real_kernel = True
    auto_device_types = ("cuda",)

    def unavailable_reason(self, device: torch.device) -> str | None:
        if not hasattr(torch, "_scaled_mm"):
            return f"torch {torch.__version__} has no torch._scaled_mm"
        return cuda_reason(device, "fp8 W8A8", FP8_MIN_CC)

    def build(self, linear: nn.Linear) -> nn.Module:
        if linear.in_features % 16 or linear.out_features % 16:
            raise PrepareError(
                f"fp8 scaled_mm needs in_features and out_features divisible by 16; layer "
                f"Linear(in_features={linear.in_features}, out_features={linear.out_features}) "
                "is not (use backend='emulated' for it, or keep it at bf16)"
            )
        return Fp8ScaledMmLinear(linear)


def _torchao_config(linear: nn.Linear):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    return Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), set_inductor_config=False
    )


register_backend(NAME, ScaledMmBackend())
register_backend(
    NAME,
    TorchaoBackend(
        NAME,
        _torchao_config,
        what="fp8 W8A8",
        cuda_cc=FP8_MIN_CC,
        cpu=False,
        dtypes=(torch.bfloat16,),  # torchao: "PerRow quantization only works for bfloat16"
    ),
)
register_backend(NAME, EmulatedBackend(Fp8Linear))
