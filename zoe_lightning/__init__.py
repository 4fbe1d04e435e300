"""zoe-lightning: train, evaluate and ablate ZoeDepth-style metric depth models."""

from .config import ConfigError, load_config
from .models import build_model
from .weights import load_model, load_model_and_config

__version__ = "0.1.0"
__all__ = ["ConfigError", "load_config", "build_model", "load_model", "load_model_and_config", "__version__"]
