"""``prepare``: give every eligible linear layer of a model its low-precision variants, once.

The result is a ``PreparedModel`` handle: one ``PrecisionState`` shared by all layers (the O(1)
switch), the wrapped layers, what could not be quantized and why, and a memory report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import PrepareError
from .formats import module_nbytes, select_backend
from .layers import MultiPrecisionLinear
from .policy import DEFAULT_EXCLUDE, is_selected
from .state import PrecisionState

logger = logging.getLogger(__name__)

_ATTR = "_tmpdiff_prepared"


@dataclass
class MemoryReport:
    """Resident bytes: the model as loaded, each precision's extra variants, and the total.

    ``bf16_model_bytes`` is what the same model takes with every floating tensor in bf16, the
    baseline a user compares against.
    """

    model_bytes: int
    bf16_model_bytes: int
    variant_bytes: dict[str, int]
    wrapped_reference_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + sum(self.variant_bytes.values())

    def table(self) -> str:
        mib = 1 / 2**20
        rows = [
            f"{'model as loaded':<28}{self.model_bytes * mib:>10.2f} MiB",
            f"{'  of which wrapped layers':<28}{self.wrapped_reference_bytes * mib:>10.2f} MiB",
        ]
        rows += [
            f"{'  + ' + p + ' variants':<28}{b * mib:>10.2f} MiB"
            for p, b in self.variant_bytes.items()
        ]
        rows.append(f"{'total resident':<28}{self.total_bytes * mib:>10.2f} MiB")
        ratio = self.total_bytes / max(self.bf16_model_bytes, 1)
        rows.append(
            f"{'bf16 model alone':<28}{self.bf16_model_bytes * mib:>10.2f} MiB  (total = {ratio:.2f}x)"
        )
        return "\n".join(rows)


@dataclass
class PreparedModel:
    """Handle returned by ``prepare``; also reachable with ``get_prepared(model)``."""

    state: PrecisionState
    layers: dict[str, MultiPrecisionLinear]
    backends: dict[str, str]
    fallbacks: dict[str, dict[str, str]] = field(default_factory=dict)
    model_ref: nn.Module | None = field(default=None, repr=False)

    @property
    def precisions(self) -> tuple[str, ...]:
        return self.state.precisions

    def set_precision(self, precision: str) -> None:
        """Switch every wrapped layer to ``precision`` (one integer store)."""
        self.state.set(precision)

    def use(self, precision: str):
        """Context manager: run a block at ``precision``."""
        return self.state.use(precision)

    def memory_report(self) -> MemoryReport:
        model = self.model_ref
        wrapped_ref = sum(module_nbytes(layer.reference) for layer in self.layers.values())
        per_precision = {p: 0 for p in self.precisions[1:]}
        for layer in self.layers.values():
            for i, slot in enumerate(layer.slots):
                if slot:
                    per_precision[self.precisions[i]] += module_nbytes(layer.variants[slot])
        model_bytes = _reference_bytes(model) if model is not None else wrapped_ref
        bf16 = _bf16_bytes(model) if model is not None else wrapped_ref
        return MemoryReport(model_bytes, bf16, per_precision, wrapped_ref)

    def summary(self) -> str:
        """One line per precision: backend and how many layers really run it."""
        lines = [f"tmpdiff: {len(self.layers)} linear layers prepared"]
        for i, p in enumerate(self.precisions[1:], start=1):
            n = sum(1 for layer in self.layers.values() if layer.slots[i])
            lines.append(f"  {p:<8} backend={self.backends[p]:<10} layers={n}/{len(self.layers)}")
        for p, failed in self.fallbacks.items():
            lines.append(f"  {p}: {len(failed)} layer(s) stay at the reference: {_first(failed)}")
        return "\n".join(lines)


def prepare(
    model: nn.Module,
    precisions: Sequence[str],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    backend: str = "auto",
) -> PreparedModel:
    """Wrap every eligible ``nn.Linear`` of ``model`` in place; quantize once per layer and format.

    Args:
        model: a diffusers transformer/UNet or any ``nn.Module``.
        precisions: names to prepare, e.g. ``["bf16", "fp8", "int4wo"]``; the reference is added
            if missing.
        include: globs of module names eligible for quantization (default: every ``nn.Linear``).
        exclude: globs kept at the reference (default: ``policy.DEFAULT_EXCLUDE``).
        backend: ``"auto"`` or a backend name forced for every precision (``"emulated"``, …).

    ``nn.Conv2d`` layers are not wrapped yet: no torchao kernel runs these formats on
    convolutions, so a UNet's convs stay at the reference while its attention/FF linears switch.
    """
    if getattr(model, _ATTR, None) is not None:
        raise PrepareError("model is already prepared; call unprepare(model) first")
    handle = build_layers(model, precisions, include, exclude, backend)
    for name, layer in handle.layers.items():
        _set_submodule(model, name, layer)
    object.__setattr__(model, _ATTR, handle)
    handle.model_ref = model
    logger.info(handle.summary())
    return handle


def build_layers(
    model: nn.Module,
    precisions: Sequence[str],
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    backend: str = "auto",
) -> PreparedModel:
    """Build the wrapped layers without installing them (ComfyUI installs them as object patches)."""
    state = PrecisionState(precisions)
    exclude = DEFAULT_EXCLUDE if exclude is None else tuple(exclude)
    targets = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name and is_selected(name, include, exclude)
    }
    if not targets:
        raise PrepareError(
            "no nn.Linear layer of the model is selected for quantization "
            f"(include={list(include) if include is not None else 'all'}, exclude={list(exclude)}); "
            "check the patterns against [n for n, _ in model.named_modules()]"
        )
    device = next(iter(targets.values())).weight.device
    chosen = {p: select_backend(p, device, backend) for p in state.precisions[1:]}
    handle = PreparedModel(state, {}, {p: b.name for p, b in chosen.items()})
    for name, linear in targets.items():
        handle.layers[name] = _wrap(name, linear, state, chosen, handle.fallbacks)
    return handle


def _wrap(name, linear, state, chosen, fallbacks) -> MultiPrecisionLinear:
    variants, slots = [], [0]
    for precision in state.precisions[1:]:
        try:
            with torch.no_grad():
                variants.append(chosen[precision].build(linear))
            slots.append(len(variants))
        except PrepareError as err:
            fallbacks.setdefault(precision, {})[name] = str(err)
            slots.append(0)
    return MultiPrecisionLinear(linear, variants, slots, state)


def get_prepared(model: nn.Module) -> PreparedModel:
    """The handle of a prepared model, or a clear error saying how to prepare it."""
    handle = getattr(model, _ATTR, None)
    if handle is None:
        raise PrepareError(
            f"{type(model).__name__} is not prepared for mixed precision; call "
            "tmpdiff_core.prepare(model, precisions=[...]) with every precision the schedule uses"
        )
    return handle


def unprepare(model: nn.Module) -> None:
    """Put the original layers back and drop the variants."""
    handle = get_prepared(model)
    for name, layer in handle.layers.items():
        _set_submodule(model, name, layer.reference)
    object.__delattr__(model, _ATTR)


@contextmanager
def precision(model: nn.Module, name: str) -> Iterator[None]:
    """``with precision(model, "fp8"): model(...)`` for one-off calls."""
    with get_prepared(model).use(name):
        yield


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _reference_bytes(model: nn.Module) -> int:
    handle = getattr(model, _ATTR, None)
    total = module_nbytes(model)
    if handle is not None:  # variants are submodules now; count them separately
        for layer in handle.layers.values():
            total -= sum(module_nbytes(v) for v in layer.variants[1:])
    return total


def _bf16_bytes(model: nn.Module) -> int:
    handle = getattr(model, _ATTR, None)
    skip = set()
    if handle is not None:
        for layer in handle.layers.values():
            for v in layer.variants[1:]:
                skip.update(id(t) for t in list(v.parameters()) + list(v.buffers()))
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if id(t) not in skip]
    return sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for t in tensors)


def _first(failed: dict[str, str]) -> str:
    name, reason = next(iter(failed.items()))
    more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"{name}: {reason}{more}"
