"""Pictures of schedules: the per-step precision strip and the Pareto-front plot.

Both return ``uint8`` RGB arrays of shape ``(height, width, 3)``, so any front end can show them
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
_GRID = (200, 200, 200)


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


def render_pareto(
    points: Sequence[tuple[float, float]],
    front: Sequence[int] = (),
    chosen: int | None = None,
    *,
    x_label: str = "speed-up (x)",
    y_label: str = "quality",
    width: int = 768,
    height: int = 432,
    title: str | None = None,
) -> np.ndarray:
    """Scatter of evaluated schedules, the Pareto front joined by a line, the choice ringed.

    Args:
        points: ``(x, y)`` per evaluated schedule (e.g. speed-up and quality).
        front: indices into ``points`` on the Pareto front (drawn and joined in x order).
        chosen: index of the returned schedule, ringed in red.
    """
    font = ImageFont.load_default()
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 56, width - 16, 40 if title else 28, height - 36
    if title:
        draw.text((left, 4), title, fill=_INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=_INK)
    if points:
        xs = np.array([p[0] for p in points], dtype=float)
        ys = np.array([p[1] for p in points], dtype=float)
        x0, x1 = _padded_range(xs)
        y0, y1 = _padded_range(ys)

        def to_px(x: float, y: float) -> tuple[float, float]:
            return (
                left + (x - x0) / (x1 - x0) * (right - left),
                bottom - (y - y0) / (y1 - y0) * (bottom - top),
            )

        for frac in (0.0, 0.5, 1.0):
            gx, gy = x0 + frac * (x1 - x0), y0 + frac * (y1 - y0)
            px, _ = to_px(gx, y0)
            _, py = to_px(x0, gy)
            draw.line([px, top, px, bottom], fill=_GRID)
            draw.line([left, py, right, py], fill=_GRID)
            draw.text((px - 12, bottom + 4), f"{gx:.3g}", fill=_INK, font=font)
            draw.text((4, py - 6), f"{gy:.3g}", fill=_INK, font=font)
        on_front = sorted(front, key=lambda i: xs[i])
        if len(on_front) > 1:
            draw.line([to_px(xs[i], ys[i]) for i in on_front], fill=(46, 160, 90), width=2)
        for i, (x, y) in enumerate(zip(xs, ys, strict=False)):
            px, py = to_px(x, y)
            color = (46, 160, 90) if i in set(front) else (120, 120, 120)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        if chosen is not None and 0 <= chosen < len(points):
            px, py = to_px(xs[chosen], ys[chosen])
            draw.ellipse([px - 7, py - 7, px + 7, py + 7], outline=(210, 40, 40), width=2)
    else:
        draw.text((left + 8, top + 8), "no evaluated schedules", fill=_INK, font=font)
    draw.text(((left + right) // 2 - 30, height - 16), x_label, fill=_INK, font=font)
    draw.text((4, top - 22), y_label, fill=_INK, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 1.0
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.05, 0.05)
    return lo - pad, hi + pad


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """Stack RGB arrays vertically, padding narrower ones with white on the right."""
    if not images:
        raise ValueError("stack_images needs at least one image")
    width = max(im.shape[1] for im in images)
    padded = [
        np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=255) for im in images
    ]
    return np.concatenate(padded, axis=0)
