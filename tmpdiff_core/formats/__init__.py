"""Number formats. Importing this package registers every format and backend."""

# importing a format module registers it and its backends (reference: bf16/fp16/fp32)
from . import fp4, fp8, int4, int8, reference  # noqa: F401
from .base import (
    Backend,
    FormatSpec,
    all_formats,
    backends_for,
    canonical_name,
    get_format,
    module_nbytes,
    register_backend,
    register_format,
    select_backend,
)

__all__ = [
    "Backend",
    "FormatSpec",
    "all_formats",
    "backends_for",
    "canonical_name",
    "get_format",
    "module_nbytes",
    "register_backend",
    "register_format",
    "select_backend",
]

# The fused CUDA kernels live in tmpdiff_core.kernels (they import these formats); registering
# them here makes them the first choice of backend="auto" on a GPU wherever tmpdiff is imported.
from ..kernels import register as _register_fused_kernels  # noqa: E402

_register_fused_kernels()
