"""Load any supported file into this project's model: read (io), detect (formats), configure,
build, fill strictly (strict)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from omegaconf import DictConfig

from ..errors import UserError
from ..models import build_model
from . import formats
from .io import Checkpoint, read_checkpoint
from .strict import RECOMPUTED, load_strict

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


# Keys of a timm classification checkpoint that the encoder may lack (classifier, final norm and
# pooling of feature-only ConvNets): left out of the strict comparison in both directions.
TIMM_CLASSIFIER = re.compile(r"^(head|fc|classifier|head_drop|pre_logits|fc_norm|norm|global_pool|conv_head|bn2)(\.|$)")


def backbone_state_from_file(path: PathLike) -> StateDict:
    """The tensors of a local timm ``state_dict`` file (``.pth`` / ``.pt`` / ``.safetensors``), also
    when it is wrapped in a ``{"state_dict": ...}`` or ``{"model": ...}`` mapping."""
    if not Path(path).is_file():
        raise UserError(f"model.backbone_weights: no such file: {path}")
    try:
        payload = read_checkpoint(path).payload
    except UserError as exc:
        raise UserError(f"model.backbone_weights: {exc}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(wrapper), dict):
            payload = payload[wrapper]
    if not (isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values())):
        raise UserError(f"model.backbone_weights: {path} is not a timm state_dict (a mapping of names to tensors)")
    return payload


def _offline() -> bool:
    try:
        from huggingface_hub import is_offline_mode
    except ImportError:  # pragma: no cover - older huggingface_hub releases: the variable it reads
        import os

        return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(is_offline_mode())


def _pretrained_source(timm_name: str) -> str:
    try:
        import timm

        pcfg = timm.models.get_pretrained_cfg(timm_name)
    except Exception:  # noqa: BLE001 - only used in a message
        return ""
    return "" if pcfg is None else str(pcfg.hf_hub_id or pcfg.url or "")


def build_start_model(cfg: Any) -> nn.Module:
    """The model a training run starts from: :func:`build_model` of ``cfg``, with timm's pretrained
    backbone weights when ``model.pretrained`` is true (timm downloads and caches them). A backbone
    timm has no weights for, weights that do not fit it (``model.backbone_kwargs``), or no way to
    download them (offline, no network) is one line naming the backbone and the fix."""
    if not cfg.model.get("pretrained", False):
        return build_model(cfg)
    import timm

    from ..models.encoder import resolve_backbone

    name = cfg.model.backbone
    spec = resolve_backbone(name)
    where = f"model.pretrained=true (model.backbone={name})"
    if not timm.is_model_pretrained(spec.timm_name) or (spec.kwargs and name != spec.timm_name):
        raise UserError(f"{where}: timm has no pretrained weights for this backbone; train it from random "
                        "initialisation (model.pretrained=false) or give model.backbone_weights=FILE")
    source = _pretrained_source(spec.timm_name)
    try:
        return build_model(cfg, pretrained=True)
    except (OSError, ConnectionError) as exc:  # huggingface_hub / urllib: offline, no network, not cached
        offline = _offline()
        why = "offline (HF_HUB_OFFLINE=1 is set)" if offline else "cannot download them"
        online = ("with HF_HUB_OFFLINE=0 and network access (make train ... HF_HUB_OFFLINE=0)" if offline
                  else "with network access")
        raise UserError(
            f"{where}: {why} and timm's weights{f' ({source})' if source else ''} are not in its cache "
            f"({type(exc).__name__}). Run once {online}: timm caches them; or pass model.backbone_weights=FILE "
            "(a local timm state_dict, .pth or .safetensors) instead"
        ) from None
    except RuntimeError as exc:  # e.g. size mismatches: model.backbone_kwargs change the architecture
        text = str(exc).strip().splitlines()
        raise UserError(f"{where}: timm's pretrained weights do not fit the backbone built from the configuration "
                        f"(model.backbone_kwargs?): {(text[0] if text else type(exc).__name__)[:300]}") from None


def init_backbone(model: nn.Module, cfg: Any) -> None:
    """Fill the timm backbone (``model.core.pretrained.model``) from ``cfg.model.backbone_weights``:
    every key and shape must match, except the classifier keys (:data:`TIMM_CLASSIFIER`) and the
    buffers this implementation recomputes."""
    path = cfg.model.backbone_weights
    backbone = model.core.pretrained.model
    state = {k: v for k, v in backbone_state_from_file(path).items() if not RECOMPUTED.search(k)}
    unexpected = [k for k in state if k not in backbone.state_dict()]
    state = {k: v for k, v in state.items() if not (k in unexpected and TIMM_CLASSIFIER.match(k))}
    skip = lambda key: bool(TIMM_CLASSIFIER.match(key) or RECOMPUTED.search(key))  # noqa: E731
    load_strict(backbone, state, f"model.backbone_weights {path} (model.backbone={cfg.model.backbone})", skip)
