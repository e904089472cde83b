"""``apply_schedule``: run every denoising step of a diffusers pipeline at its scheduled precision.

A ``diffusers.hooks.ModelHook`` on the denoiser reads, before each call, the ``timestep`` the
denoiser receives, converts it to scheduler units with the pipeline's adapter
(``pipeline_adapters.py``), places it on the step grid the scheduler holds *at that moment*
(``scheduler.timesteps / num_train_timesteps`` plus the final 0; pipelines call ``set_timesteps``
inside ``__call__``) and switches the prepared model to that step's precision. Calls are never
counted: CFG batching, true-CFG's second call, skip-layer guidance and second-order correctors all
land on the step their noise level belongs to (``timeaxis.step_of``).

    prepare(pipe.transformer, precisions=["bf16", "fp8"])
    handle = apply_schedule(pipe, Schedule.from_precisions(["fp8", "bf16", "fp8", "bf16"]))
    image = pipe(prompt, num_inference_steps=4).images[0]
    remove_schedule(pipe)          # hook gone, model back at the reference precision

Apply before ``torch.compile``: the hook reads the timestep with ``.item()``, which is a graph
break inside a compiled forward (correct, but one break per call).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from .errors import PrepareError, ScheduleError
from .pipeline_adapters import (
    PipelineAdapter,
    UnsupportedPipelineError,
    adapter_for,
    get_timestep_kind,
    supported_pipelines,
    timestep_kinds,
    unsupported_message,
)
from .prepare import PreparedModel, get_prepared
from .schedule import Schedule
from .timeaxis import step_of

logger = logging.getLogger(__name__)

_TMPDIFF_SCHEDULE_HOOK = "tmpdiff_schedule"  # shared by apply_schedule and remove_schedule
_DENOISER_ATTRS = ("transformer", "unet")


class TraceEntry(NamedTuple):
    """One denoiser call: its step on the run's grid, its timestep and the precision it ran at.

    ``timestep`` is in scheduler units (the values of ``scheduler.timesteps`` and of the ``t``
    a ``callback_on_step_end`` sees), whatever the pipeline actually passed the denoiser.
    """

    step: int
    timestep: float
    precision: str


class ScheduleHandle:
    """What ``apply_schedule`` returns: the applied schedule and what the current run does.

    Attributes:
        schedule (`Schedule`): the schedule as given (not resampled).
        denoiser (`nn.Module`): the module carrying the hook.
        scheduler: the scheduler whose ``timesteps`` define the run's step grid.
        prepared (`PreparedModel`): the denoiser's prepare handle (``.state`` is switched).
        timestep_kind (`str`): how the denoiser's timestep maps to scheduler units.
        trace (`list[TraceEntry] | None`): with ``trace=True``, one entry per denoiser call of the
            current generation (cleared when the next generation starts); ``None`` otherwise.
        grid (`list[float] | None`): normalized step boundaries of the current run (N + 1 values).
        plan (`list[str] | None`): the precision of each step of the current run.
    """

    def __init__(
        self,
        schedule: Schedule,
        denoiser: nn.Module,
        scheduler: Any,
        prepared: PreparedModel,
        timestep_kind: str,
        label: str,
        trace: bool,
        time_axis: str | None = None,
    ) -> None:
        self.schedule = schedule
        self.denoiser = denoiser
        self.scheduler = scheduler
        self.prepared = prepared
        self.timestep_kind = timestep_kind
        self.label = label
        self.trace: list[TraceEntry] | None = [] if trace else None
        self.time_axis = time_axis  # the run's time axis, when the adapter knows it
        self.grid: list[float] | None = None
        self.plan: list[str] | None = None

    def remove(self) -> None:
        """Same as ``remove_schedule(self.denoiser)``."""
        remove_schedule(self.denoiser)

    def __repr__(self) -> str:
        return (
            f"ScheduleHandle({self.label}, schedule={self.schedule.summary()!r}, "
            f"timestep_kind={self.timestep_kind!r}, trace={self.trace is not None})"
        )


class PrecisionScheduleHook(ModelHook):
    """Sets the prepared model's precision before each denoiser call from the call's timestep.

    Not a stateful hook in diffusers' sense: it has no per-context state to reset, and it notices a
    new generation by itself (the scheduler holds a new ``timesteps`` tensor, or the step index
    goes backwards).
    """

    def __init__(self, handle: ScheduleHandle, timestep_arg: str, timestep_pos: int | None):
        super().__init__()
        self.handle = handle
        self.timestep_arg = timestep_arg
        self.timestep_pos = timestep_pos
        self._to_units = get_timestep_kind(handle.timestep_kind).to_scheduler_units
        self._num_train = float(handle.scheduler.config.num_train_timesteps)
        self._source: torch.Tensor | None = None  # the scheduler.timesteps the grid came from
        self._plans: dict[tuple[float, ...], list[str]] = {}
        self._last_step = -1

    def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any):
        h = self.handle
        value, dtype = self._received_timestep(args, kwargs)
        units = float(self._to_units(value, module))
        new_generation = self._refresh_grid()
        step = _locate(units / self._num_train, h.grid, dtype)
        if step < self._last_step:
            new_generation = True
        if new_generation:
            self._start_generation()
        self._last_step = step
        precision = h.plan[step]
        h.prepared.state.set(precision)
        if h.trace is not None:
            h.trace.append(TraceEntry(step, units, precision))
        return args, kwargs

    # ---------------------------------------------------------------- helpers
    def _received_timestep(self, args: tuple, kwargs: dict) -> tuple[float, torch.dtype | None]:
        if self.timestep_arg in kwargs:
            t = kwargs[self.timestep_arg]
        elif self.timestep_pos is not None and len(args) > self.timestep_pos:
            t = args[self.timestep_pos]
        else:
            raise ScheduleError(
                f"{self.handle.label}: the denoiser was called without {self.timestep_arg!r}, so "
                "this call cannot be placed on the step grid"
            )
        if isinstance(t, torch.Tensor):
            # Every supported pipeline gives the whole (CFG-doubled) batch one timestep.
            return t.reshape(-1)[0].item(), t.dtype
        return float(t), None

    def _refresh_grid(self) -> bool:
        """Rebuild grid and plan if the scheduler holds new timesteps; True if it did."""
        h = self.handle
        timesteps = getattr(h.scheduler, "timesteps", None)
        if timesteps is None:
            raise ScheduleError(
                f"{h.label}: scheduler.timesteps is None; the hook places calls on the grid the "
                "scheduler holds, so call scheduler.set_timesteps(...) before the denoiser (a "
                "pipeline's __call__ does)"
            )
        if timesteps is self._source:
            return False
        grid = _runtime_grid(timesteps, self._num_train, type(h.scheduler).__name__)
        key = tuple(round(b, 9) for b in grid)
        plan = self._plans.get(key)
        if plan is None:
            plan = h.schedule.for_grid(grid)
            self._plans[key] = plan
            if len(plan) != h.schedule.steps:
                axes = ""
                if h.time_axis is not None and h.time_axis != h.schedule.time_axis:
                    axes = f" (schedule axis {h.schedule.time_axis!r}, run axis {h.time_axis!r})"
                logger.info(
                    "tmpdiff: %s: the schedule has %d steps, this run %d; resampled by time%s: %s",
                    h.label,
                    h.schedule.steps,
                    len(plan),
                    axes,
                    " ".join(plan),
                )
        self._source = timesteps
        h.grid, h.plan = grid, plan
        return True

    def _start_generation(self) -> None:
        h = self.handle
        if h.trace is not None:
            h.trace.clear()
        logger.info("tmpdiff: %s: %s", h.label, _plan_summary(h.plan))


def apply_schedule(
    target: Any,
    schedule: Schedule | Sequence[str],
    scheduler: Any = None,
    *,
    timestep_kind: str | None = None,
    trace: bool = False,
) -> ScheduleHandle:
    """Run each denoising step of ``target`` at the precision ``schedule`` gives it.

    Args:
        target: a supported diffusers pipeline (``tmpdiff_core.supported_pipelines()``), any
            object with a ``.transformer``/``.unet`` and a ``.scheduler`` (then ``timestep_kind``
            is required), or a bare denoiser ``nn.Module`` (then ``scheduler`` and
            ``timestep_kind`` are required). The denoiser must be ``prepare``-d with every
            precision the schedule uses.
        schedule (`Schedule` or `list[str]`): per-step precisions; a list becomes
            ``Schedule.from_precisions(list)``. A schedule for another step count is resampled
            by time onto the run's grid (one INFO log line); the same step count applies index
            by index.
        scheduler: the scheduler whose ``timesteps`` define the step grid; defaults to
            ``target.scheduler``. It is read at every call, so ``set_timesteps`` may run later.
        timestep_kind (`str`, *optional*): how the denoiser's ``timestep`` relates to
            ``scheduler.timesteps``: ``"flux"`` (divided by 1000, as FluxPipeline and tmpdiff's
            ReferenceModel pass it), ``"scheduler"`` (unchanged), ``"sana"`` (×
            ``timestep_scale``). Required for targets without a registered adapter; overrides
            the adapter otherwise.
        trace (`bool`, defaults to `False`): record ``(step, timestep, precision)`` per denoiser
            call of the current generation in ``handle.trace``.

    Returns:
        `ScheduleHandle`: ``.trace``, ``.plan``, ``.grid`` of the current run, ``.remove()``.

    Everything that can be checked before generating is checked here: the target is prepared
    (``PrepareError``), every scheduled precision was prepared (``UnknownPrecisionError``), no
    per-layer-group plan (``ScheduleError``), a known pipeline (``UnsupportedPipelineError``).
    Applying again to the same denoiser replaces the previous schedule (logged at INFO).
    """
    denoiser, sched, adapter, label = _resolve(target, scheduler, timestep_kind)
    kind = timestep_kind if timestep_kind is not None else adapter.timestep_kind
    get_timestep_kind(kind)
    schedule = _as_schedule(schedule)
    prepared = get_prepared(denoiser)
    if schedule.layer_groups:
        raise ScheduleError(
            f"per-layer-group schedules are not executed yet; this schedule has layer_groups "
            f"{sorted(schedule.layer_groups)}. Drop 'layer_groups' to run its per-step plan."
        )
    for name in dict.fromkeys(schedule.precisions):
        prepared.state.index_of(name)  # UnknownPrecisionError naming what was prepared
    num_train = getattr(getattr(sched, "config", None), "num_train_timesteps", None)
    if not hasattr(sched, "timesteps") or not num_train:
        raise ScheduleError(
            f"{label}: scheduler {type(sched).__name__} has no 'timesteps' or no "
            "config.num_train_timesteps; pass a diffusers scheduler as scheduler="
        )
    timestep_arg = adapter.timestep_arg if adapter is not None else "timestep"
    timestep_pos = _positional_index(denoiser, timestep_arg, label)

    registry = HookRegistry.check_if_exists_or_initialize(denoiser)
    if registry.get_hook(_TMPDIFF_SCHEDULE_HOOK) is not None:
        logger.info("tmpdiff: %s: replacing the schedule applied earlier", label)
        registry.remove_hook(_TMPDIFF_SCHEDULE_HOOK, recurse=False)
    axis = adapter.time_axis if adapter is not None else None
    handle = ScheduleHandle(schedule, denoiser, sched, prepared, kind, label, trace, axis)
    registry.register_hook(
        PrecisionScheduleHook(handle, timestep_arg, timestep_pos), _TMPDIFF_SCHEDULE_HOOK
    )
    prepared.state.set(prepared.precisions[0])
    return handle


def remove_schedule(target: Any) -> None:
    """Remove the schedule hook and put the model back at its reference precision.

    ``target`` is what was given to ``apply_schedule`` (pipeline, container or denoiser). Removing
    when nothing is applied does nothing; the forward signature is the original again.
    """
    denoiser = _denoiser_of(target)
    if denoiser is None:
        raise UnsupportedPipelineError(
            f"{type(target).__name__} is neither an nn.Module nor has a .transformer/.unet"
        )
    registry = getattr(denoiser, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(_TMPDIFF_SCHEDULE_HOOK) is not None:
        registry.remove_hook(_TMPDIFF_SCHEDULE_HOOK, recurse=False)
    try:
        prepared = get_prepared(denoiser)
    except PrepareError:  # unprepared since: nothing to reset
        return
    prepared.state.set(prepared.precisions[0])


def get_schedule_handle(target: Any) -> ScheduleHandle | None:
    """The handle of the schedule applied to ``target``'s denoiser, or ``None``."""
    denoiser = _denoiser_of(target)
    registry = getattr(denoiser, "_diffusers_hook", None)
    hook = registry.get_hook(_TMPDIFF_SCHEDULE_HOOK) if registry is not None else None
    return hook.handle if hook is not None else None


