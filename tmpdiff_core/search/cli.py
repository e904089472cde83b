"""``tmpdiff search``: find a per-step precision schedule for a model from the command line.

    tmpdiff search --target-speedup 1.5 --steps 20 --precisions bf16,int8wo,int4wo \\
        --costs costs_h100.json --output schedules/ref-1.5x.json

writes ``ref-1.5x.json`` (the ``Schedule``), ``ref-1.5x.pareto.png`` and ``ref-1.5x.strip.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from ..errors import TmpdiffError

DEFAULT_CACHE = Path(os.environ.get("TMPDIFF_CACHE", Path.home() / ".cache" / "tmpdiff")) / "search"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search which denoising step runs at which precision",
        description="Probe, model and refine a per-step precision schedule (TMPDiff-style "
        "adaptive bisection with pairwise interaction terms). Evaluations are cached, so an "
        "interrupted search resumes where it stopped.",
    )
    p.add_argument(
        "--model",
        default="reference",
        help="'reference' (tmpdiff's shipped model, default), 'toy' (a tiny test model) or a "
        "diffusers pipeline path/repo id",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps N (default 20; toy: 8)")
    p.add_argument(
        "--sampler",
        default=None,
        help="diffusers scheduler class to sample with (e.g. FlowMatchEulerDiscreteScheduler); "
        "default: the model's own",
    )
    p.add_argument("--precisions", default="bf16,int8wo,int4wo", help="candidates, reference first")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-speedup", type=float, help="best quality at ≥ this speed-up")
    goal.add_argument("--target-quality", type=float, help="fastest schedule with SSIM ≥ this")
    goal.add_argument("--pareto", action="store_true", help="measure the whole front")
    p.add_argument(
        "--pareto-ssim",
        type=float,
        default=0.9,
        help="with --pareto: the SSIM the returned schedule must reach",
    )
    p.add_argument(
        "--prompts",
        default=None,
        help="prompt file: one per line, or a JSON list (default: the model's calibration prompts)",
    )
    p.add_argument(
        "--seeds", default="0", help="comma-separated noise seeds (images = prompts × seeds)"
    )
    p.add_argument("--guidance", type=float, default=None, help="CFG / guidance scale")
    p.add_argument(
        "--costs",
        default="measure",
        help="'measure' (time one denoiser call per precision here), 'nominal' (bits-based "
        "assumption) or a JSON file {precision: cost}",
    )
    p.add_argument(
        "--output", default=None, help="schedule JSON path (plots are written beside it)"
    )
    p.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE), help="evaluation cache ('' to disable)"
    )
    p.add_argument(
        "--validate", type=int, default=16, help="random schedules for the additivity check"
    )
    p.add_argument(
        "--refine", type=int, default=None, help="measured refinement evaluations (default N)"
    )
    p.add_argument(
        "--eps", type=float, default=1e-3, help="negligible segment loss (1-SSIM) in the bisection"
    )
    p.add_argument("--cross-pairs", choices=("infer", "measure"), default="infer")
    p.add_argument(
        "--no-pairs", action="store_true", help="purely additive model (TMPDiff's hypothesis as is)"
    )
    p.add_argument(
        "--baselines", default="uniform,greedy,random", help="comma-separated; '' for none"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", help="prepare backend: auto, emulated, …")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)


def _prompts(path: str | None) -> list[str] | None:
    if path is None:
        return None
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        data = json.loads(text)
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise TmpdiffError(f"{path}: a JSON prompt file must be a list of strings")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]


def _swap_scheduler(holder, name: str | None) -> None:
    if not name:
        return
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise TmpdiffError(f"--sampler {name!r} is not a diffusers scheduler class")
    holder.scheduler = cls.from_config(holder.scheduler.config)


def _build(args, precisions, seeds, cache_dir):
    """(evaluator, cost-measuring callable or None) for ``--model``."""
    from . import adapters

    prompts = _prompts(args.prompts)
    progress = not args.quiet
    if args.model == "toy":
        from .toy import ToyFlow, toy_evaluator

        toy = ToyFlow()
        ev = toy_evaluator(
            toy,
            steps=args.steps or 8,
            precisions=precisions,
            prompts=prompts,
            seeds=seeds,
            cache_dir=cache_dir,
            progress=progress,
        )

        def timer():
            from .cost import measure_costs

            return measure_costs(lambda p: toy.sample(8, [p]), precisions, device="cpu")

        return ev, timer
    import torch

    if args.model == "reference":
        from ..refmodel import load_reference_model

        ref = load_reference_model(device=args.device)
        _swap_scheduler(ref, args.sampler)
        ev = adapters.evaluator_for_reference_model(
            ref,
            prompts=prompts,
            seeds=seeds,
            steps=args.steps or 20,
            guidance=4.0 if args.guidance is None else args.guidance,
            precisions=precisions,
            cache_dir=cache_dir,
            backend=args.backend,
            progress=progress,
        )
        return ev, lambda: adapters.reference_model_costs(ref, precisions)
    from diffusers import DiffusionPipeline

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype).to(args.device)
    _swap_scheduler(pipe, args.sampler)
    if prompts is None:
        raise TmpdiffError("a diffusers pipeline needs --prompts (a file of calibration prompts)")
    ev = adapters.evaluator_for_pipeline(
        pipe,
        prompts=prompts,
        seeds=seeds,
        steps=args.steps or 28,
        guidance=args.guidance,
        precisions=precisions,
        cache_dir=cache_dir,
        backend=args.backend,
        progress=progress,
    )
    return ev, None


def _costs(args, precisions, timer):
    from .cost import CostTable, nominal_costs

    if args.costs == "nominal":
        return nominal_costs(precisions)
    if args.costs == "measure":
        if timer is None:
            raise TmpdiffError("--costs measure is not available for this model; pass a JSON table")
        table = timer()
        ref = table.costs[table.reference]
        if all(table[p] >= ref for p in precisions[1:]):
            raise TmpdiffError(
                f"measured on this machine, no low precision is faster than the reference "
                f"({', '.join(f'{k}={v:.2f}{table.unit}' for k, v in table.costs.items())}): the "
                "formats run emulated here. Pass --costs with a table measured where the real "
                "kernels run (JSON {precision: cost}), or --costs nominal"
            )
        return table
    return CostTable.load(args.costs)


def _main(args) -> int:
    from .allocate import AllocatorConfig, ParetoTarget, QualityTarget, SpeedupTarget
    from .searcher import search

    if not args.quiet:
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cache_dir = args.cache_dir or None
    ev, timer = _build(args, precisions, seeds, cache_dir)
    costs = _costs(args, ev.precisions, timer)
    if args.target_speedup is not None:
        target, tag = SpeedupTarget(args.target_speedup), f"speedup-{args.target_speedup:g}"
    elif args.target_quality is not None:
        target, tag = QualityTarget(args.target_quality), f"ssim-{args.target_quality:g}"
    else:
        target, tag = ParetoTarget(ssim=args.pareto_ssim), "pareto"
    config = AllocatorConfig(
        eps=args.eps,
        pairs=not args.no_pairs,
        cross_pairs=args.cross_pairs,
        validate=args.validate,
        refine=args.refine,
    )
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    result = search(ev, costs, target, config=config, baselines=baselines)
    out = Path(
        args.output or Path("tmpdiff_out") / f"{Path(args.model).name}-{ev.steps}-{tag}.json"
    )
    paths = result.save(out)
    print(result.report())
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0
