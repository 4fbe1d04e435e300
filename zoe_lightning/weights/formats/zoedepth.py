"""Files of the official ZoeDepth trainer: the released ZoeD_M12_N / K / NK and any file it writes
on another MiDaS v3.1 backbone (``{"model": ...}``, timm-0.6 names, facts §7.2).

The DPT core sits under ``core.core.*`` in MiDaS's own layout, so the MiDaS format's shape
inference names the backbone (BEiT-L/B 384/512, SwinV2-L/B/T, Swin-L, ViT-L) and its key
translation reads it (timm 0.6's Swin patch merging included). The head variant comes from the
head's keys: a router means NK, the attractor widths tell N from K. Swin backbones run at their
fixed size; the others keep the preset's network size (the trainer's ``img_size``).

Single head: ``seed_bin_regressor`` / ``attractors.i`` / ``conditional_log_binomial`` move under
``head.*.<domain>``; NK: the per-domain modules keep their domain names, ``patch_transformer`` and
``mlp_classifier`` move under ``router``. The log-binomial buffers (``k_idx``, ``K_minus_1``) are
checked against the configuration, then dropped.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from omegaconf import DictConfig

from ...errors import UserError
from ..io import Checkpoint
from ..strict import nothing_may_be_missing
from . import midas
from .common import StateDict, compose, has_prefix, tensors

NAME = "zoedepth"
# Presets are experiment files (experiments/<name>.yaml): the released configurations.
PRESETS = ("zoed_m12_n", "zoed_m12_k", "zoed_m12_nk")


def matches(ckpt: Checkpoint) -> bool:
    state = None if ckpt.hf_config is not None else tensors(ckpt.payload)
    return state is not None and has_prefix(state, "core.core.")


def infer_preset(state: StateDict, preset: Optional[str], source: str) -> str:
    """ZoeD_M12_NK has a router; K's attractors output 2 channels per attractor (normed bins)."""
    if has_prefix(state, "patch_transformer."):
        guess = "zoed_m12_nk"
    else:
        key = "attractors.0._net.2.weight"
        if key not in state:
            raise UserError(f"{source}: a ZoeDepth checkpoint without '{key}': unknown head layout; "
                            "pass preset=<experiment> describing it")
        first = state[key].shape[0]
        n_first = state.get("attractors.3._net.2.weight")
        n_last = None if n_first is None else n_first.shape[0]
        # single head: [16,8,4,1] attractors; normed layers output 2 per attractor -> 32 ... 2
        guess = {(16, 1): "zoed_m12_n", (32, 2): "zoed_m12_k"}.get((first, n_last))
        if guess is None and preset is None:
            raise UserError(
                f"{source}: cannot tell ZoeD_M12_N from ZoeD_M12_K (first/last attractor outputs {first}/{n_last}); "
                "pass preset=zoed_m12_n (softplus bins) or preset=zoed_m12_k (normed bins) or your experiment"
            )
    if preset is None:
        return guess
    if preset in PRESETS and guess is not None and preset != guess:
        raise UserError(f"{source}: preset '{preset}' does not match the file, whose keys say it is "
                        f"'{guess}' ({'router present' if guess.endswith('nk') else 'attractor layout'})")
    return preset


def midas_core(state: StateDict) -> StateDict:
    """The DPT core in MiDaS's own layout (``pretrained.*`` / ``scratch.*``)."""
    return {k[len("core.core."):]: v for k, v in state.items() if k.startswith("core.core.")}


def infer_backbone(state: StateDict) -> Tuple[Optional[Tuple[str, List[int]]], str]:
    """((backbone, its own size) or None, why not) from the core's shapes (the MiDaS inference)."""
    try:
        return midas.infer_backbone(state, prefix="core.core.pretrained.model."), ""
    except UserError as exc:
        return None, str(exc)


