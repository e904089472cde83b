"""The schedule index (``index.json``) and the README card of a schedule folder or Hub repo.

A schedule repository (the Hub repo ``tmpdiff/tmpdiff-schedules`` and the bundled ``schedules/``
folder share one layout)::

    index.json                      every schedule, with what it is for and how it measured
    README.md                       the card; its table is regenerated from the index
    <model>/<name>.json             one schedule per file (``tmpdiff_core.schedule`` format)

``index.json`` (``index_version`` 1)::

    {"index_version": 1, "schedule_schema_version": 1, "schedules": [
      {"name": "refmodel/uniform-bf16-20", "path": "refmodel/uniform-bf16-20.json",
       "sha256": "…", "size": 1234,
       "model": {"id": "refmodel", "fingerprint": null},
       "sampler": {"name": null, "scheduler": null}, "steps": 20,
       "precisions": ["bf16"], "counts": {"bf16": 20},
       "target": null, "quality": {}, "speedup": null, "speedup_measured": false,
       "device": null, "description": "…"}]}

``name`` is the schedule's own ``name`` or, if it has none, its path without ``.json``;
``target`` is ``search["target"]`` (e.g. ``"speedup>=1.3"``); ``quality`` (``ssim``, ``psnr``…)
and ``speedup`` are copied from the schedule, never invented. The index carries no timestamp,
so rebuilding an unchanged folder gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ..errors import ScheduleError
from ..schedule import MAX_SCHEDULE_BYTES, SCHEMA_VERSION, Schedule
from .refs import safe_repo_path

INDEX_VERSION = 1
INDEX_FILE = "index.json"
CARD_FILE = "README.md"
MAX_INDEX_BYTES = 8 << 20
CARD_START = "<!-- tmpdiff:index:start -->"
CARD_END = "<!-- tmpdiff:index:end -->"


# ------------------------------------------------------------------------------------ building
def collect_schedules(folder: str | Path) -> list[tuple[str, bytes, Schedule]]:
    """``(repo path, bytes, schedule)`` for every schedule JSON under ``folder``, validated.

    Skips ``index.json`` and hidden files and folders (``.cache`` of a ``local_dir`` download).
    The bytes returned are the bytes validated, so a publisher uploads exactly what was checked.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ScheduleError(f"{root} is not a folder of schedules")
    found = []
    for file in sorted(root.rglob("*.json")):
        rel = file.relative_to(root).as_posix()
        if rel == INDEX_FILE or any(part.startswith(".") for part in rel.split("/")):
            continue
        safe_repo_path(rel, "schedule path")
        if file.is_symlink() or not file.is_file():
            raise ScheduleError(f"{file}: schedules must be regular files, not links")
        size = file.stat().st_size
        if size > MAX_SCHEDULE_BYTES:
            raise ScheduleError(
                f"{file}: {size} bytes is larger than the {MAX_SCHEDULE_BYTES}-byte cap for a "
                "schedule; this is not a schedule file"
            )
        data = file.read_bytes()
        found.append((rel, data, Schedule.from_json(data, source=str(file))))
    return found


def index_entry(path: str, data: bytes, schedule: Schedule) -> dict[str, Any]:
    """The index row of one schedule file."""
    target = schedule.search.get("target")
    return {
        "name": schedule.name or path.removesuffix(".json"),
        "path": path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "model": {"id": schedule.model.id, "fingerprint": schedule.model.fingerprint},
        "sampler": {"name": schedule.sampler.name, "scheduler": schedule.sampler.scheduler},
        "steps": schedule.steps,
        "precisions": list(schedule.counts()),
        "counts": dict(schedule.counts()),
        "target": _target_text(target),
        "quality": dict(schedule.quality),
        "speedup": schedule.cost.speedup,
        "speedup_measured": schedule.cost.measured,
        "device": schedule.cost.device,
        "description": schedule.description,
    }


def _target_text(target: Any) -> str | None:
    """The budget a schedule was searched for, in ``best_schedule``'s form (``"speedup>=1.2"``).

    The search records it structured (``{"kind": "speedup", "speedup": 1.2}``, ``{"kind":
    "quality", "ssim": 0.9}``); hand-written schedules may give the string directly.
    """
    if isinstance(target, str):
        return target
    if isinstance(target, dict):
        metric = {"speedup": "speedup", "quality": "ssim"}.get(target.get("kind"))
        if metric is not None and _is_number(target.get(metric)):
            return f"{metric}>={target[metric]:g}"
        return target.get("kind") if isinstance(target.get("kind"), str) else None
    return None


