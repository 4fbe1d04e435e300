"""MiDaS v3.x DPT checkpoints (``pretrained.*`` + ``scratch.*``).

Without a preset the backbone and training size are read from the keys and shapes (a relative
model); with a metric preset the MiDaS weights become the DPT core of a stage-2 model whose head
keeps its initialisation.

The backbone inference (:func:`infer_backbone`) and the key translation of a MiDaS core
(:func:`to_ours`, including timm 0.6's Swin layout) are shared with the official-ZoeDepth format,
whose files carry the same core under ``core.core.``.
"""

from __future__ import annotations

import math
import re
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
_SWIN = {192: "swin_large_patch4_window12_384"}  # MiDaS v3.1 DPT_Swin_L_384
# every backbone infer_backbone can name
MIDAS_BACKBONES = frozenset([*_BEIT.values(), *_VIT.values(), *_SWINV2.values(), *_SWIN.values()])


def matches(ckpt: Checkpoint) -> bool:
    state = None if ckpt.hf_config is not None else tensors(ckpt.payload)
    return state is not None and has_prefix(state, "pretrained.") and has_prefix(state, "scratch.")


def infer_backbone(core: StateDict, prefix: str = "pretrained.model.") -> Tuple[str, List[int]]:
    """(backbone name, training image size) of a MiDaS-style core from its keys and shapes."""

    def get(name):
        return core.get(prefix + name)

    def need(name, family):
        if get(name) is None:
            raise UserError(f"a {family} core without {prefix + name}: not a MiDaS v3.1 layout; "
                            "pass preset=<experiment> naming model.backbone")
        return get(name)

    table = get("blocks.0.attn.relative_position_bias_table")
    if table is not None:  # BEiT
        width = int(need("cls_token", "BEiT").shape[-1])
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
        v2 = get("layers.0.blocks.0.attn.logit_scale") is not None
        width = int(need("patch_embed.proj.weight", "Swin").shape[0])
        name = (_SWINV2 if v2 else _SWIN).get(width)
        if name is None:
            kind = "SwinV2" if v2 else "Swin (v1)"
            raise UserError(f"{kind} of width {width} is not a MiDaS v3.1 backbone; pass preset=<experiment> "
                            "naming model.backbone and model.img_size")
        return name, ([256, 256] if name.endswith("256") else [384, 384])
    raise UserError("cannot infer the backbone of this MiDaS DPT core (MiDaS_small / LeViT / Next-ViT / v2.1 "
                    "cores are not supported); pass preset=<experiment> naming model.backbone")


def fixed_size(backbone: str) -> bool:
    """Swin backbones run at the one input size they were built for (no keep-aspect resizing)."""
    return backbone.startswith("swin")


def config_delta(state: StateDict) -> Dict[str, Any]:
    """The relative model a MiDaS file describes, as a config delta on ``base``."""
    backbone, size = infer_backbone(state)
    return {"stage": "relative",
            "model": {"backbone": backbone, "img_size": list(size), "keep_aspect_ratio": not fixed_size(backbone)}}


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    if preset is not None:
        return compose(preset, None, overrides)
    try:
        delta = config_delta(tensors(ckpt.payload))
    except UserError as exc:
        raise UserError(f"{ckpt.source}: {exc}") from None
    return compose("base", delta, overrides, source=f"{ckpt.source} (MiDaS)")


_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def timm06_swin(backbone: StateDict) -> StateDict:
    """A Swin / SwinV2 state dict written by timm < 0.9 -> today's names (keys only, no model needed).

    timm 0.6 merges patches at the END of a stage (``layers.0.downsample`` exists; the last stage
    has none) and names the classifier ``head``; today's timm merges at the START of the next stage
    and names it ``head.fc``. A file already in today's layout is returned unchanged.
    """
    if "layers.0.downsample.reduction.weight" not in backbone:
        return backbone
    out = {}
    for k, v in backbone.items():
        k = _DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
        if k.startswith("head.") and not k.startswith("head.fc."):
            k = "head.fc." + k[len("head."):]
        out[k] = v
    return out


def to_ours(state: StateDict, model: Optional[nn.Module] = None) -> StateDict:
    """A MiDaS core (``pretrained.*`` / ``scratch.*``) -> ``core.pretrained.*`` / ``core.scratch.*``,
    without the buffers this implementation recomputes, Swin files in today's timm layout.
    (``model`` is accepted for the callers' convenience; the translation reads keys only.)"""
    backbone = {k[len("pretrained.model."):]: v for k, v in state.items()
                if k.startswith("pretrained.model.") and not RECOMPUTED.search(k)}
    if has_prefix(backbone, "layers."):
        backbone = timm06_swin(backbone)
    out = {"core.pretrained.model." + k: v for k, v in backbone.items()}
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
