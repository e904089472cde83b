"""Regenerate ``sample_grid.png`` and time the denoiser on this CPU.

    python -m tmpdiff_core.refmodel [--steps 20] [--guidance 4.0] [--seed 0]

The grid shows the 32 held-out eval prompts (rows 1-4) then the 8 demo prompts (row 5),
sampled in one batch with the shipped fp32 weights; the prompts are printed in grid order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from ._model import image_ids, load_reference_model


def time_denoiser(ref, batch: int = 2, repeats: int = 20) -> float:
    """Median seconds of one transformer call on a CFG batch (cond + uncond of one prompt)."""
    tok, pool = ref.embed(ref.prompts["demo"][: batch // 2] * 2)
    kw = {
        "hidden_states": torch.randn(batch, 256, 12),
        "encoder_hidden_states": tok,
        "pooled_projections": pool,
        "timestep": torch.full((batch,), 0.5),
        "img_ids": image_ids(),
        "txt_ids": torch.zeros(ref.max_tokens, 3),
        "return_dict": False,
    }
    times = []
    with torch.no_grad():
        for i in range(repeats + 3):
            t0 = time.perf_counter()
            ref.transformer(**kw)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def save_grid(images: torch.Tensor, path: Path, cols: int = 8, scale: int = 3) -> None:
    """Tile the images, nearest-upscaled so 32px emoji stay readable."""
    pil = [im.resize((32 * scale, 32 * scale), Image.NEAREST) for im in _to_pil(images)]
    rows = (len(pil) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * 32 * scale, rows * 32 * scale), "white")
    for i, im in enumerate(pil):
        canvas.paste(im, ((i % cols) * 32 * scale, (i // cols) * 32 * scale))
    canvas.save(path)


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    from ._model import ReferenceModel

    return ReferenceModel.to_pil(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "sample_grid.png")
    args = ap.parse_args()
    ref = load_reference_model()
    print(
        f"threads {torch.get_num_threads()}, denoiser call (batch 2, fp32): "
        f"{time_denoiser(ref) * 1000:.1f} ms"
    )
    prompts = ref.prompts["eval"] + ref.prompts["demo"]
    t0 = time.perf_counter()
    images = ref.sample(prompts, steps=args.steps, guidance=args.guidance, seed=args.seed)
    print(
        f"sampled {len(prompts)} prompts x {args.steps} steps in {time.perf_counter() - t0:.1f} s"
    )
    save_grid(images, args.out)
    for i, p in enumerate(prompts):
        print(f"{i // 8 + 1}.{i % 8 + 1}: {p}")


if __name__ == "__main__":
    main()
