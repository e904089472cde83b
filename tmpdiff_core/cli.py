"""The ``tmpdiff`` command.

Sub-commands live next to the code they drive: each module in ``_COMMAND_MODULES`` exposes
``register(subparsers)`` adding its parser with ``set_defaults(func=...)``; ``func(args)`` returns
the exit code. Modules are imported lazily so ``tmpdiff info`` does not pay for the search stack.
Errors we raise on purpose (``TmpdiffError``) print as one line with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import TmpdiffError

_COMMAND_MODULES = (
    "tmpdiff_core.cli_basic",  # info, schedule validate/show
    "tmpdiff_core.demo",  # demo
    "tmpdiff_core.search.cli",  # search
    "tmpdiff_core.hub",  # publish
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmpdiff", description="Temporal mixed precision for diffusion models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except TmpdiffError as err:
        print(f"tmpdiff: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
