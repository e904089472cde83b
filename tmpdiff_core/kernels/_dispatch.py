"""Which implementation of each fused step runs.

* Activation quantization: Triton on a CUDA tensor in eager mode; the formats' PyTorch
  functions everywhere else (CPU, no Triton, and under ``torch.compile``, where Inductor fuses
  them into the op that produced the activation, e.g. the LayerNorm + modulation before a QKV
  projection, better than an opaque kernel could).
* The int8 GEMM: the fused-epilogue Triton kernel on CUDA (under ``torch.compile`` as the
  ``triton_op`` ``tmpdiff::int8_scaled_mm``, so Inductor launches it from its generated code and
  never traces into Triton), the exact int32 reference elsewhere.
"""

from __future__ import annotations

import importlib.util

import torch

from ..formats import fp8, int8

# Plain module globals (not cached calls): Dynamo reads them while tracing without a graph break.
HAVE_TRITON = importlib.util.find_spec("triton") is not None
_MM_OP_REGISTERED = False


def triton_reason() -> str | None:
    """``None`` if Triton is installed, else why not (checked without importing it)."""
    return None if HAVE_TRITON else "triton is not installed"


def use_triton(x: torch.Tensor) -> bool:
    """True where the quantization kernels should run on ``x``: eager mode, CUDA, Triton."""
    if torch.compiler.is_compiling() or x.device.type != "cuda" or not HAVE_TRITON:
        return False
    return x.dtype in (torch.bfloat16, torch.float16, torch.float32) and x.stride(-1) == 1


def register_mm_op() -> None:
    """Register ``tmpdiff::int8_scaled_mm`` once (call it before a ``torch.compile`` trace
    reaches the op: the layers do, at construction on CUDA)."""
    global _MM_OP_REGISTERED
    if not _MM_OP_REGISTERED:
        from . import _triton

        _triton.register_mm_op()
        _MM_OP_REGISTERED = True


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fp8.quantize_activation`` (per-token e4m3), in one Triton pass where that applies."""
    if use_triton(x):
        from . import _triton

        return _triton.fp8_rowwise_quant(x)
    return fp8.quantize_activation(x)


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``int8.quantize_activation`` (per-token symmetric int8), in one Triton pass where it applies."""
    if use_triton(x):
        from . import _triton

        return _triton.int8_rowwise_quant(x, int8.EPS)
    return int8.quantize_activation(x)


def int8_scaled_mm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """``int8.rescale(x_q @ w_q^T, ...)``: the fused Triton GEMM on CUDA, exact int32 elsewhere."""
    if x_q.device.type == "cuda" and HAVE_TRITON:
        if torch.compiler.is_compiling():
            register_mm_op()
            return torch.ops.tmpdiff.int8_scaled_mm(x_q, x_scale, w_q, w_scale, bias, out_dtype)
        from . import _triton

        return _triton.int8_scaled_mm(x_q, x_scale, w_q, w_scale, bias, out_dtype)
    acc = int8.qm.int8_matmul_exact(x_q, w_q)
    return int8.rescale(acc, x_scale, w_scale, bias, out_dtype)