# -------------------------------------------------------------------- resolution
def _resolve(
    target: Any, scheduler: Any, timestep_kind: str | None
) -> tuple[nn.Module, Any, PipelineAdapter | None, str]:
    """(denoiser, scheduler, adapter or None, label) for any accepted target."""
    if isinstance(target, nn.Module):
        if scheduler is None or timestep_kind is None:
            kinds = ", ".join(repr(k) for k in timestep_kinds())
            raise UnsupportedPipelineError(
                f"a bare denoiser ({type(target).__name__}) needs scheduler= (whose timesteps "
                f"give the step grid) and timestep_kind= (one of {kinds}); or pass the pipeline "
                f"itself (supported: {', '.join(supported_pipelines())})"
            )
        return target, scheduler, None, type(target).__name__
    label = type(target).__name__
    adapter = adapter_for(target)
    if adapter is None:
        if timestep_kind is None:
            raise UnsupportedPipelineError(unsupported_message(label))
        denoiser = _denoiser_of(target)
        if denoiser is None:
            raise UnsupportedPipelineError(
                f"{label} has no .transformer or .unet module to schedule; pass the denoiser "
                "itself with scheduler= and timestep_kind="
            )
    else:
        denoiser = getattr(target, adapter.denoiser_attr, None)
        if not isinstance(denoiser, nn.Module):
            raise UnsupportedPipelineError(f"{label}.{adapter.denoiser_attr} is not a module")
    sched = scheduler if scheduler is not None else getattr(target, "scheduler", None)
    if sched is None:
        raise ScheduleError(f"{label} has no .scheduler; pass scheduler=")
    return denoiser, sched, adapter, label


