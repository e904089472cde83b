"""ComfyUI entry point of tmpdiff: a V3 extension (``comfy_entrypoint``, no ``NODE_CLASS_MAPPINGS``).

Importing this file outside ComfyUI (pytest, scripts, ``pip install``) does nothing. Inside
ComfyUI, a plain ``git clone`` into ``custom_nodes/`` works without ``pip install .``: the folder
is then put at the end of ``sys.path`` so ``import tmpdiff_core`` finds the copy next to this file.
"""

try:
    import comfy  # noqa: F401  (only present inside ComfyUI)
except ImportError:
    pass
else:
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("tmpdiff_core") is None:
        sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from .nodes import comfy_entrypoint  # noqa: F401
