"""``MultiPrecisionLinear``: one linear layer holding a variant per prepared precision."""

from __future__ import annotations

import torch
from torch import nn

from .state import PrecisionState


class MultiPrecisionLinear(nn.Module):
    """Drop-in replacement for ``nn.Linear`` that runs the variant the shared state selects.

    ``variants[0]`` is the original layer itself (the reference: bit-identical outputs);
    ``slots[i]`` is the variant index for state index ``i``. A precision that this layer could not
    be quantized to (e.g. int4 with an indivisible width) maps to slot 0 and is listed in the
    prepare report, never silently.

    ``weight``/``bias``/``in_features``/``out_features`` forward to the reference layer so code
    that inspects ``layer.weight.dtype`` (diffusers, ComfyUI) keeps working.
    """

    def __init__(
        self,
        reference: nn.Module,
        variants: list[nn.Module],
        slots: list[int],
        state: PrecisionState,
    ) -> None:
        super().__init__()
        self.variants = nn.ModuleList([reference, *variants])
        self.slots = tuple(slots)
        # A plain attribute, not a submodule: the state is shared by all layers of the model.
        self.__dict__["state"] = state

    @property
    def reference(self) -> nn.Module:
        return self.variants[0]

    @property
    def weight(self) -> torch.Tensor:
        return self.reference.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.reference.bias

    @property
    def in_features(self) -> int:
        return self.reference.in_features

    @property
    def out_features(self) -> int:
        return self.reference.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.variants[self.slots[self.state.index]](x)

    def extra_repr(self) -> str:
        names = [self.state.precisions[i] for i, s in enumerate(self.slots) if s or i == 0]
        return f"in={self.in_features}, out={self.out_features}, precisions={names}"
