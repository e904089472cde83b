"""ComfyUI's ``fp8_e4m3fn_fast`` arithmetic as a tmpdiff format, for comparison only.

ComfyUI (``comfy/ops.py``, ``fp8_linear``) stores weights cast straight to ``float8_e4m3fn`` and,
for 3-D inputs, clamps the activation to +-448 and casts it to fp8 too, then calls
``torch._scaled_mm`` with both scales equal to 1 (``use_fast_accum`` left at False). Nothing is
scaled, so small activations and weights lose mantissa bits or flush to zero. Registering it as the
format ``comfy_fp8`` lets the speed benchmark and the quality script run it through ``prepare`` on
exactly the same layers as tmpdiff's ``fp8`` (the default policy keeps embedders, the final
projection and the modulation linears at the reference; ComfyUI casts those too, but modulation
inputs are 2-D there and fall back to a bf16 matmul).

Not a product format: call ``register()`` (benchmarks and scripts only).
"""

from __future__ import annotations

import torch
from torch import nn

from tmpdiff_core.formats import FormatSpec, backends_for, register_backend, register_format
from tmpdiff_core.formats._backends import EmulatedBackend, cuda_reason
from tmpdiff_core.formats._module import QuantizedLinear

NAME = "comfy_fp8"
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


class ComfyFp8Linear(QuantizedLinear):
    """Unscaled fp8: ``clamp(x, +-448) -> e4m3`` times ``w -> e4m3``, fp32 accumulation."""

    format_name = NAME
    quantized_buffers = ("qdata", "one")

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        self.weight_dtype = linear.weight.dtype
        # ComfyUI casts without clamping (|w| > 448 would become NaN); real weights never get there
        self.register_buffer("qdata", linear.weight.detach().clamp(-FP8_MAX, FP8_MAX).to(FP8))
        self.register_buffer(
            "one", torch.ones((), dtype=torch.float32, device=linear.weight.device)
        )

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        x_q = x.clamp(-FP8_MAX, FP8_MAX).to(FP8)
        bias = self.bias_as(x.dtype)
        if x_q.is_cuda and x.dtype != torch.float32:
            return torch._scaled_mm(
                x_q,
                self.qdata.t(),
                scale_a=self.one,
                scale_b=self.one,
                bias=bias,
                out_dtype=x.dtype,
            )
        y = x_q.float() @ self.qdata.float().T
        if bias is not None:
            y = y + bias.float()
        return y.to(x.dtype)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.qdata.to(dtype or self.weight_dtype)


class _CudaBackend:
    name = "scaled_mm"
    real_kernel = True
    auto_device_types = ("cuda",)

    def unavailable_reason(self, device: torch.device) -> str | None:
        return cuda_reason(device, "ComfyUI fp8 (torch._scaled_mm)", (8, 9))

    def build(self, linear: nn.Linear) -> nn.Module:
        return ComfyFp8Linear(linear)


def register() -> None:
    """Register ``comfy_fp8`` once (idempotent)."""
    register_format(
        FormatSpec(
            NAME, "ComfyUI fp8_e4m3fn_fast: unscaled e4m3 cast", weight_bits=8.0, activation_bits=8
        )
    )
    if not backends_for(NAME):
        register_backend(NAME, _CudaBackend())
        register_backend(NAME, EmulatedBackend(ComfyFp8Linear))
