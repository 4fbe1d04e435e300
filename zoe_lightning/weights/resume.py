"""``check_resume(path, module, cfg)``: read a training checkpoint safely and check that the run
``cfg`` can continue from it, before Lightning opens it.

The file is read with :func:`~zoe_lightning.weights.io.read_checkpoint` (``weights_only=True``,
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` hidden), so a file that needs pickled code is refused and never
runs. Then: it must be a Lightning training checkpoint (``state_dict``, ``optimizer_states``,
``loops``); its weights must have the keys and shapes of ``module`` (the model that ``cfg``
builds); and ``trainer.max_epochs`` / ``trainer.max_steps`` may not exceed the checkpoint's: the
OneCycle schedule was sized for those and cannot run past them. Every failure is one
:class:`~zoe_lightning.errors.UserError` line naming the file and the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional

import torch

from ..errors import UserError
from .io import read_checkpoint

__all__ = ["check_resume"]

TRAINING_KEYS = ("state_dict", "optimizer_states", "loops")


def _shape_problems(saved: Mapping[str, Any], expected: Mapping[str, torch.Tensor]) -> List[str]:
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    mismatched = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            problems.append(f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
    return problems


def _stored_trainer(payload: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    hparams = payload.get("hyper_parameters")
    cfg = hparams.get("cfg") if isinstance(hparams, Mapping) else None
    trainer = cfg.get("trainer") if isinstance(cfg, Mapping) else None
    return trainer if isinstance(trainer, Mapping) else None


def _check_schedule(path: Path, payload: Mapping[str, Any], cfg: Any) -> None:
    stored = _stored_trainer(payload)
    if stored is None:
        return
    for key in ("max_epochs", "max_steps"):
        old, new = stored.get(key), cfg.trainer.get(key)
        if old is None or new is None or int(old) == -1:
            continue
        if int(new) == -1 or int(new) > int(old):
            raise UserError(
                f"{path}: cannot resume with trainer.{key}={new}: the checkpoint's learning-rate schedule "
                f"(OneCycle) was sized for trainer.{key}={old}; resume with {key}={old}, or start a new run "
                f"from its weights (model.core_checkpoint={path})")


def check_resume(path: Any, module: torch.nn.Module, cfg: Any) -> None:
    """Refuse (one :class:`UserError` line) a checkpoint that the run ``cfg`` cannot resume from."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--resume: no such checkpoint: {path}")
    payload = read_checkpoint(path).payload
    if not isinstance(payload, Mapping) or not all(k in payload for k in TRAINING_KEYS):
        raise UserError(f"{path}: not a training checkpoint (a Lightning last.ckpt with state_dict, optimizer_states "
                        "and loops); to start from its weights use model.core_checkpoint")
    saved = payload["state_dict"]
    if not isinstance(saved, Mapping):
        raise UserError(f"{path}: not a training checkpoint: its state_dict is a {type(saved).__name__}")
    problems = _shape_problems(saved, module.state_dict())
    if problems:
        raise UserError(f"{path}: does not fit the model of this config: {'; '.join(problems)}")
    _check_schedule(path, payload, cfg)
