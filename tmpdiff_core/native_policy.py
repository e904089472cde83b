"""Default exclusions for models in their *original* checkpoint layout (as ComfyUI loads them).

``policy.DEFAULT_EXCLUDE`` names layers the diffusers way (``x_embedder``, ``norm1.linear``).
ComfyUI keeps the layout of the original releases (BFL Flux, SAI MMDiT, the LDM UNet), where the
same roles have other names. The reasons are the ones ``policy`` gives: embedders run once per
call and feed every block, the final projection writes the prediction directly, and modulation
linears see one row per image, so no low-precision GEMM is faster for them.

Patterns are ``fnmatch`` globs on the qualified module name inside the diffusion model
(``double_blocks.3.img_attn.qkv``).
"""

from __future__ import annotations

from .policy import DEFAULT_EXCLUDE

NATIVE_EXCLUDE: tuple[str, ...] = (
    # Flux / Chroma / HiDream-style (BFL layout): embedders, final layer, modulation
    "img_in",
    "txt_in",
    "time_in.*",
    "vector_in.*",
    "guidance_in.*",
    "final_layer.*",
    "*_mod.lin",
    "*.modulation.lin",
    # SD3 / MMDiT (SAI layout)
    "t_embedder.*",
    "y_embedder.*",
    "context_embedder",
    # SD1.x / SDXL UNet (LDM layout): timestep / label embeddings and per-resblock time projection
    "time_embed.*",
    "label_emb.*",
    "*emb_layers*",
)

EXCLUDE_WITH_NATIVE: tuple[str, ...] = (*DEFAULT_EXCLUDE, *NATIVE_EXCLUDE)
"""Both layouts' defaults: what a loader that may see either layout should leave unquantized."""
