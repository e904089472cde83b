"""Unit tests of the search machinery on synthetic run functions (no model, milliseconds)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tmpdiff_core.search.additive import StepModel, _nnls_ridge, probe
from tmpdiff_core.search.cost import CostTable, CostTableError, measure_costs, nominal_costs
from tmpdiff_core.search.evaluator import Evaluator, Quality
from tmpdiff_core.search.optimize import solve
from tmpdiff_core.search.pareto import Point, best_within, cheapest_meeting, front
from tmpdiff_core.search.toy import CompoundingRun
from tmpdiff_core.search.validation import spearman, validate

PRECS = ("bf16", "int8wo", "int4wo")


def synthetic(steps: int, compound: float = 0.0, seed: int = 0) -> CompoundingRun:
    return CompoundingRun(steps, PRECS, compound=compound, seed=seed)


# ----------------------------------------------------------------------------- cost
def test_cost_table_speedup_budget_and_aliases():
    table = CostTable({"bf16": 2.0, "int8wo": 1.0, "int4wo": 0.5}, unit="ms")
    assert table.reference == "bf16"
    assert table["fp32"] == 2.0  # every reference name costs the reference
    assert table.speedup(["int8wo"] * 4) == pytest.approx(2.0)
    assert table.budget_for(4, 2.0) == pytest.approx(4.0)
    info = table.to_cost_info(["bf16", "int4wo"])
    assert info.speedup == pytest.approx(4 / 2.5) and info.table["int4wo"] == 0.5
    with pytest.raises(CostTableError, match="no entry for 'fp8'"):
        table["fp8"]
    with pytest.raises(CostTableError, match="> 0"):
        CostTable({"bf16": 1.0, "fp8": 0.0})
    assert CostTable.from_dict(table.to_dict()) == table
    assert CostTable.from_dict({"bf16": 1, "fp8": 0.5}).speedup(["fp8"]) == 2.0


def test_nominal_and_measured_costs():
    nominal = nominal_costs(PRECS + ("fp8",))
    assert nominal.costs["bf16"] == 1.0 and nominal.costs["fp8"] == 0.5
    assert nominal.costs["int8wo"] == 0.75 and not nominal.measured
    work = {"bf16": 3000, "int8wo": 1000, "int4wo": 10}
    measured = measure_costs(lambda p: sum(range(work[p])), PRECS, warmup=1, repeats=5)
    assert measured.measured and measured.unit == "ms"
    assert measured.costs["bf16"] > measured.costs["int4wo"]


# ----------------------------------------------------------------------------- evaluator
def test_evaluator_quality_and_reference_aliases():
    run = synthetic(4)
    ev = Evaluator(run, steps=4, precisions=["fp32", "int8wo", "int4wo"], progress=False)
    assert ev.reference_precision == "fp32"
    q_ref = ev.evaluate(["bf16"] * 4)  # bf16 means the reference here
    assert q_ref.ssim == pytest.approx(1.0) and q_ref.latent_mse == 0.0
    q = ev.evaluate(["int4wo"] * 4)
    assert q.ssim < 1.0 and q.psnr < 100 and q.latent_mse > 0 and len(q.ssim_per_image) == 2
    assert ev.evaluate(("int4wo",) * 4) is q  # memoized
    assert run.calls == 2  # reference + one schedule
    with pytest.raises(ValueError, match="not a candidate"):
        ev.evaluate(["fp8"] * 4)
    with pytest.raises(ValueError, match="3 steps"):
        ev.evaluate(["bf16"] * 3)


def test_evaluator_disk_cache_resumes(tmp_path):
    scheds = [("int8wo", "bf16", "bf16"), ("bf16", "int4wo", "int4wo"), ("int4wo",) * 3]
    settings = {"model": "synthetic", "prompts": ["a", "b"]}
    first = synthetic(3)
    ev = Evaluator(
        first, steps=3, precisions=PRECS, settings=settings, cache_dir=tmp_path, progress=False
    )
    qs = ev.evaluate_many(scheds[:2])
    assert first.calls == 3
    # Simulate an interruption in the middle of writing a line.
    path = tmp_path / f"{ev.key}.jsonl"
    with path.open("a") as fh:
        fh.write('{"schedule": ["int4wo", "int4')
    again = synthetic(3)
    ev2 = Evaluator(
        again, steps=3, precisions=PRECS, settings=settings, cache_dir=tmp_path, progress=False
    )
    assert [ev2.evaluate(s) for s in scheds[:2]] == qs
    assert again.calls == 0 and ev2.cache_hits == 2 and ev2.fresh_runs == 0
    ev2.evaluate(scheds[2])  # new: the reference comes from disk, only the schedule runs
    assert again.calls == 1
    other = synthetic(3)
    ev3 = Evaluator(
        other,
        steps=3,
        precisions=PRECS,
        settings={**settings, "seeds": [1]},
        cache_dir=tmp_path,
        progress=False,
    )
    assert ev3.key != ev.key
    ev3.evaluate(scheds[0])
    assert other.calls == 2  # different settings: no stale hit
    header = json.loads(path.read_text().splitlines()[0])
    assert header["settings"]["model"] == "synthetic"


def test_quality_round_trip():
    q = Quality(0.9, 30.0, 0.01, (0.8, 1.0), 1.5)
    assert Quality.from_dict(json.loads(json.dumps(q.to_dict()))) == q
    assert q.loss == pytest.approx(0.1)
    assert set(q.summary()) == {"ssim", "psnr", "latent_mse"}


# ----------------------------------------------------------------------------- optimizer
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, p = 6, 3
    single = rng.random((n, p))
    single[:, 0] = 0
    pair = rng.normal(size=(n - 1, p, p)) * 0.3
    pair[:, 0, :] = pair[:, :, 0] = 0
    costs = [1.0, 0.55, 0.3]
    # seed 0: plain pairwise chain; others: run-position weights as after calibration
    coef = np.ones(4) if seed == 0 else np.array([1.0, 0.5, 2.0, 3.0]) * seed
    model = StepModel(PRECS, single, pair, coef=coef)
    front_ = solve(single, pair, costs, coef=coef, resolution=100)

    def loss(s):
        return model.predict(np.array(s))

    for budget in (6.0, 5.0, 4.1, 3.3, 2.5, 1.8):
        ok = [
            s
            for s in itertools.product(range(p), repeat=n)
            if sum(costs[i] for i in s) <= budget + 1e-9
        ]
        best = min(loss(s) for s in ok)
        idx, pred = front_.best_within(budget)
        assert pred == pytest.approx(best) and loss(idx) == pytest.approx(best)
    if seed == 0:  # the feature matrix agrees with the plain pairwise sum
        s = (2, 1, 1, 0, 2, 2)
        plain = sum(single[t, s[t]] for t in range(n))
        plain += sum(pair[t, s[t], s[t + 1]] for t in range(n - 1))
        assert loss(s) == pytest.approx(plain)
        assert sum(costs[i] for i in idx) <= budget + 1e-9
    costs_on_front = [c for c, _, _ in front_.front()]
    assert costs_on_front == sorted(costs_on_front)


def test_nnls_ridge_and_spearman():
    rng = np.random.default_rng(0)
    x = rng.random((20, 4))
    c = _nnls_ridge(x, x @ np.array([2.0, 0.5, 3.0, 1.5]), ridge=1e-6)
    assert c == pytest.approx([2.0, 0.5, 3.0, 1.5], abs=1e-3)
    c = _nnls_ridge(x, x @ np.array([2.0, -1.0, 1.0, 1.0]))
    assert (c >= 0).all()
    x[:, 3] = 0  # a feature never exercised keeps its prior weight 1
    assert _nnls_ridge(x, x @ np.array([2.0, 0.5, 3.0, 7.0]))[3] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 20, 40]) == pytest.approx(0.9486833, abs=1e-6)


# ----------------------------------------------------------------------------- probe / validate
def test_probe_measures_single_steps_and_pairs_in_linear_evaluations():
    n = 16
    ev = Evaluator(synthetic(n, compound=1.0), steps=n, precisions=PRECS, progress=False)
    res = probe(ev, eps=0.0)
    m = res.model
    p_low = len(PRECS) - 1
    assert ev.count <= 1 + p_low * (2 * n - 1) + p_low * (n - 1)  # reference + bisection + pairs
    for t in (0, 7, 15):
        s = ["bf16"] * n
        s[t] = "int4wo"
        assert m.single[t, 2] == pytest.approx(ev.evaluate(s).loss)
    s = ["bf16"] * n
    s[5] = s[6] = "int8wo"
    assert m.pair[5, 1, 1] == pytest.approx(ev.evaluate(s).loss - m.single[5, 1] - m.single[6, 1])
    assert m.pair[5, 1, 1] > 0  # compounding errors are seen as a positive interaction
    assert m.pair[5, 1, 2] == pytest.approx(np.sqrt(m.pair[5, 1, 1] * m.pair[5, 2, 2]))
    assert ev.count <= 1 + res.evaluations["bisection"] + res.evaluations["pairs"]


def test_probe_stops_at_negligible_segments():
    n = 16
    ev = Evaluator(synthetic(n), steps=n, precisions=PRECS, progress=False)
    res = probe(ev, eps=1.0, pairs=True)  # every whole-timeline probe is "negligible"
    assert res.evaluations == {"bisection": 2, "pairs": 0}
    assert np.allclose(res.model.single[:, 1], res.model.single[0, 1])


def test_validate_reports_correlation_and_compounding():
    n = 12
    additive = Evaluator(synthetic(n), steps=n, precisions=PRECS, progress=False)
    model = probe(additive, eps=0.0).model
    report, measured = validate(additive, model, count=12, seed=0)
    assert len(measured) == 12 and report.count == 12
    assert report.pearson_additive > 0.95 and report.spearman_additive > 0.9
    compounding = Evaluator(synthetic(n, compound=2.0), steps=n, precisions=PRECS, progress=False)
    model = probe(compounding, eps=0.0).model
    report, _ = validate(compounding, model, count=12, seed=0)
    last = report.bins[-1]
    assert last["measured_over_additive"] > 1.25 and "compound" in report.verdict
    # pair terms explain part of the compounding
    assert last["measured_over_pairwise"] < last["measured_over_additive"]


# ----------------------------------------------------------------------------- pareto
def test_front_best_within_cheapest_meeting():
    def pt(cost, ssim):
        return Point(("bf16",), cost, 1 / cost, Quality(ssim, 30.0))

    pts = [pt(1.0, 1.0), pt(0.8, 0.95), pt(0.8, 0.9), pt(0.6, 0.96), pt(0.5, 0.7)]
    assert [(p.cost, p.ssim) for p in front(pts)] == [(0.5, 0.7), (0.6, 0.96), (1.0, 1.0)]
    assert best_within(pts, 0.85).ssim == 0.96
    assert cheapest_meeting(pts, 0.95).cost == 0.6
    assert best_within(pts, 0.1) is None and cheapest_meeting(pts, 1.1) is None