def make_index(schedules: list[tuple[str, bytes, Schedule]]) -> dict[str, Any]:
    """The index of already-collected schedules (checked: names and paths are unique)."""
    index = {
        "index_version": INDEX_VERSION,
        "schedule_schema_version": SCHEMA_VERSION,
        "schedules": [index_entry(*item) for item in schedules],
    }
    return parse_index(index, "built index")


def folder_files(
    folder: str | Path, schedules: list[tuple[str, bytes, Schedule]] | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The index of ``folder`` and the bytes its ``index.json`` and ``README.md`` should hold.

    The card keeps any text outside its table markers (a new card comes from the template).
    ``schedules`` are the folder's collected schedules if already at hand.
    """
    root = Path(folder)
    index = make_index(collect_schedules(root) if schedules is None else schedules)
    card = root / CARD_FILE
    old = card.read_text(encoding="utf-8") if card.is_file() else None
    return index, {
        INDEX_FILE: index_json(index).encode(),
        CARD_FILE: render_card(index, old).encode(),
    }


def build_index(folder: str | Path, *, write: bool = True) -> dict[str, Any]:
    """Validate every schedule under ``folder`` and return its index.

    With ``write`` (the default), also write ``folder/index.json`` and create or update the table
    in ``folder/README.md`` (text outside the table markers is kept). Raises ``ScheduleError``
    naming the first invalid file.
    """
    index, files = folder_files(folder)
    if write:
        for name, data in files.items():
            write_atomic(Path(folder) / name, data)
    return index


def index_json(index: dict[str, Any]) -> str:
    return json.dumps(index, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# ------------------------------------------------------------------------------------ reading
def parse_index(data: Any, source: str) -> dict[str, Any]:
    """Check an index (already parsed JSON): version, entry fields, safe unique paths and names."""
    if not isinstance(data, dict):
        raise ScheduleError(f"{source}: an index must be a JSON object")
    version = data.get("index_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ScheduleError(f"{source}: missing or invalid 'index_version' ({version!r})")
    if version > INDEX_VERSION:
        raise ScheduleError(
            f"{source}: index_version {version} was written by a newer tmpdiff (this one reads "
            f"{INDEX_VERSION}); upgrade tmpdiff"
        )
    entries = data.get("schedules")
    if not isinstance(entries, list):
        raise ScheduleError(f"{source}: 'schedules' must be a list")
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"{source}: schedules[{i}]"
        if not isinstance(entry, dict):
            raise ScheduleError(f"{where} must be an object")
        path = safe_repo_path(entry.get("path"), f"{where}.path")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ScheduleError(f"{where}.name must be a non-empty string")
        for key in {name, path, path.removesuffix(".json")}:
            if seen.setdefault(key, path) != path:
                raise ScheduleError(f"{where}: {key!r} names both {seen[key]} and {path}")
        _check_entry_fields(entry, where)
    return data


def _check_entry_fields(entry: dict[str, Any], where: str) -> None:
    model = entry.get("model")
    if not isinstance(model, dict) or not all(
        v is None or isinstance(v, str) for v in (model.get("id"), model.get("fingerprint"))
    ):
        raise ScheduleError(f"{where}.model must be {{'id': str|null, 'fingerprint': str|null}}")
    steps = entry.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ScheduleError(f"{where}.steps must be a positive integer, got {steps!r}")
    quality = entry.get("quality")
    if not isinstance(quality, dict) or not all(_is_number(v) for v in quality.values()):
        raise ScheduleError(f"{where}.quality must be an object of numbers")
    speedup = entry.get("speedup")
    if speedup is not None and not _is_number(speedup):
        raise ScheduleError(f"{where}.speedup must be a number or null, got {speedup!r}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_index_bytes(data: bytes, source: str) -> dict[str, Any]:
    """Parse and check ``index.json`` bytes (size-capped before parsing)."""
    if len(data) > MAX_INDEX_BYTES:
        raise ScheduleError(
            f"{source}: {len(data)} bytes is larger than the {MAX_INDEX_BYTES}-byte cap for an index"
        )
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ScheduleError(f"{source}: not valid JSON ({err})") from None
    return parse_index(parsed, source)


def read_index_file(path: Path) -> dict[str, Any]:
    """Read and check an ``index.json`` file; the size is checked before reading."""
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise ScheduleError(
            f"{path}: {size} bytes is larger than the {MAX_INDEX_BYTES}-byte cap for an index"
        )
    return read_index_bytes(path.read_bytes(), str(path))


def find_entry(index: dict[str, Any], ref: str) -> dict[str, Any] | None:
    """The entry whose name, path, or path without ``.json`` is ``ref``."""
    for entry in index["schedules"]:
        if ref in (entry["name"], entry["path"], entry["path"].removesuffix(".json")):
            return entry
    return None


def entry_names(index: dict[str, Any]) -> list[str]:
    return [entry["name"] for entry in index["schedules"]]


# ------------------------------------------------------------------------------------ card
def render_card(index: dict[str, Any], old: str | None = None) -> str:
    """The README card: ``old`` with the table between the markers replaced (or a new card)."""
    table = f"{CARD_START}\n{card_table(index)}\n{CARD_END}"
    if old and CARD_START in old and CARD_END in old:
        head, _, rest = old.partition(CARD_START)
        _, _, tail = rest.partition(CARD_END)
        return head + table + tail
    return CARD_TEMPLATE.replace("{table}", table)


def card_table(index: dict[str, Any]) -> str:
    rows = [
        "| name | model | steps | precisions | target | quality | speed-up | device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in index["schedules"]:
        counts = " ".join(f"{p}×{n}" for p, n in e.get("counts", {}).items())
        quality = ", ".join(f"{k} {v:.4g}" for k, v in e["quality"].items()) or "not measured"
        speedup = e["speedup"]
        if speedup is None:
            speed = "not measured"
        else:
            speed = f"{speedup:.2f}×" + ("" if e.get("speedup_measured") else " (predicted)")
        model = e["model"]["id"] or "?"
        if e["model"]["fingerprint"]:
            model += f" `{e['model']['fingerprint']}`"
        cells = [
            f"[{e['name']}]({e['path']})",
            model,
            str(e["steps"]),
            counts,
            e.get("target") or "—",
            quality,
            speed,
            e.get("device") or "—",
        ]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if not index["schedules"]:
        rows.append("| (no schedules yet) | | | | | | | |")
    return "\n".join(rows)


CARD_TEMPLATE = """\
---
library_name: tmpdiff
license: apache-2.0
tags:
- tmpdiff
- diffusion
- mixed-precision
- quantization
---

# tmpdiff schedules

Per-step precision schedules for [tmpdiff](https://github.com/tmpdiff/tmpdiff): each file says
at which numeric precision (bf16, fp8, int8, …) every denoising step of one diffusion model runs,
for which sampler and step count, and how it measured (quality against the full-precision
images, speed-up over the all-bf16 baseline, on which GPU). Values that were not measured are
left empty, never guessed.

## Use

```python
from tmpdiff_core import load_schedule, best_schedule

# Pin a commit: the same bytes forever, and no network call once cached.
s = load_schedule("hf://tmpdiff/tmpdiff-schedules/refmodel/uniform-bf16-20.json@<commit>")
s = load_schedule("refmodel/uniform-bf16-20")            # the copy bundled with tmpdiff
s = best_schedule(model, budget="speedup>=1.3")         # best quality at >= 1.3x
s = best_schedule(model, budget="ssim>=0.95")           # fastest at SSIM >= 0.95
```

Always pin `@<commit>` (or a tag) in anything you want to reproduce: a branch moves when new
schedules are published. With `HF_HUB_OFFLINE=1`, schedules load from the local Hub cache; if
the Hub cannot be reached, tmpdiff falls back to its bundled copy of the same file and warns.

Schedules are JSON only (never pickles), size-capped before parsing and validated before use;
`load_schedule(..., model=m)` refuses a schedule made for a model with another fingerprint.

## Layout

- `index.json`: one entry per schedule (`index_version` 1): path, name, model id and
  fingerprint, sampler, steps, precisions used, search target, measured quality, speed-up, device.
- `<model>/<name>.json`: the schedules (`schema_version` 1).
- This card; the table below is regenerated by `tmpdiff index DIR` and `tmpdiff publish`.

Publish a folder of schedules with `tmpdiff publish DIR --repo ORG/NAME` (`--dry-run` first).

## Schedules

{table}
"""
