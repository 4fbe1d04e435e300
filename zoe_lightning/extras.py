"""Optional extras (``pip install 'zoe-lightning[EXTRA]'``): a feature whose extra is missing stops
in one line naming the extra, before any work is done."""

from __future__ import annotations

import importlib.util

from .errors import UserError

__all__ = ["EXTRAS", "require"]

# importable module -> the extra of setup.cfg that installs it
EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "transformers": "hf", "h5py": "formats", "OpenEXR": "formats"}


def require(feature: str, *modules: str, hint: str = "") -> None:
    """Raise a one-line :class:`UserError` ("FEATURE needs the EXTRA extra: pip install ...") when one
    of ``modules`` cannot be imported. ``hint`` is appended (e.g. an option that avoids the need)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-removed package
            found = False
        if not found:
            extra = EXTRAS.get(module)
            how = f"the {extra} extra: pip install 'zoe-lightning[{extra}]'" if extra else f"pip install {module}"
            raise UserError(f"{feature} needs {how}{hint}")
