"""tmpdiff's ComfyUI nodes, as a V3 extension (``comfy_entrypoint``).

Imported only inside ComfyUI: the repository's root ``__init__.py`` guards the import. The nodes
are thin shells over ``tmpdiff_core``; everything that touches ComfyUI internals is in
``_patching.py``.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .loader import QuantizedModel
from .schedule_io import LoadSchedule, SaveSchedule, SchedulePreview
from .scheduler import PrecisionSchedule
from .searcher import SearchSchedule

NODES: list[type[io.ComfyNode]] = [
    QuantizedModel,
    PrecisionSchedule,
    LoadSchedule,
    SaveSchedule,
    SchedulePreview,
    SearchSchedule,
]


class TmpdiffExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> TmpdiffExtension:
    return TmpdiffExtension()
