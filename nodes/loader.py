"""Node: MODEL → MODEL with precision variants of its linear layers (``tmpdiff Quantized Model``)."""

from __future__ import annotations

import comfy.utils
from comfy_api.latest import io

from tmpdiff_core.errors import TmpdiffError
from tmpdiff_core.native_policy import EXCLUDE_WITH_NATIVE

from ._patching import quantize_model
from ._types import CATEGORY, backend_names, parse_list, parse_precisions, precision_names

EXCLUDE_POLICIES = ("default", "default + extra", "only extra", "none")


class QuantizedModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TmpdiffQuantizedModel",
            display_name="tmpdiff Quantized Model",
            category=CATEGORY,
            description=(
                "Prepares every precision a schedule may use: each selected linear layer gets "
                "one quantized copy per precision, built once. The input MODEL is not changed. "
                "Connect the output to 'tmpdiff Precision Schedule'."
            ),
            inputs=[
                io.Model.Input(
                    "model", tooltip="From UNETLoader, CheckpointLoader, a GGUF loader, …"
                ),
                io.String.Input(
                    "precisions",
                    default="bf16, fp8",
                    tooltip=f"Comma-separated, the reference first. Known: {', '.join(precision_names())}.",
                ),
                io.Combo.Input(
                    "exclude_policy",
                    options=list(EXCLUDE_POLICIES),
                    default="default",
                    tooltip=(
                        "Which layers stay at the reference: 'default' keeps embedders, the final "
                        "layer and modulation linears; 'extra' adds (or, with 'only extra', "
                        "replaces them with) the globs below; 'none' quantizes every linear."
                    ),
                ),
                io.String.Input(
                    "extra_exclude",
                    default="",
                    multiline=True,
                    tooltip="Glob patterns on layer names, comma or line separated (double_blocks.0.*).",
                ),
                io.String.Input(
                    "include",
                    default="",
                    tooltip="Optional globs: only these layers are candidates (empty = every linear).",
                ),
                io.Combo.Input(
                    "backend",
                    options=backend_names(),
                    default="auto",
                    tooltip="'auto' picks a real kernel for this GPU, else emulation (same numbers, no speed-up).",
                ),
            ],
            outputs=[
                io.Model.Output(tooltip="The model, able to run at each prepared precision."),
                io.String.Output(display_name="report", tooltip="Layers per precision and memory."),
            ],
        )

    @classmethod
    def validate_inputs(cls, precisions: str, **_) -> bool | str:
        try:
            parse_precisions(precisions)
        except TmpdiffError as err:
            return str(err)
        return True

    @classmethod
    def execute(
        cls,
        model,
        precisions: str,
        exclude_policy: str,
        extra_exclude: str,
        include: str,
        backend: str,
    ) -> io.NodeOutput:
        exclude = exclusions(exclude_policy, parse_list(extra_exclude))
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            bar = bar or comfy.utils.ProgressBar(total)
            bar.update_absolute(done, total)

        out = quantize_model(
            model,
            parse_precisions(precisions),
            include=parse_list(include) or None,
            exclude=exclude,
            backend=backend,
            progress=progress,
        )
        handle = out.get_attachment("tmpdiff")
        report = handle.summary() + "\n" + handle.memory_report().table()
        return io.NodeOutput(out, report)


def exclusions(policy: str, extra: list[str]) -> tuple[str, ...]:
    """The exclusion globs for a policy name and the user's extra patterns."""
    if policy == "default":
        return EXCLUDE_WITH_NATIVE
    if policy == "default + extra":
        return (*EXCLUDE_WITH_NATIVE, *extra)
    if policy == "only extra":
        return tuple(extra)
    if policy == "none":
        return ()
    raise ValueError(f"unknown exclude_policy {policy!r}; expected one of {EXCLUDE_POLICIES}")
