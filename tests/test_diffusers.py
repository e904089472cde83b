"""apply_schedule / remove_schedule on tiny real diffusers pipelines (CPU, no downloads).

What each call ran at is asserted twice: from the handle's trace and from an independent
observer, a forward hook on the variants of one wrapped linear layer that records which variant
actually executed.
"""

from __future__ import annotations

import inspect
import logging
import warnings

import pytest
import torch
from tiny_pipelines import BUILDERS, build, denoiser_of

from tmpdiff_core import (
    PipelineAdapter,
    PrepareError,
    Schedule,
    ScheduleError,
    TraceEntry,
    UnknownPrecisionError,
    UnsupportedPipelineError,
    apply_schedule,
    get_prepared,
    get_schedule_handle,
    prepare,
    remove_schedule,
    supported_pipelines,
)
from tmpdiff_core.diffusers_hook import _TMPDIFF_SCHEDULE_HOOK, _locate
from tmpdiff_core.pipeline_adapters import adapter_for

LOW = "int8wo"  # weight-only: cheapest low precision to emulate on CPU
ALTERNATING = [LOW, "bf16", LOW, "bf16"]


@pytest.fixture(autouse=True)
def _quiet():
    # emulated backends warn once that they give no speed-up on CPU; irrelevant here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _prepared(name: str, cfg: bool = False, precisions=("bf16", LOW)):
    pipe, kwargs = build(name, cfg=cfg)
    prepare(denoiser_of(pipe), list(precisions))
    return pipe, kwargs


def _observe(pipe) -> list[str]:
    """Record, per denoiser call, the precision of the variant that really ran in one layer."""
    handle = get_prepared(denoiser_of(pipe))
    layer = next(iter(handle.layers.values()))
    ran: list[str] = []
    for index, slot in enumerate(layer.slots):
        if slot or index == 0:
            name = handle.precisions[index]
            layer.variants[slot].register_forward_hook(lambda *_, n=name: ran.append(n))
    return ran


def _raw_timesteps(pipe) -> list[tuple[float, torch.dtype | None, bool]]:
    """(first value, dtype, passed positionally?) of what the denoiser receives per call."""
    seen = []

    def pre(module, args, kwargs):
        positional = "timestep" not in kwargs
        t = args[1] if positional else kwargs["timestep"]
        seen.append((t.reshape(-1)[0].item(), t.dtype, positional))

    denoiser_of(pipe).register_forward_pre_hook(pre, with_kwargs=True)
    return seen


