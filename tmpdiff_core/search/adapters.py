"""Evaluators for real models: tmpdiff's reference model and diffusers pipelines.

Both prepare the denoiser for every candidate precision once, then generate the calibration batch
through ``apply_schedule`` — the same hook users run — so the search measures exactly the path a
searched schedule will take. The cache key holds the model fingerprint, the prepared backends,
prompts, seeds, steps, guidance and the scheduler config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..fingerprint import model_fingerprint
from ..prepare import PreparedModel, get_prepared, prepare
from ..schedule import ModelInfo, SamplerInfo, Schedule
from .cost import CostTable, measure_costs
from .evaluator import Evaluator, Outputs

__all__ = [
    "evaluator_for_pipeline",
    "evaluator_for_reference_model",
    "reference_model_costs",
]

DEFAULT_PRECISIONS = ("bf16", "int8wo", "int4wo")


def _prepared(denoiser: torch.nn.Module, precisions: Sequence[str], backend: str) -> PreparedModel:
    try:
        handle = get_prepared(denoiser)
    except Exception:  # noqa: BLE001  (PrepareError: not prepared yet)
        return prepare(denoiser, precisions, backend=backend)
    for p in precisions:
        handle.state.index_of(p)  # UnknownPrecisionError naming what was prepared
    return handle


def _scheduler_settings(scheduler: Any) -> dict[str, str]:
    """The scheduler's config for the cache key, minus diffusers' private bookkeeping.

    ``_use_default_values`` is built from a set, so its order changes between processes; keeping
    it would give every process a new cache key and defeat resuming an interrupted search.
    """
    return {k: str(v) for k, v in dict(scheduler.config).items() if not k.startswith("_")}


def _boundaries(scheduler: Any, steps: int) -> list[float] | None:
    """Normalized sigma boundaries (N+1, 1 → 0) of a flow-matching scheduler, else None."""
    scheduler.set_timesteps(steps)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None or len(sigmas) != steps + 1:
        return None
    b = [float(s) for s in sigmas]
    top = max(b[0], 1e-12)
    b = [min(max(v / top, 0.0), 1.0) for v in b]
    return b if all(x > y for x, y in zip(b, b[1:], strict=False)) else None


def evaluator_for_reference_model(
    ref: Any = None,
    *,
    prompts: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    steps: int = 20,
    guidance: float = 4.0,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    cache_dir: str | Path | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> Evaluator:
    """An ``Evaluator`` sampling tmpdiff's reference model (``refmodel.load_reference_model``).

    Args:
        ref: a ``ReferenceModel`` (loaded on CPU in fp32 if None).
        prompts: calibration prompts (default: ``ref.prompts["calibration"]``).
        seeds: one fixed-noise batch of all prompts per seed (images = prompts × seeds).
        steps, guidance: sampler settings (Euler flow matching with CFG, as ``ref.sample``).
        precisions: candidates, the reference first.
        cache_dir: on-disk evaluation cache (resumable); None = memory only.
        backend: ``prepare`` backend (``"auto"``: real kernels where available, else emulation).
    """
    from ..diffusers_hook import apply_schedule, remove_schedule
    from ..refmodel import load_reference_model, unpack

    ref = ref if ref is not None else load_reference_model()
    prompts = list(prompts if prompts is not None else ref.prompts["calibration"])
    fingerprint = model_fingerprint(ref.transformer)
    handle = _prepared(ref.transformer, precisions, backend)

    def run(per_step: list[str]) -> Outputs:
        apply_schedule(ref, Schedule.from_precisions(per_step))
        try:
            lat = torch.cat(
                [ref.sample(prompts, steps, guidance, seed=s, return_latents=True) for s in seeds]
            )
        finally:
            remove_schedule(ref)
        return Outputs((unpack(lat).clamp(-1, 1) + 1) / 2, lat)

    settings = {
        "model": fingerprint,
        "model_id": "tmpdiff-reference",
        "backends": dict(handle.backends),
        "dtype": str(ref.dtype),
        "prompts": prompts,
        "seeds": list(seeds),
        "guidance": guidance,
        "sampler": "euler",
        "scheduler": _scheduler_settings(ref.scheduler),
    }
    meta = {
        "boundaries": _boundaries(ref.scheduler, steps),
        "model": ModelInfo(id="tmpdiff-reference", fingerprint=fingerprint),
        "sampler": SamplerInfo("euler", type(ref.scheduler).__name__, steps, guidance, 32, 32),
    }
    return Evaluator(
        run,
        steps=steps,
        precisions=precisions,
        settings=settings,
        cache_dir=cache_dir,
        progress=progress,
        meta=meta,
    )


def reference_model_costs(
    ref: Any, precisions: Sequence[str], *, prompts: int = 4, warmup: int = 2, repeats: int = 7
) -> CostTable:
    """Measure one CFG-batched transformer call of the reference model per precision, here."""
    handle = get_prepared(ref.transformer)
    batch = ref.prompts["calibration"][:prompts]
    dev = ref.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)

    def call(p: str) -> None:
        with handle.use(p):
            ref.sample(batch, steps=1, seed=0, return_latents=True)

    return measure_costs(call, precisions, warmup=warmup, repeats=repeats, device=name, sync=sync)


def evaluator_for_pipeline(
    pipe: Any,
    *,
    prompts: Sequence[str],
    seeds: Sequence[int] = (0,),
    steps: int = 28,
    guidance: float | None = None,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    height: int | None = None,
    width: int | None = None,
    cache_dir: str | Path | None = None,
    backend: str = "auto",
    progress: bool = True,
    call_kwargs: dict | None = None,
) -> Evaluator:
    """An ``Evaluator`` for a supported diffusers pipeline (Flux, SD3, Sana, PixArt, SDXL, …).

    Each seed generates all prompts with per-image generators seeded ``seed·1000 + i``; images
    come from ``output_type="pt"``, final latents from ``callback_on_step_end``.
    """
    from ..diffusers_hook import apply_schedule, remove_schedule

    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if denoiser is None:
        raise ValueError(f"{type(pipe).__name__} has no .transformer or .unet to search")
    prompts = list(prompts)
    fingerprint = model_fingerprint(denoiser)
    handle = _prepared(denoiser, precisions, backend)
    extra = dict(call_kwargs or {})
    if guidance is not None:
        extra["guidance_scale"] = guidance
    if height is not None:
        extra["height"] = height
    if width is not None:
        extra["width"] = width

    def run(per_step: list[str]) -> Outputs:
        images, latents = [], []
        apply_schedule(pipe, Schedule.from_precisions(per_step))
        try:
            for s in seeds:
                final: dict[str, torch.Tensor] = {}

                def grab(_pipe, i, _t, kw, final=final):
                    final["latents"] = kw["latents"]
                    return kw

                gens = [
                    torch.Generator(device="cpu").manual_seed(s * 1000 + i)
                    for i in range(len(prompts))
                ]
                out = pipe(
                    prompt=prompts,
                    num_inference_steps=steps,
                    generator=gens,
                    output_type="pt",
                    callback_on_step_end=grab,
                    callback_on_step_end_tensor_inputs=["latents"],
                    **extra,
                )
                images.append(out.images.float().cpu())
                latents.append(final["latents"].float().cpu())
        finally:
            remove_schedule(pipe)
        return Outputs(torch.cat(images), torch.cat(latents))

    settings = {
        "model": fingerprint,
        "pipeline": type(pipe).__name__,
        "backends": dict(handle.backends),
        "prompts": prompts,
        "seeds": list(seeds),
        "call": {k: v for k, v in extra.items() if isinstance(v, (int, float, str, bool))},
        "scheduler": _scheduler_settings(pipe.scheduler),
    }
    meta = {
        "boundaries": _boundaries(pipe.scheduler, steps),
        "model": ModelInfo(
            id=getattr(getattr(pipe, "config", None), "_name_or_path", None),
            fingerprint=fingerprint,
        ),
        "sampler": SamplerInfo(None, type(pipe.scheduler).__name__, steps, guidance, width, height),
    }
    return Evaluator(
        run,
        steps=steps,
        precisions=precisions,
        settings=settings,
        cache_dir=cache_dir,
        progress=progress,
        meta=meta,
    )
