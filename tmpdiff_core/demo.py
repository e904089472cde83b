"""``tmpdiff demo``: the reference model at full precision and under temporal schedules.

Runs on a fresh machine with nothing downloaded: the shipped reference model
(``tmpdiff_core.refmodel``) generates a few demo prompts at full precision and under the bundled
schedules for it (``schedules/refmodel``), then writes an image grid (one column per schedule),
a precision strip per schedule, and a report with SSIM/PSNR against full precision, the time of
one denoiser call per precision on this machine, and the speed-up each schedule gives.

Speed-ups are reported two ways, never mixed: *here* (timed on this machine; on a CPU the
low-precision formats run in emulation and are slower, which the report says) and *on the GPU the
schedule was made for* (from the cost table stored in the schedule).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from .errors import ScheduleNotFoundError
from .fingerprint import model_fingerprint
from .schedule import Schedule
from .strip import render_strip

_CELL = 96  # pixels per 32×32 sample in the grid (nearest-neighbour ×3)


@dataclass
class Row:
    """One schedule's outcome in the demo."""

    name: str
    schedule: Schedule
    images: torch.Tensor
    ssim: float
    psnr: float
    seconds: float


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="run the reference model under bundled schedules")
    demo.add_argument("--out", default="tmpdiff_out", help="output folder (default: tmpdiff_out)")
    demo.add_argument("--prompts", type=int, default=3, help="how many demo prompts (max 8)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--schedule",
        action="append",
        help="bundled name, path or hf:// reference (repeatable; default: the bundled ones)",
    )
    demo.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = run_demo(out, prompts=args.prompts, seed=args.seed, schedules=args.schedule)
    print(report)
    print(f"\ntmpdiff demo: outputs in {out.resolve()}")
    return 0


def run_demo(out: Path, prompts: int = 3, seed: int = 0, schedules: list[str] | None = None) -> str:
    """Generate, compare and write everything; return the report text."""
    from .prepare import prepare
    from .refmodel import load_reference_model

    torch.manual_seed(seed)
    ref = load_reference_model()
    chosen = _schedules(schedules, model_fingerprint(ref.transformer))
    texts = ref.prompts["demo"][: max(1, min(prompts, 8))]
    steps = chosen[0][1].steps
    used = sorted({p for _, s in chosen for p in s.precisions})
    handle = prepare(ref.transformer, ["bf16", *used])
    bar = tqdm(total=steps * (len(chosen) + 1), desc="tmpdiff demo", unit="step")
    reference, _ = _generate(ref, None, texts, steps, seed, bar)
    rows = [
        _row(name, s, _generate(ref, s, texts, steps, seed, bar), reference) for name, s in chosen
    ]
    bar.close()
    costs = _costs_here(ref, handle.precisions)
    _write_grid(out / "grid.png", texts, reference, rows)
    for row in rows:
        Image.fromarray(render_strip(row.schedule.precisions, title=row.name)).save(
            out / f"strip-{_slug(row.name)}.png"
        )
    report = _report(rows, reference, costs, steps)
    (out / "report.md").write_text(report + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(_report_json(rows, reference, costs), indent=2))
    return report


def _schedules(refs: list[str] | None, fingerprint: str) -> list[tuple[str, Schedule]]:
    """The schedules asked for, or every bundled low-precision schedule made for this model."""
    from .hub import load_index, load_schedule

    if refs:
        return [(r, load_schedule(r)) for r in refs]
    index = load_index("bundled")
    names = [
        e["name"]
        for e in index["schedules"]
        if (e["model"] or {}).get("fingerprint") == fingerprint and set(e["precisions"]) != {"bf16"}
    ]
    if not names:
        raise ScheduleNotFoundError(
            f"no bundled schedule is made for the reference model ({fingerprint}); "
            "pass --schedule NAME, or run `tmpdiff search` to make one"
        )
    return [(n, load_schedule(n)) for n in names]


