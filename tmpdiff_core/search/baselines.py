"""Baselines measured in the same harness (same evaluator, cache and cost table).

- ``uniform``: every step at one precision, for each candidate (P evaluations).
- ``greedy``: rank steps by single-step sensitivity per unit of cost saved and lower them in that
  order until the budget is met; this is what the additive hypothesis alone suggests, and what
  misses the optimum once many steps are low precision (1 evaluation given the ``d_t(p)``).
- ``random_search``: the best of ``count`` random schedules within the budget.
- ``exhaustive``: all ``P^N`` schedules (refused above ``max_evaluations``); the ground truth for
  small N.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ..errors import TmpdiffError
from .additive import StepModel
from .cost import CostTable
from .evaluator import Evaluator
from .pareto import Point, best_within, make_point

__all__ = ["exhaustive", "greedy", "greedy_for_quality", "greedy_path", "random_search", "uniform"]


class SearchTooLargeError(TmpdiffError, ValueError):
    """Exhaustive enumeration of more schedules than allowed."""


def uniform(evaluator: Evaluator, costs: CostTable) -> list[Point]:
    """One point per candidate precision, every step at it."""
    out = []
    for p in evaluator.precisions:
        s = (p,) * evaluator.steps
        out.append(make_point(s, evaluator.evaluate(s), costs, f"uniform {p}"))
    return out


def greedy_path(
    precisions: Sequence[str], costs: CostTable, model: StepModel
) -> list[tuple[str, ...]]:
    """Schedules from all-reference down to all-cheapest, one step lowered at a time.

    Each move takes the (step, cheaper precision) with the smallest single-step loss increase
    per unit of cost saved: a ranking by single-step sensitivity, blind to interactions.
    """
    unit = [costs[p] for p in precisions]
    x = [0] * model.steps
    path = [tuple(precisions[i] for i in x)]
    while True:
        best, best_key = None, None
        for t, cur in enumerate(x):
            for q in range(len(precisions)):
                saved = unit[cur] - unit[q]
                if saved <= 0:
                    continue
                key = (model.single[t, q] - model.single[t, cur]) / saved
                if best_key is None or key < best_key:
                    best, best_key = (t, q), key
        if best is None:
            return path
        x[best[0]] = best[1]
        path.append(tuple(precisions[i] for i in x))


def greedy(evaluator: Evaluator, costs: CostTable, model: StepModel, budget: float) -> Point | None:
    """The first schedule of ``greedy_path`` within the budget (1 evaluation)."""
    for s in greedy_path(evaluator.precisions, costs, model):
        if costs.schedule_cost(s) <= budget * (1 + 1e-9):
            return make_point(s, evaluator.evaluate(s), costs, "greedy")
    return None


def greedy_for_quality(
    evaluator: Evaluator, costs: CostTable, model: StepModel, ssim: float
) -> Point | None:
    """The cheapest schedule of ``greedy_path`` meeting ``ssim`` (bisection: log2 N evaluations)."""
    path = greedy_path(evaluator.precisions, costs, model)
    lo, hi = 0, len(path) - 1  # path[0] is the reference: always meets the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if evaluator.evaluate(path[mid]).ssim >= ssim:
            lo = mid
        else:
            hi = mid - 1
    return make_point(path[lo], evaluator.evaluate(path[lo]), costs, "greedy")


def random_search(
    evaluator: Evaluator, costs: CostTable, budget: float, count: int, *, seed: int = 0
) -> Point | None:
    """The best measured of ``count`` random schedules with cost ≤ ``budget``.

    Each schedule first draws its low-precision fraction, then each step, and is redrawn (up to
    1000 times) until it fits the budget, so cheap budgets still get varied samples.
    """
    rng = np.random.default_rng(seed)
    precs = evaluator.precisions
    scheds: list[tuple[str, ...]] = []
    tries = 0
    while len(scheds) < count and tries < 1000 * count:
        tries += 1
        frac = rng.random()
        s = tuple(
            precs[1 + rng.integers(len(precs) - 1)] if rng.random() < frac else precs[0]
            for _ in range(evaluator.steps)
        )
        if costs.schedule_cost(s) <= budget * (1 + 1e-9):
            scheds.append(s)
    if not scheds:
        return None
    qs = evaluator.evaluate_many(scheds, desc="random baseline")
    pts = [make_point(s, q, costs, "random") for s, q in zip(scheds, qs, strict=True)]
    return best_within(pts, budget)


def exhaustive(
    evaluator: Evaluator, costs: CostTable, *, max_evaluations: int = 20_000
) -> list[Point]:
    """Every schedule (``P^N`` evaluations): the ground truth for small N (e.g. N ≤ 8, P = 3)."""
    precs: Sequence[str] = evaluator.precisions
    total = len(precs) ** evaluator.steps
    if total > max_evaluations:
        raise SearchTooLargeError(
            f"exhaustive search over {len(precs)}^{evaluator.steps} = {total} schedules exceeds "
            f"max_evaluations={max_evaluations}; lower the step count or raise the limit"
        )
    scheds = list(itertools.product(precs, repeat=evaluator.steps))
    qs = evaluator.evaluate_many(scheds, desc="exhaustive")
    return [make_point(s, q, costs, "exhaustive") for s, q in zip(scheds, qs, strict=True)]
