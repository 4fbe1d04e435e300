"""LightningModules: stage 1 (relative depth) and stage 2 (metric fine-tuning)."""

from .base import DepthModule
from .metric import MetricDepthModule
from .relative import RelativeDepthModule

__all__ = ["DepthModule", "MetricDepthModule", "RelativeDepthModule"]
