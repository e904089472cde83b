"""Backend classes shared by the formats: emulation, torchao, and the CUDA capability check."""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import PrepareError


def cuda_reason(
    device: torch.device, what: str, min_cc: tuple[int, int] | None = None
) -> str | None:
    """``None`` if ``device`` is an NVIDIA GPU of at least ``min_cc``, else why not (one line)."""
    need = f"CUDA compute capability >= {min_cc[0]}.{min_cc[1]}" if min_cc else "a CUDA GPU"
    if device.type != "cuda":
        return f"{what} needs {need} (this is {device.type})"
    if not torch.cuda.is_available():
        return f"{what} needs {need} (torch {torch.__version__} has no usable CUDA)"
    if torch.version.hip is not None:
        return f"{what} is only wired for NVIDIA GPUs (this is ROCm {torch.version.hip})"
    cc = torch.cuda.get_device_capability(device)
    if min_cc is not None and cc < min_cc:
        return f"{what} needs {need} (this GPU is sm_{cc[0]}{cc[1]})"
    return None


def torchao_reason(min_version: str) -> str | None:
    """``None`` if torchao >= ``min_version`` is installed; checked without importing it."""
    if importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    version = importlib.metadata.version("torchao")
    if _version_tuple(version) < _version_tuple(min_version):
        return f"needs torchao >= {min_version}, found {version}"
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class EmulatedBackend:
    """Pure PyTorch on any device: the real kernel's rounding and scaling, none of its speed."""

    name = "emulated"
    real_kernel = False
    auto_device_types = None

    def __init__(self, module_cls: Callable[[nn.Linear], nn.Module]) -> None:
        self.module_cls = module_cls

    def unavailable_reason(self, device: torch.device) -> str | None:
        return None

    def build(self, linear: nn.Linear) -> nn.Module:
        return self.module_cls(linear)


class TorchaoBackend:
    """``quantize_`` a deep copy of the one ``nn.Linear`` with a torchao config.

    ``make_config(linear)`` returns the config (it imports torchao, so nothing here does until a
    layer is built). ``cuda_cc`` is the compute capability the CUDA path needs; ``cpu`` says
    whether torchao's CPU path computes this format (then ``backend="torchao"`` works on a CPU,
    though ``auto`` only picks it on CUDA: see ``base``). ``dtypes`` lists the weight dtypes the
    torchao path handles correctly; other layers raise ``PrepareError``.
    """

    name = "torchao"
    real_kernel = True
    auto_device_types = ("cuda",)

    def __init__(
        self,
        format_name: str,
        make_config: Callable[[nn.Linear], Any],
        *,
        what: str,
        cuda_cc: tuple[int, int] | None = None,
        cpu: bool = True,
        dtypes: tuple[torch.dtype, ...] | None = None,
        min_version: str = "0.14.0",
    ) -> None:
        self.format_name = format_name
        self.make_config = make_config
        self.what = what
        self.cuda_cc = cuda_cc
        self.cpu = cpu
        self.dtypes = dtypes
        self.min_version = min_version

    def unavailable_reason(self, device: torch.device) -> str | None:
        if not (self.cpu and device.type == "cpu"):
            reason = cuda_reason(device, self.what, self.cuda_cc)
            if reason is not None:
                return reason
        return torchao_reason(self.min_version)

    def build(self, linear: nn.Linear) -> nn.Module:
        if self.dtypes is not None and linear.weight.dtype not in self.dtypes:
            allowed = "/".join(str(d).removeprefix("torch.") for d in self.dtypes)
            raise PrepareError(
                f"torchao's {self.what} path needs {allowed} weights; layer Linear(in_features="
                f"{linear.in_features}, out_features={linear.out_features}) is "
                f"{linear.weight.dtype} (use backend='emulated' for it)"
            )
        module = copy.deepcopy(linear)
        module.requires_grad_(False)
        try:
            from torchao.quantization import quantize_

            quantize_(module, self.make_config(linear))
        except PrepareError:
            raise
        except (AssertionError, ImportError, NotImplementedError, RuntimeError, ValueError) as err:
            # torchao validates with assert and raises assorted types; prepare needs one type
            raise PrepareError(
                f"torchao could not quantize Linear(in_features={linear.in_features}, "
                f"out_features={linear.out_features}, dtype={linear.weight.dtype}) to "
                f"{self.format_name}: {type(err).__name__}: {err}"
            ) from err
        return module
