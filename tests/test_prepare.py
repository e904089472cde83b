"""prepare(): bit-identical reference, once-only quantization, O(1) switching, policy, memory."""

import pytest
import torch
from diffusers import FluxTransformer2DModel
from torch import nn

from tmpdiff_core import (
    PrepareError,
    UnknownPrecisionError,
    get_prepared,
    precision,
    prepare,
    unprepare,
)
from tmpdiff_core.formats import base as formats_base
from tmpdiff_core.layers import MultiPrecisionLinear
from tmpdiff_core.policy import DEFAULT_EXCLUDE

LOW = ["fp8", "int8", "int8wo", "int4wo", "fp4wo"]


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64)).eval()


def tiny_flux():
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
    ).eval()


def test_reference_precision_is_bit_identical():
    model = tiny_mlp()
    x = torch.randn(5, 64)
    expected = model(x)
    prepare(model, ["bf16", *LOW])
    assert torch.equal(model(x), expected)
    for name in ("bf16", "fp16", "fp32", "bfloat16"):
        with precision(model, name):
            assert torch.equal(model(x), expected)


@pytest.mark.parametrize("low", LOW)
def test_each_low_precision_changes_the_output_a_little(low):
    model = tiny_mlp()
    x = torch.randn(5, 64)
    expected = model(x)
    prepare(model, [low])
    with precision(model, low):
        out = model(x)
    rel = ((out - expected).norm() / expected.norm()).item()
    assert 0 < rel < 0.2, f"{low}: relative error {rel}"


def test_quantization_happens_once_per_layer_and_format(monkeypatch):
    calls = []
    for fmt in ("fp8", "int8wo"):
        for backend in formats_base.backends_for(fmt):
            original = backend.build
            monkeypatch.setattr(
                backend, "build", lambda lin, _o=original, _f=fmt: calls.append(_f) or _o(lin)
            )
    model = tiny_mlp()
    handle = prepare(model, ["fp8", "int8wo"])
    assert sorted(calls) == ["fp8", "fp8", "int8wo", "int8wo"]
    for name in ("fp8", "int8wo", "bf16", "fp8"):
        handle.set_precision(name)
        model(torch.randn(2, 64))
    assert len(calls) == 4


def test_switching_is_one_shared_state_change():
    model = tiny_mlp()
    handle = prepare(model, ["bf16", "fp8", "int8wo"])
    layers = [m for m in model.modules() if isinstance(m, MultiPrecisionLinear)]
    assert len(layers) == 2 and all(layer.state is handle.state for layer in layers)
    handle.set_precision("int8wo")
    assert handle.state.index == 2 and handle.state.active == "int8wo"
    with handle.use("fp8"):
        assert handle.state.active == "fp8"
    assert handle.state.active == "int8wo"


def test_no_recompilation_after_warm_up():
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = tiny_mlp()
    handle = prepare(model, ["bf16", "fp8", "int8wo"])
    compiled = torch.compile(model, backend=counting_backend)
    x = torch.randn(4, 64)
    for name in ("bf16", "fp8", "int8wo"):  # warm-up: one graph per precision
        handle.set_precision(name)
        compiled(x)
    warm = len(graphs)
    for name in ("fp8", "bf16", "int8wo", "fp8", "bf16") * 3:
        handle.set_precision(name)
        with torch.no_grad():
            expected = model(x)
        assert torch.allclose(compiled(x), expected)
    assert warm == 3 and len(graphs) == warm


def test_default_policy_keeps_embedders_modulation_and_final_projection():
    model = tiny_flux()
    handle = prepare(model, ["bf16", "int8wo"])
    wrapped = set(handle.layers)
    assert "transformer_blocks.0.attn.to_q" in wrapped
    assert "single_transformer_blocks.0.proj_mlp" in wrapped
    for kept in (
        "x_embedder",
        "context_embedder",
        "proj_out",
        "norm_out.linear",
        "transformer_blocks.0.norm1.linear",
        "single_transformer_blocks.0.norm.linear",
        "time_text_embed.timestep_embedder.linear_1",
    ):
        assert kept not in wrapped, kept
    assert all(not any(p == n for p in DEFAULT_EXCLUDE) for n in wrapped)


def test_policy_is_overridable():
    model = tiny_flux()
    handle = prepare(model, ["int8wo"], include=["*attn.to_*"], exclude=[])
    assert handle.layers and all(".attn.to_" in n for n in handle.layers)
    everything = prepare(tiny_flux(), ["int8wo"], exclude=[])
    assert "proj_out" in everything.layers and "x_embedder" in everything.layers


def test_memory_report_counts_each_precision():
    model = tiny_mlp()
    ref_bytes = sum(p.numel() * 4 for p in model.parameters())
    handle = prepare(model, ["bf16", "int8wo", "int4wo"])
    report = handle.memory_report()
    assert report.model_bytes == ref_bytes
    assert report.bf16_model_bytes == ref_bytes // 2
    weights = (64 * 128) * 2
    assert weights <= report.variant_bytes["int8wo"] < 1.2 * weights + 4096
    assert weights / 2 <= report.variant_bytes["int4wo"] < report.variant_bytes["int8wo"]
    assert report.total_bytes == ref_bytes + sum(report.variant_bytes.values())
    assert "int4wo variants" in report.table()


def test_unprepare_restores_the_original_layers():
    model = tiny_mlp()
    original = list(model.children())
    prepare(model, ["int8wo"])
    unprepare(model)
    assert list(model.children()) == original
    with pytest.raises(PrepareError, match="not prepared"):
        get_prepared(model)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda m: prepare(m, ["fp9"]), UnknownPrecisionError, "unknown precision 'fp9'"),
        (lambda m: prepare(m, ["fp8"], include=["nothing*"]), PrepareError, "no nn.Linear"),
        (lambda m: prepare(nn.ReLU(), ["fp8"]), PrepareError, "no nn.Linear"),
        (
            lambda m: prepare(m, ["fp8"]).set_precision("int8"),
            UnknownPrecisionError,
            "not prepared",
        ),
        (lambda m: (prepare(m, ["fp8"]), prepare(m, ["fp8"])), PrepareError, "already prepared"),
        (lambda m: get_prepared(m), PrepareError, "tmpdiff_core.prepare"),
    ],
    ids=["unknown", "include-nothing", "no-linear", "unprepared-precision", "twice", "unprepared"],
)
def test_bad_inputs(call, error, message):
    with pytest.raises(error, match=message):
        call(tiny_mlp())
