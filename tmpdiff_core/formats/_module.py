"""Base class of the emulated and hand-written kernel modules that backends build.

A built module holds its quantized weight as buffers (so ``.to(device)`` moves it and
``module_nbytes`` counts it), a copy of the bias in the layer's own dtype, and accepts inputs with
any leading dims. Subclasses implement ``forward_2d`` on a ``(tokens, in_features)`` input and
``dequantize`` (the weight the format effectively multiplies with: tests and error analysis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class QuantizedLinear(nn.Module):
    """A linear layer whose weight was quantized once, at construction.

    ``quantized_buffers`` names the buffers whose dtype is part of the format (codes and scales):
    ``module.to(torch.float16)`` or ``.half()`` moves them but keeps their dtype, where plain
    ``nn.Module`` would turn fp8 codes into fp16 (twice the memory) or round fp32 scales.
    """

    format_name: str = ""
    quantized_buffers: tuple[str, ...] = ()

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        bias = linear.bias
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self.forward_2d(x.reshape(-1, self.in_features))
        return y.reshape(*lead, self.out_features)

    def forward_2d(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:  # pragma: no cover
        """The ``(out, in)`` weight this module effectively multiplies with."""
        raise NotImplementedError

    def bias_as(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(dtype)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], *args: Any, **kwargs: Any):
        originals = {name: self._buffers[name] for name in self.quantized_buffers}
        super()._apply(fn, *args, **kwargs)
        for name, old in originals.items():
            new = self._buffers[name]
            if old is not None and new is not None and new.dtype != old.dtype:
                # fn also cast the dtype: redo it from the original as a device move only
                self._buffers[name] = old.to(device=new.device)
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, format={self.format_name}"
        )
