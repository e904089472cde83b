"""Hub file access: one cached, size-checked, offline-aware download with specific errors.

``download(ref, ...)`` wraps ``hf_hub_download``: a 40-character commit revision whose file is
cached is read with no network call; ``HF_HUB_OFFLINE=1`` (read at call time, not at import) or
``local_files_only=True`` reads branches and tags from the cache; online, the size the Hub
reports is checked against the cap before anything is downloaded. Hub failures become
``ScheduleNotFoundError`` (repository, revision or file missing), ``HubError`` (refused) or
``HubOfflineError`` (offline/unreachable and not cached, with the fix and the cached commits).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ..errors import HubError, HubOfflineError, ScheduleError, ScheduleNotFoundError
from .index import INDEX_FILE
from .refs import HubRef, is_commit


class HubFallbackWarning(UserWarning):
    """A Hub file was served from the cache or the bundled copy because the Hub was unreachable."""


def transport_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning "could not reach the server", for whichever HTTP stack hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        mod = sys.modules.get(module)
        errors += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n)]
    return tuple(errors)


def _classify(err: Exception, ref: HubRef) -> Exception:
    """Raise the specific error for a failed Hub call; return ``err`` if the Hub is unreachable."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, GatedRepoError):
        raise HubError(
            f"{ref}: {ref.repo_id} is gated; accept its terms on the Hub and log in "
            "(`hf auth login`) or pass token="
        ) from err
    if isinstance(err, RepositoryNotFoundError):
        raise ScheduleNotFoundError(
            f"{ref}: no Hub repository {ref.repo_id!r} (or it is private: log in with "
            "`hf auth login` or pass token=)"
        ) from err
    if isinstance(err, RevisionNotFoundError):
        raise ScheduleNotFoundError(
            f"{ref}: {ref.repo_id} has no revision {ref.revision!r}; use a branch, tag or commit "
            "that exists"
        ) from err
    if isinstance(err, EntryNotFoundError):
        raise ScheduleNotFoundError(
            f"{ref}: no file {ref.filename!r} in {ref.repo_id} at {ref.revision or 'main'}; "
            f"its {INDEX_FILE} lists the schedules it has"
        ) from err
    if isinstance(err, HfHubHTTPError):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status is not None and (status >= 500 or status == 429):
            return err
        raise HubError(f"{ref}: the Hub refused the request ({status}): {err}") from err
    if isinstance(err, transport_errors()):
        return err
    raise err


def _cached_commits(ref: HubRef, cache_dir: str | Path | None) -> list[str]:
    """Commits whose cached snapshot holds ``ref.filename`` (for the "pin a cached revision" hint)."""
    from huggingface_hub import constants

    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)
    folder = cache / f"{ref.repo_type}s--{ref.repo_id.replace('/', '--')}" / "snapshots"
    if not folder.is_dir():
        return []
    return sorted(s.name for s in folder.iterdir() if (s / ref.filename).is_file())


def _offline_error(
    ref: HubRef, cause: Exception | None, cache_dir: str | Path | None
) -> HubOfflineError:
    if cause is None:
        why = "the Hub is offline (HF_HUB_OFFLINE=1 or local_files_only=True)"
        fix = "load it once online (unset HF_HUB_OFFLINE)"
    else:
        why = f"the Hub is unreachable ({type(cause).__name__}: {cause})"
        fix = "check the connection (or HF_ENDPOINT) and load it once online"
    cached = _cached_commits(ref, cache_dir)
    if cached:
        pin = f"pin a cached commit: '{ref.at(ref.filename, cached[-1])}'"
        if len(cached) > 1:
            pin += f" (cached: {', '.join(c[:12] for c in cached)})"
    else:
        pin = "pin a revision you have loaded before"
    return HubOfflineError(f"{ref} is not in the local Hub cache and {why}. Fix: {fix}, or {pin}.")


def download(
    ref: HubRef,
    *,
    max_bytes: int,
    cache_dir: str | Path | None,
    local_files_only: bool,
    token: str | bool | None,
    endpoint: str | None,
) -> str:
    """Path of ``ref`` in the Hub cache, downloading it only when needed and allowed."""
    from huggingface_hub import (
        constants,
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = {
        "repo_id": ref.repo_id,
        "filename": ref.filename,
        "revision": ref.revision,
        "repo_type": ref.repo_type,
    }
    offline = local_files_only or bool(constants.HF_HUB_OFFLINE)  # read now, not at import
    unreachable: Exception | None = None
    pinned_and_cached = is_commit(ref.revision) and isinstance(
        try_to_load_from_cache(cache_dir=cache_dir, **where), str
    )
    if not offline and not pinned_and_cached:
        try:
            meta = get_hf_file_metadata(
                hf_hub_url(**where, endpoint=endpoint), token=token, endpoint=endpoint
            )
        except Exception as err:
            unreachable = _classify(err, ref)
            offline = True  # fall back to the cache without a second timeout
        else:
            if meta.size is not None and meta.size > max_bytes:
                raise ScheduleError(
                    f"{ref}: the Hub says it is {meta.size} bytes, larger than the {max_bytes}-byte "
                    "cap; not downloaded (this is not a schedule file)"
                )
    try:
        path = hf_hub_download(
            **where,
            cache_dir=cache_dir,
            local_files_only=offline,
            token=token,
            endpoint=endpoint,
        )
    except LocalEntryNotFoundError as err:
        raise _offline_error(ref, unreachable, cache_dir) from (unreachable or err)
    except Exception as err:
        cause = _classify(err, ref)
        raise _offline_error(ref, cause, cache_dir) from err
    if unreachable is not None:
        warnings.warn(
            f"the Hub is unreachable ({type(unreachable).__name__}); using the cached copy of "
            f"{ref}, which may be older than the Hub's. Pin a commit to make this exact.",
            HubFallbackWarning,
            stacklevel=4,
        )
    return path
