"""Exact optimization of the step model under a cost budget (dynamic programming).

The model (``additive.StepModel``) is a chain: single-step terms plus adjacent-pair terms
weighted by the pair's position in its run of low-precision steps. So the best schedule of every
total cost is a shortest path through a trellis whose state is (step, precision of this step,
length of the current low-precision run capped at ``RUN_BUCKETS``, cost so far). Costs are
rounded *up* to ``resolution`` units per reference step, so a schedule that fits the budget in
units fits it in real costs too. One pass gives the model's whole Pareto front; a budget query
is a prefix minimum. Runtime O(N · S · P · N·resolution) with S = 1 + (P-1)·3 states: a few
milliseconds for N = 50 with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .additive import RUN_BUCKETS

__all__ = ["ModelFront", "solve"]


@dataclass
class ModelFront:
    """The model-optimal schedule for every cost (in units); query with ``best_within``."""

    units: np.ndarray  # (P,) integer cost of one step per precision
    unit_size: float  # real cost of one unit
    value: np.ndarray  # (S, T+1) best predicted loss ending in state s with cost c
    back: np.ndarray  # (N, S, T+1) predecessor state
    state_precision: np.ndarray  # (S,) precision index of each state

    @property
    def steps(self) -> int:
        return self.back.shape[0]

    def best_per_cost(self) -> np.ndarray:
        """Best predicted loss of a schedule of exactly each cost (inf if none)."""
        return self.value.min(axis=0)

    def _trace(self, c: int) -> list[int]:
        s = int(self.value[:, c].argmin())
        out = [int(self.state_precision[s])]
        for t in range(self.steps - 1, 0, -1):
            prev = int(self.back[t, s, c])
            c -= int(self.units[self.state_precision[s]])
            s = prev
            out.append(int(self.state_precision[s]))
        return out[::-1]

    def best_within(self, budget: float) -> tuple[list[int], float] | None:
        """Indices of the model-best schedule with cost ≤ ``budget`` and its predicted loss."""
        limit = min(int(math.floor(budget / self.unit_size + 1e-9)), self.value.shape[1] - 1)
        if limit < 0:
            return None
        best = self.best_per_cost()[: limit + 1]
        if not np.isfinite(best).any():
            return None
        c = int(np.argmin(best))
        return self._trace(c), float(best[c])

    def front(self) -> list[tuple[float, float, list[int]]]:
        """``(cost, predicted loss, indices)`` of every model-Pareto-optimal cost level."""
        best = self.best_per_cost()
        out, running = [], math.inf
        for c in range(len(best)):
            if best[c] < running - 1e-15:
                running = best[c]
                out.append((c * self.unit_size, float(best[c]), self._trace(c)))
        return out


def _states(p: int, k: int):
    """State list ``(precision, run length)`` and, per state, its ``(prev state, coef index)``
    predecessors (coef index 0: no pair term)."""
    states = [(0, 0)] + [(q, r) for q in range(1, p) for r in range(1, k + 1)]
    index = {s: i for i, s in enumerate(states)}
    preds: list[list[tuple[int, int]]] = []
    for q, r in states:
        if q == 0:
            preds.append([(i, 0) for i in range(len(states))])
        elif r == 1:
            preds.append([(0, 0)])
        else:
            lens = [r - 1] if r < k else [k - 1, k]
            preds.append([(index[(qp, rp)], min(rp, k)) for qp in range(1, p) for rp in lens])
    return states, preds


def solve(
    single: np.ndarray,
    pair: np.ndarray,
    costs: Sequence[float],
    *,
    coef: Sequence[float] | None = None,
    resolution: int = 200,
) -> ModelFront:
    """Run the trellis DP.

    Args:
        single: ``(N, P)`` per-step losses.
        pair: ``(N-1, P, P)`` adjacent interactions (``pair[t, p, q]``: step t at p, t+1 at q).
        costs: ``(P,)`` cost of one step per precision; ``costs[0]`` is the reference.
        coef: ``(a, b1, …, bK)`` model weights (``StepModel.coef``); all 1 by default.
        resolution: units per reference-step cost (200 → 0.5 % granularity).
    """
    n, p = single.shape
    k = RUN_BUCKETS
    w = np.ones(1 + k) if coef is None else np.asarray(coef, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    unit_size = costs[0] / resolution
    units = np.ceil(costs / unit_size - 1e-9).astype(np.int64)
    total = int(n * units.max())
    states, preds = _states(p, k)
    prec = np.array([q for q, _ in states])
    value = np.full((len(states), total + 1), np.inf)
    back = np.zeros((n, len(states), total + 1), dtype=np.int16)
    for s, (q, r) in enumerate(states):
        if r <= 1:
            value[s, units[q]] = w[0] * single[0, q]
    cols = np.arange(total + 1)
    for t in range(1, n):
        new = np.full_like(value, np.inf)
        for s, (q, _) in enumerate(states):
            src = [sp for sp, _ in preds[s]]
            add = np.array([w[ci] * pair[t - 1, prec[sp], q] if ci else 0.0 for sp, ci in preds[s]])
            cand = value[src] + add[:, None]
            arg = cand.argmin(axis=0)
            best = cand[arg, cols]
            u = int(units[q])
            new[s, u:] = best[: total + 1 - u] + w[0] * single[t, q]
            back[t, s, u:] = np.asarray(src)[arg[: total + 1 - u]]
        value = new
    return ModelFront(units, unit_size, value, back, prec)