# ---------------------------------------------------------------- what the denoisers receive
# (pipeline, to scheduler units, received positionally) as verified on diffusers 0.42.1
RECEIVED = {
    "flux": (lambda t, pipe: t * 1000, False),
    "sd3": (lambda t, pipe: t, False),
    "sana": (lambda t, pipe: t / pipe.transformer.config.timestep_scale, False),
    "pixart_sigma": (lambda t, pipe: t, False),
    "sdxl": (lambda t, pipe: t, True),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_adapter_matches_what_the_denoiser_receives(name):
    pipe, kwargs = build(name)
    seen = _raw_timesteps(pipe)
    pipe(**kwargs, num_inference_steps=4)
    to_units, positional = RECEIVED[name]
    expected = pipe.scheduler.timesteps.tolist()
    assert [to_units(v, pipe) for v, _, _ in seen] == pytest.approx(expected, rel=1e-6)
    assert {p for _, _, p in seen} == {positional}
    adapter = adapter_for(pipe)
    assert adapter is not None and adapter.timestep_kind == {
        "flux": "flux",
        "sana": "sana",
    }.get(name, "scheduler")
    if name == "pixart_sigma":
        assert seen[0][1] == torch.int64 and expected[-1] == 0  # DDIM "leading" ends at t = 0


# ---------------------------------------------------------------- every step at its precision
@pytest.mark.parametrize("cfg", [False, True], ids=["nocfg", "cfg"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_alternating_schedule_call_by_call(name, cfg):
    pipe, kwargs = _prepared(name, cfg)
    ran = _observe(pipe)
    handle = apply_schedule(pipe, Schedule.from_precisions(ALTERNATING), trace=True)
    pipe(**kwargs, num_inference_steps=4)

    # Flux true CFG calls the transformer twice per step; the others batch cond+uncond in one
    calls_per_step = 2 if (name == "flux" and cfg) else 1
    steps = [s for s in range(4) for _ in range(calls_per_step)]
    assert [e.step for e in handle.trace] == steps
    assert [e.precision for e in handle.trace] == [ALTERNATING[s] for s in steps]
    assert ran == [e.precision for e in handle.trace]  # the variant that really ran
    timesteps = pipe.scheduler.timesteps.tolist()
    assert [e.timestep for e in handle.trace] == pytest.approx([timesteps[s] for s in steps])
    assert handle.plan == ALTERNATING
    assert all(isinstance(e, TraceEntry) for e in handle.trace)


def test_real_formats_change_the_output_only_where_scheduled():
    """fp8 (emulated on CPU) as the low precision; all-bf16 is bit-identical to the reference."""
    reference, kwargs = build("sd3", cfg=True)
    expected = reference(**kwargs, num_inference_steps=4)[0]

    pipe, kwargs = _prepared("sd3", cfg=True, precisions=("bf16", "fp8"))
    handle = apply_schedule(pipe, ["bf16"] * 4, trace=True)
    assert torch.equal(pipe(**kwargs, num_inference_steps=4)[0], expected)

    pipe, kwargs = build("sd3", cfg=True)
    prepare(pipe.transformer, ["bf16", "fp8"])
    handle = apply_schedule(pipe, ["fp8", "bf16", "fp8", "bf16"], trace=True)
    out = pipe(**kwargs, num_inference_steps=4)[0]
    assert [e.precision for e in handle.trace] == ["fp8", "bf16", "fp8", "bf16"]
    assert not torch.equal(out, expected)
    assert torch.allclose(out, expected, atol=0.5)  # same image, fp8 noise only


def test_bf16_rounded_timesteps_land_on_their_own_step():
    """Flux casts t to the latents' dtype before /1000: 714.29 arrives as 0.71484 (> the
    boundary 0.71429). It still belongs to step 2, not step 1."""
    pipe, kwargs = _prepared("flux")
    pipe.to(torch.bfloat16)
    for key in ("prompt_embeds", "pooled_prompt_embeds"):
        kwargs[key] = kwargs[key].bfloat16()
    plan = [LOW, "bf16", "bf16", LOW, "bf16", LOW, "bf16"]
    handle = apply_schedule(pipe, plan, trace=True)
    seen = _raw_timesteps(pipe)
    pipe(**kwargs, num_inference_steps=7)
    assert seen[2][1] == torch.bfloat16 and seen[2][0] * 1000 > pipe.scheduler.timesteps[2]
    assert [e.step for e in handle.trace] == list(range(7))
    assert [e.precision for e in handle.trace] == plan


def test_locate_keeps_off_grid_points_on_the_interval_rule():
    grid = [1.0, 0.75, 0.5, 0.25, 0.0]
    assert _locate(0.7, grid, torch.float32) == 1  # a corrector's intermediate point
    assert _locate(0.7522, grid, torch.bfloat16) == 1  # 0.75 rounded up: snapped
    assert _locate(0.7522, grid, torch.float32) == 0  # fp32 does not round that far
    assert _locate(0.0, [0.75, 0.5, 0.25, 0.0, 0.0], torch.int64) == 3  # DDIM final t = 0


def test_second_order_sampler_corrector_runs_at_the_next_steps_precision():
    from diffusers import FlowMatchHeunDiscreteScheduler

    pipe, kwargs = _prepared("sd3")
    pipe.scheduler = FlowMatchHeunDiscreteScheduler()
    handle = apply_schedule(pipe, ALTERNATING, trace=True)
    pipe(**kwargs, num_inference_steps=4)
    # Heun: predictor at step i, corrector at step i+1's sigma (no corrector after the last)
    assert [e.step for e in handle.trace] == [0, 1, 1, 2, 2, 3, 3]
    assert [e.precision for e in handle.trace] == [ALTERNATING[e.step] for e in handle.trace]
    assert len(handle.grid) == 5  # the repeated Heun timesteps collapse to 4 steps


# ---------------------------------------------------------------- step counts and generations
def test_schedule_for_8_steps_resampled_by_time_on_a_4_step_run(caplog):
    pipe, kwargs = _prepared("sd3")
    eight = Schedule.from_precisions(["bf16", LOW, LOW, "bf16", "bf16", LOW, "bf16", LOW])
    handle = apply_schedule(pipe, eight, trace=True)
    with caplog.at_level(logging.INFO, logger="tmpdiff_core.diffusers_hook"):
        pipe(**kwargs, num_inference_steps=4)
    # SD3's 4-step grid starts at sigma 1.0, 0.667, 0.334, 0.001; the 8-step schedule's
    # intervals are eighths: 1.0 → step 0, 0.667 → step 2, 0.334 → step 5, 0.001 → step 7
    expected = ["bf16", LOW, LOW, LOW]
    assert handle.grid == pytest.approx([1.0, 0.667, 0.334, 0.001, 0.0])
    assert handle.plan == expected
    assert [e.precision for e in handle.trace] == expected
    resampled = [r for r in caplog.records if "resampled by time" in r.getMessage()]
    assert len(resampled) == 1 and "8 steps, this run 4" in resampled[0].getMessage()


def test_each_generation_gets_its_own_trace_and_grid():
    pipe, kwargs = _prepared("flux")
    handle = apply_schedule(pipe, ALTERNATING, trace=True)
    pipe(**kwargs, num_inference_steps=4)
    pipe(**kwargs, num_inference_steps=2)
    assert [e.step for e in handle.trace] == [0, 1]
    assert handle.grid == pytest.approx([1.0, 0.5, 0.0])
    assert handle.plan == [LOW, LOW]  # by time: sigma 1.0 → step 0, 0.5 → step 2
    pipe(**kwargs, num_inference_steps=4)
    assert [e.precision for e in handle.trace] == ALTERNATING


def test_trace_off_by_default_and_handle_reachable():
    pipe, kwargs = _prepared("pixart_sigma")
    handle = apply_schedule(pipe, ALTERNATING)
    pipe(**kwargs, num_inference_steps=4)
    assert handle.trace is None and handle.plan == ALTERNATING
    assert get_schedule_handle(pipe) is handle
    assert get_prepared(pipe.transformer).state.active == "bf16"  # last step's, left as is


# ---------------------------------------------------------------- remove / re-apply
def test_remove_schedule_restores_reference_behaviour_and_signature():
    reference, kwargs = build("sdxl", cfg=True)
    expected = reference(**kwargs, num_inference_steps=4)[0]

    pipe, kwargs = _prepared("sdxl", cfg=True)
    unet = pipe.unet
    signature = inspect.signature(unet.forward)
    handle = apply_schedule(pipe, [LOW] * 4, trace=True)
    assert inspect.signature(unet.forward) == signature
    scheduled = pipe(**kwargs, num_inference_steps=4)[0]
    assert not torch.equal(scheduled, expected)
    assert get_prepared(unet).state.active == LOW

    remove_schedule(pipe)
    assert inspect.signature(unet.forward) == signature
    assert get_prepared(unet).state.index == 0
    assert unet._diffusers_hook.get_hook(_TMPDIFF_SCHEDULE_HOOK) is None
    assert get_schedule_handle(pipe) is None
    handle.trace.clear()
    kwargs["generator"].manual_seed(0)
    assert torch.equal(pipe(**kwargs, num_inference_steps=4)[0], expected)
    assert handle.trace == []  # the hook is gone
    remove_schedule(pipe)  # removing twice is a no-op


def test_apply_twice_replaces_the_first_schedule(caplog):
    pipe, kwargs = _prepared("sana")
    first = apply_schedule(pipe, [LOW] * 4, trace=True)
    with caplog.at_level(logging.INFO, logger="tmpdiff_core.diffusers_hook"):
        second = apply_schedule(pipe, ALTERNATING, trace=True)
    assert any("replacing" in r.getMessage() for r in caplog.records)
    pipe(**kwargs, num_inference_steps=4)
    assert first.trace == []
    assert [e.precision for e in second.trace] == ALTERNATING
    assert list(pipe.transformer._diffusers_hook.hooks) == [_TMPDIFF_SCHEDULE_HOOK]
    assert get_schedule_handle(pipe) is second


# ---------------------------------------------------------------- other targets
class _FluxLikeContainer:
    """Not a diffusers pipeline: a .transformer and a .scheduler, Flux's transformer call."""

    def __init__(self, pipe, kwargs):
        self.transformer, self.scheduler = pipe.transformer, pipe.scheduler
        self._pipe, self._kwargs = pipe, kwargs

    def run(self, steps):
        return self._pipe(**self._kwargs, num_inference_steps=steps)


def test_unknown_container_needs_explicit_timestep_kind():
    pipe, kwargs = _prepared("flux")
    container = _FluxLikeContainer(pipe, kwargs)
    with pytest.raises(UnsupportedPipelineError, match="FluxPipeline") as err:
        apply_schedule(container, ALTERNATING)
    assert "timestep_kind=" in str(err.value) and "register_pipeline_adapter" in str(err.value)
    handle = apply_schedule(container, ALTERNATING, timestep_kind="flux", trace=True)
    container.run(4)
    assert [e.precision for e in handle.trace] == ALTERNATING
    remove_schedule(container)
    assert get_schedule_handle(pipe) is None


def test_bare_denoiser_with_scheduler_and_kind():
    pipe, kwargs = _prepared("sdxl")
    with pytest.raises(UnsupportedPipelineError, match="scheduler="):
        apply_schedule(pipe.unet, ALTERNATING)
    handle = apply_schedule(
        pipe.unet, ALTERNATING, scheduler=pipe.scheduler, timestep_kind="scheduler", trace=True
    )
    pipe(**kwargs, num_inference_steps=4)
    assert [e.precision for e in handle.trace] == ALTERNATING
    remove_schedule(pipe.unet)


def test_subclass_of_a_supported_pipeline_uses_its_adapter():
    pipe, kwargs = _prepared("sd3")
    pipe.__class__ = type("MyStableDiffusion3", (type(pipe),), {})
    handle = apply_schedule(pipe, ALTERNATING, trace=True)
    pipe(**kwargs, num_inference_steps=4)
    assert [e.precision for e in handle.trace] == ALTERNATING


def test_reference_model_is_flux_like():
    refmodel = pytest.importorskip("tmpdiff_core.refmodel")
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=12,  # 3 pixel channels, 2×2-packed
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=8,
        pooled_projection_dim=8,
        axes_dims_rope=[4, 4, 8],
    )
    prompts = ["a", "b"]
    table = {
        "eval": prompts,
        "demo": prompts,
        "calibration": prompts,
        "order": prompts,
        "tokens": torch.randn(2, 4, 8),
        "pooled": torch.randn(2, 8),
    }
    ref = refmodel.ReferenceModel(transformer, {"max_tokens": 4}, table)
    prepare(ref.transformer, ["bf16", LOW])
    handle = apply_schedule(ref, ALTERNATING, trace=True)  # no timestep_kind: registered
    ref.sample(["a"], steps=4, seed=0)
    assert handle.timestep_kind == "flux"
    assert [e.step for e in handle.trace] == [0, 1, 2, 3]
    assert [e.precision for e in handle.trace] == ALTERNATING


def test_unrelated_class_with_a_registered_name_is_not_matched():
    fake = type("FluxPipeline", (), {"__module__": "somewhere_else"})()
    assert adapter_for(fake) is None
    assert PipelineAdapter("X", "transformer", "flux").timestep_arg == "timestep"


# ---------------------------------------------------------------- bad inputs
class _NotAPipeline:
    def __init__(self, pipe):
        self.transformer, self.scheduler = pipe.transformer, pipe.scheduler


def _unknown_precision_schedule():
    schedule = Schedule.from_precisions(ALTERNATING)
    schedule.precisions = ["fp7", "bf16", "fp7", "bf16"]  # bypasses construction-time checks
    return schedule


BAD_INPUTS = [
    # (id, prepare?, make target, schedule, kwargs, error, message)
    ("unprepared", False, lambda p: p, ALTERNATING, {}, PrepareError, "not prepared"),
    ("unknown-precision", True, lambda p: p, _unknown_precision_schedule, {},
     UnknownPrecisionError, "unknown precision 'fp7'"),
    ("precision-not-prepared", True, lambda p: p, ["fp8", "bf16"], {},
     UnknownPrecisionError, "'fp8' was not prepared"),
    ("layer-groups", True, lambda p: p,
     lambda: Schedule.from_precisions(ALTERNATING, layer_groups={"attn": ALTERNATING}), {},
     ScheduleError, "per-layer-group schedules are not executed yet"),
    ("unsupported-pipeline", True, _NotAPipeline, ALTERNATING, {},
     UnsupportedPipelineError, "Supported pipelines: .*StableDiffusionXLPipeline"),
    ("unknown-timestep-kind", True, lambda p: p, ALTERNATING, {"timestep_kind": "ddpm"},
     UnsupportedPipelineError, "unknown timestep_kind 'ddpm'"),
    ("not-a-schedule", True, lambda p: p, "fp8.json", {}, TypeError, "Schedule.load"),
]  # fmt: skip


@pytest.mark.parametrize(
    "prep,make,schedule,kwargs,error,message",
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_inputs_fail_at_apply_time(prep, make, schedule, kwargs, error, message):
    pipe, _ = build("sd3")
    if prep:
        prepare(pipe.transformer, ["bf16", LOW])
    schedule = schedule() if callable(schedule) else schedule
    with pytest.raises(error, match=message):
        apply_schedule(make(pipe), schedule, **kwargs)
    assert not hasattr(pipe.transformer, "_diffusers_hook") or (
        pipe.transformer._diffusers_hook.get_hook(_TMPDIFF_SCHEDULE_HOOK) is None
    )


def test_unknown_precision_name_is_refused_when_building_the_schedule():
    with pytest.raises(ScheduleError, match="fp7"):
        Schedule.from_precisions(["fp7", "bf16"])


def test_supported_pipelines_lists_the_five_and_the_reference_model():
    assert set(supported_pipelines()) >= {
        "FluxPipeline",
        "StableDiffusion3Pipeline",
        "SanaPipeline",
        "PixArtSigmaPipeline",
        "StableDiffusionXLPipeline",
        "ReferenceModel",
    }


def test_calling_the_denoiser_outside_a_generation_is_a_clear_error():
    pipe, kwargs = _prepared("sd3")
    apply_schedule(pipe, ALTERNATING)
    pipe.scheduler.timesteps = None
    x = torch.randn(1, 4, 4, 4)
    with pytest.raises(ScheduleError, match="set_timesteps"):
        pipe.transformer(
            hidden_states=x,
            encoder_hidden_states=kwargs["prompt_embeds"],
            pooled_projections=kwargs["pooled_prompt_embeds"],
            timestep=torch.tensor([1000.0]),
        )
