"""Train the tmpdiff reference model: a small pixel-space FluxTransformer2DModel on 32x32 emoji.

Rectified flow exactly as FLUX/SD3 train it: x_t = (1-s)*x0 + s*noise, target = noise - x0,
s ~ logit-normal, timestep passed to the transformer as s in [0,1] (what FluxPipeline passes as
t/1000). Text is dropped (zero embeddings) 10% of the time so classifier-free guidance works.

Deliberately standalone (no ``tmpdiff_core`` import) so it runs on a bare GPU box with only
torch + diffusers. Training stops at --max-steps or after --max-minutes of wall clock,
whichever comes first, and always saves:

  ema_part0/1.safetensors  EMA weights in fp16, split in two files (<16 MiB each)
  model_config.json        transformer kwargs + training metadata
  loss.csv, loss.png       loss curve
  samples.png              demo + eval prompts sampled with the EMA weights

Example (GPU):  python3 scripts/train_reference.py --data data/prepared --out $OUT
Smoke test (CPU): python3 scripts/train_reference.py --device cpu --batch 4 --max-steps 20 ...
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

MODEL_KWARGS = {
    "patch_size": 1,
    "in_channels": 12,
    "out_channels": 12,
    "num_layers": 3,
    "num_single_layers": 6,
    "attention_head_dim": 64,
    "num_attention_heads": 4,
    "joint_attention_dim": 384,
    "pooled_projection_dim": 384,
    "guidance_embeds": False,
    "axes_dims_rope": [16, 24, 24],
}


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B,3,32,32) -> (B,256,12), the same 2x2 packing as FluxPipeline._pack_latents."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int = 32, w: int = 32) -> torch.Tensor:
    """Inverse of :func:`pack` (FluxPipeline._unpack_latents)."""
    b, _, c4 = x.shape
    x = x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, h, w)


def image_ids(h: int = 16, w: int = 16) -> torch.Tensor:
    """Rotary position ids (row, col) per packed token, as FluxPipeline builds them."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def load_data(folder: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Whole dataset on the device: images in [-1,1], dequantized token embeddings."""
    d = load_file(str(folder / "train.safetensors"))
    images = d["images"].permute(0, 3, 1, 2).float() / 127.5 - 1.0
    tokens = d["tokens_q"].float() * d["tokens_scale"].float()
    return {
        "x0": pack(images).to(device),
        "tokens": tokens.to(device),
        "pooled": d["pooled"].float().to(device),
    }


def rf_loss(model, batch, img_ids, txt_ids, p_drop: float, gen) -> torch.Tensor:
    """Rectified-flow velocity loss with logit-normal sigma and 10% text dropout."""
    x0, tok, pool = batch
    b = x0.shape[0]
    sigma = torch.sigmoid(torch.randn(b, device=x0.device, generator=gen))
    noise = torch.randn(x0.shape, device=x0.device, generator=gen)
    s = sigma[:, None, None]
    xt = (1 - s) * x0 + s * noise
    keep = (torch.rand(b, device=x0.device, generator=gen) >= p_drop).float()
    pred = model(
        hidden_states=xt,
        encoder_hidden_states=tok * keep[:, None, None],
        pooled_projections=pool * keep[:, None],
        timestep=sigma,
        img_ids=img_ids,
        txt_ids=txt_ids,
        return_dict=False,
    )[0]
    return torch.nn.functional.mse_loss(pred.float(), noise - x0)


@torch.no_grad()
def sample(model, tok, pool, img_ids, txt_ids, steps=20, guidance=4.0, seed=0) -> torch.Tensor:
    """Euler sampler on sigmas 1 -> 0 (FlowMatchEulerDiscreteScheduler, shift 1) with CFG."""
    dev = tok.device
    b = tok.shape[0]
    x = torch.randn(b, 256, 12, generator=torch.Generator().manual_seed(seed)).to(dev)
    sigmas = torch.linspace(1.0, 1.0 / 1000, steps).tolist() + [0.0]
    tok2 = torch.cat([tok, torch.zeros_like(tok)])
    pool2 = torch.cat([pool, torch.zeros_like(pool)])
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        v = model(
            hidden_states=torch.cat([x, x]),
            encoder_hidden_states=tok2,
            pooled_projections=pool2,
            timestep=torch.full((2 * b,), s, device=dev),
            img_ids=img_ids,
            txt_ids=txt_ids,
            return_dict=False,
        )[0].float()
        v_c, v_u = v.chunk(2)
        x = x + (s_next - s) * (v_u + guidance * (v_c - v_u))
    return (unpack(x).clamp(-1, 1) + 1) / 2


