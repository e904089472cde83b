"""The additive-error model, its pairwise correction, and how we measure and validate them.

TMPDiff's hypothesis: quantization errors add up over steps, so the loss of a schedule is about
the sum of its steps' single-step losses ``d_t(p)`` (step ``t`` alone at precision ``p``, every
other step at the reference). Loss is ``1 - SSIM`` against the reference outputs.

On real models it holds for few low-precision steps and breaks as they pile up: the errors of
*adjacent* low-precision steps compound (the second step acts on an already perturbed latent),
while a full-precision step in between partly corrects them. So the model we optimize adds
adjacent-pair interaction terms

    loss(s) ≈ a · Σ_t d_t(s_t)  +  Σ_t b_{r(t)} · I_t(s_t, s_{t+1})

with ``I_t(p, q) = loss(t at p, t+1 at q) - d_t(p) - d_{t+1}(q)`` and ``r(t)`` the position of
the pair in its run of consecutive low-precision steps (1, 2, ≥3). The weights (a, b1, b2, b3)
are fitted to every multi-step schedule already measured — the bisection's long segments, the
validation schedules, later candidates — so that runs compounding beyond pairs are learnt, not
assumed. The model stays a chain (state: precision and run position), so its exact optimum under
a budget is a dynamic program (``optimize.py``).

Measuring it costs O(N) evaluations per precision (``probe``): an adaptive bisection over the
timeline (TMPDiff) measures whole segments at ``p``, splitting a segment only while its loss is
above a negligible level ``eps``; its leaves are the single steps, and length-2 nodes are adjacent
pairs for free. The remaining adjacent pairs are measured directly. Cross-precision pairs
(``p != q``) are inferred as the geometric mean of the same-precision ones (exact if interactions
are bilinear in per-step error magnitudes) unless ``cross_pairs="measure"``.

``validation.validate`` compares predicted and measured loss on random schedules (Pearson,
Spearman) and reports, per fraction of low-precision steps, how far the plain additive sum is off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .evaluator import Evaluator

__all__ = ["ProbeResult", "StepModel", "probe"]


NEGLIGIBLE_LOSS = 1e-4  # below this (1 - SSIM) ratios of losses say nothing
RUN_BUCKETS = 3  # pair terms are weighted by run position 1, 2, ≥3


@dataclass
class StepModel:
    """Per-step losses ``single[t, p]`` and adjacent-pair interactions ``pair[t, p, q]``.

    Index 0 of every precision axis is the reference (zero loss, zero interaction).

    ``coef = (a, b1, b2, b3)`` weighs the additive part and the pair terms by where the pair sits
    in its run of consecutive low-precision steps: ``b1`` for the first pair of a run, ``b2``
    for the second, ``b3`` for every later one. All 1 until ``calibrate``: then, fitted to the
    measured multi-step schedules (bisection segments are long runs), ``b2``/``b3`` > ``b1``
    says that errors keep compounding along a run, beyond what pairs measured in isolation show.
    """

    precisions: tuple[str, ...]
    single: np.ndarray
    pair: np.ndarray
    coef: np.ndarray = field(default_factory=lambda: np.ones(1 + RUN_BUCKETS))
    measured_pairs: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return self.single.shape[0]

    @property
    def a(self) -> float:
        return float(self.coef[0])

    @property
    def b(self) -> tuple[float, ...]:
        return tuple(float(c) for c in self.coef[1:])

    def index(self, schedule: Sequence[str]) -> np.ndarray:
        pos = {p: i for i, p in enumerate(self.precisions)}
        return np.array([pos[p] for p in schedule], dtype=np.int64)

    def feature_matrix(self, schedules: np.ndarray) -> np.ndarray:
        """``(M, 1 + RUN_BUCKETS)``: Σ d_t, then Σ pair terms by run position, per schedule."""
        x = np.atleast_2d(np.asarray(schedules, dtype=np.int64))
        m, n = x.shape
        out = np.zeros((m, 1 + RUN_BUCKETS))
        out[:, 0] = self.single[np.arange(n)[None, :], x].sum(1)
        low = x > 0
        run = np.zeros(m, dtype=np.int64)  # low steps in the run ending at t-1
        rows = np.arange(m)
        for t in range(n):
            if t:
                both = low[:, t] & low[:, t - 1]
                if both.any():
                    term = self.pair[t - 1, x[:, t - 1], x[:, t]]
                    col = np.minimum(run, RUN_BUCKETS)
                    np.add.at(out, (rows[both], col[both]), term[both])
            run = np.where(low[:, t], run + 1, 0)
        return out

    def features(self, schedule: Sequence[str] | np.ndarray) -> np.ndarray:
        """The feature vector of one schedule (names or indices)."""
        idx = schedule if isinstance(schedule, np.ndarray) else self.index(schedule)
        return self.feature_matrix(idx[None, :])[0]

    def predict_additive(self, schedule) -> float:
        """TMPDiff's additive prediction: the plain sum of single-step losses."""
        return float(self.features(schedule)[0])

    def predict_pairwise(self, schedule) -> float:
        """Uncalibrated: single-step losses plus every adjacent-pair term as measured."""
        return float(self.features(schedule).sum())

    def predict(self, schedule) -> float:
        """The calibrated prediction ``coef · features``."""
        return float(self.features(schedule) @ self.coef)

    def predict_many(self, schedules: np.ndarray) -> np.ndarray:
        return self.feature_matrix(schedules) @ self.coef

    def calibrate(self, schedules: Sequence, losses: Sequence[float]) -> np.ndarray:
        """Fit ``coef ≥ 0`` to measured losses (least squares, shrunk towards 1).

        The shrinkage keeps a weight that no measured schedule exercises (e.g. ``b3`` before any
        run of 4 low steps was measured) at its prior, 1. Needs ≥ 3 schedules.
        """
        if len(schedules) < 3:
            return self.coef
        x = self.feature_matrix(np.stack([self.index(s) for s in schedules]))
        y = np.asarray(losses, dtype=np.float64)
        self.coef = _nnls_ridge(x, y)
        return self.coef

    def to_dict(self) -> dict:
        return {
            "precisions": list(self.precisions),
            "single": np.round(self.single, 8).tolist(),
            "pair_same": {
                p: np.round(self.pair[:, i, i], 8).tolist()
                for i, p in enumerate(self.precisions)
                if i
            },
            "coef": [float(c) for c in self.coef],
        }


