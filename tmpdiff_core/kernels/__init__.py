"""CUDA fast paths: fused activation quantization and fused-epilogue GEMMs (``backend="fused"``).

``register()`` puts a ``fused`` backend first for ``fp8`` and ``int8``; ``tmpdiff_core.formats``
calls it on import, so ``backend="auto"`` picks it on a CUDA GPU where it can run (it is what
BENCHMARKS.md measured: fp8 104.2 ms/step, level with torchao's 103.0; the int8 Triton GEMM 62.5 ms
of GEMMs per step vs 85.4 for ``torch._int_mm``), then the formats' own kernels, emulation last.

Everything GPU-specific is imported lazily, so this package imports on a CPU-only machine; there
the ``fused`` backend reports itself unavailable and the CPU tests check its reference math.
"""

from __future__ import annotations

from ..formats import backends_for, fp8, int8, register_backend
from ..formats import base as _base
from ._dispatch import quantize_fp8, quantize_int8, triton_reason, use_triton
from .linear import BACKEND_NAME, FusedBackend, FusedFp8Linear, FusedInt8Linear

__all__ = [
    "BACKEND_NAME",
    "FusedBackend",
    "FusedFp8Linear",
    "FusedInt8Linear",
    "quantize_fp8",
    "quantize_int8",
    "register",
    "set_int8_mm_impl",
    "triton_reason",
    "use_triton",
]


def register() -> None:
    """Register the ``fused`` backend of ``fp8`` and ``int8`` once, first in line (idempotent)."""
    for name in (fp8.NAME, int8.NAME):
        if any(b.name == BACKEND_NAME for b in backends_for(name)):
            continue
        register_backend(name, FusedBackend(name))
        chain = _base._BACKENDS[name]
        chain.insert(0, chain.pop())


def set_int8_mm_impl(impl: str) -> None:
    """Choose the GEMM of layers built from now on: ``"triton"`` (fused epilogue) or ``"int_mm"``."""
    if impl not in ("triton", "int_mm"):
        raise ValueError(f"impl must be 'triton' or 'int_mm', not {impl!r}")
    for backend in backends_for(int8.NAME):
        if backend.name == BACKEND_NAME:
            backend.int8_mm_impl = impl
