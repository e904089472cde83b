"""The reference-model evaluator goes through ``apply_schedule`` and switches at the right steps."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def ref():
    from tmpdiff_core.refmodel import load_reference_model

    try:
        return load_reference_model()
    except FileNotFoundError as err:  # weights not shipped in this checkout
        pytest.skip(f"reference weights missing: {err}")


def test_reference_evaluator_matches_a_manual_per_step_loop(ref):
    from tmpdiff_core.prepare import get_prepared
    from tmpdiff_core.search.adapters import evaluator_for_reference_model
    from tmpdiff_core.search.evaluator import compare

    prompt = ref.prompts["calibration"][:1]
    ev = evaluator_for_reference_model(
        ref, prompts=prompt, steps=2, precisions=["bf16", "int4wo"], progress=False
    )
    assert len(ev.meta["boundaries"]) == 3 and ev.meta["sampler"].steps == 2
    plan = ["int4wo", "bf16"]
    out = ev.run(plan)  # through apply_schedule
    q = compare(out, ev.reference())
    assert q.latent_mse > 0 and q.ssim <= 1.0
    # The same plan by switching the prepared state by hand after each step.
    state = get_prepared(ref.transformer).state
    state.set(plan[0])

    def progress(done: int, total: int) -> None:
        if done < total:
            state.set(plan[done])

    try:
        manual = ref.sample(prompt, 2, 4.0, seed=0, return_latents=True, progress=progress)
    finally:
        state.set("bf16")
    assert torch.equal(out.latents, manual)
    assert state.active == "bf16"  # remove_schedule put the model back
