"""Loading schedules: bundled names, local files and Hub files, with caching and offline safety.

Hub files go through ``fetch.download`` (``hf_hub_download`` and its cache; see there for
pinning, offline mode and the size check before downloading). When the Hub cannot be reached
and the file is not cached, a file of the official repository falls back to the bundled copy of
the same path, with a ``HubFallbackWarning``; a pinned commit never falls back (the bundled copy
may differ from it), it raises ``HubOfflineError`` instead.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import HubOfflineError, ScheduleError, ScheduleNotFoundError
from ..schedule import MAX_SCHEDULE_BYTES, Schedule
from .fetch import HubFallbackWarning, download
from .index import (
    INDEX_FILE,
    MAX_INDEX_BYTES,
    entry_names,
    find_entry,
    read_index_file,
)
from .refs import DEFAULT_REPO, HUB_SCHEME, HubRef, is_commit, parse_hub_ref


# ------------------------------------------------------------------------------------ bundled
def bundled_dir() -> Path | None:
    """The folder of schedules shipped with tmpdiff, or ``None`` if this install has none.

    In a source checkout or editable install it is ``schedules/`` at the repository root; in a
    wheel it is the ``tmpdiff_schedules`` package (the same folder, mapped by ``pyproject.toml``).
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "schedules" / INDEX_FILE).is_file():
        return root / "schedules"
    spec = importlib.util.find_spec("tmpdiff_schedules")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / INDEX_FILE).is_file():
            return Path(location)
    return None


def _bundled_index() -> tuple[Path | None, dict[str, Any]]:
    folder = bundled_dir()
    if folder is None:
        return None, {"index_version": 1, "schedules": []}
    return folder, read_index_file(folder / INDEX_FILE)


def _load_bundled(folder: Path, path: str) -> Schedule:
    file = (folder / path).resolve()
    if not file.is_relative_to(folder.resolve()):
        raise ScheduleError(f"bundled index entry {path!r} resolves outside {folder}")
    return Schedule.load(file)


def _bundled_copy(ref: HubRef, err: HubOfflineError, fallback: bool) -> Path | None:
    """The bundled folder, if ``ref`` may fall back to it and it holds ``ref``'s file (warns).

    Only files of the official repository fall back, and never a pinned commit: it promises
    exact bytes, and the bundled copy may differ.
    """
    if not fallback or ref.repo_id != DEFAULT_REPO or ref.repo_type != "model":
        return None
    if is_commit(ref.revision):
        return None
    folder, index = _bundled_index()
    if folder is None or (ref.filename != INDEX_FILE and find_entry(index, ref.filename) is None):
        return None
    warnings.warn(
        f"{err} Using the copy of {ref.filename} bundled with this tmpdiff instead; it may "
        "differ from the Hub's current version.",
        HubFallbackWarning,
        stacklevel=4,
    )
    return folder


def _load_hub(ref: HubRef, *, fallback: bool, **hub: Any) -> Schedule:
    try:
        path = download(ref, max_bytes=MAX_SCHEDULE_BYTES, **hub)
    except HubOfflineError as err:
        folder = _bundled_copy(ref, err, fallback)
        if folder is None:
            raise
        return _load_bundled(folder, ref.filename)
    try:
        return Schedule.load(path)
    except ScheduleError as err:
        raise ScheduleError(f"{err} (from {ref})") from None


def _hub_index(ref: HubRef, *, fallback: bool, **hub: Any) -> tuple[dict[str, Any], HubRef | Path]:
    """The index at ``ref`` and where its schedules load from: the Hub at the index's own
    commit (so index and files match), or the bundled folder after a fallback."""
    try:
        path = Path(download(ref, max_bytes=MAX_INDEX_BYTES, **hub))
    except HubOfflineError as err:
        folder = _bundled_copy(ref, err, fallback)
        if folder is None:
            raise
        return read_index_file(folder / INDEX_FILE), folder
    commit = path.parent.name  # <cache>/snapshots/<commit>/index.json
    return read_index_file(path), ref.at(ref.filename, commit if is_commit(commit) else None)


