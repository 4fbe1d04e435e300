"""The released ZoeDepth files: ZoeD_M12_N / K / NK (``{"model": ...}``, timm-0.6 names, facts §7.2).

The DPT core sits under ``core.core.*``. Single head: ``seed_bin_regressor`` / ``attractors.i`` /
``conditional_log_binomial`` move under ``head.*.<domain>``; NK: the per-domain modules keep their
domain names, ``patch_transformer`` and ``mlp_classifier`` move under ``router``. The
log-binomial buffers (``k_idx``, ``K_minus_1``) are checked against the configuration, then dropped.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
from omegaconf import DictConfig

from ...config import load_config
from ...errors import UserError
from ..io import Checkpoint
from ..strict import RECOMPUTED, nothing_may_be_missing
from .common import StateDict, has_prefix, tensors

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


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The preset the keys name (or the one given, if the keys agree), plus ``overrides``."""
    return load_config(infer_preset(tensors(ckpt.payload), preset, ckpt.source), list(overrides))


def rename_core(state: StateDict) -> StateDict:
    """``core.core.*`` -> ``core.*``, without the buffers this implementation recomputes."""
    return {"core." + k[len("core.core."):]: v for k, v in state.items()
            if k.startswith("core.core.") and not RECOMPUTED.search(k)}


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
    """Rename a released ZoeDepth state dict (N, K or NK layout) to this project's keys."""
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