def grid(images: torch.Tensor, cols: int = 8, scale: int = 2) -> Image.Image:
    """Tile (B,3,H,W) images in [0,1] into one PIL image."""
    arr = (images.cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    b, h, w, _ = arr.shape
    rows = math.ceil(b / cols)
    canvas = Image.new("RGB", (cols * w, rows * h), "white")
    for i, a in enumerate(arr):
        canvas.paste(Image.fromarray(a), ((i % cols) * w, (i // cols) * h))
    return canvas.resize((cols * w * scale, rows * h * scale), Image.NEAREST)


def plot_loss(rows: list[dict], path: Path) -> None:
    """Tiny PIL line plot of the smoothed loss (no matplotlib needed)."""
    if len(rows) < 2:
        return
    W, H, m = 640, 360, 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    lo, hi = min(losses), max(losses)
    pts = [
        (
            m + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (W - 2 * m),
            H - m - (v - lo) / max(1e-9, hi - lo) * (H - 2 * m),
        )
        for s, v in zip(steps, losses, strict=True)
    ]
    d.rectangle([m, m, W - m, H - m], outline="black")
    d.line(pts, fill="blue", width=2)
    d.text((m, 10), f"rectified-flow loss (avg/log interval); min {lo:.4f} max {hi:.4f}", "black")
    d.text((m, H - m + 8), f"step {steps[0]} .. {steps[-1]}", "black")
    img.save(path)


def save_weights(ema, out: Path, meta: dict) -> None:
    """fp16 EMA weights in two roughly equal shards (device file cap 16 MiB) + config."""
    sd = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in ema.state_dict().items()}
    keys = list(sd)
    total = sum(v.numel() for v in sd.values())
    acc, cut = 0, len(keys)
    for i, k in enumerate(keys):
        acc += sd[k].numel()
        if acc >= total / 2:
            cut = i + 1
            break
    save_file({k: sd[k] for k in keys[:cut]}, str(out / "ema_part0.safetensors"))
    save_file({k: sd[k] for k in keys[cut:]}, str(out / "ema_part1.safetensors"))
    (out / "model_config.json").write_text(json.dumps(meta, indent=1))


def lr_at(step: int, progress: float, base: float, warmup: int) -> float:
    """Linear warmup, then cosine to 10% over the (step- or time-) budget."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/prepared"))
    ap.add_argument("--out", type=Path, default=Path("data/run"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--p-drop", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--max-minutes", type=float, default=7.5)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-steps", type=int, default=20)
    return ap.parse_args()


def main() -> None:
    args = parse()
    t_start = time.time()
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = True
    # cuDNN's fused attention backward failed on H100/torch 2.11 (mha_graph.execute): use flash.
    torch.backends.cuda.enable_cudnn_sdp(False)
    data = load_data(args.data, dev)
    n = data["x0"].shape[0]
    T = data["tokens"].shape[1]
    model = FluxTransformer2DModel(**MODEL_KWARGS).to(dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    print(f"data {n} x {T} tokens, params {n_params / 1e6:.2f}M", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    img_ids, txt_ids = image_ids().to(dev), torch.zeros(T, 3, device=dev)
    amp = dev.type == "cuda"
    budget = args.max_minutes * 60
    rows, acc, acc_n, step = [], 0.0, 0, 0
    t0 = time.time()
    last_ckpt = t0
    meta = {"model": MODEL_KWARGS, "params": n_params, "max_tokens": T, "args": vars(args)}
    meta["args"] = {k: str(v) for k, v in meta["args"].items()}
    while step < args.max_steps and time.time() - t0 < budget:
        progress = max(step / args.max_steps, (time.time() - t0) / budget)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress, args.lr, args.warmup)
        idx = torch.randint(0, n, (args.batch,), device=dev, generator=gen)
        batch = (data["x0"][idx], data["tokens"][idx], data["pooled"][idx])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = rf_loss(model, batch, img_ids, txt_ids, args.p_drop, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_p, model_p, 1 - decay)
        acc += loss.detach()
        acc_n += 1
        step += 1
        if step % args.log_every == 0 or step == args.max_steps:
            rows.append(
                {
                    "step": step,
                    "loss": float(acc / acc_n),
                    "lr": opt.param_groups[0]["lr"],
                    "seconds": round(time.time() - t0, 1),
                }
            )
            acc, acc_n = 0.0, 0
            print(rows[-1], flush=True)
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_weights(ema, args.out, {**meta, "steps": step})
            last_ckpt = time.time()
    train_s = time.time() - t0
    meta.update(
        steps=step,
        train_seconds=round(train_s, 1),
        final_loss=rows[-1]["loss"] if rows else None,
        device=torch.cuda.get_device_name() if amp else "cpu",
    )
    save_weights(ema, args.out, meta)
    with open(args.out / "loss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "seconds"])
        w.writeheader()
        w.writerows(rows)
    plot_loss(rows, args.out / "loss.png")
    p = load_file(str(args.data / "prompts.safetensors"))
    k = min(40, p["tokens"].shape[0])  # 32 eval + 8 demo
    imgs = sample(
        ema.float(),
        p["tokens"][:k].float().to(dev),
        p["pooled"][:k].float().to(dev),
        img_ids,
        txt_ids,
        steps=args.sample_steps,
    )
    grid(imgs).save(args.out / "samples.png")
    print(f"done: {step} steps in {train_s:.0f}s, total {time.time() - t_start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
