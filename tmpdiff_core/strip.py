"""Pictures of schedules: the per-step precision strip (the Pareto plot is ``search.plots``).

Images are ``uint8`` RGB arrays of shape ``(height, width, 3)``, so any front end can show them
(ComfyUI turns them into an ``IMAGE`` tensor, the CLI can save them with Pillow). Drawing uses
Pillow only; colours are fixed per precision so strips of different schedules compare at a glance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PRECISION_COLORS: dict[str, tuple[int, int, int]] = {
    "bf16": (44, 62, 120),
    "fp16": (44, 62, 120),
    "fp32": (44, 62, 120),
    "fp8": (46, 160, 90),
    "int8": (230, 140, 40),
    "int8wo": (240, 200, 60),
    "int4wo": (200, 60, 60),
    "fp4wo": (140, 80, 170),
}
_BACKGROUND = (255, 255, 255)
_INK = (30, 30, 30)


def precision_color(name: str) -> tuple[int, int, int]:
    """The strip colour of a precision; unknown names get a stable colour from their hash."""
    if name in PRECISION_COLORS:
        return PRECISION_COLORS[name]
    digest = hashlib.sha256(name.encode()).digest()
    return (64 + digest[0] % 160, 64 + digest[1] % 160, 64 + digest[2] % 160)


def render_strip(
    precisions: Sequence[str],
    *,
    width: int = 768,
    cell_height: int = 48,
    title: str | None = None,
) -> np.ndarray:
    """One coloured cell per step (noise on the left, clean on the right) with a legend.

    Args:
        precisions: the per-step precision names.
        width: image width in pixels (cells share it; each is at least 2 pixels wide).
        cell_height: height of the strip itself; title and legend rows are added above/below.
        title: optional text above the strip (e.g. the schedule's name and summary).
    """
    if not precisions:
        raise ValueError("render_strip needs at least one step")
    n = len(precisions)
    width = max(width, 2 * n)
    font = ImageFont.load_default()
    line = 14
    top = line + 6 if title else 4
    legend_names = list(dict.fromkeys(precisions))
    height = top + cell_height + 6 + line + 6 + line + 4
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((4, 3), title, fill=_INK, font=font)
    edges = np.linspace(0, width, n + 1).round().astype(int)
    for i, name in enumerate(precisions):
        draw.rectangle(
            [edges[i], top, edges[i + 1] - 1, top + cell_height - 1], fill=precision_color(name)
        )
        if edges[i] > 0:
            draw.line([edges[i], top, edges[i], top + cell_height - 1], fill=_BACKGROUND)
    ticks_y = top + cell_height + 3
    for i in _tick_steps(n):
        draw.text((min(edges[i] + 2, width - 24), ticks_y), str(i), fill=_INK, font=font)
    x, y = 4, ticks_y + line + 4
    for name in legend_names:
        count = sum(1 for p in precisions if p == name)
        label = f"{name} x{count}"
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=precision_color(name))
        draw.text((x + 14, y), label, fill=_INK, font=font)
        x += 14 + int(draw.textlength(label, font=font)) + 12
    return np.asarray(image, dtype=np.uint8).copy()


def _tick_steps(n: int) -> list[int]:
    every = max(1, int(np.ceil(n / 10)))
    return list(range(0, n, every))


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB arrays vertically, padding narrower ones with white on the right."""
    if not images:
        raise ValueError("stack_images needs at least one image")
    width = max(im.shape[1] for im in images)
    padded = [
        np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255) for im in images
    ]
    return np.concatenate(padded, axis=0)
