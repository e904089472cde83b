"""What the search is asked for (targets) and how hard it may try (``AllocatorConfig``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AllocatorConfig", "ParetoTarget", "QualityTarget", "SpeedupTarget", "Target"]


@dataclass(frozen=True)
class SpeedupTarget:
    """Best quality at ``speedup`` or more (``N·cost(ref) / cost(schedule) ≥ speedup``)."""

    speedup: float

    def __post_init__(self) -> None:
        if not self.speedup >= 1.0:
            raise ValueError(f"target speed-up must be ≥ 1, got {self.speedup}")


@dataclass(frozen=True)
class QualityTarget:
    """Fastest schedule with mean SSIM ≥ ``ssim`` against the reference."""

    ssim: float

    def __post_init__(self) -> None:
        if not 0.0 < self.ssim <= 1.0:
            raise ValueError(f"target SSIM must be in (0, 1], got {self.ssim}")


@dataclass(frozen=True)
class ParetoTarget:
    """The whole front: ``points`` model-optimal schedules spread over the speed-up range.

    The returned schedule is the fastest measured one with SSIM ≥ ``ssim`` (else the best).
    """

    points: int = 8
    ssim: float = 0.9


Target = SpeedupTarget | QualityTarget | ParetoTarget


@dataclass
class AllocatorConfig:
    """Knobs of the allocator (defaults suit N = 10-50 steps, 2-4 precisions).

    eps: loss (1 - SSIM) below which a bisection segment is not split (0.001 = 0.1 SSIM point).
    pairs: measure adjacent-pair interactions (False = the purely additive TMPDiff model).
    cross_pairs: ``"infer"`` or ``"measure"`` the pairs of two different low precisions.
    validate: R, random schedules measured to validate (and calibrate) the model; 0 to skip.
    refine: measured refinement evaluations; None = N.
    resolution: cost units per reference step in the DP (200 = 0.5 %).
    seed: for the random validation schedules.
    """

    eps: float = 1e-3
    pairs: bool = True
    cross_pairs: str = "infer"
    validate: int = 16
    refine: int | None = None
    resolution: int = 200
    seed: int = 0
