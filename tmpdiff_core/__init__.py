"""tmpdiff: run every denoising step of a diffusion model at its own numeric precision.

The library behind the ComfyUI nodes; never imports ``comfy``. Typical use::

    from tmpdiff_core import prepare, Schedule, apply_schedule
    prepare(pipe.transformer, precisions=["bf16", "fp8"])
    apply_schedule(pipe, Schedule.load("flux-28-fp8.json"))
    image = pipe(prompt).images[0]
"""

from .errors import (
    BackendUnavailableError,
    HubError,
    PrepareError,
    ScheduleError,
    ScheduleNotFoundError,
    TmpdiffError,
    UnknownPrecisionError,
)
from .fingerprint import model_fingerprint
from .formats import all_formats, canonical_name, get_format
from .prepare import MemoryReport, PreparedModel, get_prepared, precision, prepare, unprepare
from .schedule import CostInfo, ModelInfo, SamplerInfo, Schedule
from .state import PrecisionState

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CostInfo",
    "HubError",
    "MemoryReport",
    "ModelInfo",
    "PrecisionState",
    "PrepareError",
    "PreparedModel",
    "SamplerInfo",
    "Schedule",
    "ScheduleError",
    "ScheduleNotFoundError",
    "TmpdiffError",
    "UnknownPrecisionError",
    "all_formats",
    "canonical_name",
    "get_format",
    "get_prepared",
    "model_fingerprint",
    "precision",
    "prepare",
    "unprepare",
]