def _nnls_ridge(x: np.ndarray, y: np.ndarray, ridge: float = 1e-2) -> np.ndarray:
    """min ||x c - y||² + λ||c - 1||² over c ≥ 0, by enumerating active sets (k ≤ 4 columns).

    λ is ``ridge`` times the mean squared column norm, so it is scale-free: a column with
    little signal stays near 1, a well-measured one follows the data.
    """
    k = x.shape[1]
    lam = ridge * float((x * x).sum(0).mean()) + 1e-30
    best, best_err = np.ones(k), math.inf
    for mask in range(1 << k):
        free = [j for j in range(k) if mask >> j & 1]
        c = np.zeros(k)
        if free:
            xf = x[:, free]
            a = xf.T @ xf + lam * np.eye(len(free))
            c[free] = np.linalg.solve(a, xf.T @ y + lam * np.ones(len(free)))
        if (c < 0).any():
            continue
        r = x @ c - y
        err = float(r @ r + lam * ((c - 1) ** 2).sum())
        if err < best_err:
            best, best_err = c, err
    return best


# --------------------------------------------------------------------------- probing
def _with(steps: int, ref: str, assign: dict[int, str]) -> tuple[str, ...]:
    out = [ref] * steps
    for t, p in assign.items():
        out[t] = p
    return tuple(out)


def segment(steps: int, ref: str, start: int, stop: int, precision: str) -> tuple[str, ...]:
    """Steps ``[start, stop)`` at ``precision``, the rest at the reference."""
    return _with(steps, ref, {t: precision for t in range(start, stop)})


@dataclass
class ProbeResult:
    """The fitted ``StepModel`` plus the bisection tree (``nodes``) and evaluation counts."""

    model: StepModel
    nodes: list[dict] = field(default_factory=list)
    evaluations: dict[str, int] = field(default_factory=dict)
    measured: list[tuple[tuple[str, ...], float]] = field(default_factory=list)


