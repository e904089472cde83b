"""GELU hand-off: the linear layer after a tanh-GELU applies the GELU while quantizing its input.

Why: at a low-precision step the GELU outputs of a FLUX transformer (the input of ``ff.net.2`` in
the double blocks, the MLP half of ``proj_out``'s input in the single blocks) are only ever
quantized. Computed on their own they go through device memory in bf16 and the quantization reads
them back; Inductor compiles the GELU + per-token ``amax`` over 12288-15360 columns into two passes
(on an H100, 0.29 ms per single block against 0.11 ms for the bf16 GELU alone). A fused backend's
quantization kernel can read the pre-GELU tensor once, apply the GELU and write the 8-bit codes.

How: ``install`` finds producer/consumer pairs by structure, sets ``gelu_from`` on every variant
of the consumer that ``accepts_gelu`` (the ``fused`` CUDA layers) and puts a ``HandOffGELU`` in
place of the producer's GELU that skips it at exactly those precisions. The reference precision
and any precision whose variant cannot take the hand-off run the model's own GELU, so results only
change by the rounding of ``tanh`` inside the kernel. ``remove`` undoes it (``unprepare`` calls it).

Patterns (diffusers): a ``FeedForward`` whose ``net`` is ``[GELU(approximate="tanh"), Dropout(0),
Linear]`` (FLUX, SD3, …), and ``FluxSingleTransformerBlock`` (``proj_out(cat([attn, gelu(mlp)]))``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MultiPrecisionLinear
from .state import PrecisionState


class HandOffGELU(nn.Module):
    """``gelu(proj(x))`` (``proj`` optional), skipping the GELU where the consumer applies it."""

    def __init__(self, proj: nn.Module | None, state: PrecisionState, skip: tuple[bool, ...]):
        super().__init__()
        self.proj = proj
        self.skip = skip
        self.__dict__["state"] = state  # shared by the whole model, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj(x)
        if self.skip[self.state.index]:
            return x
        return F.gelu(x, approximate="tanh")

    def extra_repr(self) -> str:
        skipped = [p for p, s in zip(self.state.precisions, self.skip, strict=True) if s]
        return f"approximate='tanh', applied by the next layer at {skipped}"


def _accepting_variants(consumer: nn.Module) -> dict[int, nn.Module]:
    """State index -> the consumer's variant there, for the variants that can take the GELU."""
    if not isinstance(consumer, MultiPrecisionLinear):
        return {}
    found = {}
    for index, slot in enumerate(consumer.slots):
        variant = consumer.variants[slot]
        if slot and getattr(variant, "accepts_gelu", False):
            found[index] = variant
    return found


def _feedforward_pair(module: nn.Module) -> tuple[str, nn.Module, int] | None:
    """``(producer name, consumer, gelu_from)`` of a diffusers FeedForward with a tanh-GELU."""
    net = getattr(module, "net", None)
    if not isinstance(net, nn.ModuleList) or len(net) != 3:
        return None
    act, drop, out = net
    if not (
        type(act).__name__ == "GELU"
        and getattr(act, "approximate", None) == "tanh"
        and hasattr(act, "proj")
        and (isinstance(drop, nn.Identity) or (isinstance(drop, nn.Dropout) and drop.p == 0))
    ):
        return None
    return "net.0", out, 0


def _flux_single_pair(module: nn.Module) -> tuple[str, nn.Module, int] | None:
    """``(producer name, consumer, gelu_from)`` of a FluxSingleTransformerBlock."""
    if type(module).__name__ != "FluxSingleTransformerBlock":
        return None
    act = getattr(module, "act_mlp", None)
    if not (isinstance(act, nn.GELU) and act.approximate == "tanh"):
        return None
    out, mlp = module.proj_out, module.proj_mlp
    return "act_mlp", out, out.in_features - mlp.out_features  # cat([attn, mlp])


def install(model: nn.Module, state: PrecisionState) -> dict[str, nn.Module]:
    """Install every hand-off the prepared ``model`` can take; returns ``{name: original}``."""
    originals: dict[str, nn.Module] = {}
    for name, module in list(model.named_modules()):
        pair = _feedforward_pair(module) or _flux_single_pair(module)
        if pair is None:
            continue
        child, consumer, gelu_from = pair
        variants = _accepting_variants(consumer)
        if not variants:
            continue
        for variant in variants.values():
            variant.gelu_from = gelu_from
        original = module.get_submodule(child)
        skip = tuple(i in variants for i in range(len(state.precisions)))
        proj = getattr(original, "proj", None) if child == "net.0" else None
        _set_child(module, child, HandOffGELU(proj, state, skip))
        originals[f"{name}.{child}" if name else child] = original
    return originals


def remove(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Put the original GELU modules back and clear ``gelu_from`` on the consumers."""
    for name, original in originals.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        _set_child(parent, child, original)
    for module in model.modules():
        if getattr(module, "accepts_gelu", False):
            module.gelu_from = None


def _set_child(parent: nn.Module, child: str, module: nn.Module) -> None:
    owner_name, _, leaf = child.rpartition(".")
    owner = parent.get_submodule(owner_name) if owner_name else parent
    if isinstance(owner, nn.ModuleList):
        owner[int(leaf)] = module
    else:
        setattr(owner, leaf, module)
