"""The one switch that selects the precision of a whole prepared model.

Every ``MultiPrecisionLinear`` of a model holds a reference to the same ``PrecisionState``; the
layers read ``state.index`` in ``forward``. Switching the model is therefore one integer store,
O(1) whatever the number of layers, with no re-quantization. Under ``torch.compile`` the integer
is a guarded constant: each precision compiles once during warm-up and later switches hit the cache
(raise ``torch._dynamo.config.cache_size_limit`` if you prepare more than 8 precisions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .errors import UnknownPrecisionError
from .formats import canonical_name, get_format


class PrecisionState:
    """Which of a prepared model's precisions is active.

    ``precisions[0]`` is always the reference precision; every reference name (bf16, fp16, fp32)
    selects index 0, so a schedule written for bf16 runs on an fp32 model unchanged.
    """

    def __init__(self, precisions: Sequence[str]) -> None:
        names = [canonical_name(p) for p in precisions]
        low = [n for n in dict.fromkeys(names) if not get_format(n).reference]
        refs = [n for n in names if get_format(n).reference]
        self.precisions: tuple[str, ...] = (refs[0] if refs else "bf16", *low)
        self._index_of = {name: i for i, name in enumerate(self.precisions)}
        self.index = 0

    @property
    def active(self) -> str:
        """The stable name of the active precision."""
        return self.precisions[self.index]

    def index_of(self, precision: str) -> int:
        """Index of ``precision`` in this state; reference names all map to 0."""
        name = canonical_name(precision)
        if get_format(name).reference:
            return 0
        try:
            return self._index_of[name]
        except KeyError:
            raise UnknownPrecisionError(
                f"precision {name!r} was not prepared for this model; prepared: "
                f"{', '.join(self.precisions)}. Add it to prepare(..., precisions=[...])."
            ) from None

    def set(self, precision: str) -> None:
        """Make ``precision`` active for every layer of the model (O(1))."""
        self.index = self.index_of(precision)

    @contextmanager
    def use(self, precision: str) -> Iterator[None]:
        """Run a block at ``precision`` and restore the previous one afterwards."""
        previous = self.index
        self.set(precision)
        try:
            yield
        finally:
            self.index = previous
