"""Socket types and small input parsers shared by the nodes."""

from __future__ import annotations

from comfy_api.latest import io

from tmpdiff_core.errors import UnknownPrecisionError
from tmpdiff_core.formats import all_formats, backends_for, canonical_name

SCHEDULE = io.Custom("TMPDIFF_SCHEDULE")
"""A ``tmpdiff_core.Schedule`` travelling between nodes (a typed socket, never a JSON string)."""

CATEGORY = "tmpdiff"


def parse_list(text: str) -> list[str]:
    """``"bf16, fp8\\nint8"`` → ``["bf16", "fp8", "int8"]`` (commas or new lines, blanks dropped)."""
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def parse_precisions(text: str) -> list[str]:
    """Canonical precision names from a comma-separated list; raises with the known names."""
    names = parse_list(text)
    if not names:
        raise UnknownPrecisionError(f"no precision given; known: {', '.join(precision_names())}")
    return [canonical_name(name) for name in names]


def precision_names() -> list[str]:
    return [f.name for f in all_formats()]


def backend_names() -> list[str]:
    """``auto`` plus every backend some format registers (``emulated``, ``torchao``, …)."""
    names = {b.name for f in all_formats() for b in backends_for(f.name) if b.name != "reference"}
    return ["auto", *sorted(names)]


def image_tensor(array):
    """A ``(H, W, 3)`` uint8 array as a ComfyUI ``IMAGE`` (``[1, H, W, 3]`` floats in [0, 1])."""
    import torch

    return torch.from_numpy(array).float().div(255.0).unsqueeze(0)
