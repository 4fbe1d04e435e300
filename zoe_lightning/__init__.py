"""zoe-lightning: train, evaluate and ablate ZoeDepth-style metric depth models."""

from .config import ConfigError, load_config
from .models import build_model

__version__ = "0.1.0"
__all__ = ["ConfigError", "load_config", "build_model", "__version__"]
