"""MiDaS v3.x DPT checkpoints (``pretrained.*`` + ``scratch.*``).

Without a preset the backbone and training size are read from the keys and shapes (a relative
model); with a metric preset the MiDaS weights become the DPT core of a stage-2 model whose head
keeps its initialisation.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from omegaconf import DictConfig

from ...errors import UserError
from ..io import Checkpoint
from ..strict import RECOMPUTED, nothing_may_be_missing
from .common import StateDict, compose, has_prefix, tensors

NAME = "midas"

_BEIT = {(1024, 24, 384): "beit_large_patch16_384", (1024, 24, 512): "beit_large_patch16_512",
         (768, 12, 384): "beit_base_patch16_384"}
_VIT = {1024: "vit_large_patch16_384", 768: "vit_base_patch16_384"}
_SWINV2 = {192: "swinv2_large_window12to24_192to384", 128: "swinv2_base_window12to24_192to384",
           96: "swinv2_tiny_window16_256"}


def matches(ckpt: Checkpoint) -> bool:
    state = None if ckpt.hf_config is not None else tensors(ckpt.payload)
    return state is not None and has_prefix(state, "pretrained.") and has_prefix(state, "scratch.")


def infer_backbone(core: StateDict, prefix: str = "pretrained.model.") -> Tuple[str, List[int]]:
    """(backbone name, training image size) of a MiDaS-style core from its keys and shapes."""

    def get(name):
        return core.get(prefix + name)

    table = get("blocks.0.attn.relative_position_bias_table")
    if table is not None:  # BEiT
        width = int(get("cls_token").shape[-1])
        depth = len({k[len(prefix):].split(".")[1] for k in core if k.startswith(prefix + "blocks.")})
        grid = int(round((math.sqrt(table.shape[0] - 3) + 1) / 2))
        size = grid * 16
        name = _BEIT.get((width, depth, size))
        if name is None:
            raise UserError(f"BEiT of width {width}, depth {depth}, trained at {size}px is not a MiDaS v3.1 "
                            "backbone; pass preset=<experiment> naming model.backbone")
        return name, [size, size]
    if get("pos_embed") is not None and get("blocks.0.attn.qkv.weight") is not None:
        if has_prefix(core, prefix + "patch_embed.backbone."):
            raise UserError("DPT_Hybrid (ViT-B + ResNet-50) checkpoints are not supported")
        width = int(get("pos_embed").shape[-1])
        name = _VIT.get(width)
        if name is None:
            raise UserError(f"ViT of width {width} is not a MiDaS backbone; pass preset=<experiment>")
        return name, [384, 384]
    if get("layers.0.blocks.0.attn.qkv.weight") is not None:
        if get("layers.0.blocks.0.attn.logit_scale") is None:
            raise UserError("Swin (v1) DPT checkpoints are not supported; SwinV2 ones are")
        width = int(get("patch_embed.proj.weight").shape[0])
        name = _SWINV2.get(width)
        if name is None:
            raise UserError(f"SwinV2 of width {width} is not a MiDaS backbone; pass preset=<experiment>")
        return name, ([256, 256] if name.endswith("256") else [384, 384])
    raise UserError("cannot infer the backbone of this MiDaS checkpoint (LeViT / Next-ViT / v2.1 "
                    "checkpoints are not supported); pass preset=<experiment> naming model.backbone")


def config_delta(state: StateDict) -> Dict[str, Any]:
    """The relative model a MiDaS file describes, as a config delta on ``base``."""
    backbone, size = infer_backbone(state)
    return {"stage": "relative",
            "model": {"backbone": backbone, "img_size": list(size), "keep_aspect_ratio": not backbone.startswith("swin")}}


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    if preset is not None:
        return compose(preset, None, overrides)
    try:
        delta = config_delta(tensors(ckpt.payload))
    except UserError as exc:
        raise UserError(f"{ckpt.source}: {exc}") from None
    return compose("base", delta, overrides, source=f"{ckpt.source} (MiDaS)")


def _swin_filter(state: StateDict, model: nn.Module) -> StateDict:
    """timm < 0.9 SwinV2 layout -> today's (downsample moved to the next stage)."""
    try:
        from timm.models.swin_transformer_v2 import checkpoint_filter_fn
    except ImportError:  # pragma: no cover
        return state
    return checkpoint_filter_fn(state, model)


def to_ours(state: StateDict, model: Optional[nn.Module]) -> StateDict:
    """``pretrained.*`` / ``scratch.*`` -> ``core.pretrained.*`` / ``core.scratch.*``."""
    backbone = {k[len("pretrained.model."):]: v for k, v in state.items() if k.startswith("pretrained.model.")}
    if model is not None and has_prefix(backbone, "layers."):
        backbone = _swin_filter(backbone, model.core.pretrained.model)
    out = {"core.pretrained.model." + k: v for k, v in backbone.items() if not RECOMPUTED.search(k)}
    out.update({"core." + k: v for k, v in state.items()
                if not k.startswith("pretrained.model.") and not RECOMPUTED.search(k)})
    return out


def state_dict(ckpt: Checkpoint, cfg: Any = None, model: Optional[nn.Module] = None) -> StateDict:
    """``core.*`` keys only: a MiDaS file holds a DPT core."""
    return to_ours(tensors(ckpt.payload), model)


def may_be_missing(cfg: Any) -> Callable[[str], bool]:
    """A relative model is filled entirely; a metric model's head keeps its initialisation."""
    if cfg is None or cfg.stage == "relative":
        return nothing_may_be_missing
    return lambda key: not key.startswith("core.")
