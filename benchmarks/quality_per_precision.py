"""Quality cost of each precision on the reference model (CPU): SSIM / PSNR against bf16.

Companion of ``flux_speed.py``: speed is never reported without its quality cost. The shipped
reference model (``tmpdiff_core.refmodel``) samples the eval prompts with every step at one
precision (emulated kernels: the same quantization as the GPU kernels, only the summation order
differs), and the images are compared with the bf16 model's own images from the same noise. Also
measured: ComfyUI's unscaled fp8 cast (``comfy_fp8``), the mixed schedule of the speed benchmark,
and the fp32 model (the floor: how far plain bf16 rounding already moves the images).

    python benchmarks/quality_per_precision.py --out bench_out/quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _comfy_fp8  # noqa: E402  (the comparison format comfy_fp8)

from tmpdiff_core import prepare  # noqa: E402
from tmpdiff_core.formats import all_formats  # noqa: E402
from tmpdiff_core.refmodel import load_reference_model  # noqa: E402
from tmpdiff_core.search.metrics import psnr, ssim  # noqa: E402

# The speed benchmark's "realistic" 28-step schedule, as fractions of the trajectory.
MIXED = [(3 / 28, "bf16"), (9 / 28, "int8"), (24 / 28, "fp8"), (1.0, "bf16")]


def mixed_schedule(steps: int) -> list[str]:
    """``MIXED`` laid over ``steps`` steps (by the fraction of the trajectory each step starts at)."""
    out = []
    for i in range(steps):
        frac = i / steps
        out.append(next(p for end, p in MIXED if frac < end - 1e-9))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", default="eval", help="prompt set of the reference model")
    ap.add_argument("--n", type=int, default=16, help="how many prompts of the set")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precisions", default="", help="comma list; default: every format")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()

    _comfy_fp8.register()  # idempotent
    ref = load_reference_model("cpu", dtype=torch.bfloat16)
    prompts = ref.prompts[args.prompts][: args.n]
    low = (
        [p.strip() for p in args.precisions.split(",") if p.strip()]
        if args.precisions
        else [f.name for f in all_formats() if not f.reference]
    )
    handle = prepare(ref.transformer, ["bf16", *low], backend="auto")
    kw = dict(steps=args.steps, guidance=args.guidance, seed=args.seed)

    def sample(precision: str | list[str]) -> torch.Tensor:
        if isinstance(precision, str):
            handle.set_precision(precision)
            return ref.sample(prompts, **kw)
        handle.set_precision(precision[0])  # step i runs at precision[i]

        def switch(done: int, total: int) -> None:
            if done < total:
                handle.set_precision(precision[done])

        return ref.sample(prompts, progress=switch, **kw)

    images = {"bf16": sample("bf16")}
    rows = {}

    def score(name: str, img: torch.Tensor) -> None:
        s, p = ssim(img, images["bf16"]), psnr(img, images["bf16"])
        rows[name] = {
            "ssim_mean": round(s.mean().item(), 4),
            "ssim_min": round(s.min().item(), 4),
            "psnr_db": round(p[torch.isfinite(p)].mean().item(), 2)
            if torch.isfinite(p).any()
            else None,
        }
        print(f"{name:<14} {rows[name]}", flush=True)

    fp32 = load_reference_model("cpu", dtype=torch.float32)
    score("fp32 (floor)", fp32.sample(prompts, **kw))
    for p in handle.precisions[1:]:
        images[p] = sample(p)
        score(p, images[p])
    if all(p in handle.precisions for p in ("int8", "fp8")):
        sched = mixed_schedule(args.steps)
        score("mixed", sample(sched))
        rows["mixed"]["schedule"] = sched
    res = {
        "model": "tmpdiff_core.refmodel (bf16 weights, CPU, emulated kernels)",
        "prompts": f"{args.prompts}[:{len(prompts)}]",
        "steps": args.steps,
        "guidance": args.guidance,
        "seed": args.seed,
        "backends": handle.backends,
        "layers": handle.summary(),
        "vs_bf16": rows,
        "elapsed_s": round(time.perf_counter() - t0, 1),
        "command": " ".join(sys.argv),
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
