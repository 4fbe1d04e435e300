"""Helpers shared by the format modules: finding the tensor mapping in a payload, building configs."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig

from ...config import config_from_dict, load_config

StateDict = Dict[str, torch.Tensor]


def is_state(obj: Any) -> bool:
    """A non-empty mapping of names to tensors."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def strip_module(state: StateDict) -> StateDict:
    """Remove a DataParallel / DDP ``module.`` prefix carried by every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def tensors(payload: Any) -> Optional[StateDict]:
    """The state dict inside a payload: the payload itself, its ``model`` or its ``state_dict``
    entry, without a DDP ``module.`` prefix; None when there is none."""
    state = payload
    if isinstance(payload, Mapping):
        if "model" in payload:
            state = payload["model"]
        if is_state(payload.get("state_dict")):
            state = payload["state_dict"]
    return strip_module(dict(state)) if is_state(state) else None


def checkpoint_state(ckpt) -> Optional[StateDict]:
    """The state dict of a read checkpoint: an HF folder's weights file as it is (refused in one line
    when it holds no tensors), any other file through :func:`tensors`."""
    if ckpt.hf_config is not None:
        if not is_state(ckpt.payload):
            from ...errors import UserError

            raise UserError(f"{ckpt.source}: the HF weights file holds no tensor state dict")
        return dict(ckpt.payload)
    return tensors(ckpt.payload)


def has_prefix(state: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def compose(experiment: str, delta: Optional[Mapping] = None, overrides: Sequence[str] = (),
            source: str = "configuration") -> DictConfig:
    """``experiment``, then ``delta`` (a nested dict of typed values), then the user's dot-list
    ``overrides``; validated against the schema."""
    if not delta:
        return load_config(experiment, list(overrides))
    return config_from_dict(dict(delta), list(overrides), base=load_config(experiment), source=source)