def probe(
    evaluator: Evaluator,
    *,
    eps: float = 1e-3,
    pairs: bool = True,
    cross_pairs: str = "infer",
) -> ProbeResult:
    """Measure ``d_t(p)`` by adaptive bisection and the adjacent-pair terms ``I_t(p, q)``.

    Args:
        evaluator: the evaluator of the search.
        eps: a segment whose loss (``1 - SSIM``) is at most this is not split further: its
            steps share its loss equally and interact with each other by nothing more.
        pairs: also measure adjacent-pair interactions (else the model is purely additive).
        cross_pairs: ``"infer"`` (geometric mean of same-precision terms) or ``"measure"``.

    Returns:
        A ``ProbeResult``; at most ``2N - 1`` evaluations per low precision for the bisection
        and ``N - 1`` for the pairs (fewer where segments are negligible or already measured),
        plus ``(P-1)(P-2)(N-1)`` with ``cross_pairs="measure"``.
    """
    if cross_pairs not in ("infer", "measure"):
        raise ValueError(f"cross_pairs must be 'infer' or 'measure', got {cross_pairs!r}")
    n, precs, ref = evaluator.steps, evaluator.precisions, evaluator.reference_precision
    single = np.zeros((n, len(precs)))
    pair = np.zeros((max(n - 1, 0), len(precs), len(precs)))
    measured_pairs = np.zeros(pair.shape, dtype=bool)
    result = ProbeResult(StepModel(precs, single, pair, measured_pairs=measured_pairs))
    start = evaluator.count
    negligible_leaf = {}  # (p index, t) -> id of the negligible segment holding t
    seg_loss: dict[tuple[int, int, int], float] = {}
    for pi in range(1, len(precs)):
        p = precs[pi]
        level = [(0, n)]
        while level:
            qs = evaluator.evaluate_many(
                [segment(n, ref, a, b, p) for a, b in level], desc=f"bisect {p}"
            )
            nxt = []
            for (a, b), q in zip(level, qs, strict=True):
                seg_loss[(pi, a, b)] = q.loss
                result.measured.append((segment(n, ref, a, b, p), q.loss))
                node = {"precision": p, "start": a, "stop": b, "loss": q.loss}
                result.nodes.append(node)
                if b - a == 1:
                    single[a, pi] = q.loss
                elif q.loss <= eps:
                    single[a:b, pi] = q.loss / (b - a)
                    node["negligible"] = True
                    for t in range(a, b):
                        negligible_leaf[(pi, t)] = (a, b)
                else:
                    m = (a + b) // 2
                    nxt += [(a, m), (m, b)]
            level = nxt
        # non-additivity of every split node: loss(node) - loss(left) - loss(right)
        for node in result.nodes:
            a, b = node["start"], node["stop"]
            if node["precision"] == p and b - a > 1 and not node.get("negligible"):
                m = (a + b) // 2
                node["residual"] = node["loss"] - seg_loss[(pi, a, m)] - seg_loss[(pi, m, b)]
    result.evaluations["bisection"] = evaluator.count - start
    if pairs and n > 1:
        start = evaluator.count
        _pairs_same(evaluator, result, seg_loss, negligible_leaf)
        _pairs_cross(evaluator, result, cross_pairs)
        result.evaluations["pairs"] = evaluator.count - start
    return result


def _pairs_same(evaluator, result, seg_loss, negligible_leaf) -> None:
    n, precs, ref = evaluator.steps, evaluator.precisions, evaluator.reference_precision
    m = result.model
    todo = []
    for pi in range(1, len(precs)):
        for t in range(n - 1):
            leaf = negligible_leaf.get((pi, t))
            if leaf is not None and leaf == negligible_leaf.get((pi, t + 1)):
                continue  # inside one negligible segment: its measured total already covers it
            if (pi, t, t + 2) in seg_loss:
                m.pair[t, pi, pi] = seg_loss[(pi, t, t + 2)] - m.single[t, pi] - m.single[t + 1, pi]
                m.measured_pairs[t, pi, pi] = True
                continue
            todo.append((pi, t))
    schedules = [segment(n, ref, t, t + 2, precs[pi]) for pi, t in todo]
    for (pi, t), s, q in zip(
        todo, schedules, evaluator.evaluate_many(schedules, desc="pairs"), strict=True
    ):
        m.pair[t, pi, pi] = q.loss - m.single[t, pi] - m.single[t + 1, pi]
        m.measured_pairs[t, pi, pi] = True
        result.measured.append((s, q.loss))


def _pairs_cross(evaluator, result, mode: str) -> None:
    n, precs, ref = evaluator.steps, evaluator.precisions, evaluator.reference_precision
    m = result.model
    low = range(1, len(precs))
    if mode == "infer":
        for t in range(n - 1):
            for pi in low:
                for qi in low:
                    if pi != qi:
                        x, y = m.pair[t, pi, pi], m.pair[t, qi, qi]
                        m.pair[t, pi, qi] = math.copysign(math.sqrt(x * y), x) if x * y > 0 else 0.0
        return
    todo = [(t, pi, qi) for t in range(n - 1) for pi in low for qi in low if pi != qi]
    schedules = [_with(n, ref, {t: precs[pi], t + 1: precs[qi]}) for t, pi, qi in todo]
    for (t, pi, qi), s, q in zip(
        todo, schedules, evaluator.evaluate_many(schedules, desc="pairs×"), strict=True
    ):
        m.pair[t, pi, qi] = q.loss - m.single[t, pi] - m.single[t + 1, qi]
        m.measured_pairs[t, pi, qi] = True
        result.measured.append((s, q.loss))
