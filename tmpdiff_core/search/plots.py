"""Pictures of a search (Pillow only): the Pareto plot and the per-step precision strip.

``pareto_plot`` draws every measured schedule (speed-up vs SSIM), the measured front, the uniform
baselines (labelled), the other baselines and the returned schedule; ``strip_image`` reuses the
project's strip renderer (``tmpdiff_core.strip``) so the CLI, the docs and the ComfyUI preview node
show schedules the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..strip import precision_color, render_strip
from .pareto import Point, front

__all__ = ["pareto_plot", "strip_image"]

_INK, _GRID, _GREY = (30, 30, 30), (215, 215, 215), (150, 150, 150)
_FRONT, _CHOSEN, _OTHER = (46, 160, 90), (210, 40, 40), (40, 110, 200)


def strip_image(
    precisions: Sequence[str], *, title: str | None = None, width: int = 768
) -> Image.Image:
    """The per-step precision strip (noise on the left, clean on the right) as a PIL image."""
    return Image.fromarray(
        render_strip(list(precisions), width=width, title=_ascii(title) if title else None)
    )


def pareto_plot(
    points: Sequence[Point],
    *,
    chosen: Point | None = None,
    uniform: Sequence[Point] = (),
    others: dict[str, Point | None] | None = None,
    target_speedup: float | None = None,
    target_ssim: float | None = None,
    title: str | None = None,
    width: int = 800,
    height: int = 480,
) -> Image.Image:
    """Speed-up (x) against mean SSIM (y) of every measured schedule.

    Args:
        points: every evaluated schedule (grey), the front among them is joined in green.
        chosen: the returned schedule (red ring).
        uniform: uniform-precision baselines (labelled with their precision, in its strip colour).
        others: other baselines by name (blue squares, labelled), e.g. greedy and random.
        target_speedup / target_ssim: drawn as dashed guide lines.
    """
    font = ImageFont.load_default()
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 64, width - 20, 28, height - 40
    if title:
        draw.text((left + 70, 8), _ascii(title), fill=_INK, font=font)
    draw.rectangle([left, top, right, bottom], outline=_INK)
    others = {k: v for k, v in (others or {}).items() if v is not None}
    every = list(points) + list(uniform) + list(others.values()) + ([chosen] if chosen else [])
    if not every:
        draw.text((left + 8, top + 8), "no evaluated schedules", fill=_INK, font=font)
        return img
    xs = np.array([p.speedup for p in every] + ([target_speedup] if target_speedup else []))
    ys = np.array([p.ssim for p in every] + ([target_ssim] if target_ssim else []))
    x0, x1 = _pad(xs)
    y0, y1 = _pad(ys)

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (right - left),
            bottom - (y - y0) / (y1 - y0) * (bottom - top),
        )

    for v in _ticks(x0, x1):
        gx, _ = px(v, y0)
        draw.line([gx, top, gx, bottom], fill=_GRID)
        draw.text((gx - 12, bottom + 4), f"{v:.2f}", fill=_INK, font=font)
    for v in _ticks(y0, y1):
        _, gy = px(x0, v)
        draw.line([left, gy, right, gy], fill=_GRID)
        draw.text((6, gy - 6), f"{v:.3f}", fill=_INK, font=font)
    if target_speedup:
        gx, _ = px(target_speedup, y0)
        _dashed(draw, (gx, top), (gx, bottom), _CHOSEN)
    if target_ssim:
        _, gy = px(x0, target_ssim)
        _dashed(draw, (left, gy), (right, gy), _CHOSEN)
    for p in points:
        x, y = px(p.speedup, p.ssim)
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=_GREY)
    fr = front(points)
    if len(fr) > 1:
        draw.line([px(p.speedup, p.ssim) for p in fr], fill=_FRONT, width=2)
    for p in fr:
        x, y = px(p.speedup, p.ssim)
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=_FRONT)
    for p in uniform:
        x, y = px(p.speedup, p.ssim)
        colour = precision_color(p.precisions[0])
        draw.polygon([(x, y - 6), (x - 5, y + 4), (x + 5, y + 4)], fill=colour, outline=_INK)
        _label(draw, (x, y - 6), f"uniform {p.precisions[0]}", _INK, font, right)
    for name, p in others.items():
        x, y = px(p.speedup, p.ssim)
        draw.rectangle([x - 4, y - 4, x + 4, y + 4], outline=_OTHER, width=2)
        _label(draw, (x, y + 2), name, _OTHER, font, right)
    if chosen is not None:
        x, y = px(chosen.speedup, chosen.ssim)
        draw.ellipse([x - 8, y - 8, x + 8, y + 8], outline=_CHOSEN, width=2)
        text = f"chosen {chosen.speedup:.2f}x, SSIM {chosen.ssim:.4f}"
        _label(draw, (x + 3, y - 16), text, _CHOSEN, font, right)
    draw.text(((left + right) // 2 - 40, height - 18), "speed-up (x)", fill=_INK, font=font)
    draw.text((6, 10), "mean SSIM", fill=_INK, font=font)
    return img


def _ascii(text: str) -> str:
    """Pillow's default bitmap font has no '×'."""
    return text.replace("×", "x")


def _label(draw, at, text, colour, font, right_edge) -> None:
    """Text right of ``at``, or left of it when it would run past the plot's right edge."""
    x, y = at
    w = draw.textlength(text, font=font)
    x = x + 7 if x + 7 + w < right_edge else x - 7 - w
    draw.text((x, y), text, fill=colour, font=font)


def _pad(v: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.02, 0.01)
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    return [lo + (hi - lo) * (i + 0.5) / count for i in range(count)]


def _dashed(draw: ImageDraw.ImageDraw, a, b, colour, dash: int = 6) -> None:
    (xa, ya), (xb, yb) = a, b
    length = max(abs(xb - xa), abs(yb - ya))
    steps = int(length // dash)
    for i in range(0, steps, 2):
        f0, f1 = i / max(steps, 1), min((i + 1) / max(steps, 1), 1)
        draw.line(
            [xa + (xb - xa) * f0, ya + (yb - ya) * f0, xa + (xb - xa) * f1, ya + (yb - ya) * f1],
            fill=colour,
        )
