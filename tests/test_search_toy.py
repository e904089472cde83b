"""The searched schedule against exhaustive enumeration, on a small model with real quantization.

Model: ``tmpdiff_core.search.toy`` (the exact denoiser of a Gaussian mixture of "icons", four
``nn.Linear`` layers quantized by the project's emulated formats, 8 images × N Euler steps).
N = 6 steps, 3 levels → 3^6 = 729 schedules enumerated. Cost table: reference 1.0, the 8-bit
format 0.6, the 4-bit format 0.35 (a supplied table, as on a GPU with real kernels).

Stated tolerances (asserted):
- speed-up target: the searched schedule costs ≤ the budget and its SSIM is within
  ``SSIM_TOL`` = 0.005 of the best of all 729 schedules within the same budget;
- quality target: it meets the SSIM target and costs ≤ (1 + ``COST_TOL``) × the cheapest of all
  729 schedules that meet it, ``COST_TOL`` = 0.05;
- evaluations: ≤ the documented bound (P-1)(3N-2) + R + N + 8 and < 15 % of 729.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from tmpdiff_core.schedule import Schedule
from tmpdiff_core.search import (
    AllocatorConfig,
    CostTable,
    ParetoTarget,
    QualityTarget,
    SpeedupTarget,
    allocate,
    best_within,
    cheapest_meeting,
    exhaustive,
    search,
)
from tmpdiff_core.search.toy import ToyFlow, toy_evaluator

N = 6
SSIM_TOL = 0.005
COST_TOL = 0.05
LEVELS = {"fp": ("bf16", "fp8", "fp4wo"), "int": ("bf16", "int8wo", "int4wo")}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy():
    return ToyFlow()


@pytest.fixture(scope="module")
def truth(toy):
    """Exhaustive enumeration per level set: ``{name: (precisions, costs, points)}``."""
    out = {}
    for name, precs in LEVELS.items():
        costs = CostTable(dict(zip(precs, (1.0, 0.6, 0.35), strict=True)))
        out[name] = (precs, costs, exhaustive(toy_evaluator(toy, steps=N, precisions=precs), costs))
    return out


def _bound(precs, cfg: AllocatorConfig) -> int:
    return (len(precs) - 1) * (3 * N - 2) + cfg.validate + N + 8


@pytest.mark.parametrize("levels", sorted(LEVELS))
@pytest.mark.parametrize("speedup", [1.3, 1.6, 2.0, 2.5])
def test_speedup_target_within_tolerance_of_exhaustive(toy, truth, levels, speedup):
    precs, costs, points = truth[levels]
    budget = costs.budget_for(N, speedup)
    cfg = AllocatorConfig()
    ev = toy_evaluator(toy, steps=N, precisions=precs)
    got = allocate(ev, costs, SpeedupTarget(speedup), cfg).best
    opt = best_within(points, budget)
    uniform = best_within([p for p in points if len(set(p.precisions)) == 1], budget)
    assert got.cost <= budget * (1 + 1e-9)
    assert got.ssim >= opt.ssim - SSIM_TOL, (got.precisions, opt.precisions)
    assert got.ssim >= uniform.ssim
    assert ev.count <= _bound(precs, cfg) and ev.count < 0.15 * len(points)


@pytest.mark.parametrize("levels", sorted(LEVELS))
@pytest.mark.parametrize("ssim", [0.999, 0.99, 0.95])
def test_quality_target_within_tolerance_of_exhaustive(toy, truth, levels, ssim):
    precs, costs, points = truth[levels]
    ev = toy_evaluator(toy, steps=N, precisions=precs)
    got = allocate(ev, costs, QualityTarget(ssim)).best
    opt = cheapest_meeting(points, ssim)
    assert got.ssim >= ssim
    assert got.cost <= opt.cost * (1 + COST_TOL), (got.precisions, opt.precisions)
    assert ev.count < 0.15 * len(points)


def test_searched_beats_uniform_and_greedy_at_matched_cost(toy, truth):
    """On this model uniform fp8/fp4wo lose whole images; the search keeps them."""
    precs, costs, _ = truth["fp"]
    ev = toy_evaluator(toy, steps=N, precisions=precs)
    result = search(ev, costs, SpeedupTarget(2.0), baselines=("uniform", "greedy", "random"))
    best_uniform = result.baselines["best_uniform"]
    assert result.best.ssim >= best_uniform.ssim + 0.05
    assert result.best.ssim >= result.baselines["greedy"].ssim - 1e-9
    assert result.evaluations["exhaustive"] == 3**N


def test_pareto_front_and_saved_outputs(toy, tmp_path):
    precs = LEVELS["int"]
    costs = CostTable({"bf16": 1.0, "int8wo": 0.6, "int4wo": 0.35})
    ev = toy_evaluator(toy, steps=N, precisions=precs, cache_dir=tmp_path / "cache")
    result = search(ev, costs, ParetoTarget(points=5, ssim=0.98), baselines=("uniform",))
    fr = result.allocation.front
    assert all(a.cost < b.cost and a.ssim < b.ssim for a, b in zip(fr, fr[1:], strict=False))
    assert result.best.ssim >= 0.98 and result.best in fr
    paths = result.save(tmp_path / "toy.json")
    loaded = Schedule.load(paths["schedule"])
    assert loaded.precisions == list(result.best.precisions)
    assert loaded.quality["ssim"] == pytest.approx(result.best.ssim)
    assert loaded.cost.table == costs.costs and loaded.cost.speedup == pytest.approx(
        result.best.speedup
    )
    meta = loaded.search
    assert meta["evaluations"]["search"] == result.evaluations["search"]
    assert {"pearson_additive", "spearman_additive", "verdict"} <= set(meta["additivity"])
    assert meta["target"] == {"kind": "pareto", "points": 5, "ssim": 0.98}
    assert len(meta["front"]) == len(fr)
    for key in ("pareto", "strip"):
        with Image.open(paths[key]) as img:
            assert img.size[0] >= 600
    # Resume: a new evaluator on the same cache re-runs nothing.
    again = toy_evaluator(toy, steps=N, precisions=precs, cache_dir=tmp_path / "cache")
    second = search(again, costs, ParetoTarget(points=5, ssim=0.98), baselines=("uniform",))
    assert again.fresh_runs == 0 and again.cache_hits == again.count
    assert second.best.precisions == result.best.precisions


def test_cli_search_on_toy(tmp_path, capsys):
    from tmpdiff_core.cli import main

    out = tmp_path / "cli.json"
    code = main(
        [
            "search", "--model", "toy", "--steps", "5", "--precisions", "bf16,int8wo,int4wo",
            "--target-speedup", "1.5", "--costs", "nominal", "--validate", "6",
            "--cache-dir", str(tmp_path / "c"), "--output", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "evaluations:" in text and "Pearson" in text
    schedule = Schedule.load(out)
    assert schedule.cost.speedup >= 1.5 - 1e-9
    assert (tmp_path / "cli.pareto.png").is_file() and (tmp_path / "cli.strip.png").is_file()
