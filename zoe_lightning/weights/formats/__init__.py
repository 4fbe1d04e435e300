"""Weight formats: one module per layout, asked in order.

Each module answers three questions about a :class:`~zoe_lightning.weights.io.Checkpoint`:

* ``matches(ckpt)``: is this file mine? (the formats' answers never overlap)
* ``config(ckpt, preset, overrides)``: which run configuration describes its model?
* ``state_dict(ckpt, cfg=None, model=None)``: its weights under this project's keys (without
  ``cfg``, at least the DPT core's ``core.*`` keys);

and ``may_be_missing(cfg)`` names the model keys the file may leave at their initialisation.

==============  ==========================================================================
``native``      this project's ``.ckpt``, ``save_model`` files and bare state dicts
``zoedepth``    the official trainer's files, any MiDaS v3.1 core (``{"model": ...}``, ``core.core.*``)
``midas``       MiDaS v3.x DPT checkpoints (``pretrained.*`` + ``scratch.*``)
``depth_anything``  Depth Anything V1 / V2 (official ``pretrained.*`` + ``depth_head.*``, V1 metric
                ``core.core.depth_head.*``, HF ``DepthAnythingForDepthEstimation`` folders); asked
                before ``zoedepth`` and ``hf``, whose layouts these resemble
``hf``          HF transformers ``ZoeDepthForDepthEstimation`` (folder with ``config.json``)
==============  ==========================================================================
"""

from __future__ import annotations

from types import ModuleType
from typing import Tuple

from ...errors import UserError
from ..io import Checkpoint
from . import depth_anything, hf, midas, native, zoedepth
from .common import tensors

FORMATS: Tuple[ModuleType, ...] = (native, depth_anything, zoedepth, midas, hf)

__all__ = ["FORMATS", "depth_anything", "detect", "hf", "midas", "native", "zoedepth"]


def detect(ckpt: Checkpoint) -> ModuleType:
    """The format module whose ``matches`` accepts ``ckpt`` (detected from the content, never the name)."""
    for fmt in FORMATS:
        if fmt.matches(ckpt):
            return fmt
    state = tensors(ckpt.payload)
    if state is None:
        raise UserError(f"{ckpt.source}: the file holds no state dict (expected a mapping of names to tensors, "
                        "a 'model' or 'state_dict' entry, or a Lightning checkpoint)")
    raise UserError(
        f"{ckpt.source}: unrecognised checkpoint layout (first keys: " + ", ".join(list(state)[:4]) + "); "
        "supported: this project's checkpoints, official ZoeDepth files (core.core.*), MiDaS DPT (pretrained.* + "
        "scratch.*), Depth Anything (pretrained.* + depth_head.*, V1 metric core.core.depth_head.*), HF ZoeDepth and "
        "Depth Anything folders"
    )
