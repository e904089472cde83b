"""Schedule search: which denoising step can run at which precision, in O(N) evaluations.

The search never touches a model directly. It is given an **evaluator** built around a *run
function* that generates the calibration batch under a per-step precision plan::

    def run(per_step: list[str]) -> images | (images, latents) | Outputs:
        # generate every calibration prompt × seed with FIXED noise, step i at per_step[i];
        # images (B, 3, H, W) in [0, 1]; latents (optional) the final latents, any shape
        ...

    evaluator = Evaluator(run, steps=N, precisions=["bf16", "int8wo", "int4wo"],
                          settings={"model": fingerprint, "prompts": [...], ...},  # cache key
                          cache_dir="~/.cache/tmpdiff/search")

``Evaluator.evaluate(per_step)`` returns a ``Quality`` (mean SSIM, PSNR, latent MSE against
``run([reference] * N)``), cached on disk by schedule and ``settings`` so an interrupted search
resumes. Ready-made evaluators: ``evaluator_for_reference_model`` (tmpdiff's shipped model),
``evaluator_for_pipeline`` (diffusers), ``toy_evaluator`` (a tiny model for tests); ComfyUI's
searcher node supplies its own run function (``nodes/searcher.py``).

Then::

    costs = CostTable({"bf16": 1.0, "int8wo": 0.7, "int4wo": 0.45})   # or measure_costs(...)
    result = search(evaluator, costs, SpeedupTarget(1.5))              # or QualityTarget(0.9),
    result.save("ref-1.5x.json")                                       #    ParetoTarget()
    print(result.report())

Modules: ``metrics`` (SSIM/PSNR/latent MSE), ``cost`` (cost tables), ``evaluator`` (reference
outputs, quality, disk cache), ``additive`` (single-step and pair terms, bisection probe),
``validation`` (additivity check), ``optimize`` (exact DP over the pairwise model), ``allocate`` (the
allocator and targets; its docstring is our reading of TMPDiff), ``baselines`` (uniform, greedy,
random, exhaustive), ``pareto``, ``plots``, ``searcher`` (``search``), ``adapters``, ``toy``,
``cli`` (``tmpdiff search``).
"""

from .additive import StepModel, probe
from .allocate import (
    Allocation,
    AllocatorConfig,
    ParetoTarget,
    QualityTarget,
    SpeedupTarget,
    allocate,
)
from .baselines import exhaustive, greedy, random_search, uniform
from .cost import CostTable, measure_costs, nominal_costs
from .evaluator import Evaluator, Outputs, Quality
from .metrics import latent_mse, psnr, ssim
from .pareto import Point, best_within, cheapest_meeting, front
from .searcher import SearchResult, search
from .validation import AdditivityReport, validate


def __getattr__(name: str):
    # Adapters import diffusers/refmodel; keep them out of ``import tmpdiff_core.search``.
    if name in ("evaluator_for_reference_model", "evaluator_for_pipeline", "reference_model_costs"):
        from . import adapters

        return getattr(adapters, name)
    if name in ("CompoundingRun", "ToyFlow", "toy_evaluator"):
        from . import toy

        return getattr(toy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdditivityReport",
    "Allocation",
    "AllocatorConfig",
    "CompoundingRun",
    "CostTable",
    "Evaluator",
    "Outputs",
    "ParetoTarget",
    "Point",
    "Quality",
    "QualityTarget",
    "SearchResult",
    "SpeedupTarget",
    "StepModel",
    "ToyFlow",
    "allocate",
    "best_within",
    "cheapest_meeting",
    "evaluator_for_pipeline",
    "evaluator_for_reference_model",
    "exhaustive",
    "front",
    "greedy",
    "latent_mse",
    "measure_costs",
    "nominal_costs",
    "probe",
    "psnr",
    "random_search",
    "reference_model_costs",
    "search",
    "ssim",
    "toy_evaluator",
    "uniform",
    "validate",
]
