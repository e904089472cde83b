"""Points (schedule, cost, quality) and the Pareto front over them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .cost import CostTable
from .evaluator import Evaluator, Quality

__all__ = ["Point", "best_within", "cheapest_meeting", "front", "points_from"]


@dataclass(frozen=True)
class Point:
    """One evaluated schedule. ``source`` says which phase or baseline produced it."""

    precisions: tuple[str, ...]
    cost: float
    speedup: float
    quality: Quality
    source: str = ""

    @property
    def ssim(self) -> float:
        return self.quality.ssim

    @classmethod
    def from_dict(cls, data: dict) -> Point:
        """Inverse of ``to_dict`` (per-image SSIMs and timings are not kept there)."""
        quality = Quality(data["ssim"], data["psnr"], data.get("latent_mse"))
        return cls(
            tuple(data["precisions"]), data["cost"], data["speedup"], quality, data["source"]
        )

    def to_dict(self) -> dict:
        return {
            "precisions": list(self.precisions),
            "cost": self.cost,
            "speedup": self.speedup,
            "ssim": self.quality.ssim,
            "psnr": self.quality.psnr,
            "latent_mse": self.quality.latent_mse,
            "source": self.source,
        }


def make_point(
    schedule: Sequence[str], quality: Quality, costs: CostTable, source: str = ""
) -> Point:
    s = tuple(schedule)
    return Point(s, costs.schedule_cost(s), costs.speedup(s), quality, source)


def points_from(evaluator: Evaluator, costs: CostTable, sources: dict | None = None) -> list[Point]:
    """Every schedule the evaluator has measured in this process, as points."""
    sources = sources or {}
    return [make_point(s, q, costs, sources.get(s, "")) for s, q in evaluator.evaluated.items()]


def front(points: Iterable[Point]) -> list[Point]:
    """The non-dominated points (lower cost, higher SSIM), sorted by cost."""
    out: list[Point] = []
    for p in sorted(points, key=lambda p: (p.cost, -p.ssim)):
        if not out or p.ssim > out[-1].ssim + 1e-12:
            out.append(p)
    return out


def best_within(points: Iterable[Point], budget: float) -> Point | None:
    """Highest SSIM among points of cost ≤ ``budget`` (ties: the cheaper)."""
    ok = [p for p in points if p.cost <= budget * (1 + 1e-9)]
    return max(ok, key=lambda p: (p.ssim, -p.cost)) if ok else None


def cheapest_meeting(points: Iterable[Point], ssim: float) -> Point | None:
    """Lowest cost among points with SSIM ≥ ``ssim`` (ties: the better)."""
    ok = [p for p in points if p.ssim >= ssim]
    return min(ok, key=lambda p: (p.cost, -p.ssim)) if ok else None
