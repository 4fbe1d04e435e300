"""Load any supported file into this project's model: read (io), detect (formats), configure,
build, fill strictly (strict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from omegaconf import DictConfig

from ..errors import UserError
from ..models import build_model
from . import formats
from .io import Checkpoint, read_checkpoint
from .strict import load_strict

PathLike = Union[str, Path]
StateDict = Dict[str, torch.Tensor]


def load_checkpoint(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
                    *, map_location: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, DictConfig]:
    """(model in eval mode, run config) of an already read :class:`Checkpoint`."""
    fmt = formats.detect(ckpt)
    cfg = fmt.config(ckpt, preset, list(overrides or []))
    model = build_model(cfg)
    load_strict(model, fmt.state_dict(ckpt, cfg, model), ckpt.source, fmt.may_be_missing(cfg))
    return model.to(map_location).eval(), cfg


def load_model_and_config(path: PathLike, preset: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
                          *, map_location: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, DictConfig]:
    """Load any supported checkpoint. Returns (model in eval mode, run config).

    ``preset``: a preset / experiment name or YAML path giving the configuration (``zoed_m12_n``,
    ``zoed_m12_k``, ``zoed_m12_nk``, or any experiment). Inferred for official ZoeDepth files and
    MiDaS files when unambiguous; required for bare state dicts. This project's checkpoints carry
    their configuration; a preset given with them must describe the same bins.
    ``overrides``: OmegaConf dot-list items applied on top (``model.bins.0.max_depth=80``).
    """
    return load_checkpoint(read_checkpoint(path), preset, overrides, map_location=map_location)


def load_model(path: PathLike, preset: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
               *, map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load any supported checkpoint into a model in eval mode (see :func:`load_model_and_config`)."""
    return load_model_and_config(path, preset, overrides, map_location=map_location)[0]


def core_state_from_file(path: PathLike) -> StateDict:
    """The DPT-core weights (keys relative to ``core``) of any supported checkpoint."""
    ckpt = read_checkpoint(path)
    state = formats.detect(ckpt).state_dict(ckpt)
    core = {k[len("core."):]: v for k, v in state.items() if k.startswith("core.")}
    if not core:
        raise UserError(f"{ckpt.source}: holds no DPT-core weights")
    return core


def load_core_state(path: PathLike) -> StateDict:
    """:func:`core_state_from_file` for ``model.core_checkpoint``: errors name the option."""
    if not Path(path).exists():  # a file, or an HF model folder
        raise FileNotFoundError(f"model.core_checkpoint: no such file: {path}")
    try:
        return core_state_from_file(path)
    except UserError as exc:
        raise UserError(f"model.core_checkpoint: {exc}") from None


def init_core(model: nn.Module, cfg: Any) -> None:
    """Fill ``model.core`` from ``cfg.model.core_checkpoint`` (a stage-1 run, a release, MiDaS, HF,
    Depth Anything); with ``model.core_checkpoint_part=encoder`` only its backbone."""
    path = cfg.model.core_checkpoint
    state = load_core_state(path)
    encoder_only = cfg.model.get("core_checkpoint_part", "all") == "encoder"
    if encoder_only:
        state = {k: v for k, v in state.items() if k.startswith("pretrained.")}
    result = model.core.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (encoder_only and not k.startswith("pretrained."))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"model.core_checkpoint {path} does not fit model.backbone={cfg.model.backbone}: missing "
            f"{missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
