"""The ComfyUI-independent helpers behind the nodes: run plans, time axes, exclusions, pictures.

These run without ComfyUI (``tmpdiff_core`` never imports ``comfy``).
"""

from __future__ import annotations

import numpy as np
import pytest

from tmpdiff_core.errors import ScheduleError
from tmpdiff_core.native_policy import EXCLUDE_WITH_NATIVE
from tmpdiff_core.policy import is_selected
from tmpdiff_core.runplan import (
    boundaries_from_times,
    plan_run,
    times_from_flow_sigmas,
    times_from_log_sigmas,
    times_from_timesteps,
)
from tmpdiff_core.schedule import Schedule
from tmpdiff_core.search.evaluator import Quality
from tmpdiff_core.search.pareto import Point
from tmpdiff_core.search.plots import pareto_plot
from tmpdiff_core.strip import precision_color, render_strip, stack_images

GRID = [1.0, 0.9045, 0.7595, 0.5128, 0.0]  # ComfyUI's 4-step "simple" grid for a flow model


def test_same_step_count_applies_by_index_and_by_interval():
    plan = plan_run(Schedule.from_precisions(["bf16", "fp8", "fp8", "bf16"]), GRID)
    assert plan.precisions == ("bf16", "fp8", "fp8", "bf16") and plan.resampled_from is None
    assert [plan.step_at(s) for s in GRID[:-1]] == [0, 1, 2, 3]  # euler: one call per grid point
    assert plan.step_at(GRID[1]) == 1  # heun's corrector of step 0 runs at sigma_1: step 1
    assert plan.step_at(0.9626) == 0 and plan.step_at(0.30) == 3  # dpm_2 midpoints stay inside
    assert plan.step_at(1.0000001) == 0 and plan.step_at(0.0) == 3  # clamped at both ends
    assert plan.summary() == "4 steps: bf16×2 fp8×2"


def test_other_step_count_is_resampled_by_normalized_time():
    schedule = Schedule.from_precisions(["bf16", "fp8", "fp8", "fp8", "fp8", "fp8", "fp8", "bf16"])
    sigmas = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    plan = plan_run(schedule, sigmas, times_from_flow_sigmas(sigmas))
    assert plan.resampled_from == 8
    assert plan.precisions == tuple(schedule.precision_at(t) for t in sigmas[:-1])
    with pytest.raises(ScheduleError, match="normalized time axis"):
        plan_run(schedule, sigmas)


def test_bad_grids_are_refused():
    schedule = Schedule.from_precisions(["bf16"])
    with pytest.raises(ScheduleError, match="at least 2"):
        plan_run(schedule, [1.0])
    with pytest.raises(ScheduleError, match="decrease"):
        plan_run(schedule, [0.5, 1.0])


def test_time_axes():
    assert times_from_timesteps([999, 500, 0], 1000) == [0.999, 0.5, 0.0]  # diffusers' DDPM rule
    assert times_from_log_sigmas([80.0, 0.002, 0.0], 0.002, 80.0) == pytest.approx([1.0, 0.0, 0.0])
    assert boundaries_from_times([1.2, 0.5, 0.6, -0.1]) == [1.0, 0.5, 0.5, 0.0]
    with pytest.raises(ValueError):
        times_from_timesteps([1], 0)


@pytest.mark.parametrize(
    ("name", "quantized"),
    [
        ("img_in", False),
        ("double_blocks.0.img_mod.lin", False),
        ("single_blocks.3.modulation.lin", False),
        ("final_layer.linear", False),
        ("time_in.in_layer", False),
        ("double_blocks.0.img_attn.qkv", True),
        ("single_blocks.3.linear1", True),
        ("joint_blocks.0.x_block.adaLN_modulation.1", False),
        ("context_embedder", False),
        ("joint_blocks.0.x_block.attn.qkv", True),
        ("time_embed.0", False),
        ("input_blocks.1.0.emb_layers.1", False),
        ("input_blocks.4.1.transformer_blocks.0.attn1.to_q", True),
        ("transformer_blocks.0.norm1.linear", False),  # the diffusers names still apply
    ],
)
def test_native_layouts_keep_embedders_modulation_and_final_layer(name, quantized):
    assert is_selected(name, None, EXCLUDE_WITH_NATIVE) is quantized


def test_strip_has_one_coloured_cell_per_step():
    image = render_strip(["bf16", "fp8", "fp8", "int8"], width=400, cell_height=20)
    assert image.dtype == np.uint8 and image.shape[1] == 400 and image.shape[2] == 3
    row = image[10]  # through the cells (no title)
    assert tuple(row[10]) == precision_color("bf16")
    assert tuple(row[150]) == precision_color("fp8") == tuple(row[250])
    assert tuple(row[390]) == precision_color("int8")
    assert precision_color("made-up") == precision_color("made-up")
    with pytest.raises(ValueError):
        render_strip([])


def test_pareto_plot_and_stacking():
    quality = [Quality(1.0, 100.0), Quality(0.9, 30.0), Quality(0.8, 25.0)]
    points = [Point(("bf16",), 1.0, x, q) for x, q in zip((1.0, 1.5, 1.2), quality, strict=True)]
    plot = np.asarray(pareto_plot(points, chosen=points[1], width=300, height=200))
    empty = np.asarray(pareto_plot([], width=300, height=200))
    assert plot.shape == empty.shape == (200, 300, 3) and not np.array_equal(plot, empty)
    strip = render_strip(["bf16"], width=200)
    stacked = stack_images([plot, strip])
    assert stacked.shape == (200 + strip.shape[0], 300, 3)


def test_pack_entry_point_imports_outside_comfyui():
    """The repository root is a ComfyUI custom-node folder; importing it elsewhere does nothing."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import importlib.util as u, sys\n"
        f"spec = u.spec_from_file_location('tmpdiff_pack', {str(root / '__init__.py')!r},"
        f" submodule_search_locations=[{str(root)!r}])\n"
        "module = u.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert not hasattr(module, 'comfy_entrypoint') and not hasattr(module, 'NODE_CLASS_MAPPINGS')\n"
        "assert 'comfy' not in sys.modules\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/"
    )
    assert done.returncode == 0, done.stderr
