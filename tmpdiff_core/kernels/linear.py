"""Fused CUDA linear layers for ``fp8`` and ``int8`` W8A8: the ``fused`` backend.

Same numbers as the formats' own layers (they subclass them and reuse their weight quantization,
activation quantization and rescale functions); what changes is how many passes over memory the
GPU makes:

* Activation quantization (``amax`` per token, scale, cast) runs as one Triton kernel in eager
  mode. Under ``torch.compile`` the plain PyTorch version runs instead, so Inductor can fuse it
  into the op that produced the activation (the LayerNorm + modulation before a QKV projection,
  the GELU before ``ff.net.2``): there the quantized activation costs no extra pass at all.
* ``fp8``: ``torch._scaled_mm`` with row-wise scales and the bias in its epilogue (as the
  ``scaled_mm`` backend).
* ``int8``: a Triton GEMM whose epilogue applies both scales and the bias in torchao's order, so
  the int32 accumulator never goes through device memory (``torch._int_mm`` writes 4 bytes per
  output element and a second pass reads them back). Under ``torch.compile`` it is the
  ``triton_op`` ``tmpdiff::int8_scaled_mm``, which Inductor launches from its generated code (an
  opaque custom op cost ~0.1 ms of host time per call, 1.0 vs 2.3 ms per 12 calls measured).
  ``mm_impl="int_mm"`` keeps cuBLASLt's GEMM (the benchmark measures both).

Only the GPU paths live here; the CPU tests check the reference math (Triton interpreter) and the
dispatch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import PrepareError
from ..formats import fp8, int8
from ..formats._backends import cuda_reason
from . import _dispatch

BACKEND_NAME = "fused"


class FusedFp8Linear(fp8.Fp8ScaledMmLinear):
    """fp8 W8A8: fused per-token quantization (Triton / Inductor) + ``torch._scaled_mm``."""

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        x_q, x_scale = _dispatch.quantize_fp8(x)
        return self.matmul(x_q, x_scale, self.bias_as(x.dtype), x.dtype)


class FusedInt8Linear(int8.Int8Linear):
    """int8 W8A8: fused per-token quantization + a GEMM with the rescale in its epilogue."""

    def __init__(self, linear: nn.Linear, mm_impl: str = "triton") -> None:
        super().__init__(linear)
        if mm_impl not in ("triton", "int_mm"):
            raise ValueError(f"mm_impl must be 'triton' or 'int_mm', not {mm_impl!r}")
        self.mm_impl = mm_impl
        if mm_impl == "triton" and self.qdata.is_cuda and _dispatch.HAVE_TRITON:
            _dispatch.register_mm_op()  # before any torch.compile trace reaches it

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        x_q, x_scale = _dispatch.quantize_int8(x)
        bias = self.bias_as(x.dtype)
        if self.mm_impl == "triton":
            return _dispatch.int8_scaled_mm(x_q, x_scale, self.qdata, self.scale, bias, x.dtype)
        return int8.rescale(int8.int_mm(x_q, self.qdata), x_scale, self.scale, bias, x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mm_impl={self.mm_impl}"


class FusedBackend:
    """The ``fused`` backend of one format: CUDA only, first choice of ``backend="auto"`` there."""

    name = BACKEND_NAME
    real_kernel = True
    auto_device_types = ("cuda",)

    def __init__(self, format_name: str, int8_mm_impl: str = "triton") -> None:
        if format_name not in (fp8.NAME, int8.NAME):
            raise ValueError(f"no fused kernels for {format_name!r}")
        self.format_name = format_name
        self.int8_mm_impl = int8_mm_impl

    def unavailable_reason(self, device: torch.device) -> str | None:
        if self.format_name == fp8.NAME:
            if not hasattr(torch, "_scaled_mm"):
                return f"torch {torch.__version__} has no torch._scaled_mm"
            return cuda_reason(device, "fused fp8 W8A8", fp8.FP8_MIN_CC)
        reason = cuda_reason(device, "fused int8 W8A8")
        if reason is None and self.int8_mm_impl == "triton":
            reason = _dispatch.triton_reason()
        return reason

    def build(self, linear: nn.Linear) -> nn.Module:
        multiple = 16 if self.format_name == fp8.NAME else 8
        if linear.in_features % multiple or linear.out_features % multiple:
            raise PrepareError(
                f"fused {self.format_name} needs in_features and out_features divisible by "
                f"{multiple}; Linear(in_features={linear.in_features}, "
                f"out_features={linear.out_features}) is not (keep it at the reference)"
            )
        if self.format_name == fp8.NAME:
            return FusedFp8Linear(linear)
        return FusedInt8Linear(linear, mm_impl=self.int8_mm_impl)
