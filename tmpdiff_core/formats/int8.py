"""``int8`` (W8A8, dynamic activations) and ``int8wo`` (weight-only): symmetric INT8.

Numerics follow torchao 0.18's ``Int8Tensor`` (``Int8DynamicActivationInt8WeightConfig()`` and
``Int8WeightOnlyConfig()`` defaults) to the bit:

* weight: one fp32 scale per output row, ``amax / 127.5`` divided in the weight's dtype and
  clamped to >= fp32 eps; codes ``clamp(round_half_even(w * (1 / scale)), -128, 127)``.
* ``int8`` activations: the same rule per token, at every call. Output
  ``((x_q @ w_q^T) as fp32 * x_scale) -> input dtype, * w_scale (fp32) + bias -> input dtype``;
  the intermediate rounding is torchao's.
* ``int8wo``: ``(x @ w_q^T in the input dtype) * w_scale + bias``, all in the input dtype.

fp16 is the one deliberate difference. torchao's intermediates (``x_q @ w_q^T * x_scale``, or
``x @ w_q^T``) are the output divided by the weight scale, ``127.5 / amax`` of a row (often 1000x
or more), and in fp16 they overflow to inf for outputs of about 100 (seen on CPU, torchao 0.18).
So for fp16 emulation keeps the W8A8 intermediate in fp32 and runs int8wo as ``x @ (w_q *
w_scale)^T``, and the torchao backends refuse fp16 layers (``PrepareError``).

Backends: ``int8`` has ``int_mm`` (``torch._int_mm``, CUDA; numerics as emulation), ``torchao``
and ``emulated``; ``int8wo`` has ``torchao`` and ``emulated``. torchao runs both on CPU when
forced.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PrepareError
from . import _quant_math as qm
from ._backends import EmulatedBackend, TorchaoBackend, cuda_reason
from ._module import QuantizedLinear
from .base import FormatSpec, register_backend, register_format

NAME = "int8"
WO_NAME = "int8wo"
QMIN, QMAX = qm.INT8_RANGE
# torchao uses the fp32 eps for every input dtype (bf16's own eps would cost accuracy).
EPS = torch.finfo(torch.float32).eps
# torch._int_mm on CUDA rejects M <= 16 (cuBLASLt int8 GEMM restriction).
INT_MM_MIN_ROWS = 17

SPEC = register_format(
    FormatSpec(
        NAME,
        "INT8 W8A8: symmetric per-row weight scales, dynamic per-token activation scales",
        weight_bits=8.0,
        activation_bits=8,
    ),
    aliases=("int8dq", "int8_w8a8", "w8a8"),
)
WO_SPEC = register_format(
    FormatSpec(
        WO_NAME, "INT8 weight-only: symmetric per-row scales", weight_bits=8.0, activation_bits=16
    ),
    aliases=("int8_weight_only", "w8a16"),
)


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-row int8: ``(codes (out, in) int8, scale (out, 1) fp32)``. Build time only."""
    return qm.rowwise_int_quant(weight.detach(), QMIN, QMAX, eps=EPS, scale_dtype=torch.float32)


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 of a ``(tokens, in)`` input: ``(codes int8, scale (tokens, 1) fp32)``."""
    return qm.rowwise_int_quant(x, QMIN, QMAX, eps=EPS, scale_dtype=torch.float32)


def int_mm(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """``x_q @ w_q^T`` in int32 through ``torch._int_mm`` (CUDA).

    cuBLASLt's int8 GEMM needs more than 16 rows, so short inputs (a batch of a few tokens) are
    zero-padded to 17 rows and sliced back: the padding rows cost nothing and change no output.
    ``w_q.t()`` is passed as is, a column-major ``(in, out)`` view: on an H100 (torch 2.11) that
    layout worked for every shape tried, while a row-major copy failed with
    CUBLAS_STATUS_NOT_SUPPORTED for K < 128 (torchao's ``safe_int_mm`` still copies it).
    """
    rows = x_q.shape[0]
    if rows < INT_MM_MIN_ROWS:
        x_q = torch.nn.functional.pad(x_q, (0, 0, 0, INT_MM_MIN_ROWS - rows))
    return torch._int_mm(x_q, w_q.t())[:rows]


def rescale(
    acc: torch.Tensor,
    x_scale: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """int32 accumulator -> output, in torchao's order and roundings (fp16: fp32 intermediate)."""
    mid_dtype = torch.float32 if out_dtype == torch.float16 else out_dtype
    y = (acc.to(torch.float32) * x_scale).to(mid_dtype) * w_scale.flatten()
    if bias is not None:
        y = y + bias
    return y.to(out_dtype)


class Int8Linear(QuantizedLinear):
    """int8 W8A8 layer; this class multiplies in emulation (exact int32), ``int_mm`` on CUDA."""

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
        return rescale(self.matmul(x_q), x_scale, self.scale, self.bias_as(x.dtype), x.dtype)

    def matmul(self, x_q: torch.Tensor) -> torch.Tensor:
        return qm.int8_matmul_exact(x_q, self.qdata)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return (self.qdata.float() * self.scale).to(dtype or self.weight_dtype)


class Int8IntMmLinear(Int8Linear):
    """int8 W8A8 through ``torch._int_mm``; quantization identical to ``Int8Linear``."""

    def matmul(self, x_q: torch.Tensor) -> torch.Tensor:
        return int_mm(x_q, self.qdata)


class Int8WeightOnlyLinear(Int8Linear):
    """int8 weight-only layer: the input stays in its dtype."""

    format_name = WO_NAME

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16:  # x @ w_q^T would overflow fp16: scale the weight first
            return torch.nn.functional.linear(x, self.dequantize(x.dtype), self.bias_as(x.dtype))
        y = torch.mm(x, self.qdata.t().to(x.dtype))
        y = y * self.scale.to(y.dtype).flatten()
        bias = self.bias_as(x.dtype)
        if bias is not None:
            y = y + bias
        return y.to(x.dtype)


class IntMmBackend:
    """``torch._int_mm`` (cuBLASLt int8 GEMM) on any CUDA GPU."""

    name = "int_mm"
    real_kernel = True
    auto_device_types = ("cuda",)

    def unavailable_reason(self, device: torch.device) -> str | None:
        if not hasattr(torch, "_int_mm"):
            return f"torch {torch.__version__} has no torch._int_mm"
        return cuda_reason(device, "int8 W8A8 (torch._int_mm)")

    def build(self, linear: nn.Linear) -> nn.Module:
        if linear.in_features % 8 or linear.out_features % 8:
            raise PrepareError(
                f"int8 int_mm needs in_features and out_features divisible by 8; layer "
                f"Linear(in_features={linear.in_features}, out_features={linear.out_features}) "
                "is not (use backend='emulated' for it, or keep it at bf16)"
            )
        return Int8IntMmLinear(linear)


def _torchao_w8a8_config(linear: nn.Linear):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)


def _torchao_wo_config(linear: nn.Linear):
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(set_inductor_config=False)


# torchao's int8 intermediates overflow fp16 (module docstring)
_INT8_DTYPES = (torch.bfloat16, torch.float32)

register_backend(NAME, IntMmBackend())
register_backend(
    NAME, TorchaoBackend(NAME, _torchao_w8a8_config, what="int8 W8A8", dtypes=_INT8_DTYPES)
)
register_backend(NAME, EmulatedBackend(Int8Linear))
register_backend(
    WO_NAME,
    TorchaoBackend(WO_NAME, _torchao_wo_config, what="int8 weight-only", dtypes=_INT8_DTYPES),
)
register_backend(WO_NAME, EmulatedBackend(Int8WeightOnlyLinear))
