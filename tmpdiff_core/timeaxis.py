"""Where a denoiser call falls on the timeline: step intervals on a normalized time axis.

A schedule assigns a precision to each *interval* of the timeline, not to a call number: samplers
call the model a different number of times per step (Heun and DPM-2 twice, at sigmas that are not
in the step list; CFG may batch or split cond/uncond), so counting calls breaks. Instead each
caller (diffusers hook, ComfyUI wrapper) turns what the denoiser receives into a time ``t`` and
finds the step whose interval ``(b[i+1], b[i]]`` contains it. The rule is a pure function of the
noise level: a second-order corrector evaluated exactly at the next step's sigma runs at the next
step's precision, the precision the schedule gives that point of the timeline.

Times are normalized to ``[0, 1]`` with 1 = pure noise: sigma for flow-matching models, and
``timestep / num_train_timesteps`` for DDPM-style models.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

_REL_TOL = 1e-5


def step_of(t: float, boundaries: Sequence[float]) -> int:
    """Index ``i`` of the step whose interval ``(boundaries[i+1], boundaries[i]]`` holds ``t``.

    ``boundaries`` has N+1 strictly decreasing values (the N step starts and the final endpoint).
    Times above the first boundary clamp to step 0, at or below the last to step N-1. A small
    relative tolerance absorbs float16/float32 round trips of the same sigma.
    """
    n = len(boundaries) - 1
    if n < 1:
        raise ValueError("need at least two boundaries (one step)")
    scale = max(abs(boundaries[0]), abs(boundaries[-1]), 1e-12)
    t = float(t) - _REL_TOL * scale  # a value equal to b[i] up to rounding belongs to step i
    # i = last index with boundaries[i] >= t; boundaries decrease, so search the negated list
    neg = [-b for b in boundaries]
    i = bisect.bisect_right(neg, -t) - 1
    return min(max(i, 0), n - 1)


def resample_precisions(
    precisions: Sequence[str], boundaries: Sequence[float], new_boundaries: Sequence[float]
) -> list[str]:
    """Precisions for a new step grid: each new step takes the schedule's precision at its start.

    The model is evaluated at the start of a step, so the start time is what decides. With the
    same step count the schedule applies index by index (a schedule made for 28 steps keeps its
    meaning on a pipeline with another shift), otherwise by time.
    """
    n_new = len(new_boundaries) - 1
    if n_new == len(precisions):
        return list(precisions)
    return [precisions[step_of(new_boundaries[i], boundaries)] for i in range(n_new)]


def uniform_boundaries(steps: int) -> list[float]:
    """Evenly spaced boundaries 1 → 0 for ``steps`` steps (a neutral default grid)."""
    return [1.0 - i / steps for i in range(steps + 1)]
