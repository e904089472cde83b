"""Hub references (``hf://ORG/NAME/PATH.json@REVISION``) and the repository-path safety check.

Every path that reaches the disk or ``hf_hub_download`` (a ``filename=``, the path in an
``hf://`` reference, a ``path`` in an index) goes through ``safe_repo_path`` first: a relative,
forward-slash, ``.json`` path that cannot leave the repository or its cache snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ScheduleError

DEFAULT_REPO = "tmpdiff/tmpdiff-schedules"
"""The official schedule repository; ``schedules/`` in the package is a snapshot of it."""

HUB_SCHEME = "hf://"
REPO_TYPES = ("model", "dataset", "space")
_TYPE_PREFIXES = {"datasets": "dataset", "spaces": "space"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_MAX_PATH = 512
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def safe_repo_path(path: object, where: str = "path") -> str:
    """``path`` if it is a safe relative ``.json`` path inside a repository; ``ScheduleError`` if not.

    Refused: non-strings, empty or over-long paths, absolute paths, ``..`` or ``.`` segments,
    empty segments (``a//b``), backslashes, URL schemes or drive letters (``http:``, ``C:``),
    control characters, and anything that is not ``.json`` (schedules are JSON, never pickles).
    """
    if not isinstance(path, str) or not path:
        raise ScheduleError(f"{where} must be a non-empty string, got {path!r}")
    problem = None
    if len(path) > _MAX_PATH:
        problem = f"longer than {_MAX_PATH} characters"
    elif "\\" in path:
        problem = "backslashes are not allowed (use '/')"
    elif any(ord(c) < 32 or ord(c) == 127 for c in path):
        problem = "control characters are not allowed"
    elif path.startswith("/"):
        problem = "absolute paths are not allowed"
    elif _SCHEME.match(path):
        problem = "URLs and drive letters are not allowed"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        problem = "'.', '..' and empty segments are not allowed"
    elif not path.endswith(".json"):
        problem = "only .json files are schedules"
    if problem:
        raise ScheduleError(f"{where} {path!r} is not a safe path inside the repository: {problem}")
    return path


def check_repo_id(repo_id: object) -> str:
    """``repo_id`` if it is an ``ORG/NAME`` Hub repository id; ``ScheduleError`` if not."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ScheduleError(f"repo_id {repo_id!r} is not a Hub repository id; expected 'ORG/NAME'")
    if "--" in repo_id or ".." in repo_id:
        raise ScheduleError(f"repo_id {repo_id!r} may not contain '--' or '..'")
    return repo_id


def is_commit(revision: str | None) -> bool:
    """Whether ``revision`` is a full 40-character commit sha (an immutable pin)."""
    return revision is not None and bool(_COMMIT.match(revision))


@dataclass(frozen=True)
class HubRef:
    """One file in a Hub repository, at a revision (``None`` = the default branch)."""

    repo_id: str
    filename: str
    revision: str | None = None
    repo_type: str = "model"

    def __post_init__(self) -> None:
        check_repo_id(self.repo_id)
        if self.repo_type not in REPO_TYPES:
            raise ScheduleError(f"repo_type {self.repo_type!r}; expected one of {REPO_TYPES}")
        safe_repo_path(self.filename, "filename")
        rev = self.revision
        if rev is not None and (
            not isinstance(rev, str) or not rev or len(rev) > 255 or re.search(r"[\s@]", rev)
        ):
            raise ScheduleError(
                f"revision {rev!r} is not a branch, tag or commit (non-empty, no spaces or '@')"
            )

    def __str__(self) -> str:
        prefix = {"dataset": "datasets/", "space": "spaces/"}.get(self.repo_type, "")
        tail = f"@{self.revision}" if self.revision else ""
        return f"{HUB_SCHEME}{prefix}{self.repo_id}/{self.filename}{tail}"

    def at(self, filename: str, revision: str | None = None) -> HubRef:
        """Another file of the same repository (at ``revision``, default: the same one)."""
        return HubRef(self.repo_id, filename, revision or self.revision, self.repo_type)


def parse_hub_ref(text: str) -> HubRef:
    """Parse ``hf://[datasets/|spaces/]ORG/NAME/PATH.json[@REVISION]``.

    ``REVISION`` is a branch, tag or 40-character commit; pin a commit for reproducible results.
    Raises ``ScheduleError`` on any other form.
    """
    if not isinstance(text, str) or not text.startswith(HUB_SCHEME):
        raise ScheduleError(f"{text!r} is not a Hub reference; expected {_FORM}")
    body, at, revision = text[len(HUB_SCHEME) :].partition("@")
    if at and (not revision or "@" in revision):
        raise ScheduleError(f"{text!r}: bad revision after '@'; expected {_FORM}")
    parts = body.split("/")
    repo_type = _TYPE_PREFIXES.get(parts[0], "model")
    if repo_type != "model":
        parts = parts[1:]
    if len(parts) < 3 or not parts[0] or not parts[1] or not parts[2]:
        raise ScheduleError(f"{text!r} names no file in a repository; expected {_FORM}")
    try:
        return HubRef("/".join(parts[:2]), "/".join(parts[2:]), revision or None, repo_type)
    except ScheduleError as err:
        raise ScheduleError(f"{text!r}: {err}") from None


_FORM = "'hf://ORG/NAME/PATH.json' or 'hf://ORG/NAME/PATH.json@REVISION'"
