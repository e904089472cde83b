"""Node: search a schedule for this model and prompt with ComfyUI's own sampling.

The search itself is ``tmpdiff_core.search`` (``Evaluator`` + ``allocate``, finished results
cached by ``search.results``); this node only supplies its run function — "sample the calibration
latent with step ``i`` at precision ``p_i``", through ``comfy.sample.sample`` and the same
``APPLY_MODEL`` wrapper the schedule node installs — and turns the result into a ``Schedule``, a
Pareto plot and a report.

Every evaluation is cached on disk under ComfyUI's user folder (``tmpdiff/search_cache``), keyed by
everything that determines the images (model fingerprint and LoRA patches, prepared layers,
conditioning, latent, sampler settings, VAE), so re-running the graph, or a changed target on the
same setup, re-uses the measurements instead of sampling again.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import numpy as np
import torch
from comfy_api.latest import io

from tmpdiff_core.errors import PrepareError, ScheduleError
from tmpdiff_core.fingerprint import model_fingerprint
from tmpdiff_core.runplan import boundaries_from_times
from tmpdiff_core.schedule import ModelInfo, SamplerInfo, Schedule
from tmpdiff_core.search.pareto import Point
from tmpdiff_core.search.plots import pareto_plot
from tmpdiff_core.search.results import (
    read_result,
    result_key,
    result_payload,
    tensor_digest,
    write_result,
)
from tmpdiff_core.strip import render_strip, stack_images

from ._patching import apply_schedule, get_prepared, normalized_times
from ._types import CATEGORY, SCHEDULE, image_tensor

logger = logging.getLogger("tmpdiff")

TARGETS = ("speed-up", "quality (SSIM)", "pareto front")
COSTS = ("nominal (bits)", "measure here", "json")


class SearchSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TmpdiffSearchSchedule",
            display_name="tmpdiff Search Schedule",
            category=CATEGORY,
            description=(
                "Finds which step runs at which precision for this model, prompt and sampler: "
                "probes each step's sensitivity, fits an error model, optimizes it and refines "
                "with real samples. Results are cached, so re-running the graph is instant."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The output of 'tmpdiff Quantized Model'."),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input(
                    "latent_image", tooltip="The calibration latent (e.g. EmptyLatentImage)."
                ),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True
                ),
                io.Int.Input("steps", default=20, min=1, max=200),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS),
                io.Combo.Input("target", options=list(TARGETS), default="speed-up"),
                io.Float.Input(
                    "target_value",
                    default=1.3,
                    min=0.0,
                    max=10.0,
                    step=0.01,
                    tooltip="speed-up: at least this speed-up (1.3 = 30 % faster); quality: SSIM ≥ this; "
                    "pareto: the fastest schedule with SSIM ≥ this.",
                ),
                io.Combo.Input(
                    "costs",
                    options=list(COSTS),
                    default="nominal (bits)",
                    tooltip="Per-step cost of each precision: an assumption from bit widths, timed on "
                    "this machine, or a JSON table measured where the real kernels run.",
                ),
                io.String.Input(
                    "cost_json", default="", multiline=True, tooltip='{"bf16": 1.0, "fp8": 0.55}'
                ),
                io.Int.Input(
                    "validation_runs",
                    default=16,
                    min=0,
                    max=256,
                    tooltip="Random schedules sampled to check and calibrate the error model.",
                ),
                io.Vae.Input(
                    "vae",
                    optional=True,
                    tooltip="Compare decoded images (recommended). Without it, latents are compared.",
                ),
            ],
            outputs=[
                SCHEDULE.Output(),
                io.Image.Output(
                    display_name="pareto",
                    tooltip="Evaluated schedules, the front, the choice and its strip.",
                ),
                io.String.Output(display_name="report"),
            ],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive,
        negative,
        latent_image,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        target: str,
        target_value: float,
        costs: str,
        cost_json: str,
        validation_runs: int,
        vae=None,
    ) -> io.NodeOutput:
        from tmpdiff_core.search.allocate import AllocatorConfig, allocate, evaluation_bound
        from tmpdiff_core.search.evaluator import Evaluator

        prepared = get_prepared(model)
        if prepared is None:
            raise PrepareError(
                "the searcher needs the MODEL from 'tmpdiff Quantized Model' (its precisions are "
                "the candidates)"
            )
        precisions = prepared.state.precisions
        if len(precisions) < 2:
            raise PrepareError(
                "only the reference precision was prepared; add e.g. fp8 to the loader"
            )
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        sampling = _Sampling(
            model, noise, latent, seed, steps, cfg, sampler_name, scheduler, positive, negative, vae
        )
        table = _cost_table(costs, cost_json, precisions, sampling)
        goal = _target(target, target_value)
        fastest = table.speedup([min(precisions, key=table.__getitem__)] * steps)
        if getattr(goal, "speedup", 0.0) > fastest * (1 + 1e-9):
            raise ScheduleError(
                f"no schedule of {', '.join(precisions)} reaches a {goal.speedup:g}x speed-up under "
                f"this cost table (every step at the fastest precision gives {fastest:.3f}x); "
                "lower the target or prepare a faster precision"
            )
        bar = comfy.utils.ProgressBar(
            evaluation_bound(len(precisions), steps, AllocatorConfig(validate=validation_runs))
        )
        counter = {"runs": 0}

        def run(per_step: list[str]):
            comfy.model_management.throw_exception_if_processing_interrupted()
            out = sampling.images(per_step)
            counter["runs"] += 1
            bar.update_absolute(counter["runs"])
            return out

        evaluator = Evaluator(
            run,
            steps=steps,
            precisions=precisions,
            settings=sampling.settings(prepared),
            cache_dir=search_cache_dir(),
            progress=False,
        )
        result_file = (
            search_cache_dir()
            / f"{result_key(evaluator, goal, table, validation_runs)}.result.json"
        )
        result = read_result(result_file)
        if result is None:
            allocation = allocate(evaluator, table, goal, AllocatorConfig(validate=validation_runs))
            if allocation.best is None:
                raise ScheduleError(
                    f"no measured schedule meets {target} {target_value:g} with {', '.join(precisions)} "
                    f"(fastest possible: {fastest:.3f}x); lower the target or prepare a faster precision"
                )
            result = result_payload(
                sampling.schedule(allocation, table, target, target_value, evaluator),
                allocation,
                evaluator,
                table,
            )
            write_result(result_file, result)
        else:
            result["report"] += (
                "\n(result cached from an earlier run with the same inputs: nothing sampled)"
            )
        schedule = Schedule.from_dict(result["schedule"])
        points = [Point.from_dict(p) for p in result["points"]]
        chosen = points[result["chosen"]] if result["chosen"] is not None else None
        plot = np.asarray(pareto_plot(points, chosen=chosen, title=result["title"]))
        strip = render_strip(schedule.precisions, width=plot.shape[1], title=schedule.summary())
        report = result["report"]
        logger.info("tmpdiff search: %s", report.splitlines()[0])
        return io.NodeOutput(schedule, image_tensor(stack_images([plot, strip])), report)


def search_cache_dir() -> Path:
    """Where evaluations are cached across graph runs and restarts."""
    return Path(folder_paths.get_user_directory()) / "tmpdiff" / "search_cache"


class _Sampling:
    """One calibration setup: samples it at any per-step precision list with ComfyUI's sampler."""

    def __init__(
        self,
        model,
        noise,
        latent,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        vae,
    ):
        self.model, self.noise, self.latent, self.seed = model, noise, latent, seed
        self.steps, self.cfg = steps, cfg
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.positive, self.negative, self.vae = positive, negative, vae

    def latents(self, per_step: list[str]) -> torch.Tensor:
        patched = apply_schedule(self.model, Schedule.from_precisions(per_step))
        return comfy.sample.sample(
            patched,
            self.noise,
            self.steps,
            self.cfg,
            self.sampler_name,
            self.scheduler,
            self.positive,
            self.negative,
            self.latent,
            denoise=1.0,
            disable_pbar=True,
            seed=self.seed,
        )

    def images(self, per_step: list[str]):
        latents = self.latents(per_step).float()
        if self.vae is None:  # compare latents as pseudo-images: first three channels, squashed
            images = torch.sigmoid(latents[:, :3])
        else:
            images = self.vae.decode(latents).float()
            images = images.reshape(-1, *images.shape[-3:]).movedim(-1, 1).clamp(0, 1)
        return images, latents

    def settings(self, prepared) -> dict:
        base = self.model.model
        return {
            "model": model_fingerprint(self.model.get_model_object("diffusion_model")),
            "patches": _digest_patches(self.model),
            "layers": sorted(prepared.layers),
            "backends": prepared.backends,
            "model_class": type(base).__name__,
            "positive": tensor_digest(self.positive),
            "negative": tensor_digest(self.negative),
            "noise": tensor_digest(self.noise),
            "latent": tensor_digest(self.latent),
            "sampler": [self.sampler_name, self.scheduler, self.cfg],
            "vae": None if self.vae is None else model_fingerprint(self.vae.first_stage_model),
        }

    def boundaries(self) -> tuple[list[float], str]:
        """The run's step grid on the normalized axis (the schedule's boundaries) and its name."""
        model_sampling = self.model.get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(model_sampling, self.scheduler, self.steps)
        times = boundaries_from_times(normalized_times(model_sampling, sigmas.float().tolist()))
        axis = "sigma" if isinstance(model_sampling, comfy.model_sampling.CONST) else "t"
        if all(a > b for a, b in zip(times, times[1:], strict=False)):
            return times, axis
        return [1.0 - i / self.steps for i in range(self.steps + 1)], axis  # ties: keep the order

    def schedule(self, allocation, table, target, target_value, evaluator) -> Schedule:
        best = allocation.best
        boundaries, axis = self.boundaries()
        height, width = (int(d) * 8 for d in self.latent.shape[-2:])
        return Schedule(
            list(best.precisions),
            boundaries,
            time_axis=axis,
            name=f"search-{target.split()[0]}-{target_value:g}",
            description=f"Searched in ComfyUI for {target} {target_value:g} ({evaluator.count} schedules evaluated).",
            model=ModelInfo(
                id=type(self.model.model).__name__, fingerprint=evaluator.settings["model"]
            ),
            sampler=SamplerInfo(
                self.sampler_name, self.scheduler, self.steps, self.cfg, width, height
            ),
            quality={k: v for k, v in best.quality.summary().items() if math.isfinite(v)},
            cost=table.to_cost_info(best.precisions),
            search={
                "target": target,
                "target_value": target_value,
                "evaluations": evaluator.count,
                "phases": allocation.phases,
                "front": [p.to_dict() for p in allocation.front],
            },
        )


