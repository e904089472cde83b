"""The one adapter between ComfyUI's ``ModelPatcher`` and tmpdiff's multi-precision layers.

Everything that touches ComfyUI internals lives here, so a change in ComfyUI breaks one file with
a clear message instead of every node.

**How a MODEL gets its precision variants** (``quantize_model``):

* The input patcher is cloned; the clone shares the ``nn.Module`` with the input, so nothing is
  swapped in place. Per selected ``Linear`` the clone gets an *object patch* on the layer's
  ``forward`` (key ``diffusion_model.<name>.forward``): ComfyUI installs it when it loads the
  clone and restores the original when it unloads it. The layer itself, its weights and its
  state-dict keys stay what they were, so LoRA patches, low-VRAM casting and ``model_size`` of
  the reference path keep working unchanged.
* The quantized variants are built from the weights the clone would run with: dequantized
  (fp8 storage, GGUF), in the model's compute dtype, with the clone's LoRA patches applied,
  one layer at a time on the load device (so a real kernel's backend is chosen for the GPU and at
  most one layer's temporary copy exists), then moved to the offload device.
* The variants live in their own small ``ModelPatcher`` attached with
  ``set_additional_models``: ComfyUI loads it to the GPU together with the model, counts it in
  its memory estimates, and with too little VRAM offloads it per layer like its own ops (each
  variant carries ``comfy_cast_weights``; an offloaded variant's tensors are streamed to the
  input's device for each call).
* The core ``PreparedModel`` (the shared ``PrecisionState``) rides along as an attachment.

**How a schedule runs** (``apply_schedule``): an ``APPLY_MODEL`` wrapper reads the call's sigma
and the run's ``sample_sigmas``, resolves the schedule onto the run once
(``tmpdiff_core.runplan``), and sets the precision for the duration of that call only.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from typing import Any

import comfy.lora
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.patcher_extension
import comfy.utils
import torch
from torch import nn

from tmpdiff_core.errors import PrepareError, ScheduleError, UnknownPrecisionError
from tmpdiff_core.formats import module_nbytes
from tmpdiff_core.layers import MultiPrecisionLinear
from tmpdiff_core.policy import is_selected
from tmpdiff_core.prepare import PreparedModel, build_layers
from tmpdiff_core.runplan import (
    RunPlan,
    plan_run,
    times_from_flow_sigmas,
    times_from_log_sigmas,
    times_from_timesteps,
)
from tmpdiff_core.schedule import Schedule
from tmpdiff_core.state import PrecisionState

logger = logging.getLogger("tmpdiff")

KEY = "tmpdiff"
"""Attachment, additional-model and wrapper key: the only names tmpdiff adds to a ModelPatcher."""

_PREFIX = "diffusion_model."


# ------------------------------------------------------------------------------ quantized model
def quantize_model(
    model: comfy.model_patcher.ModelPatcher,
    precisions: Sequence[str],
    *,
    include: Sequence[str] | None,
    exclude: Sequence[str],
    backend: str = "auto",
    progress: Any = None,
) -> comfy.model_patcher.ModelPatcher:
    """A clone of ``model`` whose selected linear layers can run at every precision in ``precisions``.

    ``progress`` is called as ``progress(done, total)`` after each layer (ComfyUI's progress bar).
    The input patcher is never modified.
    """
    if get_prepared(model) is not None:
        raise PrepareError(
            "this MODEL already has tmpdiff precision variants; connect the loader's input "
            "MODEL (UNETLoader, CheckpointLoader, …) instead of chaining two tmpdiff loaders"
        )
    out = model.clone()
    diffusion = out.get_model_object("diffusion_model")
    names = [
        name
        for name, module in diffusion.named_modules()
        if name and isinstance(module, nn.Linear) and is_selected(name, include, exclude)
    ]
    if not names:
        raise PrepareError(
            "no linear layer of this model is selected for quantization "
            f"(include={list(include) if include is not None else 'all'}, exclude={list(exclude)})"
        )
    state = PrecisionState(precisions)
    dtype = _compute_dtype(out)
    layers: dict[str, MultiPrecisionLinear] = {}
    backends: dict[str, str] = {}
    fallbacks: dict[str, dict[str, str]] = {}
    for done, name in enumerate(names, start=1):
        linear = diffusion.get_submodule(name)
        holder = nn.Module()
        holder.layer = _effective_linear(out, name, linear, dtype, out.load_device)
        part = build_layers(holder, state.precisions, include=None, exclude=(), backend=backend)
        built = part.layers["layer"]
        variants = [v.to(out.offload_device) for v in list(built.variants)[1:]]
        layers[name] = MultiPrecisionLinear(linear, variants, list(built.slots), state)
        backends.update(part.backends)
        for precision, failed in part.fallbacks.items():
            fallbacks.setdefault(precision, {})[name] = failed["layer"]
        del holder, part, built
        if progress is not None:
            progress(done, len(names))
    handle = PreparedModel(state, layers, backends, fallbacks)
    _install(out, diffusion, handle)
    logger.info(handle.summary())
    return out


def get_prepared(model: comfy.model_patcher.ModelPatcher) -> PreparedModel | None:
    """The ``PreparedModel`` a tmpdiff loader attached to ``model``, or ``None``."""
    prepared = model.get_attachment(KEY) if hasattr(model, "get_attachment") else None
    return prepared if isinstance(prepared, PreparedModel) else None


def variants_patcher(model: comfy.model_patcher.ModelPatcher):
    """The additional ModelPatcher that holds ``model``'s precision variants (or ``None``)."""
    found = model.get_additional_models_with_key(KEY)
    return found[0] if found else None


def _install(out, diffusion: nn.Module, handle: PreparedModel) -> None:
    container = nn.ModuleList()
    for name, layer in handle.layers.items():
        for variant in list(layer.variants)[1:]:
            _make_offloadable(variant)
            container.append(variant)
        key = f"{_PREFIX}{name}.forward"
        reference = out.object_patches.get(
            key
        )  # another pack's forward patch, if any, stays inside
        if reference is None:
            module = diffusion.get_submodule(name)
            reference = types.MethodType(type(module).forward, module)
        out.add_object_patch(key, _Dispatch(layer, reference))
    holder = comfy.model_patcher.ModelPatcher(
        container, out.load_device, out.offload_device, size=module_nbytes(container)
    )
    out.set_additional_models(KEY, [holder])
    out.set_attachments(KEY, handle)


def _make_offloadable(variant: nn.Module) -> None:
    """Let ComfyUI's low-VRAM loader treat a variant like one of its own cast-on-use ops."""
    variant.comfy_cast_weights = False
    variant.weight_function = []
    variant.bias_function = []


class _Dispatch:
    """The patched ``forward`` of one linear layer: the reference or the active variant."""

    def __init__(self, layer: MultiPrecisionLinear, reference) -> None:
        self.layer = layer
        self.reference = reference

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        slot = self.layer.slots[self.layer.state.index]
        if slot == 0:
            return self.reference(x, *args, **kwargs)
        variant = self.layer.variants[slot]
        if getattr(variant, "comfy_cast_weights", False):  # offloaded: stream it for this call
            tensors = {n: t.to(x.device, non_blocking=True) for n, t in variant.named_parameters()}
            tensors.update(
                {n: t.to(x.device, non_blocking=True) for n, t in variant.named_buffers()}
            )
            return torch.func.functional_call(variant, tensors, (x,))
        return variant(x)


def _compute_dtype(model) -> torch.dtype:
    base = model.model
    manual = getattr(base, "manual_cast_dtype", None)
    return manual if manual is not None else base.get_dtype()


@torch.no_grad()
def _effective_linear(model, name: str, linear: nn.Linear, dtype, device) -> nn.Linear:
    """A plain ``nn.Linear`` with the weights this clone runs ``name`` with (dense, LoRA applied)."""
    weight = _dense(
        linear, _unpatched(model, f"{_PREFIX}{name}.weight", linear.weight), dtype, device
    )
    bias = linear.bias
    if bias is not None:
        bias = _dense(linear, _unpatched(model, f"{_PREFIX}{name}.bias", bias), dtype, device)
    weight = _with_patches(model, f"{_PREFIX}{name}.weight", weight, dtype)
    if bias is not None:
        bias = _with_patches(model, f"{_PREFIX}{name}.bias", bias, dtype)
    out = nn.Linear(linear.in_features, linear.out_features, bias=bias is not None, device="meta")
    out.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        out.bias = nn.Parameter(bias, requires_grad=False)
    return out


def _unpatched(model, key: str, current: torch.Tensor) -> torch.Tensor:
    # Another clone of the same model may be loaded with its LoRA merged into the shared weights;
    # ComfyUI keeps the originals in the backup dict all clones share.
    backup = model.backup.get(key)
    return backup.weight if backup is not None else current


def _dense(linear: nn.Module, tensor: torch.Tensor, dtype, device) -> torch.Tensor:
    tensor = tensor.to(device)
    get_weight = getattr(linear, "get_weight", None)
    if callable(get_weight) and getattr(tensor, "tensor_type", None) is not None:
        tensor = get_weight(tensor, dtype)  # ComfyUI-GGUF layers dequantize here
    elif type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "dequantize"):
        tensor = tensor.dequantize()  # ComfyUI QuantizedTensor and similar subclasses
    return tensor.detach().to(dtype=dtype, copy=True)


