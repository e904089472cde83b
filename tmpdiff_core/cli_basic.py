"""``tmpdiff info`` and ``tmpdiff schedule validate|show``."""

from __future__ import annotations

import argparse

import torch

from .formats import all_formats, backends_for
from .schedule import Schedule


def register(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="list formats and which backends this machine can run")
    info.set_defaults(func=_info)
    schedule = sub.add_parser("schedule", help="inspect schedule files")
    inner = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    validate = inner.add_parser("validate", help="check a schedule file; exit 2 if invalid")
    validate.add_argument("file")
    validate.set_defaults(func=_validate)
    show = inner.add_parser("show", help="print a schedule as a per-step table")
    show.add_argument("file")
    show.set_defaults(func=_show)


def _devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


def _info(args: argparse.Namespace) -> int:
    devices = _devices()
    print(f"torch {torch.__version__}; devices: {', '.join(map(str, devices))}")
    for fmt in all_formats():
        print(f"\n{fmt.name:<7} {fmt.title}")
        for backend in backends_for(fmt.name):
            for device in devices:
                reason = backend.unavailable_reason(device)
                status = "ok" if reason is None else f"unavailable: {reason}"
                print(f"    {backend.name:<10} {device.type:<5} {status}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    schedule = Schedule.load(args.file)
    print(f"{args.file}: valid schedule, {schedule.summary()}")
    return 0


def _show(args: argparse.Namespace) -> int:
    s = Schedule.load(args.file)
    title = s.name or args.file
    print(f"{title}  ({s.summary()})")
    if s.model.id or s.model.fingerprint:
        print(f"model: {s.model.id}  fingerprint: {s.model.fingerprint}")
    if s.sampler.name or s.sampler.scheduler:
        print(f"sampler: {s.sampler.name} / {s.sampler.scheduler}, guidance {s.sampler.guidance}")
    if s.quality:
        print("quality: " + ", ".join(f"{k}={v:.4g}" for k, v in s.quality.items()))
    if s.cost.speedup is not None:
        kind = "measured" if s.cost.measured else "predicted"
        print(f"speed-up: {s.cost.speedup:.3f}x ({kind}, {s.cost.device or 'unknown device'})")
    print(s.table())
    return 0
