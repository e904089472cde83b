"""``RunPlan``: a schedule resolved onto one sampling run's own step grid.

A sampler integration (the ComfyUI wrapper, a custom loop) knows the run's step grid in the
sampler's own noise units (ComfyUI's ``sample_sigmas``: N+1 decreasing values, usually ending at 0)
and, for each denoiser call, the noise level of that call. ``plan_run`` resolves the schedule
once per run; ``RunPlan.precision_at(sigma)`` then answers per call with the interval rule of
``timeaxis.step_of``, applied in raw sigma units against the grid itself, so samplers that call the
model between grid points (DPM-2) or twice per step (Heun) and cond/uncond batches all land in the
right step without counting calls.

Only when the schedule has a different number of steps than the run does the plan need the grid
on the normalized time axis (``times``): the schedule is then resampled by time
(``Schedule.for_grid``). The helpers below turn what samplers know into that axis:

* flow-matching models (Flux, SD3, …): sigma already lies in [0, 1]; ``t = sigma``;
* DDPM-style models (SD1.x, SDXL): ``t = timestep / num_train_timesteps`` (the diffusers rule);
* anything else with a known sigma range: log-sigma position between ``sigma_min`` and
  ``sigma_max`` (EDM-style continuous schedules).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ScheduleError
from .schedule import Schedule
from .timeaxis import step_of


@dataclass(frozen=True)
class RunPlan:
    """Per-step precisions of one run, and the run's grid in the sampler's noise units.

    ``sigmas`` has N+1 non-increasing values; ``precisions`` has N names.
    ``resampled_from`` is the schedule's own step count when it differs from N.
    """

    sigmas: tuple[float, ...]
    precisions: tuple[str, ...]
    resampled_from: int | None = None

    @property
    def steps(self) -> int:
        return len(self.precisions)

    def step_at(self, sigma: float) -> int:
        """The step whose interval ``(sigmas[i+1], sigmas[i]]`` holds this call's noise level."""
        return step_of(sigma, self.sigmas)

    def precision_at(self, sigma: float) -> str:
        """The precision a denoiser call at noise level ``sigma`` runs at."""
        return self.precisions[self.step_at(sigma)]

    def summary(self) -> str:
        """``"4 steps: bf16×2 fp8×2 (resampled from 28)"``: the one-line log form."""
        parts = " ".join(f"{p}×{n}" for p, n in Counter(self.precisions).items())
        extra = f" (resampled from {self.resampled_from})" if self.resampled_from else ""
        return f"{self.steps} steps: {parts}{extra}"


def plan_run(
    schedule: Schedule, sigmas: Sequence[float], times: Sequence[float] | None = None
) -> RunPlan:
    """Resolve ``schedule`` onto a run's grid.

    Args:
        schedule: the precision schedule.
        sigmas: the run's N+1 grid points in the sampler's units, decreasing (noise → clean).
        times: the same points on the normalized axis (1 = noise, 0 = clean). Required only when
            ``schedule.steps != N``; see ``times_from_*`` and ``boundaries_from_times``.

    Raises:
        ScheduleError: the grid has fewer than two points or increases, or the step counts
            differ and no ``times`` were given.
    """
    grid = tuple(float(s) for s in sigmas)
    n = len(grid) - 1
    if n < 1:
        raise ScheduleError(f"a sampling run needs at least 2 sigmas (one step), got {len(grid)}")
    if any(b > a for a, b in zip(grid, grid[1:], strict=False)):
        raise ScheduleError(
            f"the run's sigmas must decrease (noise → clean), got {[round(s, 4) for s in grid]}"
        )
    if schedule.steps == n:
        return RunPlan(grid, tuple(schedule.precisions))
    if times is None:
        raise ScheduleError(
            f"the schedule has {schedule.steps} steps and the run {n}; resampling needs the "
            "run's grid on the normalized time axis (pass times=...)"
        )
    if len(times) != len(grid):
        raise ScheduleError(f"times has {len(times)} values for {len(grid)} sigmas")
    precisions = schedule.for_grid(boundaries_from_times(times))
    return RunPlan(grid, tuple(precisions), resampled_from=schedule.steps)


def boundaries_from_times(times: Sequence[float]) -> list[float]:
    """Clamp to [0, 1] and make non-increasing (float noise can reorder near-equal neighbours)."""
    out: list[float] = []
    for t in times:
        t = min(max(float(t), 0.0), 1.0)
        out.append(min(t, out[-1]) if out else t)
    return out


def times_from_flow_sigmas(sigmas: Sequence[float]) -> list[float]:
    """Flow-matching models: sigma is the normalized time already."""
    return [float(s) for s in sigmas]


def times_from_timesteps(timesteps: Sequence[float], num_train_timesteps: int) -> list[float]:
    """DDPM-style models: ``t = timestep / num_train_timesteps`` (diffusers' convention)."""
    if num_train_timesteps <= 0:
        raise ValueError(f"num_train_timesteps must be positive, got {num_train_timesteps}")
    return [float(t) / num_train_timesteps for t in timesteps]


def times_from_log_sigmas(
    sigmas: Sequence[float], sigma_min: float, sigma_max: float
) -> list[float]:
    """Any schedule with a known range: position of ``log sigma`` between the ends (0 at σ=0)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return [0.0 if s <= 0 else (math.log(s) - lo) / (hi - lo) for s in sigmas]