def _with_patches(model, key: str, tensor: torch.Tensor, dtype) -> torch.Tensor:
    patches = model.patches.get(key)
    if not patches:
        return tensor
    return comfy.lora.calculate_weight(patches, tensor.to(torch.float32), key).to(dtype)


# ------------------------------------------------------------------------------ schedule
def apply_schedule(model: comfy.model_patcher.ModelPatcher, schedule: Schedule):
    """A clone of ``model`` that runs each sampling step at ``schedule``'s precision."""
    prepared = get_prepared(model)
    if prepared is None:
        raise PrepareError(
            "this MODEL has no tmpdiff precision variants; put a 'tmpdiff Quantized Model' node "
            "between the model loader and the precision schedule"
        )
    if schedule.layer_groups:
        raise ScheduleError(
            f"the schedule sets per-layer-group precisions ({', '.join(schedule.layer_groups)}); "
            "running them is not supported yet. Use a schedule without 'layer_groups'."
        )
    for precision in dict.fromkeys(schedule.precisions):
        try:
            prepared.state.index_of(precision)
        except UnknownPrecisionError:
            raise UnknownPrecisionError(
                f"the schedule uses {precision!r}, which was not prepared for this model "
                f"(prepared: {', '.join(prepared.state.precisions)}); add it to the 'precisions' "
                "of the tmpdiff Quantized Model node"
            ) from None
    out = model.clone()
    out.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, KEY)
    out.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.APPLY_MODEL,
        KEY,
        ScheduleRunner(schedule, prepared.state),
    )
    return out