def backbone_delta(backbone: str, size: Sequence[int]) -> Dict[str, Any]:
    """The model keys a backbone decides: its name; for Swin also the fixed input size."""
    model: Dict[str, Any] = {"backbone": backbone}
    if midas.fixed_size(backbone):
        model.update(img_size=list(size), keep_aspect_ratio=False)
    return {"model": model}


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The head preset the keys name (or the one given, if the keys agree) on the backbone the
    shapes name, plus ``overrides``. A non-release experiment given as ``preset`` is used as it
    is, and must name the file's backbone."""
    state = tensors(ckpt.payload)
    name = infer_preset(state, preset, ckpt.source)
    found, why = infer_backbone(state)
    delta = backbone_delta(*found) if found is not None and name in PRESETS else None
    cfg = compose(name, delta, overrides, source=f"{ckpt.source} (ZoeDepth)")
    chosen = cfg.model.backbone
    if found is not None and chosen != found[0]:
        raise UserError(f"{ckpt.source}: its shapes say backbone {found[0]}, the configuration says "
                        f"model.backbone={chosen}; drop that setting or pass model.backbone={found[0]}")
    if found is None and chosen in midas.MIDAS_BACKBONES:
        # a MiDaS v3.1 backbone would have been recognised: the file's is another one
        raise UserError(f"{ckpt.source}: {why}")
    return cfg


def rename_core(state: StateDict) -> StateDict:
    """``core.core.*`` -> ``core.*`` (the MiDaS translation: recomputed buffers dropped, timm-0.6
    Swin layout renamed)."""
    return midas.to_ours(midas_core(state))


def _check_log_binomial(key: str, value: torch.Tensor, n_bins: Optional[int], source: str) -> None:
    if n_bins is None:
        return  # unknown domain: the strict load reports its other keys
    if key.endswith("k_idx"):
        ok = value.numel() == n_bins and torch.equal(value.flatten().float(), torch.arange(n_bins).float())
    elif key.endswith("K_minus_1"):
        ok = value.numel() == 1 and float(value.flatten()[0]) == n_bins - 1
    else:
        ok = True
    if not ok:
        raise UserError(f"{source}: buffer {key} {tuple(value.shape)} does not fit n_bins={n_bins} "
                        "of the configuration (wrong preset or model.bins)")


def to_ours(state: StateDict, cfg: Any, source: str = "checkpoint") -> StateDict:
    """Rename an official ZoeDepth state dict (N, K or NK layout, any MiDaS core) to this project's keys."""
    names = [b.name for b in cfg.model.bins]
    n_bins = {b.name: int(b.n_bins) for b in cfg.model.bins}
    single = len(names) == 1
    out = rename_core(state)
    for k, v in state.items():
        if k.startswith("core."):
            if not k.startswith("core.core."):
                out[k] = v  # unexpected under the core: reported by the strict load
            continue
        if ".log_binomial_transform." in k:
            domain = names[0] if single else k.split(".")[1]
            _check_log_binomial(k, v, n_bins.get(domain), source)
            continue
        top = k.split(".")[0]
        if top in ("patch_transformer", "mlp_classifier"):
            out["router." + k] = v
        elif single and top == "seed_bin_regressor":
            out[f"head.seed_bin_regressors.{names[0]}." + k[len(top) + 1:]] = v
        elif single and top in ("attractors", "conditional_log_binomial"):
            out[f"head.{top}.{names[0]}." + k[len(top) + 1:]] = v
        else:  # conv2, seed_projector, projectors, and NK's per-domain dicts
            out["head." + k] = v
    return out


def state_dict(ckpt: Checkpoint, cfg: Any = None, model: Optional[nn.Module] = None) -> StateDict:
    """This project's keys; without ``cfg`` (domain names unknown) only the DPT core's."""
    state = tensors(ckpt.payload)
    return rename_core(state) if cfg is None else to_ours(state, cfg, ckpt.source)


def may_be_missing(cfg: Any) -> Callable[[str], bool]:
    return nothing_may_be_missing
