"""Results of a finished allocation, cached as JSON so an identical request costs nothing.

Callers that run the same search again and again (ComfyUI re-executing a graph) key the result by
the evaluator's cache key, the target, the cost table and the validation count; ``read_result``
returns None for a missing, corrupt or outdated file, so a bad cache only costs a re-run.
``tensor_digest`` gives callers a stable key for conditioning/latents to put in their settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..schedule import Schedule
from .cost import CostTable
from .evaluator import Evaluator, settings_key


def tensor_digest(value) -> str:
    """A stable hash of tensors inside nested lists/dicts (conditioning, latents)."""
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu", torch.float32).contiguous()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for item in v:
                feed(item)
        else:
            h.update(repr(v).encode())

    feed(value)
    return h.hexdigest()[:20]


def result_key(evaluator: Evaluator, goal: object, table: CostTable, validation_runs: int) -> str:
    """Key of one request: the evaluations it stands on, the target, the costs, the validation."""
    return settings_key(
        {
            "result_version": 2,
            "evaluations": evaluator.key,
            "target": repr(goal),
            "costs": table.to_dict(),
            "validation_runs": validation_runs,
        }
    )


def result_payload(schedule: Schedule, allocation, evaluator: Evaluator, table: CostTable) -> dict:
    """Everything the node outputs, as plain JSON (the search result cache)."""
    points = allocation.points
    index = {p.precisions: i for i, p in enumerate(points)}
    return {
        "schedule": schedule.to_dict(),
        "points": [p.to_dict() for p in points],
        "chosen": index.get(allocation.best.precisions),
        "title": f"{len(points)} schedules evaluated ({evaluator.fresh_runs} sampled, "
        f"{evaluator.cache_hits} cached)",
        "report": allocation_report(schedule, allocation, evaluator),
    }


def read_result(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        Schedule.from_dict(data["schedule"])  # still a valid schedule for this tmpdiff
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    tmp.replace(path)


def allocation_report(schedule: Schedule, allocation, evaluator) -> str:
    best = allocation.best
    lines = [
        f"{schedule.summary()}; SSIM {best.ssim:.4f}, predicted speed-up {best.speedup:.3f}x",
        f"evaluated {evaluator.count} schedules ({evaluator.fresh_runs} sampled, "
        f"{evaluator.cache_hits} from cache), phases: {allocation.phases}",
        "front (speed-up, SSIM, schedule):",
    ]
    lines += [
        f"  {p.speedup:.3f}x  {p.ssim:.4f}  {' '.join(p.precisions)}" for p in allocation.front
    ]
    return "\n".join(lines)