class ScheduleRunner:
    """``APPLY_MODEL`` wrapper: run each denoiser call at the precision of its step."""

    def __init__(self, schedule: Schedule, state: PrecisionState) -> None:
        self.schedule = schedule
        self.state = state
        self._grid: torch.Tensor | None = None
        self._plan: RunPlan | None = None

    def __call__(self, executor, *args: Any, **kwargs: Any):
        sigma, options = _apply_model_call(args, kwargs)
        sample_sigmas = options.get("sample_sigmas")
        if sample_sigmas is None:  # called outside a sampler: nothing to schedule against
            return executor(*args, **kwargs)
        plan = self.plan_for(sample_sigmas, executor.class_obj.model_sampling)
        with self.state.use(plan.precision_at(float(sigma.reshape(-1)[0]))):
            return executor(*args, **kwargs)

    def plan_for(self, sample_sigmas: torch.Tensor, model_sampling) -> RunPlan:
        """The schedule resolved onto this run's grid (once per run)."""
        if sample_sigmas is not self._grid:
            sigmas = [float(s) for s in sample_sigmas.detach().float().cpu().tolist()]
            times = None
            if len(sigmas) - 1 != self.schedule.steps:
                times = normalized_times(model_sampling, sigmas)
            self._plan = plan_run(self.schedule, sigmas, times)
            self._grid = sample_sigmas
            name = f" {self.schedule.name!r}" if self.schedule.name else ""
            logger.info("tmpdiff: schedule%s, %s", name, self._plan.summary())
        return self._plan


def _apply_model_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
    """``(sigma, transformer_options)`` of ``BaseModel.apply_model(x, t, c_concat, c_crossattn,
    control, transformer_options, **kwargs)``, or a clear error if ComfyUI changed it."""
    sigma = args[1] if len(args) > 1 else kwargs.get("t")
    options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
    if not isinstance(sigma, torch.Tensor) or not isinstance(options, dict):
        raise RuntimeError(
            "tmpdiff: ComfyUI's apply_model arguments are not (x, t, c_concat, c_crossattn, "
            f"control, transformer_options) any more (got {len(args)} positional: "
            f"{[type(a).__name__ for a in args]}); update tmpdiff"
        )
    return sigma, options


def normalized_times(model_sampling, sigmas: list[float]) -> list[float]:
    """The run's grid on tmpdiff's normalized time axis (1 = noise, 0 = clean)."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):  # rectified flow: sigma in [0, 1]
        return times_from_flow_sigmas(sigmas)
    table = getattr(model_sampling, "sigmas", None)
    if isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscrete) and table is not None:
        timesteps = model_sampling.timestep(torch.tensor(sigmas, dtype=torch.float32))
        return times_from_timesteps(timesteps.float().tolist(), len(table))
    return times_from_log_sigmas(
        sigmas, float(model_sampling.sigma_min), float(model_sampling.sigma_max)
    )
