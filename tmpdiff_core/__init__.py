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
    HubOfflineError,
    PrepareError,
    ScheduleError,
    ScheduleNotFoundError,
    TmpdiffError,
    UnknownPrecisionError,
)
from .fingerprint import model_fingerprint
from .formats import all_formats, canonical_name, get_format
from .hub import (
    DEFAULT_REPO,
    HubFallbackWarning,
    HubRef,
    best_schedule,
    build_index,
    load_index,
    load_schedule,
    parse_hub_ref,
    publish,
)
from .pipeline_adapters import (
    PipelineAdapter,
    TimestepKind,
    UnsupportedPipelineError,
    register_pipeline_adapter,
    register_timestep_kind,
    supported_pipelines,
)
from .prepare import MemoryReport, PreparedModel, get_prepared, precision, prepare, unprepare
from .schedule import CostInfo, ModelInfo, SamplerInfo, Schedule
from .state import PrecisionState

__version__ = "0.1.0"

# The diffusers integration imports ``diffusers.hooks``; ComfyUI users need not have diffusers, so
# those names load on first use (PEP 562) instead of at ``import tmpdiff_core``.
_LAZY = {
    name: ".diffusers_hook"
    for name in (
        "ScheduleHandle",
        "TraceEntry",
        "apply_schedule",
        "get_schedule_handle",
        "remove_schedule",
    )
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'tmpdiff_core' has no attribute {name!r}")


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
    # diffusers integration
    "PipelineAdapter",
    "ScheduleHandle",
    "TimestepKind",
    "TraceEntry",
    "UnsupportedPipelineError",
    "apply_schedule",
    "get_schedule_handle",
    "register_pipeline_adapter",
    "register_timestep_kind",
    "remove_schedule",
    "supported_pipelines",
    # Hub: bundled schedules, loading, index, publishing
    "DEFAULT_REPO",
    "HubFallbackWarning",
    "HubOfflineError",
    "HubRef",
    "best_schedule",
    "build_index",
    "load_index",
    "load_schedule",
    "parse_hub_ref",
    "publish",
]
