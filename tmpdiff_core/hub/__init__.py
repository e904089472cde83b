"""Schedules on the Hugging Face Hub: bundled schedules, loading with caching, an index, publishing.

A schedule repository (the Hub repo ``tmpdiff/tmpdiff-schedules``, and ``schedules/`` bundled
with tmpdiff, which is a snapshot of it) holds ``<model>/<name>.json`` schedules, an
``index.json`` describing each one (see ``index.py`` for the format) and a README card.

    from tmpdiff_core import load_schedule, best_schedule
    load_schedule("refmodel/uniform-bf16-20")                       # bundled
    load_schedule("my-schedule.json", model=pipe.transformer)        # local, fingerprint-checked
    load_schedule("hf://tmpdiff/tmpdiff-schedules/refmodel/uniform-bf16-20.json@<commit>")
    best_schedule(pipe.transformer, budget="speedup>=1.3", source="hub")

**Pin revisions.** A branch moves whenever schedules are published; ``@<40-char commit>`` always
names the same bytes and, once cached, loads without any network call (also offline). Schedules
are JSON only, size-capped before parsing (and before downloading when the Hub reports the size),
validated before use, and index paths cannot leave the repository.

CLI: ``tmpdiff publish DIR --repo ORG/NAME [--revision BRANCH] [--dry-run] [--private]`` and
``tmpdiff index DIR [--check]``.
"""

from __future__ import annotations

from .cli import register
from .fetch import HubFallbackWarning
from .index import INDEX_VERSION, build_index
from .load import best_schedule, bundled_dir, check_model, load_index, load_schedule, parse_budget
from .publish import PublishPlan, plan_publish, publish
from .refs import DEFAULT_REPO, HubRef, parse_hub_ref, safe_repo_path

__all__ = [
    "DEFAULT_REPO",
    "INDEX_VERSION",
    "HubFallbackWarning",
    "HubRef",
    "PublishPlan",
    "best_schedule",
    "build_index",
    "bundled_dir",
    "check_model",
    "load_index",
    "load_schedule",
    "parse_budget",
    "parse_hub_ref",
    "plan_publish",
    "publish",
    "register",
    "safe_repo_path",
]
