"""Publishing a folder of schedules to a Hub repository in one commit.

``publish(DIR, "org/name")`` validates every schedule under DIR, rebuilds ``index.json`` and the
README card, then uploads with ``HfApi``: ``create_repo(exist_ok=True)``, the branch if a
revision is given, and ONE ``create_commit`` holding every schedule, the index and the card, so
a reader never sees an index that lists files the commit lacks. The token is hub's default
(``HF_TOKEN`` or ``hf auth login``). Publishing adds and updates files; it deletes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HubError, ScheduleError
from .fetch import transport_errors
from .index import CARD_FILE, INDEX_FILE, collect_schedules, folder_files, write_atomic
from .refs import DEFAULT_REPO, check_repo_id


@dataclass
class PublishPlan:
    """What ``publish`` uploads: every file by repository path, and the commit message."""

    folder: Path
    repo_id: str
    revision: str | None
    private: bool
    index: dict[str, Any]
    files: dict[str, bytes]
    message: str
    description: str
    commit_oid: str | None = None
    commit_url: str | None = None

    def describe(self) -> str:
        """The plan as printed by ``tmpdiff publish --dry-run``."""
        branch = self.revision or "main"
        lines = [
            f"repository: {self.repo_id} (model repo; if created: "
            f"{'private' if self.private else 'the account default visibility'}; an existing "
            "repo keeps its visibility)",
            f"branch: {branch}",
            f"commit: {self.message!r}, {len(self.files)} files:",
        ]
        lines += [f"  {path}  ({len(data)} bytes)" for path, data in sorted(self.files.items())]
        return "\n".join(lines)


def plan_publish(
    folder: str | Path, repo_id: str, *, revision: str | None = None, private: bool = False
) -> PublishPlan:
    """Validate and index ``folder``; the files and message of the commit. Uploads nothing."""
    check_repo_id(repo_id)
    root = Path(folder)
    schedules = collect_schedules(root)
    if not schedules:
        raise ScheduleError(f"{root}: no schedule .json files to publish")
    index, generated = folder_files(root, schedules)
    files = {path: data for path, data, _ in schedules} | generated
    names = [entry["name"] for entry in index["schedules"]]
    if len(names) <= 3:
        what = ", ".join(names)
    else:
        models = Counter(entry["model"]["id"] or "unnamed" for entry in index["schedules"])
        what = ", ".join(f"{model} ×{n}" for model, n in sorted(models.items()))
    from .. import __version__

    return PublishPlan(
        folder=root,
        repo_id=repo_id,
        revision=revision,
        private=private,
        index=index,
        files=files,
        message=f"tmpdiff: publish {len(names)} schedule{'s' * (len(names) != 1)} ({what})",
        description=f"Published with tmpdiff {__version__}.\n\n"
        + "\n".join(f"- {path}" for path in sorted(files)),
    )


def publish(
    folder: str | Path,
    repo_id: str = DEFAULT_REPO,
    *,
    revision: str | None = None,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
) -> PublishPlan:
    """Validate, index and upload a folder of schedules in one commit.

    Args:
        folder: the schedule folder (``<model>/<name>.json`` files; ``index.json`` and
            ``README.md`` are rebuilt in it unless ``dry_run``).
        repo_id (`str`): ``ORG/NAME`` of the model repository (created if missing).
        revision (`str`, *optional*): the branch to commit to (created from the default branch if
            missing); the default branch when omitted.
        private (`bool`): create the repository private (an existing one keeps its visibility).
        dry_run (`bool`): validate and plan only; write and upload nothing.

    Returns:
        `PublishPlan`: the plan, with ``commit_oid``/``commit_url`` set after an upload. Pin
        ``commit_oid`` in ``hf://…@<commit>`` references.

    Raises:
        `ScheduleError`: an invalid schedule, unsafe path, or an empty folder.
        `HubError`: the Hub refused (authentication, permissions) or could not be reached.
    """
    plan = plan_publish(folder, repo_id, revision=revision, private=private)
    if dry_run:
        return plan
    for name in (INDEX_FILE, CARD_FILE):
        write_atomic(plan.folder / name, plan.files[name])

    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=endpoint, token=token)
    operations = [CommitOperationAdd(path, data) for path, data in sorted(plan.files.items())]
    try:
        api.create_repo(repo_id, private=private or None, exist_ok=True, repo_type="model")
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=plan.message,
            commit_description=plan.description,
            revision=revision,
            repo_type="model",
        )
    except (HfHubHTTPError, *transport_errors()) as err:
        raise HubError(f"publishing to {repo_id} failed: {type(err).__name__}: {err}") from err
    plan.commit_oid, plan.commit_url = info.oid, info.commit_url
    return plan
