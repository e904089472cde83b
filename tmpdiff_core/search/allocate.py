"""The allocator: which step runs at which precision, in O(N) evaluations.

Our reading of TMPDiff's adaptive bisection, and what we add to it:

1. **Probe** (``additive.probe``). For each low precision ``p``, bisect the timeline: measure a
   segment at ``p`` (the rest at the reference), split it in halves only while its loss is above
   a negligible level. Leaves are single steps (``d_t(p)``); a node whose loss differs from the
   sum of its halves records that non-additivity. ≤ 2N-1 evaluations per precision.
2. **Pairs.** Measure adjacent pairs at ``p`` (≤ N-1 per precision, many already measured as
   length-2 nodes): the compounding of neighbouring low-precision steps, which single-step
   sensitivities cannot see and which makes good schedules *interleave* low and full precision.
3. **Validate and calibrate** (``additive.validate``). R random schedules (few to many low
   steps) give Pearson/Spearman of predicted vs measured loss; with every multi-step schedule
   measured so far (the bisection's long segments included) they fit the model's weights
   ``a·Σd + Σ b_r·I`` — ``b_r`` by the pair's position r in its low-precision run (1, 2, ≥3),
   so long runs that compound beyond pairs are learnt from measurements.
4. **Optimize** (``optimize.solve``). The calibrated model is a chain (state: precision and run
   position), so the best schedule of every cost is an exact trellis DP — this replaces "bisect
   a threshold or Lagrange multiplier per segment" and, unlike it, reaches non-convex points of
   the front and non-contiguous schedules.
5. **Refine with measurements.** Starting from the measured-best schedule that meets the target,
   a budget of ``refine`` evaluations (default N) alternates between re-calibrating the model on
   everything measured and re-solving it, and trying the model's best-ranked neighbours (swap two
   steps, change one or two steps) of the incumbent; only measured improvements are accepted.
   For a quality target, step 5 is preceded by a bisection over the model's front on *measured*
   quality to find the cheapest schedule that meets it (log2 of the front size evaluations).

Every schedule measured along the way (probes included) is a candidate: the answer is the best
measured one that meets the target. Evaluations: ≤ (P-1)(3N-2) + R + refine (+ log2 front).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .additive import ProbeResult, StepModel, probe
from .cost import CostTable
from .evaluator import Evaluator
from .optimize import solve
from .pareto import Point, best_within, cheapest_meeting, front, make_point
from .refine import refine_quality, refine_speed
from .targets import AllocatorConfig, ParetoTarget, QualityTarget, SpeedupTarget, Target
from .validation import AdditivityReport, validate

logger = logging.getLogger(__name__)

__all__ = [
    "AllocatorConfig",
    "ParetoTarget",
    "QualityTarget",
    "SpeedupTarget",
    "Allocation",
    "allocate",
]


@dataclass
class Allocation:
    """What the allocator found, and how."""

    best: Point | None
    model: StepModel
    probe: ProbeResult
    additivity: AdditivityReport | None
    points: list[Point]
    front: list[Point]
    phases: dict[str, int] = field(default_factory=dict)
    trace: list[dict] = field(default_factory=list)


class _Run:
    """Shared state of one allocation: evaluator, model, costs, and which phase measured what."""

    def __init__(self, evaluator: Evaluator, costs: CostTable, config: AllocatorConfig):
        self.ev, self.costs, self.cfg = evaluator, costs, config
        self.precisions = evaluator.precisions
        self.unit = np.array([costs[p] for p in self.precisions])
        self.source: dict[tuple[str, ...], str] = {}
        self.phases: dict[str, int] = {}
        self.trace: list[dict] = []
        self.model: StepModel | None = None

    def names(self, idx: Sequence[int]) -> tuple[str, ...]:
        return tuple(self.precisions[i] for i in idx)

    def loss(self, schedule: Sequence[str], source: str) -> float:
        s = tuple(schedule)
        self.source.setdefault(s, source)
        return self.ev.evaluate(s).loss

    def cost(self, schedule: Sequence[str]) -> float:
        return self.costs.schedule_cost(schedule)

    def points(self) -> list[Point]:
        return [
            make_point(s, q, self.costs, self.source.get(s, "cache"))
            for s, q in self.ev.evaluated.items()
        ]

    def calibration_data(self) -> tuple[list, list]:
        ref = self.ev.reference_precision
        scheds, losses = [], []
        for s, q in self.ev.evaluated.items():
            if (
                sum(p != ref for p in s) >= 2
            ):  # single-step probes are exact by construction: no information on the weights
                scheds.append(s)
                losses.append(q.loss)
        return scheds, losses

    def recalibrate(self) -> None:
        if self.cfg.pairs:
            self.model.calibrate(*self.calibration_data())

    def solve(self):
        m = self.model
        return solve(m.single, m.pair, self.unit, coef=m.coef, resolution=self.cfg.resolution)

    def phase(self, name: str, start: int) -> None:
        self.phases[name] = self.phases.get(name, 0) + self.ev.count - start


def evaluation_bound(n_precisions: int, steps: int, config: AllocatorConfig | None = None) -> int:
    """The most evaluations ``allocate`` makes: (P-1)(3N-2) + R + refine + 8 (progress bars)."""
    cfg = config or AllocatorConfig()
    refine = steps if cfg.refine is None else cfg.refine
    return (n_precisions - 1) * (3 * steps - 2) + cfg.validate + refine + 8


def fit_model(
    evaluator: Evaluator, costs: CostTable, config: AllocatorConfig | None = None
) -> tuple[_Run, ProbeResult, AdditivityReport | None]:
    """Steps 1-3: probe, pairs, validation, calibration."""
    cfg = config or AllocatorConfig()
    costs.check(evaluator.precisions)
    run = _Run(evaluator, costs, cfg)
    evaluator.expect(evaluation_bound(len(evaluator.precisions), evaluator.steps, cfg))
    run.ev.reference()
    pr = probe(evaluator, eps=cfg.eps, pairs=cfg.pairs, cross_pairs=cfg.cross_pairs)
    for s, _ in pr.measured:
        run.source.setdefault(s, "probe")
    run.phases.update(pr.evaluations)
    run.model = pr.model
    report = None
    if cfg.validate > 0:
        start = evaluator.count
        report, measured = validate(evaluator, pr.model, count=cfg.validate, seed=cfg.seed)
        for s, _ in measured:
            run.source.setdefault(s, "validation")
        run.phase("validation", start)
    if cfg.pairs:
        run.recalibrate()
    else:
        run.model.coef = np.array([1.0] + [0.0] * (len(run.model.coef) - 1))
    run.trace.append({"phase": "calibrate", "coef": [float(c) for c in run.model.coef]})
    return run, pr, report


def allocate(
    evaluator: Evaluator,
    costs: CostTable,
    target: Target,
    config: AllocatorConfig | None = None,
) -> Allocation:
    """Run the whole allocator for ``target``; see the module docstring for the steps.

    Args:
        evaluator: measures schedules (its ``precisions[0]`` is the reference).
        costs: per-step cost of every candidate precision.
        target: ``SpeedupTarget``, ``QualityTarget`` or ``ParetoTarget``.
        config: allocator knobs.

    Returns:
        An ``Allocation`` whose ``best`` is the best measured schedule meeting the target
        (``None`` only if no measured schedule does, e.g. an unreachable speed-up).
    """
    cfg = config or AllocatorConfig()
    try:
        return _allocate(evaluator, costs, target, cfg)
    finally:
        evaluator.close()


def _allocate(evaluator, costs, target, cfg) -> Allocation:
    run, pr, report = fit_model(evaluator, costs, cfg)
    n = evaluator.steps
    refine = n if cfg.refine is None else cfg.refine
    if isinstance(target, SpeedupTarget):
        budget = costs.budget_for(n, target.speedup)
        _speed(run, budget, refine)
        best = best_within(run.points(), budget)
    elif isinstance(target, QualityTarget):
        _quality(run, 1.0 - target.ssim, refine)
        best = cheapest_meeting(run.points(), target.ssim)
    elif isinstance(target, ParetoTarget):
        _pareto(run, target.points)
        pts = front(run.points())
        best = cheapest_meeting(pts, target.ssim) or (
            max(pts, key=lambda p: p.ssim) if pts else None
        )
    else:
        raise TypeError(
            f"unknown target {target!r}; use SpeedupTarget, QualityTarget or ParetoTarget"
        )
    points = run.points()
    return Allocation(best, run.model, pr, report, points, front(points), run.phases, run.trace)


# --------------------------------------------------------------------------- speed-up target
def _speed(run: _Run, budget: float, refine: int) -> None:
    start = run.ev.count
    sol = run.solve().best_within(budget)
    if sol is None:
        logger.warning("tmpdiff search: no schedule reaches the budget %.4g", budget)
        return
    # The pairwise optimum, and the plain additive optimum for comparison (2 evaluations).
    idx, pred = sol
    run.loss(run.names(idx), "model")
    run.trace.append({"phase": "model", "schedule": list(run.names(idx)), "predicted": pred})
    add = solve(run.model.single, run.model.pair * 0, run.unit, resolution=run.cfg.resolution)
    add_sol = add.best_within(budget)
    if add_sol is not None:
        run.loss(run.names(add_sol[0]), "additive-model")
    run.phase("model", start)
    refine_speed(
        run,
        lambda s: run.cost(s) <= budget * (1 + 1e-9),
        refine,
        lambda: run.solve().best_within(budget),
    )


# --------------------------------------------------------------------------- quality target
def _quality(run: _Run, max_loss: float, refine: int) -> None:
    start = run.ev.count
    fr = run.solve().front()  # ascending cost, descending predicted loss
    lo, hi = 0, len(fr) - 1
    # Bisection on measured quality over the model front: the cheapest front point that meets
    # the target (assumes measured loss falls with cost along the front; refinement fixes slips).
    if run.loss(run.names(fr[hi][2]), "front-bisection") <= max_loss:
        while lo < hi:
            mid = (lo + hi) // 2
            if run.loss(run.names(fr[mid][2]), "front-bisection") <= max_loss:
                hi = mid
            else:
                lo = mid + 1
    run.phase("front-bisection", start)

    def resolve():
        pts = [f for f in run.solve().front() if f[1] <= max_loss]
        return (pts[0][2], pts[0][1]) if pts else None

    refine_quality(run, max_loss, refine, resolve)


# --------------------------------------------------------------------------- Pareto front
def _pareto(run: _Run, count: int) -> None:
    start = run.ev.count
    n = run.ev.steps
    fmin = n * run.unit.min()
    fmax = n * run.unit[0]
    model = run.solve()
    for k in range(1, count + 1):
        budget = fmax - (fmax - fmin) * k / (count + 1)
        sol = model.best_within(budget)
        if sol is not None:
            run.loss(run.names(sol[0]), "model-front")
    run.phase("model-front", start)
