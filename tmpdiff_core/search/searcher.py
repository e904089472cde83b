"""``search``: the allocator, its baselines and the resulting ``Schedule``, in one call."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..schedule import ModelInfo, SamplerInfo, Schedule
from .allocate import (
    Allocation,
    AllocatorConfig,
    ParetoTarget,
    QualityTarget,
    SpeedupTarget,
    Target,
    allocate,
)
from .baselines import greedy, greedy_for_quality, random_search, uniform
from .cost import CostTable
from .evaluator import Evaluator
from .pareto import Point, best_within, cheapest_meeting

logger = logging.getLogger(__name__)

__all__ = ["SearchResult", "search"]

METHOD = "tmpdiff-bisection+pairs"
BASELINES = ("uniform", "greedy", "random")


@dataclass
class SearchResult:
    """The searched schedule plus everything needed to judge it.

    schedule: the ``Schedule`` (quality, cost table and ``search`` metadata filled in).
    allocation: the allocator's internals (model, probes, additivity report, all points).
    baselines: ``{"uniform": [Point, ...], "greedy": Point | None, "random": Point | None}``.
    evaluations: distinct schedules evaluated by the search and by the baselines, fresh runs,
        cache hits, and ``P^N`` (what exhaustive enumeration would take).
    wall_seconds: time of the whole call (reference, search, baselines).
    """

    schedule: Schedule
    allocation: Allocation
    baselines: dict[str, Any] = field(default_factory=dict)
    evaluations: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    target: Target | None = None

    @property
    def best(self) -> Point:
        return self.allocation.best

    def report(self) -> str:
        """A few lines for the terminal."""
        b, ev = self.best, self.evaluations
        lines = [
            f"schedule: {self.schedule.summary()}",
            f"  speed-up {b.speedup:.3f}x  SSIM {b.ssim:.4f}  PSNR {b.quality.psnr:.2f} dB"
            + (
                f"  latent MSE {b.quality.latent_mse:.3g}"
                if b.quality.latent_mse is not None
                else ""
            ),
            f"  evaluations: {ev['search']} search + {ev['baselines']} baselines "
            f"({ev['fresh_runs']} run, {ev['cache_hits']} cached; exhaustive would be "
            f"{ev['exhaustive']:.3g}); {self.wall_seconds:.1f} s",
        ]
        add = self.allocation.additivity
        if add is not None:
            lines.append(
                f"  additivity on {add.count} random schedules: Pearson {add.pearson_additive:.3f}, "
                f"Spearman {add.spearman_additive:.3f} (pairwise model: {add.pearson_pairwise:.3f}, "
                f"{add.spearman_pairwise:.3f})"
            )
            lines.append(f"  {add.verdict}")
        for p in self.baselines.get("uniform", []):
            lines.append(f"  uniform {p.precisions[0]:<7} {p.speedup:.3f}x  SSIM {p.ssim:.4f}")
        for name in ("greedy", "random"):
            p = self.baselines.get(name)
            if p is not None:
                lines.append(f"  {name:<15} {p.speedup:.3f}x  SSIM {p.ssim:.4f}")
        return "\n".join(lines)

    def save(self, path: str | Path, *, images: bool = True) -> dict[str, Path]:
        """Write the schedule JSON and, next to it, ``<stem>.pareto.png`` and ``<stem>.strip.png``."""
        from .plots import pareto_plot, strip_image

        path = Path(path)
        out = {"schedule": self.schedule.save(path)}
        if images:
            stem = path.with_suffix("")
            t = self.target
            img = pareto_plot(
                self.allocation.points,
                chosen=self.best,
                uniform=self.baselines.get("uniform", []),
                others={k: self.baselines.get(k) for k in ("greedy", "random")},
                target_speedup=getattr(t, "speedup", None),
                target_ssim=getattr(t, "ssim", None) if isinstance(t, QualityTarget) else None,
                title=f"{self.evaluations['search']} schedules searched; chosen: "
                f"{self.schedule.summary()}",
            )
            out["pareto"] = stem.with_name(stem.name + ".pareto.png")
            img.save(out["pareto"])
            out["strip"] = stem.with_name(stem.name + ".strip.png")
            strip_image(
                self.schedule.precisions,
                title=f"{self.best.speedup:.2f}x  SSIM {self.best.ssim:.4f}  {self.schedule.summary()}",
            ).save(out["strip"])
        return out


def search(
    evaluator: Evaluator,
    costs: CostTable,
    target: Target,
    *,
    config: AllocatorConfig | None = None,
    baselines: tuple[str, ...] = BASELINES,
    random_count: int = 16,
    name: str | None = None,
) -> SearchResult:
    """Find the schedule for ``target``, measure the baselines, and build the ``Schedule``.

    Args:
        evaluator: generates and scores the calibration batch for a schedule.
        costs: per-step cost table (measured or supplied; stored in the schedule).
        target: ``SpeedupTarget(2.0)``, ``QualityTarget(0.9)`` or ``ParetoTarget()``.
        config: allocator knobs (``AllocatorConfig``).
        baselines: which of ``"uniform"``, ``"greedy"``, ``"random"`` to measure too (after the
            search, so they never feed it).
        random_count: schedules drawn by the random baseline.
        name: the schedule's name.

    Returns:
        A ``SearchResult``.

    Raises:
        ScheduleError: no measured schedule meets the target (e.g. an unreachable speed-up).

    Example::

        ev = toy_evaluator(steps=8, precisions=["bf16", "fp8", "fp4wo"])
        result = search(ev, CostTable({"bf16": 1, "fp8": 0.6, "fp4wo": 0.35}), SpeedupTarget(2))
        result.save("out/toy-2x.json")
    """
    from ..errors import ScheduleError

    t0 = time.perf_counter()
    cfg = config or AllocatorConfig()
    try:
        alloc = allocate(evaluator, costs, target, cfg)
    except BaseException:
        evaluator.close()
        raise
    searched = evaluator.count
    if alloc.best is None:
        fastest = min(evaluator.precisions, key=costs.__getitem__)
        raise ScheduleError(
            f"no measured schedule meets {target}; the fastest possible is "
            f"{costs.speedup([fastest] * evaluator.steps):.3f}x (all {fastest}) and the best "
            "quality is the reference; relax the target or add a faster precision"
        )
    base = _baselines(evaluator, costs, target, alloc, baselines, random_count, cfg.seed)
    evaluator.close()
    wall = time.perf_counter() - t0
    evaluations = {
        "search": searched,
        "baselines": evaluator.count - searched,
        "fresh_runs": evaluator.fresh_runs,
        "cache_hits": evaluator.cache_hits,
        "exhaustive": len(evaluator.precisions) ** evaluator.steps,
    }
    schedule = _schedule(evaluator, costs, target, cfg, alloc, base, evaluations, wall, name)
    logger.info("tmpdiff search: %s", schedule.summary())
    return SearchResult(schedule, alloc, base, evaluations, wall, target)


def _baselines(evaluator, costs, target, alloc, which, random_count, seed) -> dict[str, Any]:
    unknown = set(which) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {BASELINES}")
    out: dict[str, Any] = {}
    n = evaluator.steps
    if "uniform" in which:
        out["uniform"] = uniform(evaluator, costs)
    if isinstance(target, SpeedupTarget):
        budget = costs.budget_for(n, target.speedup)
        if "uniform" in which:
            out["best_uniform"] = best_within(out["uniform"], budget)
        if "greedy" in which:
            out["greedy"] = greedy(evaluator, costs, alloc.model, budget)
        if "random" in which:
            out["random"] = random_search(evaluator, costs, budget, random_count, seed=seed + 1)
    elif isinstance(target, QualityTarget):
        if "uniform" in which:
            out["best_uniform"] = cheapest_meeting(out["uniform"], target.ssim)
        if "greedy" in which:
            out["greedy"] = greedy_for_quality(evaluator, costs, alloc.model, target.ssim)
        if "random" in which:
            budget = alloc.best.cost
            out["random"] = random_search(evaluator, costs, budget, random_count, seed=seed + 1)
    elif "greedy" in which and alloc.best is not None:  # Pareto: compare at the chosen cost
        out["greedy"] = greedy(evaluator, costs, alloc.model, alloc.best.cost)
    return out


def _target_dict(target: Target) -> dict:
    kind = {SpeedupTarget: "speedup", QualityTarget: "quality", ParetoTarget: "pareto"}[
        type(target)
    ]
    return {"kind": kind, **asdict(target)}


def _schedule(evaluator, costs, target, cfg, alloc, base, evaluations, wall, name) -> Schedule:
    best = alloc.best
    meta = evaluator.meta
    add = alloc.additivity

    def pt(p):
        return None if p is None else p.to_dict()

    search_meta = {
        "method": METHOD,
        "target": _target_dict(target),
        "evaluations": {**evaluations, "phases": alloc.phases},
        "wall_seconds": round(wall, 3),
        "run_seconds": round(evaluator.run_seconds, 3),
        "config": asdict(cfg),
        "model": {"coef (a, b1, b2, b3)": [float(c) for c in alloc.model.coef]},
        "additivity": None
        if add is None
        else {k: v for k, v in add.to_dict().items() if k != "points"},
        "baselines": {
            k: ([pt(p) for p in v] if isinstance(v, list) else pt(v)) for k, v in base.items()
        },
        "front": [p.to_dict() for p in alloc.front],
        "settings": evaluator.settings,
        "cache_key": evaluator.key,
    }
    model = meta.get("model") or ModelInfo(id=str(evaluator.settings.get("model", "")) or None)
    sampler = meta.get("sampler") or SamplerInfo(steps=evaluator.steps)
    if sampler.steps is None:
        sampler.steps = evaluator.steps
    speed = f"{best.speedup:.2f}x"
    return Schedule.from_precisions(
        list(best.precisions),
        meta.get("boundaries"),
        time_axis=meta.get("time_axis", "sigma"),
        name=name or f"search-{_target_dict(target)['kind']}-{speed}",
        description=(
            f"Searched by tmpdiff ({METHOD}): {best.speedup:.3f}x predicted speed-up, mean SSIM "
            f"{best.ssim:.4f} vs the reference on {len(best.quality.ssim_per_image)} images; "
            f"{evaluations['search']} schedules evaluated."
        ),
        model=model,
        sampler=sampler,
        quality=best.quality.summary(),
        cost=costs.to_cost_info(best.precisions),
        search=search_meta,
    )
