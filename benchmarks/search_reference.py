"""Schedule search on tmpdiff's reference model: the numbers behind BENCHMARKS.md.

For each target speed-up it runs the search (calibration prompts), the baselines in the same
harness (uniform per precision, greedy single-step ranking, random search given as many
evaluations as the search used), then re-measures the searched schedule and the best uniform one
on the held-out *eval* prompts. It prints a markdown table and writes ``results.json``, the
schedules and their plots under ``--out``.

    python benchmarks/search_reference.py --steps 20 --costs costs.json --out tmpdiff_out/bench

``--speedups auto`` (default) targets exactly the speed-up of each uniform low precision (so
"uniform at matched speed-up" exists) plus the midpoints between them. Speed-ups are predicted
from the cost table, which is stored in every schedule; pass a table measured on the GPU the
schedules are meant for (``--costs``), or ``measure`` to time this machine.

Evaluations are cached under ``--cache-dir``: targets share the probes, and a rerun or an
interrupted run resumes. ``--exhaustive`` (N ≤ 8 only) also enumerates all P^N schedules.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tmpdiff_core.refmodel import load_reference_model  # noqa: E402
from tmpdiff_core.search import (  # noqa: E402
    AllocatorConfig,
    CostTable,
    SpeedupTarget,
    best_within,
    exhaustive,
    nominal_costs,
    search,
)
from tmpdiff_core.search.adapters import (  # noqa: E402
    evaluator_for_reference_model,
    reference_model_costs,
)
from tmpdiff_core.search.baselines import random_search  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precisions", default="bf16,int8wo,int4wo")
    p.add_argument("--speedups", default="auto", help="comma-separated, or 'auto'")
    p.add_argument("--costs", default="nominal", help="JSON table, 'nominal' or 'measure'")
    p.add_argument("--calibration", type=int, default=8, help="calibration prompts used")
    p.add_argument("--eval-prompts", type=int, default=8, help="held-out prompts for the check")
    p.add_argument("--seeds", default="0")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--validate", type=int, default=16)
    p.add_argument(
        "--random-evals",
        type=int,
        default=None,
        help="random-baseline schedules per target (default: as many as the search used)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default="auto")
    p.add_argument("--cache-dir", default="tmpdiff_out/search_cache")
    p.add_argument("--out", default="tmpdiff_out/bench_search")
    p.add_argument("--exhaustive", action="store_true", help="also enumerate P^N (N ≤ 8)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args()


def auto_speedups(costs: CostTable, precisions: list[str]) -> list[float]:
    ref = costs[precisions[0]]
    uni = sorted({round(ref / costs[p], 4) for p in precisions[1:] if costs[p] < ref})
    points = [1.0, *uni]
    mids = [round((a + b) / 2, 4) for a, b in zip(points, points[1:], strict=False)]
    return sorted(set(uni + mids))


def main() -> int:
    args = parse()
    precisions = [p.strip() for p in args.precisions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref = load_reference_model(device=args.device)
    calib = ref.prompts["calibration"][: args.calibration]
    held_out = ref.prompts["eval"][: args.eval_prompts]

    def evaluator(prompts):
        return evaluator_for_reference_model(
            ref, prompts=prompts, seeds=seeds, steps=args.steps, guidance=args.guidance,
            precisions=precisions, cache_dir=args.cache_dir, backend=args.backend,
            progress=not args.quiet,
        )  # fmt: skip

    ev = evaluator(calib)
    if args.costs == "nominal":
        costs = nominal_costs(ev.precisions)
    elif args.costs == "measure":
        costs = reference_model_costs(ref, ev.precisions, prompts=len(calib))
    else:
        costs = CostTable.load(args.costs)
    speedups = (
        auto_speedups(costs, list(ev.precisions))
        if args.speedups == "auto"
        else [float(s) for s in args.speedups.split(",")]
    )
    rows, results = [], {"costs": costs.to_dict(), "settings": ev.settings, "targets": []}
    for sp in speedups:
        ev = evaluator(calib)
        t0 = time.perf_counter()
        res = search(ev, costs, SpeedupTarget(sp), config=AllocatorConfig(validate=args.validate))
        wall = time.perf_counter() - t0
        budget = costs.budget_for(args.steps, sp)
        n_random = args.random_evals if args.random_evals is not None else res.evaluations["search"]
        rnd = random_search(ev, costs, budget, n_random, seed=7) if n_random else None
        uni = res.baselines.get("best_uniform")
        greedy = res.baselines.get("greedy")
        res.save(out / f"ref-{args.steps}-{sp:g}x.json")
        held = evaluator(held_out)
        held_best = held.evaluate(res.best.precisions)
        held_uni = held.evaluate(uni.precisions) if uni else None
        add = res.allocation.additivity
        entry = {
            "target_speedup": sp,
            "searched": res.best.to_dict(),
            "best_uniform": uni.to_dict() if uni else None,
            "greedy": greedy.to_dict() if greedy else None,
            "random_same_evals": rnd.to_dict() if rnd else None,
            "held_out": {
                "searched_ssim": held_best.ssim,
                "uniform_ssim": held_uni.ssim if held_uni else None,
            },
            "evaluations": res.evaluations,
            "phases": res.allocation.phases,
            "wall_seconds": wall,
            "additivity": add.to_dict() if add else None,
            "model_ab": [res.allocation.model.a, res.allocation.model.b],
        }
        results["targets"].append(entry)
        gain = (res.best.ssim - uni.ssim) / uni.ssim * 100 if uni else float("nan")
        loss_cut = (
            (1 - (1 - res.best.ssim) / (1 - uni.ssim)) * 100
            if uni and uni.ssim < 1
            else float("nan")
        )
        rows.append(
            f"| {sp:.2f}x | {res.best.speedup:.2f}x | {res.best.ssim:.4f} | "
            f"{uni.ssim if uni else float('nan'):.4f} ({uni.precisions[0] if uni else '-'}) | "
            f"{gain:+.1f}% | {loss_cut:.0f}% | {greedy.ssim if greedy else float('nan'):.4f} | "
            f"{rnd.ssim if rnd else float('nan'):.4f} | "
            f"{held_best.ssim:.4f} / {held_uni.ssim if held_uni else float('nan'):.4f} | "
            f"{res.evaluations['search']} / {res.evaluations['exhaustive']:.2g} | "
            f"{add.pearson_additive:.2f} / {add.spearman_additive:.2f} | {wall:.0f} s |"
        )
        print(res.report(), flush=True)
    if args.exhaustive:
        if args.steps > 8:
            raise SystemExit("--exhaustive needs --steps ≤ 8")
        ev = evaluator(calib)
        allp = exhaustive(ev, costs)
        results["exhaustive"] = [
            {
                "target_speedup": sp,
                "optimum": best_within(allp, costs.budget_for(args.steps, sp)).to_dict(),
            }
            for sp in speedups
        ]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(
        "\n| target | speed-up | SSIM searched | SSIM best uniform (≤ cost) | Δ SSIM | 1-SSIM cut "
        "| greedy | random (same evals) | held-out searched / uniform | evals / exhaustive "
        "| additive Pearson / Spearman | wall |"
    )
    print("|" + "---|" * 12)
    print("\n".join(rows))
    if args.exhaustive:
        for e in results["exhaustive"]:
            print(
                f"exhaustive optimum at {e['target_speedup']:.2f}x: SSIM {e['optimum']['ssim']:.4f}"
            )
    print(f"\nwrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
