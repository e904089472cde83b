"""``Schedule``: the per-step precision plan, and its versioned JSON format.

One type serves diffusers, ComfyUI, the search and the Hub. A schedule is a list of N precision
names placed on a normalized time axis by N+1 decreasing boundaries (1 = pure noise, 0 = clean),
so it can be replayed on another step count or sampler (``timeaxis.resample_precisions``), plus
metadata saying what it was made for and how good and fast it measured.

JSON only (no pickle, no code): files are size-capped before parsing and validated field by field,
and every problem is reported as a ``ScheduleError`` naming the field and the fix.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ScheduleError, ScheduleNotFoundError, UnknownPrecisionError
from .formats import canonical_name
from .timeaxis import resample_precisions, step_of, uniform_boundaries

SCHEMA_VERSION = 1
MAX_SCHEDULE_BYTES = 1 << 20
MAX_STEPS = 10_000
TIME_AXES = ("sigma", "t")


@dataclass
class ModelInfo:
    """Which model the schedule was made for. ``fingerprint`` comes from ``fingerprint.py``."""

    id: str | None = None
    fingerprint: str | None = None


@dataclass
class SamplerInfo:
    """The sampling setup the schedule was searched with (what it is known to be good for)."""

    name: str | None = None
    scheduler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class CostInfo:
    """Speed-up over the reference and the per-step cost table it was computed from.

    ``measured`` is False when ``speedup`` is predicted from ``table`` (cost of one denoiser call
    per precision, in ``unit``) rather than timed end to end.
    """

    speedup: float | None = None
    measured: bool = False
    table: dict[str, float] = field(default_factory=dict)
    unit: str = "ms"
    device: str | None = None


@dataclass
class Schedule:
    """Per-step precisions on a normalized time axis, plus what they were made for.

    ``layer_groups`` is reserved for step × layer-group schedules: ``{group: [precision per
    step]}``. It is validated now; running it is not implemented yet and is refused at apply time.
    """

    precisions: list[str]
    boundaries: list[float]
    time_axis: str = "sigma"
    layer_groups: dict[str, list[str]] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    model: ModelInfo = field(default_factory=ModelInfo)
    sampler: SamplerInfo = field(default_factory=SamplerInfo)
    quality: dict[str, float] = field(default_factory=dict)
    cost: CostInfo = field(default_factory=CostInfo)
    search: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_precisions(
        cls, precisions: list[str], boundaries: list[float] | None = None, **meta: Any
    ) -> Schedule:
        """A schedule from per-step names; evenly spaced boundaries unless given."""
        if boundaries is None:
            boundaries = uniform_boundaries(len(precisions)) if precisions else [1.0, 0.0]
        return cls(list(precisions), list(boundaries), **meta)

    @classmethod
    def uniform(cls, precision: str, steps: int, **meta: Any) -> Schedule:
        """Every step at one precision (the uniform baseline)."""
        return cls.from_precisions([precision] * steps, **meta)

    # ---------------------------------------------------------------- queries
    @property
    def steps(self) -> int:
        return len(self.precisions)

    def precision_at(self, t: float) -> str:
        """The precision scheduled at normalized time ``t``."""
        return self.precisions[step_of(t, self.boundaries)]

    def for_grid(self, boundaries: list[float]) -> list[str]:
        """Per-step precisions for a runtime step grid (same N: by index; otherwise by time)."""
        return resample_precisions(self.precisions, self.boundaries, boundaries)

    def counts(self) -> Counter:
        return Counter(self.precisions)

    def summary(self) -> str:
        """``"28 steps: bf16×6 fp8×22"``: the one-line log form."""
        parts = " ".join(f"{p}×{n}" for p, n in self.counts().items())
        return f"{self.steps} steps: {parts}"

    def table(self) -> str:
        """A readable per-step table (``tmpdiff schedule show``)."""
        lines = [f"{'step':>4}  {self.time_axis + ' from':>10}  {'to':>8}  precision"]
        for i, p in enumerate(self.precisions):
            lines.append(
                f"{i:>4}  {self.boundaries[i]:>10.4f}  {self.boundaries[i + 1]:>8.4f}  {p}"
            )
        return "\n".join(lines)

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check every field; raise ``ScheduleError`` naming the first problem and its fix."""
        if not isinstance(self.precisions, list) or not self.precisions:
            raise ScheduleError("'precisions' must be a non-empty list of precision names")
        if len(self.precisions) > MAX_STEPS:
            raise ScheduleError(
                f"'precisions' has {len(self.precisions)} steps; at most {MAX_STEPS}"
            )
        self.precisions = _canonical_list(self.precisions, "precisions")
        self._validate_boundaries()
        if self.time_axis not in TIME_AXES:
            raise ScheduleError(f"'time_axis' is {self.time_axis!r}; expected one of {TIME_AXES}")
        self._validate_layer_groups()
        _check_numbers(self.quality, "quality")
        _check_numbers(self.cost.table, "cost.table")
        if self.cost.speedup is not None:
            _check_numbers({"speedup": self.cost.speedup}, "cost")
        if self.sampler.steps is not None and self.sampler.steps != self.steps:
            raise ScheduleError(
                f"'sampler.steps' is {self.sampler.steps} but 'precisions' has {self.steps} "
                "entries; one precision per step is required"
            )

    def _validate_boundaries(self) -> None:
        b = self.boundaries
        n = len(self.precisions)
        if not isinstance(b, list) or len(b) != n + 1:
            got = len(b) if isinstance(b, list) else type(b).__name__
            raise ScheduleError(f"'boundaries' must have steps+1 = {n + 1} values, got {got}")
        for i, v in enumerate(b):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ScheduleError(f"'boundaries[{i}]' is {v!r}; expected a finite number")
            if not 0.0 <= v <= 1.0:
                raise ScheduleError(f"'boundaries[{i}]' is {v}; normalized times lie in [0, 1]")
        for i in range(n):
            if not b[i] > b[i + 1]:
                raise ScheduleError(
                    f"'boundaries' must decrease strictly (noise → clean); "
                    f"boundaries[{i}]={b[i]} ≤ boundaries[{i + 1}]={b[i + 1]}"
                )
        self.boundaries = [float(v) for v in b]

    def _validate_layer_groups(self) -> None:
        if not isinstance(self.layer_groups, dict):
            raise ScheduleError("'layer_groups' must be an object {group: [precision per step]}")
        for group, plan in self.layer_groups.items():
            if not isinstance(group, str) or not group:
                raise ScheduleError("'layer_groups' keys must be non-empty group names")
            where = f"layer_groups[{group!r}]"
            if not isinstance(plan, list) or len(plan) != self.steps:
                raise ScheduleError(f"'{where}' must list one precision per step ({self.steps})")
            self.layer_groups[group] = _canonical_list(plan, where)

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        data = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the schedule as JSON (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Any) -> Schedule:
        if not isinstance(data, dict):
            raise ScheduleError(f"a schedule must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        _check_version(data.pop("schema_version", None))
        unknown = set(data) - _FIELDS
        if unknown:
            raise ScheduleError(
                f"unknown schedule field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}"
            )
        for required in ("precisions", "boundaries"):
            if required not in data:
                raise ScheduleError(f"missing required field '{required}'")
        try:
            data["model"] = ModelInfo(**_object(data.get("model", {}), "model"))
            data["sampler"] = SamplerInfo(**_object(data.get("sampler", {}), "sampler"))
            data["cost"] = CostInfo(**_object(data.get("cost", {}), "cost"))
        except TypeError as err:  # unexpected keyword in a nested object
            raise ScheduleError(f"malformed metadata: {err}") from None
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<string>") -> Schedule:
        """Parse JSON text; size-capped before parsing; NaN/Infinity refused."""
        if len(text) > MAX_SCHEDULE_BYTES:
            raise ScheduleError(
                f"{source}: {len(text)} bytes is larger than the {MAX_SCHEDULE_BYTES}-byte cap "
                "for a schedule; this is not a schedule file"
            )
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ScheduleError(f"{source}: not valid JSON ({err})") from None
        except ValueError as err:
            raise ScheduleError(f"{source}: {err}") from None
        try:
            return cls.from_dict(data)
        except ScheduleError as err:
            raise ScheduleError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        """Read a schedule file; the size is checked before the file is read."""
        path = Path(path)
        if not path.is_file():
            raise ScheduleNotFoundError(f"schedule file not found: {path}")
        size = path.stat().st_size
        if size > MAX_SCHEDULE_BYTES:
            raise ScheduleError(
                f"{path}: {size} bytes is larger than the {MAX_SCHEDULE_BYTES}-byte cap for a "
                "schedule; this is not a schedule file"
            )
        return cls.from_json(path.read_bytes(), source=str(path))


_FIELDS = {f for f in Schedule.__dataclass_fields__}


def _check_version(version: Any) -> None:
    if version is None:
        raise ScheduleError("missing required field 'schema_version'")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ScheduleError(f"'schema_version' must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ScheduleError(
            f"schema_version {version} was written by a newer tmpdiff (this one reads "
            f"{SCHEMA_VERSION}); upgrade tmpdiff"
        )
    if version < 1:
        raise ScheduleError(f"'schema_version' {version} is not a valid version")


def _canonical_list(names: list[Any], where: str) -> list[str]:
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise ScheduleError(f"'{where}[{i}]' is {name!r}; expected a precision name")
        try:
            out.append(canonical_name(name))
        except UnknownPrecisionError as err:
            raise ScheduleError(f"'{where}[{i}]': {err}") from None
    return out


def _check_numbers(values: dict[str, Any], where: str) -> None:
    if not isinstance(values, dict):
        raise ScheduleError(f"'{where}' must be an object of numbers")
    for key, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ScheduleError(f"'{where}.{key}' is {v!r}; expected a finite number")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScheduleError(f"'{where}' must be a JSON object, got {type(value).__name__}")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in a schedule (NaN/Infinity values)")
