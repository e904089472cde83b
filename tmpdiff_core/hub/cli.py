"""``tmpdiff publish`` and ``tmpdiff index``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .index import card_table, folder_files, write_atomic
from .refs import DEFAULT_REPO


def register(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser(
        "publish",
        help="validate a folder of schedules, rebuild its index and card, upload it in one commit",
        description="Validate every schedule in DIR, rebuild DIR/index.json and the DIR/README.md "
        "table, then upload all of it to a Hub model repository in one commit (token: HF_TOKEN "
        "or `hf auth login`). Pin the printed commit in hf://…@<commit> references.",
    )
    publish.add_argument("dir", type=Path, help="folder of <model>/<name>.json schedules")
    publish.add_argument("--repo", required=True, metavar="ORG/NAME", help=f"e.g. {DEFAULT_REPO}")
    publish.add_argument("--revision", metavar="BRANCH", help="branch to commit to (default: main)")
    publish.add_argument("--dry-run", action="store_true", help="print the plan; upload nothing")
    publish.add_argument("--private", action="store_true", help="create the repository private")
    publish.set_defaults(func=_publish)

    index = sub.add_parser(
        "index", help="validate a folder of schedules and rewrite its index.json and README table"
    )
    index.add_argument("dir", type=Path)
    index.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if either file is out of date"
    )
    index.set_defaults(func=_index)


def _publish(args: argparse.Namespace) -> int:
    from .publish import publish

    plan = publish(
        args.dir, args.repo, revision=args.revision, private=args.private, dry_run=args.dry_run
    )
    if args.dry_run:
        print(plan.describe())
        print("dry run: nothing written or uploaded")
        return 0
    print(f"published {len(plan.index['schedules'])} schedule(s) to {args.repo}: {plan.commit_url}")
    first = plan.index["schedules"][0]["path"]
    print(f"pin this commit: load_schedule('hf://{args.repo}/{first}@{plan.commit_oid}')")
    return 0


def _index(args: argparse.Namespace) -> int:
    index, files = folder_files(args.dir)
    if args.check:
        stale = [name for name, data in files.items() if _read(args.dir / name) != data]
        for name in stale:
            print(f"{args.dir / name} is out of date; run `tmpdiff index {args.dir}`")
        return 1 if stale else 0
    for name, data in files.items():
        write_atomic(args.dir / name, data)
    print(f"indexed {len(index['schedules'])} schedule(s) in {args.dir}")
    print(card_table(index))
    return 0


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None
