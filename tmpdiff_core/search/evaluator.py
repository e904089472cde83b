"""Quality of a schedule against the full-precision reference, with an on-disk cache.

The evaluator knows nothing about diffusers or ComfyUI: it is given a *run function*

    run(per_step_precisions: list[str]) -> images | (images, latents) | Outputs

that generates the whole calibration batch (every prompt × seed, with fixed noise) with step ``i``
at ``per_step_precisions[i]``. Images are ``(B, 3, H, W)`` in ``[0, 1]``; latents (optional) are the
final latents in any shape. The reference outputs are ``run([reference] * N)`` unless given.

Every evaluation is appended to a JSON-lines file keyed by the schedule and the search settings
(``settings``: model fingerprint, prompts, seeds, sampler, …), so a search that is interrupted
resumes without re-running finished schedules; the reference outputs are cached beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import TmpdiffError
from ..formats import canonical_name, get_format
from . import metrics

logger = logging.getLogger(__name__)

__all__ = ["EvaluationError", "Evaluator", "Outputs", "Quality", "RunFn", "settings_key"]

PSNR_CAP_DB = 100.0  # per-image PSNR cap: identical images would give +inf, which JSON refuses
CACHE_VERSION = 1


class EvaluationError(TmpdiffError, RuntimeError):
    """A run function that returned something the evaluator cannot compare with the reference."""


@dataclass
class Outputs:
    """What one run produced: images ``(B, 3, H, W)`` in [0, 1] and, optionally, final latents."""

    images: torch.Tensor
    latents: torch.Tensor | None = None

    @classmethod
    def coerce(cls, value: Any) -> Outputs:
        if isinstance(value, Outputs):
            out = value
        elif isinstance(value, torch.Tensor):
            out = cls(value)
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            out = cls(value[0], value[1])
        else:
            raise EvaluationError(
                f"the run function returned {type(value).__name__}; return images (B,3,H,W) in "
                "[0,1], a tuple (images, latents) or an Outputs"
            )
        if not isinstance(out.images, torch.Tensor) or out.images.dim() != 4:
            raise EvaluationError("run() images must be a (B, 3, H, W) tensor in [0, 1]")
        images = out.images.detach().float().cpu()
        latents = None if out.latents is None else out.latents.detach().float().cpu()
        return cls(images, latents)


RunFn = Callable[[list[str]], torch.Tensor | tuple | Outputs]


@dataclass(frozen=True)
class Quality:
    """Quality of one schedule's outputs against the reference outputs (same prompts, same noise).

    ssim: mean SSIM over images (higher is better, 1 = identical).
    psnr: mean per-image PSNR in dB, each capped at 100 dB.
    latent_mse: mean squared error of the final latents (None if the run gives no latents).
    ssim_per_image: one SSIM per calibration image, in batch order.
    seconds: wall time of the run that produced it (0 for the reference itself).
    """

    ssim: float
    psnr: float
    latent_mse: float | None = None
    ssim_per_image: tuple[float, ...] = ()
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        """``1 - ssim``: the quantity the additive model adds up over steps."""
        return 1.0 - self.ssim

    def to_dict(self) -> dict[str, Any]:
        return {
            "ssim": self.ssim,
            "psnr": self.psnr,
            "latent_mse": self.latent_mse,
            "ssim_per_image": list(self.ssim_per_image),
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quality:
        return cls(
            float(d["ssim"]),
            float(d["psnr"]),
            None if d.get("latent_mse") is None else float(d["latent_mse"]),
            tuple(float(x) for x in d.get("ssim_per_image", ())),
            float(d.get("seconds", 0.0)),
        )

    def summary(self) -> dict[str, float]:
        """The ``Schedule.quality`` block (finite numbers only)."""
        out = {"ssim": self.ssim, "psnr": self.psnr}
        if self.latent_mse is not None:
            out["latent_mse"] = self.latent_mse
        return out


def compare(outputs: Outputs, reference: Outputs, seconds: float = 0.0) -> Quality:
    """SSIM, PSNR and latent MSE of ``outputs`` against ``reference``."""
    if outputs.images.shape != reference.images.shape:
        raise EvaluationError(
            f"run() gave images of shape {tuple(outputs.images.shape)}, the reference has "
            f"{tuple(reference.images.shape)}; the run must generate the same calibration batch"
        )
    s = metrics.ssim(outputs.images, reference.images)
    p = metrics.psnr(outputs.images, reference.images).clamp(max=PSNR_CAP_DB)
    lat = None
    if outputs.latents is not None and reference.latents is not None:
        lat = float(metrics.latent_mse(outputs.latents, reference.latents).mean())
    return Quality(float(s.mean()), float(p.mean()), lat, tuple(float(v) for v in s), seconds)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def settings_key(settings: Mapping[str, Any]) -> str:
    """A stable hash of the search settings (JSON with sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Evaluator:
    """Measures schedules against the reference; memoized in memory and (optionally) on disk.

    Args:
        run: the run function (see the module docstring).
        steps: N, the number of denoising steps every schedule has.
        precisions: the candidate precisions, the reference first (``["bf16", "int8wo", "int4wo"]``).
        reference: reference outputs if already computed; else ``run([precisions[0]] * N)``.
        settings: everything that determines the outputs besides the schedule (model id or
            fingerprint, prompts, seeds, guidance, sampler, resolution). It keys the cache: a
            change makes a new cache file, never a stale hit.
        cache_dir: where ``<key>.jsonl`` (evaluations) and ``<key>.reference.safetensors`` live; None keeps
            everything in memory.
        progress: show tqdm bars.
        meta: what the caller knows about the setup, copied into the searched schedule:
            ``boundaries`` (N+1 normalized step times), ``time_axis``, ``model`` (``ModelInfo``)
            and ``sampler`` (``SamplerInfo``). Not part of the cache key.

    Counters: ``fresh_runs`` (schedules generated in this process), ``cache_hits`` (served from
    disk), ``run_seconds`` (time spent in ``run``); ``evaluated`` maps every schedule asked for in
    this process to its quality.
    """

    def __init__(
        self,
        run: RunFn,
        *,
        steps: int,
        precisions: Sequence[str],
        reference: Outputs | torch.Tensor | None = None,
        settings: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {steps}")
        names = [canonical_name(p) for p in precisions]
        refs = [p for p in names if get_format(p).reference]
        if not refs:
            raise ValueError(
                f"precisions {names} contain no reference (bf16/fp16/fp32); list it first"
            )
        low = [p for p in dict.fromkeys(names) if not get_format(p).reference]
        self.run = run
        self.steps = steps
        self.precisions: tuple[str, ...] = (refs[0], *low)
        self.settings = {
            "cache_version": CACHE_VERSION,
            "steps": steps,
            **dict(settings or {}),
        }
        self.key = settings_key(self.settings)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.progress = progress
        self.meta = dict(meta or {})
        self._bar = None
        self._reference = Outputs.coerce(reference) if reference is not None else None
        self._disk: dict[tuple[str, ...], Quality] = {}
        self.evaluated: dict[tuple[str, ...], Quality] = {}
        self.fresh_runs = 0
        self.cache_hits = 0
        self.run_seconds = 0.0
        self._load_disk_cache()

    # ------------------------------------------------------------------ schedules
    @property
    def reference_precision(self) -> str:
        return self.precisions[0]

    def normalize(self, schedule: Sequence[str] | Any) -> tuple[str, ...]:
        """Canonical per-step names (every reference name becomes ``precisions[0]``)."""
        names = getattr(schedule, "precisions", schedule)
        if len(names) != self.steps:
            raise ValueError(f"schedule has {len(names)} steps, the evaluator runs {self.steps}")
        out = []
        for p in names:
            name = canonical_name(p)
            if get_format(name).reference:
                name = self.reference_precision
            elif name not in self.precisions:
                raise ValueError(
                    f"precision {name!r} is not a candidate of this search ({self.precisions})"
                )
            out.append(name)
        return tuple(out)

    # ------------------------------------------------------------------ reference
    def reference(self) -> Outputs:
        """The full-precision outputs (computed once, cached on disk)."""
        if self._reference is None:
            path = self._path(".reference.safetensors")
            if path is not None and path.is_file():
                data = load_file(str(path))  # tensors only: never unpickle a cache file
                self._reference = Outputs(data["images"], data.get("latents"))
            else:
                t0 = time.perf_counter()
                self._reference = Outputs.coerce(self.run([self.reference_precision] * self.steps))
                self.run_seconds += time.perf_counter() - t0
                if path is not None:
                    tensors = {"images": self._reference.images.contiguous()}
                    if self._reference.latents is not None:
                        tensors["latents"] = self._reference.latents.contiguous()
                    tmp = path.with_suffix(".tmp")
                    save_file(tensors, str(tmp))
                    tmp.replace(path)
        return self._reference

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, schedule: Sequence[str] | Any) -> Quality:
        """Quality of one schedule (memoized; runs the model only if never measured)."""
        key = self.normalize(schedule)
        if key in self.evaluated:
            return self.evaluated[key]
        if key in self._disk:
            self.cache_hits += 1
            q = self._disk[key]
        elif all(p == self.reference_precision for p in key):
            ref = self.reference()
            q = compare(ref, ref)
            self._append(key, q)
        else:
            ref = self.reference()
            t0 = time.perf_counter()
            out = Outputs.coerce(self.run(list(key)))
            dt = time.perf_counter() - t0
            self.run_seconds += dt
            self.fresh_runs += 1
            q = compare(out, ref, dt)
            self._append(key, q)
        self.evaluated[key] = q
        if self._bar is not None:
            self._bar.update(1)
        return q

    def evaluate_many(
        self, schedules: Iterable[Sequence[str]], *, desc: str = "evaluating"
    ) -> list[Quality]:
        """Evaluate several schedules with one progress bar."""
        schedules = [self.normalize(s) for s in schedules]
        with self.bar(len(schedules), desc):
            return [self.evaluate(s) for s in schedules]

    def is_known(self, schedule: Sequence[str]) -> bool:
        key = self.normalize(schedule)
        return key in self.evaluated or key in self._disk

    @property
    def count(self) -> int:
        """Distinct schedules evaluated (fresh or from the cache) in this process."""
        return len(self.evaluated)

    @contextmanager
    def bar(self, total: int, desc: str):
        """Label the following evaluations ``desc`` on the search's one progress bar.

        ``total`` only grows the bar's expected total if it was too small; every evaluation
        (fresh or cached) advances the bar, so the yielded object's ``update`` is a no-op.
        """
        bar = self._progress_bar()
        if bar is not None:
            bar.set_description(desc, refresh=False)
            if bar.total is not None and bar.n + total > bar.total:
                bar.total = bar.n + total
                bar.refresh()
        yield _NoBar()

    def expect(self, total: int) -> None:
        """Set the expected number of evaluations (the bar's total)."""
        bar = self._progress_bar()
        if bar is not None:
            bar.total = bar.n + total
            bar.refresh()

    def close(self) -> None:
        """Close the progress bar (a later evaluation opens a new one)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _progress_bar(self):
        if not self.progress:
            return None
        if self._bar is None:
            self._bar = tqdm(total=None, desc="search", unit="eval", dynamic_ncols=True)
        return self._bar

    # ------------------------------------------------------------------ disk cache
    def _path(self, suffix: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.key}{suffix}"

    def _load_disk_cache(self) -> None:
        path = self._path(".jsonl")
        if path is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            path.write_text(json.dumps({"settings": self.settings}, default=str) + "\n")
            return
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                if n == 0 or not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self._disk[tuple(row["schedule"])] = Quality.from_dict(row["quality"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    # A line cut short by an interrupted write: that schedule is simply re-run.
                    logger.warning(
                        "tmpdiff search: skipping unreadable cache line %d of %s", n, path
                    )
        logger.info("tmpdiff search: %d cached evaluations in %s", len(self._disk), path)

    def _append(self, key: tuple[str, ...], q: Quality) -> None:
        self._disk[key] = q
        path = self._path(".jsonl")
        if path is None:
            return
        row = {"schedule": list(key), "quality": q.to_dict()}
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
