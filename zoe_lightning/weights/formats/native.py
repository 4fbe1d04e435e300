"""This project's own files.

* ``lightning``: a Lightning ``.ckpt`` (``state_dict`` with ``model.*`` keys + ``hyper_parameters.cfg``);
* ``zoe_lightning``: the plain weights file of :func:`save_model` (``state_dict`` + ``cfg``);
* ``plain``: a bare state dict of this project's model (``core.pretrained.*``; a LightningModule's
  ``model.core.*``), which carries no configuration and needs a preset.

The first two carry their run configuration; it is merged over today's schema (keys added since
get their defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from ...config import ConfigError, config_from_dict, load_config
from ...errors import UserError
from ..io import Checkpoint, write_checkpoint
from ..strict import nothing_may_be_missing
from .common import StateDict, has_prefix, is_state, tensors

NAME = "native"


def kind(ckpt: Checkpoint) -> Optional[str]:
    """``lightning``, ``zoe_lightning``, ``plain`` or None (not this project's file)."""
    if ckpt.hf_config is not None:
        return None
    p = ckpt.payload
    if isinstance(p, Mapping) and is_state(p.get("state_dict")):
        hyper = p.get("hyper_parameters")
        if isinstance(hyper, Mapping) and "cfg" in hyper:
            return "lightning"
        if "zoe_lightning" in p:
            return "zoe_lightning"
    state = tensors(p)
    if state is None:
        return None
    if has_prefix(state, "core.pretrained.") or (has_prefix(state, "model.core.") and not has_prefix(state, "core.")):
        return "plain"
    return None


def matches(ckpt: Checkpoint) -> bool:
    return kind(ckpt) is not None


def _bins_signature(cfg) -> List[Tuple]:
    return [(b.name, int(b.n_bins), float(b.min_depth), float(b.max_depth)) for b in cfg.model.bins]


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The stored configuration (plus ``overrides``); a ``preset`` given too must describe the same
    bins. A bare state dict needs the ``preset``."""
    source, k = ckpt.source, kind(ckpt)
    if k == "plain":
        if preset is None:
            raise UserError(f"{source}: a bare state dict carries no configuration; pass preset=<experiment name "
                            "or YAML> (CLI: --preset / EXP=) describing the model it was saved from")
        return load_config(preset, list(overrides))
    container = ckpt.payload["hyper_parameters"]["cfg"] if k == "lightning" else ckpt.payload["cfg"]
    if not isinstance(container, Mapping):
        raise UserError(f"{source}: the stored configuration is not a mapping")
    try:
        stored = config_from_dict(dict(container), list(overrides), source="the stored configuration")
    except ConfigError as exc:
        raise UserError(f"{source}: {exc}") from None
    if preset is None:
        return stored
    cfg = load_config(preset, list(overrides))
    if _bins_signature(cfg) != _bins_signature(stored) or \
            cfg.model.head.bin_centers_type != stored.model.head.bin_centers_type:
        raise UserError(
            f"{source}: preset '{preset}' does not match the checkpoint's own configuration "
            f"(bins {_bins_signature(cfg)} / {cfg.model.head.bin_centers_type} vs "
            f"{_bins_signature(stored)} / {stored.model.head.bin_centers_type}); omit the preset"
        )
    return cfg


def state_dict(ckpt: Checkpoint, cfg: Any = None, model: Optional[nn.Module] = None) -> StateDict:
    """The model's weights under this project's keys (no renaming beyond Lightning's ``model.``)."""
    k = kind(ckpt)
    if k == "lightning":
        return {key[len("model."):]: v for key, v in ckpt.payload["state_dict"].items() if key.startswith("model.")}
    if k == "zoe_lightning":
        return dict(ckpt.payload["state_dict"])
    state = tensors(ckpt.payload) or {}
    if has_prefix(state, "model.core.") and not has_prefix(state, "core."):  # a LightningModule's state
        return {key[len("model."):]: v for key, v in state.items()}
    return state


def may_be_missing(cfg: Any) -> Callable[[str], bool]:
    return nothing_may_be_missing


def save_model(model: nn.Module, cfg: Any, path: Union[str, Path]) -> Path:
    """Write ``{"zoe_lightning": <version>, "cfg": ..., "state_dict": ...}``: loadable without a preset."""
    from ... import __version__

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_checkpoint({"zoe_lightning": __version__, "cfg": container, "state_dict": state}, path)
