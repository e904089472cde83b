"""The tmpdiff reference model: a real, trained ~13.5M-parameter FluxTransformer2DModel.

Pixel-space rectified flow on 32x32 Google/Noto emoji, conditioned on all-MiniLM-L6-v2
embeddings that ship precomputed, so it samples on a 2-core CPU with no network and no text
encoder. Every quality number of tmpdiff (mixed-precision schedule vs full precision) is
measured on it. See ``MODEL_CARD.md`` beside this file.

    from tmpdiff_core.refmodel import load_reference_model
    ref = load_reference_model()
    images = ref.sample(ref.prompts["demo"][:2], steps=20, guidance=4.0, seed=0)
"""

from ._model import (
    WEIGHTS_DIR,
    ReferenceModel,
    UnknownPromptError,
    encode,
    image_ids,
    load_reference_model,
    pack,
    unpack,
)

__all__ = [
    "WEIGHTS_DIR",
    "ReferenceModel",
    "UnknownPromptError",
    "encode",
    "image_ids",
    "load_reference_model",
    "pack",
    "unpack",
]
