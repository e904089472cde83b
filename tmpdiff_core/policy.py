"""Which layers ``prepare`` leaves at the reference precision by default, and why.

Quantizing these costs quality and buys almost no speed:

* **Embedders** (patch/text/timestep/guidance embedders, PixArt/Sana ``adaln_single``, caption
  projections): small, run once per call, and their errors propagate into every block.
* **The final projection** (``proj_out``/``norm_out`` at the model root): its error lands directly
  in the predicted noise/velocity with nothing after it to absorb it.
* **Modulation linears** (``norm1.linear``, ``norm1_context.linear``, ``norm.linear``, …): they see
  one row per image (M = batch size), so no low-precision GEMM is faster for them, and their outputs
  scale and shift whole activations.

Patterns are ``fnmatch`` globs on the qualified module name (``transformer_blocks.3.ff.net.2``).
Pass ``exclude=[...]`` to ``prepare`` to replace the list, ``exclude=[*DEFAULT_EXCLUDE, "..."]``
to extend it, ``exclude=[]`` to quantize everything eligible.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

DEFAULT_EXCLUDE: tuple[str, ...] = (
    # embedders
    "x_embedder",
    "context_embedder",
    "*time_text_embed*",
    "*time_embed*",
    "*time_embedding*",
    "*timestep_embedder*",
    "*guidance_embedder*",
    "*text_embedder*",
    "*add_embedding*",
    "*pos_embed*",
    "*caption_projection*",
    "*adaln_single*",
    # final projection at the model root
    "proj_out",
    "norm_out*",
    # modulation (one row per image)
    "*norm*.linear",
    "*adaLN_modulation*",
)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """True if the qualified module name matches one of the globs."""
    return any(fnmatchcase(name, p) for p in patterns)


def is_selected(name: str, include: Sequence[str] | None, exclude: Sequence[str]) -> bool:
    """``include`` (None = everything) minus ``exclude``."""
    if include is not None and not matches_any(name, include):
        return False
    return not matches_any(name, exclude)
