"""zoe-lightning: train, evaluate and ablate ZoeDepth-style metric depth models."""

from importlib import import_module as _import_module

__version__ = "0.1.0"
__all__ = ["ConfigError", "load_config", "build_model", "load_model", "load_model_and_config", "__version__"]

# Imported on first use, so that ``import zoe_lightning`` (and the command line's help) does not
# pay for torch, timm and the models.
_LAZY = {"ConfigError": ".config", "load_config": ".config", "build_model": ".models",
         "load_model": ".weights", "load_model_and_config": ".weights"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
