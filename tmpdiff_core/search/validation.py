"""Does the additive hypothesis hold? Predicted vs measured loss on random schedules.

``validate`` measures R random schedules whose fraction of low-precision steps sweeps (0, 1),
and reports Pearson and Spearman correlations of measured loss with the additive prediction
(sum of single-step losses) and with the uncalibrated pairwise prediction, plus, per third of
low-precision fraction, the ratio measured / predicted — which says plainly where additivity
breaks (typically: many low-precision steps, where errors compound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .additive import NEGLIGIBLE_LOSS, StepModel
from .evaluator import Evaluator

__all__ = ["AdditivityReport", "pearson", "random_schedules", "spearman", "validate"]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # average rank for ties
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return pearson(_ranks(x), _ranks(y))


def random_schedules(
    steps: int, precisions: Sequence[str], count: int, rng: np.random.Generator
) -> list[tuple[str, ...]]:
    """``count`` random schedules whose low-precision fraction sweeps (0, 1) evenly.

    Schedule ``i`` draws each step low with probability ``(i + 0.5) / count`` and a uniformly
    chosen low precision, so the validation covers few and many low-precision steps alike.
    """
    ref, low = precisions[0], list(precisions[1:])
    out = []
    for i in range(count):
        frac = (i + 0.5) / count
        out.append(
            tuple(low[rng.integers(len(low))] if rng.random() < frac else ref for _ in range(steps))
        )
    return out


@dataclass
class AdditivityReport:
    """Predicted vs measured loss on random schedules, with where the additive model breaks."""

    count: int
    pearson_additive: float
    spearman_additive: float
    pearson_pairwise: float
    spearman_pairwise: float
    bins: list[dict]
    verdict: str
    points: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "pearson_additive": self.pearson_additive,
            "spearman_additive": self.spearman_additive,
            "pearson_pairwise": self.pearson_pairwise,
            "spearman_pairwise": self.spearman_pairwise,
            "bins": self.bins,
            "verdict": self.verdict,
            "points": self.points,
        }


def validate(
    evaluator: Evaluator, model: StepModel, *, count: int = 16, seed: int = 0
) -> tuple[AdditivityReport, list[tuple[tuple[str, ...], float]]]:
    """Measure ``count`` random schedules; compare with the additive and pairwise predictions.

    The pairwise numbers use the model as given (uncalibrated, so they are out of sample).
    Returns the report and the measured ``(schedule, loss)`` pairs (for calibration).
    """
    rng = np.random.default_rng(seed)
    scheds = random_schedules(evaluator.steps, evaluator.precisions, count, rng)
    qs = evaluator.evaluate_many(scheds, desc="validate additivity")
    ref = evaluator.reference_precision
    measured = [q.loss for q in qs]
    add = [model.predict_additive(s) for s in scheds]
    pw = [model.predict_pairwise(s) for s in scheds]
    fracs = [sum(p != ref for p in s) / len(s) for s in scheds]
    bins = []
    for lo, hi, label in (
        (0, 1 / 3, "< 1/3 low"),
        (1 / 3, 2 / 3, "1/3-2/3 low"),
        (2 / 3, 1.01, "> 2/3 low"),
    ):
        sel = [i for i, f in enumerate(fracs) if lo <= f < hi]
        if not sel:
            continue
        m = np.array([measured[i] for i in sel])
        a = np.array([add[i] for i in sel])
        w = np.array([pw[i] for i in sel])
        bins.append(
            {
                "low_fraction": label,
                "count": len(sel),
                "measured_mean": float(m.mean()),
                "additive_mean": float(a.mean()),
                "pairwise_mean": float(w.mean()),
                "measured_over_additive": float(m.sum() / a.sum()) if a.sum() > 0 else None,
                "measured_over_pairwise": float(m.sum() / w.sum()) if w.sum() > 0 else None,
            }
        )
    report = AdditivityReport(
        count=count,
        pearson_additive=pearson(add, measured),
        spearman_additive=spearman(add, measured),
        pearson_pairwise=pearson(pw, measured),
        spearman_pairwise=spearman(pw, measured),
        bins=bins,
        verdict=_verdict(bins),
        points=[
            {"schedule": list(s), "measured": m, "additive": a, "pairwise": w}
            for s, m, a, w in zip(scheds, measured, add, pw, strict=True)
        ],
    )
    return report, list(zip(scheds, measured, strict=True))


def _verdict(bins: list[dict]) -> str:
    parts = []
    for b in bins:
        r = b["measured_over_additive"]
        if max(b["measured_mean"], b["additive_mean"]) < NEGLIGIBLE_LOSS:
            parts.append(f"{b['low_fraction']}: loss negligible (< {NEGLIGIBLE_LOSS} 1-SSIM)")
            continue
        if r is None:
            continue
        if 0.8 <= r <= 1.25:
            parts.append(f"{b['low_fraction']}: additive holds (measured/predicted {r:.2f})")
        elif r > 1.25:
            parts.append(
                f"{b['low_fraction']}: errors compound; the sum of single-step losses "
                f"underestimates the measured loss {r:.2f}x"
            )
        else:
            parts.append(
                f"{b['low_fraction']}: errors partly cancel; the additive sum overestimates "
                f"the loss ({r:.2f}x)"
            )
    return "; ".join(parts)