def _target(target: str, value: float):
    from tmpdiff_core.search.allocate import ParetoTarget, QualityTarget, SpeedupTarget

    if target == "speed-up":
        return SpeedupTarget(max(value, 1.0))
    if target == "quality (SSIM)":
        return QualityTarget(min(max(value, 1e-6), 1.0))
    if target == "pareto front":
        return ParetoTarget(ssim=min(max(value, 0.0), 1.0))
    raise ScheduleError(f"unknown target {target!r}; expected one of {TARGETS}")


def _cost_table(kind: str, text: str, precisions, sampling: _Sampling):
    from tmpdiff_core.search.cost import CostTable, measure_costs, nominal_costs

    if kind == "nominal (bits)":
        return nominal_costs(precisions)
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ScheduleError(
                f'cost_json is not valid JSON ({err}); e.g. {{"bf16": 1.0, "fp8": 0.55}}'
            ) from None
        table = CostTable.from_dict(data)
        table.check(precisions)
        return table
    if kind == "measure here":
        device = sampling.model.load_device
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        return measure_costs(
            lambda p: sampling.latents([p] * sampling.steps),
            precisions,
            warmup=1,
            repeats=3,
            device=name,
            sync=sync,
        )
    raise ScheduleError(f"unknown costs {kind!r}; expected one of {COSTS}")


def _digest_patches(model) -> str | None:
    if not model.patches:
        return None
    return tensor_digest({k: [repr(p[1:]) for p in v] for k, v in model.patches.items()}) + str(
        model.patches_uuid
    )
