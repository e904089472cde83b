"""Node: MODEL + SCHEDULE → MODEL that runs each step at its scheduled precision."""

from __future__ import annotations

from comfy_api.latest import io

from ._patching import apply_schedule
from ._types import CATEGORY, SCHEDULE


class PrecisionSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TmpdiffPrecisionSchedule",
            display_name="tmpdiff Precision Schedule",
            category=CATEGORY,
            description=(
                "Runs every sampling step at the precision the schedule gives it. Works with any "
                "sampler and step count: each model call is placed on the run's sigma grid, and a "
                "schedule made for another step count is resampled along the timeline."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The output of 'tmpdiff Quantized Model'."),
                SCHEDULE.Input("schedule", tooltip="From Load / Search schedule."),
            ],
            outputs=[io.Model.Output(tooltip="Connect to KSampler (or any sampler node).")],
        )

    @classmethod
    def execute(cls, model, schedule) -> io.NodeOutput:
        return io.NodeOutput(apply_schedule(model, schedule))
