"""The cost model: what one denoiser call costs at each precision, and what a schedule costs.

A schedule's cost is the sum of its steps' costs (one denoiser call per step; samplers that call
the model twice per step scale every entry alike, so ratios are unchanged). The speed-up of a
schedule is ``N · cost(reference) / cost(schedule)``.

The table is either *measured* on this machine (``measure_costs``: warm-up, then the median of
several timed calls per precision) or *supplied* (a JSON ``{"bf16": 1.0, "fp8": 0.55, ...}`` from
a faster machine, or ``nominal_costs``). Emulated formats on a CPU are slower than the reference,
so a CPU-measured table makes every low precision look like a slow-down: search on CPU with a
table measured where the real kernels run. The table used is stored in the schedule
(``Schedule.cost.table``), so every reported speed-up can be recomputed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TmpdiffError
from ..formats import canonical_name, get_format
from ..schedule import CostInfo

__all__ = ["CostTable", "measure_costs", "nominal_costs"]


class CostTableError(TmpdiffError, ValueError):
    """A cost table that is missing a precision or holds a non-positive cost."""


@dataclass(frozen=True)
class CostTable:
    """Cost of one denoiser call per precision; ``reference`` is the full-precision name.

    Args:
        costs: ``{precision: cost}``, every cost > 0, in ``unit``.
        reference: the precision speed-ups are measured against (default: the first reference
            format in ``costs``, e.g. ``bf16``).
        unit: ``"ms"`` for timings, ``"rel"`` for relative numbers.
        measured: True when timed on ``device``; False for supplied or nominal tables.
        device: where it was measured (``"cpu"``, ``"NVIDIA H100"``) or where it came from.
    """

    costs: Mapping[str, float]
    reference: str = ""
    unit: str = "rel"
    measured: bool = False
    device: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        costs = {canonical_name(p): float(c) for p, c in dict(self.costs).items()}
        for p, c in costs.items():
            if not c > 0:
                raise CostTableError(f"cost of {p!r} is {c}; every cost must be > 0")
        object.__setattr__(self, "costs", costs)
        ref = canonical_name(self.reference) if self.reference else None
        if ref is None:
            refs = [p for p in costs if get_format(p).reference]
            if not refs:
                raise CostTableError(
                    f"cost table {costs} has no reference precision (bf16/fp16/fp32); add one"
                )
            ref = refs[0]
        if ref not in costs:
            raise CostTableError(f"reference {ref!r} is not in the cost table {sorted(costs)}")
        object.__setattr__(self, "reference", ref)

    def __getitem__(self, precision: str) -> float:
        name = canonical_name(precision)
        if name in self.costs:
            return self.costs[name]
        if get_format(name).reference:  # bf16/fp16/fp32 all mean "the unquantized layer"
            return self.costs[self.reference]
        raise CostTableError(
            f"the cost table has no entry for {name!r} (it has {', '.join(self.costs)}); "
            "measure it or add it to the table"
        )

    def check(self, precisions: Sequence[str]) -> None:
        """Raise ``CostTableError`` if any of ``precisions`` has no cost."""
        for p in precisions:
            self[p]

    def schedule_cost(self, precisions: Sequence[str]) -> float:
        """Sum of the per-step costs."""
        return sum(self[p] for p in precisions)

    def speedup(self, precisions: Sequence[str]) -> float:
        """``N · cost(reference) / cost(schedule)``."""
        return len(precisions) * self.costs[self.reference] / self.schedule_cost(precisions)

    def budget_for(self, steps: int, speedup: float) -> float:
        """The largest schedule cost that still reaches ``speedup`` over ``steps`` steps."""
        return steps * self.costs[self.reference] / speedup

    def relative(self) -> dict[str, float]:
        """Costs divided by the reference cost."""
        ref = self.costs[self.reference]
        return {p: c / ref for p, c in self.costs.items()}

    def to_cost_info(self, precisions: Sequence[str]) -> CostInfo:
        """The ``Schedule.cost`` block for a schedule under this table (speed-up is predicted)."""
        return CostInfo(
            speedup=self.speedup(precisions),
            measured=False,
            table=dict(self.costs),
            unit=self.unit,
            device=self.device,
        )

    def to_dict(self) -> dict:
        return {
            "costs": dict(self.costs),
            "reference": self.reference,
            "unit": self.unit,
            "measured": self.measured,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> CostTable:
        """From ``to_dict`` output or a plain ``{precision: cost}`` mapping."""
        if "costs" in data:
            return cls(
                data["costs"],
                reference=data.get("reference", ""),
                unit=data.get("unit", "rel"),
                measured=bool(data.get("measured", False)),
                device=data.get("device"),
            )
        return cls(dict(data), unit="rel", measured=False, device="supplied")

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        """Read a JSON table (either form of ``from_dict``)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CostTableError(f"cannot read cost table {path}: {err}") from None
        if not isinstance(data, dict):
            raise CostTableError(f"cost table {path} must be a JSON object")
        return cls.from_dict(data)


def measure_costs(
    call: Callable[[str], object],
    precisions: Sequence[str],
    *,
    warmup: int = 3,
    repeats: int = 10,
    device: str | None = None,
    sync: Callable[[], None] | None = None,
) -> CostTable:
    """Time one denoiser call per precision: ``warmup`` untimed calls, then the median of ``repeats``.

    Args:
        call: ``call(precision)`` runs exactly one denoiser forward at ``precision`` (it sets the
            prepared model's state itself, e.g. ``lambda p: (state.set(p), model(**inputs))``).
        precisions: every precision to time; the first reference format is the baseline.
        warmup: untimed calls per precision (compilation, caches, allocator).
        repeats: timed calls per precision; the median is kept.
        device: recorded in the table (``"cpu"``, GPU name).
        sync: called before reading the clock (``torch.cuda.synchronize`` on GPU).

    Returns:
        A ``CostTable`` in milliseconds with ``measured=True``.
    """
    sync = sync or (lambda: None)
    costs: dict[str, float] = {}
    spread: dict[str, list[float]] = {}
    for p in precisions:
        for _ in range(warmup):
            call(p)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call(p)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        costs[canonical_name(p)] = statistics.median(times)
        spread[canonical_name(p)] = [min(times), max(times)]
    return CostTable(costs, unit="ms", measured=True, device=device, extra={"min_max_ms": spread})


def nominal_costs(precisions: Sequence[str]) -> CostTable:
    """A hardware-free *assumption*: relative cost ∝ the bits moved per weight and activation.

    ``cost = (weight_bits + activation_bits) / (2 · 16)`` with the reference at 1.0: W8A8 formats
    (fp8, int8) cost 0.5, weight-only int8 0.75, weight-only 4-bit ≈ 0.63. Use it only to exercise
    the search; report speed-ups from a measured table.
    """
    costs = {}
    for p in precisions:
        fmt = get_format(p)
        costs[fmt.name] = 1.0 if fmt.reference else (fmt.weight_bits + fmt.activation_bits) / 32
    return CostTable(costs, unit="rel", measured=False, device="nominal (bits)")
