"""The format registry: what a precision name means and which backends can run it.

A *format* (``FormatSpec``) is a stable, short name used in schedules (``"fp8"``) with a
description of the arithmetic. A *backend* turns one reference ``nn.Linear`` into a module that
computes the same linear in that format. Every format has at least an ``emulated`` backend (pure
PyTorch, runs anywhere, reproduces the real kernel's rounding and scaling) and, where one exists,
a real-kernel backend (torchao or ``torch._scaled_mm``) that only runs on suitable hardware.

Registries instead of ``if/elif`` ladders: a new format or backend is one ``register_*`` call and
is then picked up by ``prepare``, ``tmpdiff info`` and the parametrized tests.

Availability has two levels. ``unavailable_reason(device)`` is only about capability: can this
backend run here at all (CUDA compute capability, an installed package)? A backend may also say
where it is worth *choosing automatically* with ``auto_device_types`` (``("cuda",)`` for torchao:
its CPU paths run, but no faster than emulation and with other rounding in places, so on a CPU
``backend="auto"`` gives emulation while ``backend="torchao"`` still works where torchao does).
A backend without the attribute is auto-selectable everywhere.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..errors import BackendUnavailableError, UnknownPrecisionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FormatSpec:
    """One numeric format a linear layer can run in.

    name: the stable name schedules use (``"fp8"``).
    title: one line for humans (``"FP8 e4m3 W8A8, per-row weights, per-token activations"``).
    weight_bits: bits per stored weight element, scales included on average (memory estimates).
    activation_bits: bits of the activations fed to the matmul (16 for weight-only formats).
    reference: True for the unquantized precisions (``bf16``/``fp16``/``fp32``): they all mean
        "run the layer exactly as the model was loaded".
    """

    name: str
    title: str
    weight_bits: float
    activation_bits: int
    reference: bool = False


class Backend(Protocol):
    """How one format runs on one kind of machine.

    name: ``"emulated"``, ``"torchao"``, ``"scaled_mm"``, …
    real_kernel: False only for emulation; auto-selection prefers real kernels.
    auto_device_types: optional; device types (``"cuda"``, ``"cpu"``) on which ``backend="auto"``
        may pick this backend. Missing or ``None`` means every device it can run on.
    """

    name: str
    real_kernel: bool

    def unavailable_reason(self, device: torch.device) -> str | None:
        """``None`` if this backend runs on ``device``, else a one-line reason."""

    def build(self, linear: nn.Linear) -> nn.Module:
        """Quantize ``linear`` once and return a module computing ``linear(x)`` in this format.

        The returned module must not share mutable state with ``linear`` and must hold its
        quantized data as parameters or buffers so ``.to(device)`` moves it.
        """


_FORMATS: dict[str, FormatSpec] = {}
_ALIASES: dict[str, str] = {}
_BACKENDS: dict[str, list[Backend]] = {}
_warned: set[tuple[str, str]] = set()


def register_format(spec: FormatSpec, aliases: tuple[str, ...] = ()) -> FormatSpec:
    """Add a format (idempotent for the same spec)."""
    _FORMATS[spec.name] = spec
    for alias in aliases:
        _ALIASES[alias] = spec.name
    _BACKENDS.setdefault(spec.name, [])
    return spec


def register_backend(format_name: str, backend: Backend) -> Backend:
    """Attach a backend to a format; earlier registrations are preferred by auto-selection."""
    if format_name not in _FORMATS:
        raise KeyError(f"register_format({format_name!r}) before registering its backends")
    _BACKENDS[format_name].append(backend)
    return backend


def canonical_name(name: str) -> str:
    """Map a user-facing precision name (case-insensitive, aliases allowed) to its stable name."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _FORMATS:
        known = ", ".join(sorted(_FORMATS))
        raise UnknownPrecisionError(f"unknown precision {name!r}; known precisions: {known}")
    return key


def get_format(name: str) -> FormatSpec:
    """The ``FormatSpec`` for a precision name (aliases allowed)."""
    return _FORMATS[canonical_name(name)]


def all_formats() -> list[FormatSpec]:
    """Every registered format, reference precisions first."""
    return sorted(_FORMATS.values(), key=lambda f: (not f.reference, f.name))


def backends_for(name: str) -> list[Backend]:
    """The backends registered for a format, in preference order."""
    return list(_BACKENDS[canonical_name(name)])


def select_backend(name: str, device: torch.device | str, force: str | None = None) -> Backend:
    """Pick the backend that will run format ``name`` on ``device``.

    ``force`` names a backend (``"emulated"``, ``"torchao"``, …); if it cannot run here this
    raises ``BackendUnavailableError`` with the reason. Without ``force`` the first available real
    kernel wins, skipping backends whose ``auto_device_types`` exclude this device; falling back
    to emulation warns once per format and reason, because emulation gives the same numbers but
    none of the speed.
    """
    fmt = canonical_name(name)
    device = torch.device(device)
    candidates = _BACKENDS[fmt]
    if force not in (None, "auto"):
        for backend in candidates:
            if backend.name == force:
                reason = backend.unavailable_reason(device)
                if reason is not None:
                    raise BackendUnavailableError(
                        f"backend {force!r} for {fmt} cannot run on {device}: {reason}. "
                        f"Use backend='auto' to fall back to emulation."
                    )
                return backend
        names = ", ".join(b.name for b in candidates)
        raise BackendUnavailableError(f"{fmt} has no backend {force!r}; available: {names}")
    reasons = []
    for backend in candidates:
        reason = backend.unavailable_reason(device)
        auto_types = getattr(backend, "auto_device_types", None)
        if reason is None and auto_types is not None and device.type not in auto_types:
            reason = (
                f"auto-selected only on {'/'.join(auto_types)}, this is {device.type} "
                f"(backend={backend.name!r} forces it)"
            )
        if reason is None:
            if not backend.real_kernel and reasons:
                _warn_fallback(fmt, "; ".join(reasons))
            return backend
        reasons.append(f"{backend.name}: {reason}")
    raise BackendUnavailableError(f"no backend can run {fmt} on {device}: {'; '.join(reasons)}")


def _warn_fallback(fmt: str, reason: str) -> None:
    if (fmt, reason) in _warned:
        return
    _warned.add((fmt, reason))
    warnings.warn(
        f"tmpdiff: {fmt} runs in emulation (same numbers, no speed-up) because {reason}",
        RuntimeWarning,
        stacklevel=3,
    )


def module_nbytes(module: nn.Module) -> int:
    """Resident bytes of a module's parameters and buffers, tensor subclasses included.

    torchao stores quantized weights as tensor subclasses whose ``element_size`` describes the
    outer (logical) tensor, so we flatten them to the inner tensors that actually hold memory.
    """
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        total += _tensor_nbytes(tensor, seen)
    return total


def _tensor_nbytes(tensor: torch.Tensor, seen: set[int]) -> int:
    flatten = getattr(type(tensor), "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_nbytes(getattr(tensor, n), seen) for n in names)
    data = tensor.data if isinstance(tensor, nn.Parameter) else tensor
    key = data.untyped_storage().data_ptr() if data.device.type != "meta" else id(data)
    if key in seen and key != 0:
        return 0
    seen.add(key)
    return data.numel() * data.element_size()


BuildFn = Callable[[nn.Linear], nn.Module]
