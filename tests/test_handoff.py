"""The GELU hand-off (``tmpdiff_core.handoff``) on a tiny FLUX transformer, on CPU.

The ``fused`` backend only runs on CUDA; here its availability check is lifted so its layers build
on CPU, where they run the formats' exact reference math (int8): with the hand-off the int8 step
must give exactly the numbers it gives without, the bf16 step the plain model's, and
``unprepare`` must put the model's own modules back. The Triton kernels are checked in
test_kernels.py (interpreter here, CUDA on the device).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tmpdiff_core import prepare, unprepare
from tmpdiff_core.handoff import HandOffGELU
from tmpdiff_core.kernels import FusedBackend, _dispatch

TINY_FLUX = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=32,
    num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32,
    guidance_embeds=True, axes_dims_rope=(8, 12, 12),
)  # fmt: skip


@pytest.fixture
def flux():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**TINY_FLUX).eval()
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 64, 16, generator=g),
        encoder_hidden_states=torch.randn(1, 16, 64, generator=g),
        pooled_projections=torch.randn(1, 32, generator=g),
        timestep=torch.tensor([0.5]),
        img_ids=torch.zeros(64, 3),
        txt_ids=torch.zeros(16, 3),
        guidance=torch.tensor([3.5]),
    )
    return model, inputs


@pytest.fixture
def fused_on_cpu(monkeypatch):
    monkeypatch.setattr(FusedBackend, "unavailable_reason", lambda self, device: None)
    monkeypatch.setattr(FusedBackend, "auto_device_types", ("cuda", "cpu"))


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def test_handoff_changes_no_numbers_and_unprepare_restores(flux, fused_on_cpu):
    model, inputs = flux
    plain = _run(model, inputs)
    handle = prepare(model, ["bf16", "int8"], backend="fused")
    # FeedForward of the image and the text stream + one per single block
    assert sorted(handle.handoffs) == [
        "single_transformer_blocks.0.act_mlp",
        "single_transformer_blocks.1.act_mlp",
        "transformer_blocks.0.ff.net.0",
        "transformer_blocks.0.ff_context.net.0",
    ]
    assert "GELU hand-offs" in handle.summary()
    single = model.single_transformer_blocks[0]
    assert isinstance(single.act_mlp, HandOffGELU) and single.act_mlp.skip == (False, True)
    assert single.proj_out.variants[1].gelu_from == 64  # cat([attn (64), mlp (256)])
    assert model.transformer_blocks[0].ff.net[2].variants[1].gelu_from == 0
    assert torch.equal(_run(model, inputs), plain)  # bf16: the model's own GELU
    handle.set_precision("int8")
    with_handoff = _run(model, inputs)

    unprepare(model)
    assert type(single.act_mlp) is nn.GELU
    assert type(model.transformer_blocks[0].ff.net[0]).__name__ == "GELU"
    assert torch.equal(_run(model, inputs), plain)

    handle = prepare(model, ["bf16", "int8"], backend="fused", fuse_activations=False)
    assert not handle.handoffs and isinstance(model.single_transformer_blocks[0].act_mlp, nn.GELU)
    handle.set_precision("int8")
    assert torch.equal(_run(model, inputs), with_handoff)
    assert model.single_transformer_blocks[0].proj_out.variants[1].gelu_from is None


def test_no_handoff_where_no_variant_accepts_it(flux):
    model, _ = flux
    handle = prepare(model, ["bf16", "int8", "fp8"])  # CPU: emulated backends
    assert handle.handoffs == {} and "hand-off" not in handle.summary()


def test_handoff_only_at_the_precisions_that_take_it(flux, fused_on_cpu):
    """int8 on the fused backend takes the GELU, int4wo (weight-only) does not."""
    model, inputs = flux
    handle = prepare(model, ["bf16", "int8", "int4wo"], backend="auto")
    skip = model.single_transformer_blocks[0].act_mlp.skip
    assert skip == (False, True, False)
    handle.set_precision("int4wo")
    assert torch.isfinite(_run(model, inputs)).all()


def test_gelu_from_reference():
    x = torch.randn(3, 10)
    y = _dispatch.apply_gelu_from(x, 4)
    assert torch.equal(y[:, :4], x[:, :4])
    assert torch.equal(y[:, 4:], nn.functional.gelu(x[:, 4:], approximate="tanh"))
    assert _dispatch.apply_gelu_from(x, None) is x
