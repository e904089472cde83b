"""Measured refinement around the model's solution (step 5 of the allocator).

The model is wrong where errors interact in ways it does not encode; a few real evaluations
around its answer fix much of that. Each round re-fits the model's weights on everything
measured, re-solves it, and evaluates the new optimum if it is unmeasured; otherwise it evaluates
the incumbent's best-ranked unmeasured neighbour (one or two steps changed, which includes
swapping two steps). Only measurements decide: the incumbent is always the best *measured*
schedule that meets the target.
"""

from __future__ import annotations

import numpy as np

__all__ = ["refine_quality", "refine_speed"]


def _incumbent(run, feasible) -> tuple[tuple[str, ...], float] | None:
    best = None
    for s, q in run.ev.evaluated.items():
        if feasible(s) and (
            best is None
            or q.loss < best[1] - 1e-15
            or (abs(q.loss - best[1]) <= 1e-15 and run.cost(s) < run.cost(best[0]))
        ):
            best = (s, q.loss)
    return best


def refine_speed(run, feasible, n_evals: int, resolve) -> None:
    """Measured local search around the incumbent, guided by the re-calibrated model."""
    start = run.ev.count
    tried: set[tuple[str, ...]] = set()
    with run.ev.bar(n_evals, "refine") as bar:
        for _ in range(n_evals):
            inc = _incumbent(run, feasible)
            if inc is None:
                break
            run.recalibrate()
            cand, why = _next_candidate(run, inc[0], feasible, tried, resolve)
            if cand is None:
                break
            _measure(run, cand, why, tried, lambda loss, best=inc[1]: loss < best - 1e-12)
            bar.update(1)
    run.phase("refine", start)


def _next_candidate(run, inc: tuple[str, ...], usable, tried, resolve) -> tuple:
    """The re-solved model's optimum if it is usable and unmeasured, else the incumbent's
    best-ranked unmeasured neighbour; ``(None, "")`` when there is neither."""
    sol = resolve()
    if sol is not None:
        s = run.names(sol[0])
        if usable(s) and not run.ev.is_known(s) and s not in tried:
            return s, "re-solved model"
    return _best_neighbour(run, inc, usable, tried)


def _measure(run, cand: tuple[str, ...], why: str, tried: set, accepted) -> None:
    """Evaluate one candidate and record it in the search trace."""
    tried.add(cand)
    loss = run.loss(cand, "refine")
    run.trace.append(
        {
            "phase": "refine",
            "why": why,
            "schedule": list(cand),
            "loss": loss,
            "accepted": bool(accepted(loss)),
        }
    )


def _best_neighbour(run, inc: tuple[str, ...], feasible, tried) -> tuple:
    """The incumbent's unmeasured feasible neighbour with the lowest predicted loss."""
    m = run.model
    x = m.index(inc)
    n, p = len(x), len(run.precisions)
    cands = []
    for i in range(n):
        for qi in range(p):
            if qi == x[i]:
                continue
            y = x.copy()
            y[i] = qi
            cands.append(y)
            for j in range(i + 1, n):
                for qj in range(p):
                    if qj == x[j]:
                        continue
                    z = y.copy()
                    z[j] = qj
                    cands.append(z)
    if not cands:
        return None, ""
    arr = np.stack(cands)
    pred = m.predict_many(arr)
    for k in np.argsort(pred, kind="stable"):
        s = run.names(arr[k])
        if s in tried or run.ev.is_known(s) or not feasible(s):
            continue
        moved = [i for i in range(n) if arr[k][i] != x[i]]
        return s, f"neighbour (steps {moved})"
    return None, ""


def refine_quality(run, max_loss: float, n_evals: int, resolve) -> None:
    """Local search for cheaper schedules that still meet ``max_loss`` (measured)."""
    start = run.ev.count
    tried: set[tuple[str, ...]] = set()

    def meets(s):
        q = run.ev.evaluated.get(s)
        return q is not None and q.loss <= max_loss

    with run.ev.bar(n_evals, "refine") as bar:
        for _ in range(n_evals):
            feas = [s for s in run.ev.evaluated if meets(s)]
            if not feas:
                break
            inc = min(feas, key=lambda s: (run.cost(s), run.ev.evaluated[s].loss))
            inc_cost = run.cost(inc)
            run.recalibrate()
            cand, why = _next_candidate(
                run, inc, lambda s, c=inc_cost: run.cost(s) < c - 1e-12, tried, resolve
            )
            if cand is None:
                break
            _measure(run, cand, why, tried, lambda loss: loss <= max_loss)
            bar.update(1)
    run.phase("refine", start)
