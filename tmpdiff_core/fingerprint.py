"""A model fingerprint: architecture config plus a hash of the weights.

Schedules are only meaningful for the model they were searched on, so a schedule records this
fingerprint and loaders compare it. Hashing every byte of a 12B-parameter model takes minutes, so
we hash each tensor's name, shape, dtype and a fixed strided sample of its values: cheap, stable,
and different for any two real checkpoints (fine-tunes change every tensor).
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

_SAMPLES_PER_TENSOR = 4096


def model_fingerprint(model: nn.Module) -> str:
    """``"sha256:<hex16>"`` of the config and sampled weights; prepared layers hash as the originals."""
    digest = hashlib.sha256()
    digest.update(json.dumps(_config_of(model), sort_keys=True, default=str).encode())
    for name, tensor in sorted(_reference_state(model).items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(_sample(tensor))
    return "sha256:" + digest.hexdigest()[:16]


def _config_of(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "items"):
        return {
            "class": type(model).__name__,
            **{k: v for k, v in config.items() if not k.startswith("_")},
        }
    return {"class": type(model).__name__}


def _reference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the quantized variants added by ``prepare`` (``…variants.{1,2,…}``)."""
    out = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if "variants" in parts:
            i = parts.index("variants")
            if parts[i + 1] != "0":
                continue
            parts = parts[:i] + parts[i + 2 :]
        out[".".join(parts)] = tensor
    return out


def _sample(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().reshape(-1)
    if flat.numel() > _SAMPLES_PER_TENSOR:
        step = flat.numel() // _SAMPLES_PER_TENSOR
        flat = flat[::step][:_SAMPLES_PER_TENSOR]
    return (
        flat.to("cpu", torch.float32 if flat.is_floating_point() else torch.int64).numpy().tobytes()
    )