# ------------------------------------------------------------------------------------ public
def load_schedule(
    ref: str | os.PathLike[str] | None = None,
    *,
    repo_id: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    repo_type: str = "model",
    model: Any = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    fallback: bool = True,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> Schedule:
    """Load a schedule by bundled name, local path or Hub reference; validated before return.

    Args:
        ref (`str` or path, *optional*): one of
            - a bundled name, as listed in the bundled ``index.json`` (``"refmodel/uniform-bf16-20"``;
              the path, with or without ``.json``, works too);
            - a local file path;
            - ``"hf://ORG/NAME/PATH.json"`` or ``"hf://ORG/NAME/PATH.json@REVISION"``
              (``hf://datasets/…`` for a dataset repo).
        repo_id, filename (`str`, *optional*): the keyword form of a Hub reference (instead of
            ``ref``).
        revision (`str`, *optional*): branch, tag or 40-character commit of a Hub reference.
            **Pin a commit** for anything you want to reproduce: a branch moves when schedules are
            published, a cached commit loads with no network call.
        model (`nn.Module` or fingerprint `str`, *optional*): refuse a schedule recorded for a
            model with another fingerprint.
        cache_dir, token, endpoint: passed to ``hf_hub_download``.
        local_files_only (`bool`, defaults to `False`): never touch the network (as does
            ``HF_HUB_OFFLINE=1``, read at call time).
        fallback (`bool`, defaults to `True`): when the Hub is unreachable and the file is not
            cached, use the bundled copy of the same path of the official repository (warns with
            ``HubFallbackWarning``; never for a pinned commit).

    Returns:
        `Schedule`: the validated schedule.

    Raises:
        `ScheduleNotFoundError`: no such file, bundled name, Hub repository, revision or file
            (close bundled names are listed).
        `HubOfflineError`: offline or unreachable and the file is not cached (says how to fix).
        `ScheduleError`: not JSON, too large (checked before parsing, and before downloading
            when the Hub reports the size), a newer ``schema_version``, invalid fields, an unsafe
            path, a bad ``hf://`` reference, or a schedule for another model (both fingerprints).
        `HubError`: the Hub refused the request (gated repository, authentication).
    """
    hub_ref = _hub_ref(ref, repo_id, filename, revision, repo_type)
    if hub_ref is not None:
        schedule = _load_hub(
            hub_ref,
            fallback=fallback,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            endpoint=endpoint,
        )
        source = str(hub_ref)
    else:
        if revision is not None:
            raise ScheduleError(
                f"revision={revision!r} applies to Hub references only, not to {os.fspath(ref)!r}; "
                "use 'hf://ORG/NAME/PATH.json@REVISION'"
            )
        schedule = _load_local_or_bundled(os.fspath(ref))  # type: ignore[arg-type]
        source = os.fspath(ref)  # type: ignore[arg-type]
    if model is not None:
        check_model(schedule, model, source)
    return schedule


def _hub_ref(
    ref: Any, repo_id: str | None, filename: str | None, revision: str | None, repo_type: str
) -> HubRef | None:
    if repo_id is not None or filename is not None:
        if ref is not None:
            raise ScheduleError("give either ref or repo_id=/filename=, not both")
        if repo_id is None or filename is None:
            raise ScheduleError("repo_id= and filename= go together (a file in a Hub repository)")
        return HubRef(repo_id, filename, revision, repo_type)
    if ref is None:
        raise ScheduleError("load_schedule needs a bundled name, a file path or an hf:// reference")
    if isinstance(ref, str) and ref.startswith(HUB_SCHEME):
        parsed = parse_hub_ref(ref)
        if revision is not None and parsed.revision not in (None, revision):
            raise ScheduleError(
                f"{ref!r} pins revision {parsed.revision!r} but revision={revision!r} was also "
                "given; give one"
            )
        return replace(parsed, revision=parsed.revision or revision)
    return None


def _load_local_or_bundled(text: str) -> Schedule:
    if "://" in text:
        raise ScheduleError(
            f"{text!r}: only bundled names, local files and hf:// references load; download other "
            "URLs first"
        )
    if Path(text).is_file():
        return Schedule.load(text)
    folder, index = _bundled_index()
    entry = find_entry(index, text)
    if folder is not None and entry is not None:
        return _load_bundled(folder, entry["path"])
    names = entry_names(index)
    close = difflib.get_close_matches(text, names, n=5, cutoff=0.5)
    if close:
        hint = f"Close bundled names: {', '.join(close)}."
    elif names:
        hint = f"Bundled: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}."
    else:
        hint = "This install bundles no schedules."
    raise ScheduleNotFoundError(
        f"no schedule {text!r}: not a file, and no bundled schedule has that name. {hint} "
        "Hub schedules load as 'hf://ORG/NAME/PATH.json@REVISION'."
    )


def check_model(schedule: Schedule, model: Any, source: str = "schedule") -> None:
    """Refuse ``schedule`` if it records a fingerprint other than ``model``'s.

    ``model`` is an ``nn.Module`` or a fingerprint string. A schedule without a fingerprint cannot
    be checked; that gives a warning, not an error.
    """
    expected = _fingerprint_of(model)
    recorded = schedule.model.fingerprint
    if recorded is None:
        warnings.warn(
            f"{source} records no model fingerprint, so it cannot be checked against the model "
            f"({expected})",
            UserWarning,
            stacklevel=3,
        )
    elif recorded != expected:
        raise ScheduleError(
            f"{source} was made for another model: it records fingerprint {recorded} "
            f"(model {schedule.model.id or 'unnamed'}), the given model has {expected}. Use a "
            "schedule made for this model (best_schedule(model, ...)) or search one "
            "(`tmpdiff search`)."
        )


def _fingerprint_of(model: Any) -> str:
    if isinstance(model, str):
        return model
    from ..fingerprint import model_fingerprint

    return model_fingerprint(model)


def load_index(
    source: str = "bundled",
    *,
    repo_id: str = DEFAULT_REPO,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    fallback: bool = True,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The checked ``index.json`` of the bundled folder (``"bundled"``) or a Hub repo (``"hub"``)."""
    if source == "bundled":
        return _bundled_index()[1]
    if source != "hub":
        raise ScheduleError(f"source={source!r}; expected 'bundled' or 'hub'")
    ref = HubRef(repo_id, INDEX_FILE, revision)
    return _hub_index(
        ref,
        fallback=fallback,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        endpoint=endpoint,
    )[0]


_BUDGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*>=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_budget(budget: str) -> tuple[str, float]:
    """``"speedup>=1.3"`` → ``("speedup", 1.3)``; ``"ssim>=0.95"`` → ``("ssim", 0.95)``."""
    match = _BUDGET.match(budget) if isinstance(budget, str) else None
    if not match:
        raise ScheduleError(
            f"budget {budget!r}; expected 'speedup>=X' (best quality at that speed-up) or "
            "'METRIC>=X' such as 'ssim>=0.95' (fastest at that quality)"
        )
    return match.group(1).lower(), float(match.group(2))


def best_schedule(
    model_or_fingerprint: Any,
    budget: str,
    *,
    source: str = "bundled",
    metric: str = "ssim",
    repo_id: str = DEFAULT_REPO,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    fallback: bool = True,
    token: str | bool | None = None,
    endpoint: str | None = None,
) -> Schedule:
    """The best indexed schedule for a model within a budget.

    Args:
        model_or_fingerprint: an ``nn.Module`` or ``"sha256:…"`` fingerprint (entries with that
            fingerprint), or a model id string (entries with that ``model.id``: weaker, it does not
            prove the weights are the same).
        budget (`str`): ``"speedup>=X"`` picks the best ``metric`` quality among schedules at
            least X times faster (then the fastest on ties); ``"ssim>=X"`` (any quality metric,
            higher is better) picks the fastest schedule reaching it. Unmeasured values never
            qualify.
        source (`str`): ``"bundled"`` or ``"hub"`` (the index of ``repo_id`` at ``revision``;
            the chosen file is loaded at the same commit as the index).

    Raises:
        `ScheduleNotFoundError`: no schedule for that model, or none within the budget (says
            what the best available is).
    """
    kind, bound = parse_budget(budget)
    hub = {
        "cache_dir": cache_dir,
        "local_files_only": local_files_only,
        "token": token,
        "endpoint": endpoint,
    }
    if source == "bundled":
        folder, index = _bundled_index()
        origin: HubRef | Path | None = folder
    elif source == "hub":
        index, origin = _hub_index(HubRef(repo_id, INDEX_FILE, revision), fallback=fallback, **hub)
    else:
        raise ScheduleError(f"source={source!r}; expected 'bundled' or 'hub'")

    key = model_or_fingerprint
    if not isinstance(key, str) or key.startswith("sha256:"):
        key = _fingerprint_of(key)
        field = "fingerprint"
    else:
        field = "id"
    candidates = [e for e in index["schedules"] if e["model"].get(field) == key]
    if not candidates:
        known = sorted(
            {f"{e['model']['id']} ({e['model']['fingerprint']})" for e in index["schedules"]}
        )
        raise ScheduleNotFoundError(
            f"no {source} schedule for model {field} {key!r}. Indexed models: "
            f"{', '.join(known) or 'none'}. Search one with `tmpdiff search`."
        )
    entry = _pick(candidates, kind, bound, metric, key)
    if isinstance(origin, HubRef):
        schedule = _load_hub(origin.at(entry["path"]), fallback=fallback, **hub)
    else:
        schedule = _load_bundled(origin, entry["path"])  # type: ignore[arg-type]
    if field == "fingerprint":  # the file itself must agree with its index entry
        check_model(schedule, key, entry["path"])
    return schedule


def _pick(
    candidates: list[dict[str, Any]], kind: str, bound: float, metric: str, key: str
) -> dict[str, Any]:
    """The best entry within the budget: by ``metric`` at a speed-up bound, by speed otherwise."""
    unmeasured = float("-inf")

    def speed(e: dict[str, Any]) -> float:
        return unmeasured if e["speedup"] is None else e["speedup"]

    def quality(e: dict[str, Any], name: str) -> float:
        return e["quality"].get(name, unmeasured)

    def value(e: dict[str, Any]) -> float:  # what the budget bounds
        return speed(e) if kind == "speedup" else quality(e, kind)

    def order(e: dict[str, Any]) -> tuple[float, float]:
        return (quality(e, metric), speed(e)) if kind == "speedup" else (speed(e), value(e))

    within = [e for e in candidates if value(e) >= bound]
    if within:
        return max(within, key=order)
    top = max(candidates, key=value)
    if value(top) == unmeasured:
        seen = f"none of its {len(candidates)} schedule(s) has a measured {kind}"
    else:
        seen = f"the best is {top['name']} at {kind} {value(top):g}"
    raise ScheduleNotFoundError(
        f"no schedule for {key!r} reaches {kind}>={bound:g}: {seen}. Relax the budget or search "
        "one (`tmpdiff search`)."
    )