def _denoiser_of(target: Any) -> nn.Module | None:
    if isinstance(target, nn.Module):
        return target
    adapter = adapter_for(target)
    attrs = (adapter.denoiser_attr,) if adapter is not None else _DENOISER_ATTRS
    for attr in attrs:
        module = getattr(target, attr, None)
        if isinstance(module, nn.Module):
            return module
    return None


def _as_schedule(schedule: Any) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, (list, tuple)):
        return Schedule.from_precisions(list(schedule))
    raise TypeError(
        f"schedule must be a Schedule or a list of precision names, got {type(schedule).__name__}"
        "; read a file with Schedule.load(path) (or a Hub name with load_schedule) first"
    )


def _positional_index(denoiser: nn.Module, arg: str, label: str) -> int | None:
    """Position of ``arg`` among ``forward``'s positional parameters (``None`` if keyword-only)."""
    params = list(inspect.signature(denoiser.forward).parameters.values())
    positional = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if arg in positional:
        return positional.index(arg)
    if any(p.name == arg or p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    raise UnsupportedPipelineError(
        f"{label}: {type(denoiser).__name__}.forward has no {arg!r} parameter; register an "
        "adapter with the right timestep_arg"
    )


# -------------------------------------------------------------------- the step grid
def _runtime_grid(timesteps: Any, num_train: float, scheduler_name: str) -> list[float]:
    """``scheduler.timesteps`` normalized to [0, 1] plus the final 0: N + 1 boundaries.

    Consecutive repeats collapse (Heun-style schedulers list each timestep twice). A grid that
    goes up anywhere is not a denoising schedule this hook can follow.
    """
    values = [float(v) / num_train for v in torch.as_tensor(timesteps).reshape(-1).tolist()]
    starts = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    if not starts:
        raise ScheduleError(f"{scheduler_name}.timesteps is empty; call set_timesteps first")
    if any(b > a for a, b in zip(starts, starts[1:], strict=False)):
        raise ScheduleError(
            f"{scheduler_name}.timesteps do not decrease ({[round(v, 4) for v in starts]} "
            "normalized); tmpdiff follows noise → clean schedulers only"
        )
    return [*starts, min(0.0, starts[-1])]


def _locate(t: float, grid: list[float], dtype: torch.dtype | None) -> int:
    """The step of normalized time ``t`` on ``grid``, tolerant of the timestep's own rounding.

    Pipelines may cast the timestep to the latents' dtype before the denoiser sees it (Flux:
    ``t.to(bf16) / 1000``), so a grid point 0.71429 can arrive as 0.71484: above the boundary, in
    the previous step by the strict rule. A value within 2·eps (relative) of the received dtype
    of a step start is that step start; anything else (a corrector's intermediate point) follows
    ``timeaxis.step_of``'s interval rule.
    """
    n = len(grid) - 1
    step = step_of(t, grid)  # a repeated final 0 (DDIM 'leading') still maps to step n-1
    if dtype is None or not dtype.is_floating_point:
        return step
    tol = 2.0 * torch.finfo(dtype).eps
    best, best_err = step, None
    for j in (step - 1, step, step + 1):
        if 0 <= j < n:
            err = abs(t - grid[j])
            if err <= tol * max(abs(grid[j]), abs(t)) and (best_err is None or err < best_err):
                best, best_err = j, err
    return best


def _plan_summary(plan: list[str] | None) -> str:
    if not plan:
        return "no plan"
    counts: dict[str, int] = {}
    for p in plan:
        counts[p] = counts.get(p, 0) + 1
    parts = " ".join(f"{p}×{n}" for p, n in counts.items())
    return f"{len(plan)} steps: {parts} ({' '.join(plan)})"
