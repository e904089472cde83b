"""What each diffusers pipeline passes its denoiser as ``timestep``, and how to undo it.

``apply_schedule`` places every denoiser call on the scheduler's step grid. Pipelines feed the
denoiser the current ``scheduler.timesteps`` entry, but not always unchanged: FluxPipeline divides
it by 1000, SanaPipeline multiplies it by ``transformer.config.timestep_scale``. A *timestep kind*
names one such convention and maps the received value back to scheduler units; a *pipeline
adapter* says, for one pipeline class, which attribute holds the denoiser and which kind it uses.

Verified on diffusers 0.42.1 by running each tiny pipeline (``tests/tiny_pipelines.py``) and
recording what the denoiser received:

* ``FluxPipeline``: ``transformer(timestep=t.expand(B).to(latents.dtype) / 1000)``, sigma in
  [0, 1] (rounded to bf16 in a bf16 pipeline); true CFG is a second call. Kind ``flux``.
* ``StableDiffusion3Pipeline``: ``transformer(timestep=t.expand(B))`` in [0, 1000]; CFG doubles
  B in one call; skip-layer guidance adds a call at the same ``t``. Kind ``scheduler``.
* ``SanaPipeline``: ``transformer(timestep=t.expand(B) * config.timestep_scale)``; CFG doubles B.
  Kind ``sana``.
* ``PixArtSigmaPipeline``: ``transformer(timestep=...)``, the int64 DDPM timesteps in [0, 999]
  (DDIM "leading" ends at 0); CFG doubles B. Kind ``scheduler``.
* ``StableDiffusionXLPipeline``: ``unet(latents, t, ...)``, the timestep *positional*, a 0-d
  float tensor in DDPM units; CFG doubles B. Kind ``scheduler``.
* tmpdiff's ``ReferenceModel``: FluxPipeline's transformer call (``t.to(dtype) / 1000``) with
  cond+uncond batched. Kind ``flux``.

A new pipeline is one ``register_pipeline_adapter`` call (check first what its denoiser receives).
Lookups are by class name along the MRO, so a subclass of a supported pipeline is supported too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .errors import TmpdiffError


class UnsupportedPipelineError(TmpdiffError, ValueError):
    """A pipeline (or container) whose denoiser timestep convention tmpdiff does not know."""


@dataclass(frozen=True)
class TimestepKind:
    """How the ``timestep`` a denoiser receives relates to ``scheduler.timesteps``.

    name: what ``apply_schedule(..., timestep_kind=name)`` accepts.
    to_scheduler_units: ``(received value, denoiser) -> value in scheduler.timesteps units``.
    description: one line for error messages and docs.
    """

    name: str
    to_scheduler_units: Callable[[float, nn.Module], float]
    description: str


@dataclass(frozen=True)
class PipelineAdapter:
    """How ``apply_schedule`` finds the denoiser of one pipeline class and reads its timestep.

    pipeline: the pipeline class name (``"FluxPipeline"``).
    denoiser_attr: the attribute holding the denoiser (``"transformer"`` or ``"unet"``).
    timestep_kind: a registered ``TimestepKind`` name.
    time_axis: the axis the normalized runtime grid lies on: ``"sigma"`` for flow matching
        (timesteps are sigma × 1000), ``"t"`` for DDPM-style timesteps. Only used to warn when a
        schedule made on the other axis is resampled.
    timestep_arg: the name of the denoiser ``forward`` parameter carrying the timestep; it may
        be passed by keyword or by position (UNet2DConditionModel gets it positionally).
    module: if set, the class must also be defined in this package (``"diffusers"``), so an
        unrelated class that happens to share the name is not matched.
    """

    pipeline: str
    denoiser_attr: str
    timestep_kind: str
    time_axis: str = "sigma"
    timestep_arg: str = "timestep"
    module: str | None = None


_TIMESTEP_KINDS: dict[str, TimestepKind] = {}
_ADAPTERS: dict[str, PipelineAdapter] = {}


def register_timestep_kind(kind: TimestepKind) -> TimestepKind:
    """Add (or replace) a timestep convention."""
    _TIMESTEP_KINDS[kind.name] = kind
    return kind


def register_pipeline_adapter(adapter: PipelineAdapter) -> PipelineAdapter:
    """Add (or replace) the adapter of a pipeline class, keyed by class name.

    Example, for a pipeline that passes ``scheduler.timesteps`` unchanged to ``pipe.transformer``::

        register_pipeline_adapter(PipelineAdapter("MyPipeline", "transformer", "scheduler"))
    """
    get_timestep_kind(adapter.timestep_kind)  # fail now on a typo, not at the first step
    if adapter.time_axis not in ("sigma", "t"):
        raise ValueError(f"time_axis is {adapter.time_axis!r}; expected 'sigma' or 't'")
    _ADAPTERS[adapter.pipeline] = adapter
    return adapter


def get_timestep_kind(name: str) -> TimestepKind:
    """The registered ``TimestepKind`` called ``name``."""
    try:
        return _TIMESTEP_KINDS[name]
    except KeyError:
        known = "; ".join(f"{k.name!r}: {k.description}" for k in _TIMESTEP_KINDS.values())
        raise UnsupportedPipelineError(
            f"unknown timestep_kind {name!r}; known kinds: {known}. Register a new one with "
            "tmpdiff_core.register_timestep_kind(TimestepKind(...))."
        ) from None


def adapter_for(pipeline: Any) -> PipelineAdapter | None:
    """The adapter registered for ``type(pipeline)`` or its nearest registered base class."""
    for cls in type(pipeline).__mro__:
        adapter = _ADAPTERS.get(cls.__name__)
        if adapter is not None and _defined_in(cls, adapter.module):
            return adapter
    return None


def _defined_in(cls: type, package: str | None) -> bool:
    return package is None or cls.__module__ == package or cls.__module__.startswith(package + ".")


def supported_pipelines() -> list[str]:
    """Names of the pipeline classes with a registered adapter."""
    return sorted(_ADAPTERS)


def timestep_kinds() -> list[str]:
    """Names of the registered timestep conventions."""
    return sorted(_TIMESTEP_KINDS)


def unsupported_message(what: str) -> str:
    """The error text for a target without an adapter: what is supported and how to add one."""
    kinds = ", ".join(repr(k) for k in timestep_kinds())
    return (
        f"{what} has no tmpdiff pipeline adapter, so it is unknown how its denoiser's timestep "
        f"maps to the scheduler. Supported pipelines: {', '.join(supported_pipelines())}. "
        f"Pass timestep_kind= (one of {kinds}; 'flux' = the denoiser receives "
        "scheduler.timesteps / 1000, 'scheduler' = it receives them unchanged) or register an "
        "adapter: tmpdiff_core.register_pipeline_adapter(PipelineAdapter(pipeline="
        "'MyPipeline', denoiser_attr='transformer', timestep_kind='scheduler'))."
    )


def _sana_to_scheduler_units(t: float, denoiser: nn.Module) -> float:
    return t / float(denoiser.config.timestep_scale)


register_timestep_kind(
    TimestepKind(
        "scheduler",
        lambda t, denoiser: t,
        "the denoiser receives scheduler.timesteps unchanged (SD3, PixArt, SDXL UNet)",
    )
)
register_timestep_kind(
    TimestepKind(
        "flux",
        lambda t, denoiser: t * 1000.0,
        "the denoiser receives scheduler.timesteps / 1000, i.e. sigma in [0, 1] (FluxPipeline)",
    )
)
register_timestep_kind(
    TimestepKind(
        "sana",
        _sana_to_scheduler_units,
        "the denoiser receives scheduler.timesteps × denoiser.config.timestep_scale (Sana)",
    )
)

for _adapter in (
    PipelineAdapter("FluxPipeline", "transformer", "flux", "sigma", module="diffusers"),
    PipelineAdapter("StableDiffusion3Pipeline", "transformer", "scheduler", module="diffusers"),
    PipelineAdapter("SanaPipeline", "transformer", "sana", "sigma", module="diffusers"),
    PipelineAdapter("PixArtSigmaPipeline", "transformer", "scheduler", "t", module="diffusers"),
    PipelineAdapter("StableDiffusionXLPipeline", "unet", "scheduler", "t", module="diffusers"),
    # tmpdiff's reference model samples with FluxPipeline's transformer call (timestep = t / 1000)
    PipelineAdapter("ReferenceModel", "transformer", "flux", "sigma", module="tmpdiff_core"),
):
    register_pipeline_adapter(_adapter)
