"""Compounding errors: the optimum interleaves precisions, single-step rankings miss it.

The synthetic run (``toy.CompoundingRun`` with ``compound=2``) scales each low-precision
step's error by 1 + 2·(number of low-precision steps right before it): a full-precision step resets
the run, as the issue observed on a small trained model. N = 6, 3 levels, 3^6 = 729 schedules.

Asserted: the allocator (pairs + run-position weights + refinement) is within ``SSIM_TOL`` = 0.005
of the exhaustive optimum at every target, while the purely additive allocator and the greedy
single-step ranking miss it by > 0.05 SSIM at 1.5x and 1.75x.
"""

from __future__ import annotations

import pytest

from tmpdiff_core.search import (
    AllocatorConfig,
    CostTable,
    Evaluator,
    SpeedupTarget,
    allocate,
    best_within,
    exhaustive,
)
from tmpdiff_core.search.baselines import greedy
from tmpdiff_core.search.toy import CompoundingRun

N = 6
SSIM_TOL = 0.005
PRECS = ("bf16", "int8wo", "int4wo")
COSTS = CostTable({"bf16": 1.0, "int8wo": 0.6, "int4wo": 0.35})


@pytest.fixture(scope="module")
def run():
    return CompoundingRun(N, PRECS, compound=2.0)


@pytest.fixture(scope="module")
def points(run):
    return exhaustive(Evaluator(run, steps=N, precisions=PRECS, progress=False), COSTS)


def _interleaved(schedule) -> bool:
    low = [p != "bf16" for p in schedule]
    first, last = low.index(True), len(low) - 1 - low[::-1].index(True)
    return not all(low[first : last + 1])


@pytest.mark.parametrize("speedup", [1.25, 1.5, 1.75, 2.0, 2.5])
def test_allocator_finds_interleaved_optimum(run, points, speedup):
    budget = COSTS.budget_for(N, speedup)
    opt = best_within(points, budget)
    got = allocate(
        Evaluator(run, steps=N, precisions=PRECS, progress=False), COSTS, SpeedupTarget(speedup)
    ).best
    assert got.cost <= budget * (1 + 1e-9)
    assert got.ssim >= opt.ssim - SSIM_TOL, (got.precisions, opt.precisions)


@pytest.mark.parametrize("speedup", [1.5, 1.75])
def test_additive_and_greedy_miss_it(run, points, speedup):
    budget = COSTS.budget_for(N, speedup)
    opt = best_within(points, budget)
    assert _interleaved(opt.precisions)
    ev = Evaluator(run, steps=N, precisions=PRECS, progress=False)
    additive = allocate(ev, COSTS, SpeedupTarget(speedup), AllocatorConfig(pairs=False, refine=0))
    assert additive.best.ssim < opt.ssim - 0.05
    assert greedy(ev, COSTS, additive.model, budget).ssim < opt.ssim - 0.05
