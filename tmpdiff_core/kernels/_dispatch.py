"""Which implementation of each fused step runs.

* Plain activation quantization: Triton on a CUDA tensor in eager mode; the formats' PyTorch
  functions everywhere else (CPU, no Triton, and under ``torch.compile``, where Inductor fuses
  them into the op that produced the activation, e.g. the LayerNorm + modulation before a QKV
  projection, better than an opaque kernel could).
* Quantization with the GELU hand-off (``gelu_from``): the one-pass Triton kernel on CUDA, eager
  and compiled alike (compiled: through its ``triton_op``) (Inductor splits a GELU + per-token amax over 12288-15360 columns into two
  passes over memory; the kernel makes one); GELU then the formats' function elsewhere.
* The int8 GEMM: the fused-epilogue Triton kernel on CUDA, the exact int32 reference elsewhere.

On CUDA the Triton kernels are ``torch.library.triton_op`` ops (``_triton.ops()``), so
``torch.compile`` launches them from its generated code and never traces into Triton.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from ..formats import fp8, int8

# Plain module globals (not cached calls): Dynamo reads them while tracing without a graph break.
HAVE_TRITON = importlib.util.find_spec("triton") is not None
_OPS_REGISTERED = False


def triton_reason() -> str | None:
    """``None`` if Triton is installed, else why not (checked without importing it)."""
    return None if HAVE_TRITON else "triton is not installed"


def _triton_can_run(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cuda"
        and HAVE_TRITON
        and x.dtype in (torch.bfloat16, torch.float16, torch.float32)
        and x.stride(-1) == 1
    )


def use_triton(x: torch.Tensor) -> bool:
    """True where the plain quantization kernels should run on ``x``: eager mode, CUDA, Triton."""
    return not torch.compiler.is_compiling() and _triton_can_run(x)


def apply_gelu_from(x: torch.Tensor, gelu_from: int | None) -> torch.Tensor:
    """The reference of the hand-off: tanh-GELU on the columns from ``gelu_from`` on."""
    if gelu_from is None:
        return x
    if gelu_from == 0:
        return F.gelu(x, approximate="tanh")
    return torch.cat([x[:, :gelu_from], F.gelu(x[:, gelu_from:], approximate="tanh")], dim=1)


def _ops():
    if not _OPS_REGISTERED:
        register_ops()
    return torch.ops.tmpdiff


def register_ops() -> None:
    """Register the ``tmpdiff::`` ops now (before a ``torch.compile`` trace reaches them)."""
    global _OPS_REGISTERED
    from . import _triton

    _triton.register_ops()
    _OPS_REGISTERED = True


def quantize_fp8(
    x: torch.Tensor, gelu_from: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fp8.quantize_activation(apply_gelu_from(x, gelu_from))``, in one pass where it can."""
    if use_triton(x):
        from . import _triton

        return _triton.fp8_rowwise_quant(x, -1 if gelu_from is None else gelu_from)
    if gelu_from is not None and _triton_can_run(x):  # compiling
        return _ops().fp8_rowwise_quant(x, gelu_from)
    return fp8.quantize_activation(apply_gelu_from(x, gelu_from))


def quantize_int8(
    x: torch.Tensor, gelu_from: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``int8.quantize_activation(apply_gelu_from(x, gelu_from))``, in one pass where it can."""
    if use_triton(x):
        from . import _triton

        return _triton.int8_rowwise_quant(x, int8.EPS, -1 if gelu_from is None else gelu_from)
    if gelu_from is not None and _triton_can_run(x):  # compiling
        return _ops().int8_rowwise_quant(x, int8.EPS, gelu_from)
    return int8.quantize_activation(apply_gelu_from(x, gelu_from))


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
            return _ops().int8_scaled_mm(x_q, x_scale, w_q, w_scale, bias, out_dtype)
        from . import _triton

        return _triton.int8_scaled_mm(x_q, x_scale, w_q, w_scale, bias, out_dtype)
    acc = int8.qm.int8_matmul_exact(x_q, w_q)
    return int8.rescale(acc, x_scale, w_scale, bias, out_dtype)
