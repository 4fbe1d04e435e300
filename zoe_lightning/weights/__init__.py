"""Weights: every file this project reads or writes, in one place.

* :mod:`.io` reads files safely (``torch.load(weights_only=True)``, safetensors, HF folders);
* :mod:`.formats` holds one module per layout (native, ZoeDepth releases, MiDaS, HF), each
  answering "is this mine?", "what config?" and "what state dict?";
* :mod:`.strict` copies a state dict into a model, listing missing / unexpected keys and shape
  mismatches;
* :mod:`.loader` ties them together: :func:`load_model`, :func:`load_model_and_config`.

Files are recognised from their content, never from their name.
"""

from .formats import FORMATS, detect
from .formats.hf import from_hf
from .formats.hf_config import hf_config_to_delta
from .formats.midas import infer_backbone
from .formats.native import save_model
from .formats.zoedepth import PRESETS
from .io import Checkpoint, load_state_file, read_checkpoint
from .loader import (
    backbone_state_from_file,
    build_start_model,
    core_state_from_file,
    init_backbone,
    init_core,
    load_checkpoint,
    load_core_state,
    load_model,
    load_model_and_config,
)
from .strict import load_strict

__all__ = [
    "FORMATS", "PRESETS", "Checkpoint", "backbone_state_from_file", "build_start_model", "core_state_from_file", "detect", "from_hf", "hf_config_to_delta",
    "infer_backbone", "init_backbone", "init_core", "load_checkpoint", "load_core_state", "load_model", "load_model_and_config",
    "load_state_file", "load_strict", "read_checkpoint", "save_model",
]