def _generate(
    ref, schedule: Schedule | None, texts, steps, seed, bar
) -> tuple[torch.Tensor, float]:
    """Images and wall time of one batch, under ``schedule`` (None: full precision)."""
    from .diffusers_hook import apply_schedule, remove_schedule

    if schedule is not None:
        apply_schedule(ref, schedule)
    start = time.perf_counter()
    try:
        images = ref.sample(texts, steps=steps, seed=seed, progress=lambda i, n: bar.update(1))
    finally:
        if schedule is not None:
            remove_schedule(ref)
    return images, time.perf_counter() - start


def _row(name: str, schedule: Schedule, result: tuple[torch.Tensor, float], reference) -> Row:
    from .search.metrics import psnr, ssim

    images, seconds = result
    return Row(
        name,
        schedule,
        images,
        float(ssim(images, reference).mean()),
        float(psnr(images, reference).mean()),
        seconds,
    )


def _costs_here(ref, precisions) -> dict[str, float]:
    from .search.adapters import reference_model_costs

    return dict(reference_model_costs(ref, precisions, prompts=1, warmup=1, repeats=3).costs)


def _predicted(schedule: Schedule, costs: dict[str, float]) -> float:
    base = costs.get("bf16") or next(iter(costs.values()))
    return schedule.steps * base / sum(costs.get(p, base) for p in schedule.precisions)


def _report(rows: list[Row], reference: torch.Tensor, costs: dict[str, float], steps: int) -> str:
    lines = [
        f"# tmpdiff demo ({steps} steps, {reference.shape[0]} prompts)",
        "",
        "| schedule | precisions | SSIM | PSNR dB | speed-up here | speed-up on its GPU |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        gpu = row.schedule.cost
        on_gpu = (
            f"{gpu.speedup:.2f}x ({(gpu.device or '?').split(',')[0]})" if gpu.speedup else "n/a"
        )
        lines.append(
            f"| {row.name} | {row.schedule.summary()} | {row.ssim:.4f} | {row.psnr:.2f} | "
            f"{_predicted(row.schedule, costs):.2f}x | {on_gpu} |"
        )
    lines += ["", "One denoiser call (CFG batch) per precision on this machine:", ""]
    lines += [f"- {p}: {ms:.1f} ms" for p, ms in costs.items()]
    if not torch.cuda.is_available():
        lines += [
            "",
            "This machine has no GPU, so low precisions run in emulation (same numbers as the GPU "
            "kernels, none of their speed): 'speed-up here' says nothing about GPU speed. "
            "'Speed-up on its GPU' comes from the per-step cost table stored in the schedule.",
        ]
    return "\n".join(lines)


def _report_json(rows: list[Row], reference: torch.Tensor, costs: dict[str, float]) -> dict:
    return {
        "prompts": reference.shape[0],
        "costs_ms_here": costs,
        "schedules": [
            {
                "name": r.name,
                "precisions": r.schedule.precisions,
                "ssim": r.ssim,
                "psnr": r.psnr,
                "speedup_here": _predicted(r.schedule, costs),
                "speedup_on_gpu": r.schedule.cost.speedup,
                "gpu": r.schedule.cost.device,
                "seconds": r.seconds,
            }
            for r in rows
        ],
    }


def _write_grid(path: Path, texts, reference: torch.Tensor, rows: list[Row]) -> None:
    columns = [("full precision", reference)] + [(r.name, r.images) for r in rows]
    head, label_w = 28, 200
    grid = Image.new("RGB", (label_w + _CELL * len(columns), head + _CELL * len(texts)), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for c, (name, images) in enumerate(columns):
        draw.text((label_w + c * _CELL + 2, 8), name.split("/")[-1][:15], fill="black", font=font)
        for r, image in enumerate(images):
            arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            tile = Image.fromarray(arr).resize((_CELL, _CELL), Image.NEAREST)
            grid.paste(tile, (label_w + c * _CELL, head + r * _CELL))
    for r, text in enumerate(texts):
        draw.text(
            (4, head + r * _CELL + _CELL // 2 - 6), text.split(",")[0][:30], fill="black", font=font
        )
    grid.save(path)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name).strip("-")
