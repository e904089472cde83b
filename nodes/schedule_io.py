"""Nodes: load a schedule (bundled, file, Hub), save it, and draw its per-step precision strip."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths
from comfy_api.latest import io

from tmpdiff_core.errors import ScheduleError, TmpdiffError
from tmpdiff_core.schedule import Schedule
from tmpdiff_core.strip import render_strip

from ._types import CATEGORY, SCHEDULE, image_tensor

SOURCES = ("bundled", "file", "hub")


def bundled_names() -> list[str]:
    """Names of the schedules shipped in ``schedules/`` (empty if the install has none)."""
    try:
        from tmpdiff_core.hub import load_index

        return [entry["name"] for entry in load_index("bundled")["schedules"]]
    except (ImportError, TmpdiffError, OSError):
        return []


def load(
    source: str, bundled: str, path: str, repo_id: str, filename: str, revision: str
) -> Schedule:
    """The schedule a Load node's inputs name; every failure is a ``TmpdiffError`` saying why."""
    from tmpdiff_core.hub import load_schedule

    if source == "bundled":
        if not bundled:
            raise ScheduleError("source is 'bundled' but no bundled schedule is selected")
        return load_schedule(bundled)
    if source == "file":
        if not path.strip():
            raise ScheduleError("source is 'file' but 'path' is empty; give a schedule .json file")
        return load_schedule(os.path.expanduser(path.strip()))
    if source == "hub":
        if not repo_id.strip() or not filename.strip():
            raise ScheduleError("source is 'hub': give repo_id (ORG/NAME) and filename (PATH.json)")
        return load_schedule(
            repo_id=repo_id.strip(), filename=filename.strip(), revision=revision.strip() or None
        )
    raise ScheduleError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


class LoadSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = bundled_names()
        return io.Schema(
            node_id="TmpdiffLoadSchedule",
            display_name="tmpdiff Load Schedule",
            category=CATEGORY,
            description="A precision schedule from the bundled set, a local .json file, or the Hugging Face Hub.",
            inputs=[
                io.Combo.Input("source", options=list(SOURCES), default="bundled"),
                io.Combo.Input(
                    "bundled",
                    options=names or [""],
                    default=names[0] if names else "",
                    tooltip="Schedules shipped with tmpdiff (used when source is 'bundled').",
                ),
                io.String.Input(
                    "path", default="", tooltip="A schedule .json file (source 'file')."
                ),
                io.String.Input(
                    "repo_id",
                    default="tmpdiff/tmpdiff-schedules",
                    tooltip="Hub repository (source 'hub').",
                ),
                io.String.Input(
                    "filename", default="", tooltip="Path of the .json inside the repository."
                ),
                io.String.Input(
                    "revision",
                    default="",
                    tooltip="Branch, tag or 40-character commit. Pin a commit to reproduce a result.",
                ),
            ],
            outputs=[
                SCHEDULE.Output(),
                io.String.Output(display_name="summary", tooltip="Steps and precisions, one line."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, source: str, path: str = "", **inputs) -> object:
        if source == "file" and path.strip():
            try:  # re-run when the file changes on disk
                stat = Path(os.path.expanduser(path.strip())).stat()
                return (path, stat.st_mtime_ns, stat.st_size)
            except OSError:
                return (path, None)
        return (source, path, tuple(sorted(inputs.items())))

    @classmethod
    def execute(
        cls, source: str, bundled: str, path: str, repo_id: str, filename: str, revision: str
    ) -> io.NodeOutput:
        schedule = load(source, bundled, path, repo_id, filename, revision)
        title = f"{schedule.name}: " if schedule.name else ""
        return io.NodeOutput(schedule, title + schedule.summary())


class SaveSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TmpdiffSaveSchedule",
            display_name="tmpdiff Save Schedule",
            category=CATEGORY,
            description="Writes the schedule as JSON under ComfyUI's output folder.",
            is_output_node=True,
            inputs=[
                SCHEDULE.Input("schedule"),
                io.String.Input(
                    "filename_prefix",
                    default="tmpdiff/schedule",
                    tooltip="Relative to the output folder; a counter and .json are appended.",
                ),
            ],
            outputs=[io.String.Output(display_name="path")],
        )

    @classmethod
    def execute(cls, schedule, filename_prefix: str) -> io.NodeOutput:
        folder, name, counter, _, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory()
        )
        path = Path(folder) / f"{name}_{counter:05}_.json"  # ComfyUI's naming: the counter advances
        schedule.save(path)
        return io.NodeOutput(str(path), ui={"text": [str(path)]})


class SchedulePreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TmpdiffSchedulePreview",
            display_name="tmpdiff Schedule Preview",
            category=CATEGORY,
            description="The per-step precision strip (noise on the left, clean on the right) as an IMAGE.",
            inputs=[
                SCHEDULE.Input("schedule"),
                io.Int.Input("width", default=768, min=64, max=4096, step=8),
            ],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, schedule, width: int) -> io.NodeOutput:
        title = f"{schedule.name or 'schedule'}  ({schedule.summary()})"
        return io.NodeOutput(
            image_tensor(render_strip(schedule.precisions, width=width, title=title))
        )
