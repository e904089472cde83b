"""Number formats. Importing this package registers every format and backend."""

from . import reference  # noqa: F401  (registers bf16/fp16/fp32)
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
