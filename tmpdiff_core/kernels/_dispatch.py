"""Which implementation of each fused step runs: Triton on a CUDA tensor in eager mode, the
formats' plain PyTorch functions everywhere else (CPU, no Triton, and under ``torch.compile``,
where Inductor fuses them into the neighbouring ops better than an opaque kernel could)."""

from __future__ import annotations

import importlib.util

import torch

from ..formats import fp8, int8

_MM_OP = None
# A plain constant (not a cached call): Dynamo reads it while tracing without a graph break.
HAVE_TRITON = importlib.util.find_spec("triton") is not None


def triton_reason() -> str | None:
    """``None`` if Triton is installed, else why not (checked without importing it)."""
    return None if HAVE_TRITON else "triton is not installed"


def use_triton(x: torch.Tensor) -> bool:
    """True where the Triton kernels should run on ``x``: eager mode, a CUDA tensor, Triton."""
    if torch.compiler.is_compiling() or x.device.type != "cuda" or not HAVE_TRITON:
        return False
    return x.dtype in (torch.bfloat16, torch.float16, torch.float32) and x.stride(-1) == 1


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
    """``int8.rescale(x_q @ w_q^T, ...)``: the fused Triton GEMM on CUDA, exact int32 elsewhere.

    On CUDA it goes through the custom op ``tmpdiff::int8_scaled_mm`` so ``torch.compile`` keeps
    it as one opaque kernel (and never traces into Triton's autotuner).
    """
    if x_q.device.type == "cuda" and HAVE_TRITON:
        return register_mm_op()(x_q, x_scale, w_q, w_scale, bias, out_dtype)
    acc = int8.qm.int8_matmul_exact(x_q, w_q)
    return int8.rescale(acc, x_scale, w_scale, bias, out_dtype)


def register_mm_op():
    """Register ``tmpdiff::int8_scaled_mm`` on first use (it imports Triton)."""
    global _MM_OP
    if _MM_OP is None:

        @torch.library.custom_op("tmpdiff::int8_scaled_mm", mutates_args=())
        def op(
            x_q: torch.Tensor,
            x_scale: torch.Tensor,
            w_q: torch.Tensor,
            w_scale: torch.Tensor,
            bias: torch.Tensor | None,
            out_dtype: torch.dtype,
        ) -> torch.Tensor:
            from . import _triton

            return _triton.int8_scaled_mm(x_q, x_scale, w_q, w_scale, bias, out_dtype)

        @op.register_fake
        def _(x_q, x_scale, w_q, w_scale, bias, out_dtype):
            return x_q.new_empty((x_q.shape[0], w_q.shape[0]), dtype=out_dtype)

        _MM_OP = op
    return _MM_OP
