"""Tiny random diffusers pipelines built in code, for CPU tests (no Hub, no tokenizer, no VAE).

Each ``build_*`` returns ``(pipe, call_kwargs)``: a pipeline with random weights (seeded, so
deterministic) and the keyword arguments for one short, cheap generation. Text encoders,
tokenizers and the VAE are ``None``: the prompt arrives as ``prompt_embeds`` and the output stays
a latent (``output_type="latent"``), so nothing is downloaded or decoded.

Configs follow the shapes of diffusers' own ``get_dummy_components`` fast tests, cut further.
``cfg=True`` passes negative embeddings and a guidance scale > 1, so pipelines that batch
cond+uncond call the denoiser once per step on a doubled batch.

    pipe, kwargs = build("flux")
    pipe(**kwargs, num_inference_steps=4)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Built = tuple[Any, dict[str, Any]]


def _embeds(seed: int, *shape: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen)


def _common(seed: int = 0) -> dict[str, Any]:
    return {
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "latent",
        "return_dict": False,
    }


def build_flux(cfg: bool = False) -> Built:
    """``FluxPipeline``: 1 double + 1 single block, 16×16 image → 1 packed latent token.

    ``cfg=True`` turns on *true* CFG (a second, uncond call per step with ``negative_prompt_embeds``
    and ``true_cfg_scale > 1``); Flux-dev's distilled guidance goes through ``guidance=`` instead.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    kwargs = {
        **_common(),
        "prompt_embeds": _embeds(1, 1, 8, 32),
        "pooled_prompt_embeds": _embeds(2, 1, 32),
        "height": 16,
        "width": 16,
        "guidance_scale": 3.5,
    }
    if cfg:
        kwargs["negative_prompt_embeds"] = _embeds(3, 1, 8, 32)
        kwargs["negative_pooled_prompt_embeds"] = _embeds(4, 1, 32)
        kwargs["true_cfg_scale"] = 2.0
    return pipe, kwargs


def build_sd3(cfg: bool = False) -> Built:
    """``StableDiffusion3Pipeline``: 1 joint block; CFG doubles the batch of one call per step."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
        transformer=transformer,
    )
    kwargs = {
        **_common(),
        "prompt_embeds": _embeds(1, 1, 8, 32),
        "pooled_prompt_embeds": _embeds(2, 1, 64),
        "height": 32,
        "width": 32,
        "guidance_scale": 5.0 if cfg else 1.0,
    }
    if cfg:
        kwargs["negative_prompt_embeds"] = _embeds(3, 1, 8, 32)
        kwargs["negative_pooled_prompt_embeds"] = _embeds(4, 1, 64)
    return pipe, kwargs


def build_sana(cfg: bool = False) -> Built:
    """``SanaPipeline`` with a flow-matching scheduler; ``timestep_scale`` set to 0.5 on purpose.

    Real Sana checkpoints use ``timestep_scale=1.0`` (Sana-Sprint uses another value); a value other
    than 1 proves the adapter divides it back out instead of ignoring it.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(0)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=32,
        timestep_scale=0.5,
    )
    pipe = SanaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
    )
    kwargs = {
        **_common(),
        "prompt_embeds": _embeds(1, 1, 8, 8),
        "prompt_attention_mask": torch.ones(1, 8, dtype=torch.long),
        "height": 32,
        "width": 32,
        "max_sequence_length": 8,
        "complex_human_instruction": None,
        "negative_prompt": None,
        "guidance_scale": 4.5 if cfg else 1.0,
    }
    if cfg:
        kwargs["negative_prompt_embeds"] = _embeds(3, 1, 8, 8)
        kwargs["negative_prompt_attention_mask"] = torch.ones(1, 8, dtype=torch.long)
    return pipe, kwargs


def build_pixart_sigma(cfg: bool = False) -> Built:
    """``PixArtSigmaPipeline`` with a DDIM scheduler (integer DDPM timesteps in [0, 999])."""
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    pipe = PixArtSigmaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer=transformer,
        scheduler=DDIMScheduler(),
    )
    kwargs = {
        **_common(),
        "prompt_embeds": _embeds(1, 1, 8, 32),
        "prompt_attention_mask": torch.ones(1, 8, dtype=torch.long),
        "height": 64,
        "width": 64,
        "use_resolution_binning": False,
        "negative_prompt": None,
        "guidance_scale": 4.5 if cfg else 1.0,
    }
    if cfg:
        kwargs["negative_prompt_embeds"] = _embeds(3, 1, 8, 32)
        kwargs["negative_prompt_attention_mask"] = torch.ones(1, 8, dtype=torch.long)
    return pipe, kwargs


def build_sdxl(cfg: bool = False) -> Built:
    """``StableDiffusionXLPipeline``: a 2-level UNet, Euler with float DDPM timesteps (leading)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids × 8 + pooled 32
        cross_attention_dim=32,
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=None,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=scheduler,
    )
    kwargs = {
        **_common(),
        "prompt_embeds": _embeds(1, 1, 8, 32),
        "pooled_prompt_embeds": _embeds(2, 1, 32),
        "height": 64,
        "width": 64,
        "guidance_scale": 5.0 if cfg else 1.0,
    }
    if cfg:
        kwargs["negative_prompt_embeds"] = _embeds(3, 1, 8, 32)
        kwargs["negative_pooled_prompt_embeds"] = _embeds(4, 1, 32)
    return pipe, kwargs


BUILDERS: dict[str, Callable[..., Built]] = {
    "flux": build_flux,
    "sd3": build_sd3,
    "sana": build_sana,
    "pixart_sigma": build_pixart_sigma,
    "sdxl": build_sdxl,
}


def build(name: str, cfg: bool = False) -> Built:
    """``build("sdxl", cfg=True)``: one of ``BUILDERS``."""
    return BUILDERS[name](cfg=cfg)


def denoiser_of(pipe: Any) -> torch.nn.Module:
    """The pipeline's denoiser (``transformer`` or ``unet``)."""
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet
