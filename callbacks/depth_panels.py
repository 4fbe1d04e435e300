"""Depth panel callback plus the logging helpers shared by all visual callbacks.

The helpers never call ``trainer.log_dir`` (it broadcasts across ranks and would deadlock
when reached from rank zero only); they resolve the same directory locally instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn

from zoe_lightning.evaluation import viz

__all__ = [
    "DepthPanelCallback",
    "media_dir",
    "media_path",
    "log_images",
    "log_metrics",
    "sample_item",
]

_WARNED: set[str] = set()


def _warn_once(tag: str, msg: str) -> None:
    if tag not in _WARNED:
        _WARNED.add(tag)
        rank_zero_warn(msg)


# ----------------------------------------------------------------------------- helpers
def media_dir(trainer) -> Path:
    """``<log dir>/media`` where log dir matches ``trainer.log_dir`` (without its broadcast)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    dirpath = None
    loggers = list(getattr(trainer, "loggers", None) or [])
    if loggers:
        first = loggers[0]
        try:
            dirpath = first.log_dir if isinstance(first, (TensorBoardLogger, CSVLogger)) else first.save_dir
        except Exception:  # pragma: no cover - exotic logger
            dirpath = None
    if dirpath is None:
        dirpath = trainer.default_root_dir
    return Path(dirpath) / "media"


def media_path(trainer, key: str) -> Path:
    """``<media dir>/<key with '/' -> '_'>_step<global_step>.png``."""
    name = key.strip("/").replace("/", "_")
    return media_dir(trainer) / f"{name}_step{int(trainer.global_step)}.png"


def _wandb_loggers(trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in (getattr(trainer, "loggers", None) or []) if isinstance(lg, WandbLogger)]


def log_images(
    trainer,
    key: str,
    images: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
) -> Path | None:
    """Log ``uint8 (H, W, 3)`` images to every WandbLogger and write a PNG (stacked vertically).

    Call on rank zero only.  Logger failures are turned into a one-time warning so an
    observing callback can never stop a run.  Returns the PNG path (``None`` if writing failed).
    """
    images = [np.ascontiguousarray(im) for im in images]
    if not images:
        return None
    step = int(trainer.global_step)
    for logger in _wandb_loggers(trainer):
        try:
            kwargs = {"caption": list(captions)} if captions is not None else {}
            logger.log_image(key=key, images=list(images), step=step, **kwargs)
        except Exception as err:  # pragma: no cover - depends on wandb state
            _warn_once(f"wandb-image-{key}", f"Could not log {key!r} to W&B: {err!r}")
    path = media_path(trainer, key)
    try:
        viz.save_png(images[0] if len(images) == 1 else viz.stack_panels(images), path)
    except Exception as err:  # pragma: no cover - disk errors
        _warn_once(f"png-{key}", f"Could not write {path}: {err!r}")
        return None
    return path


def log_metrics(trainer, metrics: Mapping[str, float]) -> None:
    """Send scalars to every logger at ``trainer.global_step`` (rank zero only)."""
    if not metrics:
        return
    metrics = {k: float(v) for k, v in metrics.items()}
    step = int(trainer.global_step)
    for logger in getattr(trainer, "loggers", None) or []:
        try:
            logger.log_metrics(metrics, step=step)
        except Exception as err:  # pragma: no cover - depends on logger state
            _warn_once(f"metrics-{type(logger).__name__}", f"Could not log metrics to {type(logger).__name__}: {err!r}")


def sample_item(value: Any, i: int, default: Any = None) -> Any:
    """``value[i]`` for a tensor / list (scalars converted to Python), else ``default``."""
    if value is None:
        return default
    try:
        item = value[i]
    except (IndexError, TypeError, KeyError):
        return default
    if hasattr(item, "detach") and item.numel() == 1:
        return item.detach().reshape(-1)[0].item()
    return item


def _active(trainer, log_sanity_check: bool) -> bool:
    if not trainer.is_global_zero:
        return False
    if getattr(trainer, "sanity_checking", False) and not log_sanity_check:
        return False
    return True


def _caption(outputs: Mapping, i: int, vmin: float | None = None, vmax: float | None = None) -> str:
    parts = []
    dataset = sample_item(outputs.get("dataset"), i)
    if dataset is not None:
        parts.append(str(dataset))
    names = outputs.get("domain_names")
    label = sample_item(outputs.get("domain_label"), i)
    head = sample_item(outputs.get("domain_index"), i)

    def _name(idx):
        if idx is None:
            return None
        idx = int(idx)
        return names[idx] if names is not None and 0 <= idx < len(names) else str(idx)

    if label is not None:
        parts.append(f"label={_name(label)}")
    if head is not None:
        parts.append(f"head={_name(head)}")
    if vmin is not None and vmax is not None:
        parts.append(f"range {vmin:.3g}-{vmax:.3g} m")
    return " | ".join(parts)


# ----------------------------------------------------------------------------- callback
class DepthPanelCallback(Callback):
    """Log ``image | GT | prediction | abs-rel error`` panels during validation.

    Validation batches with ``batch_idx % every_n_steps == 0`` contribute samples until
    ``n_panels`` panels are collected for the epoch (at most ``max_per_batch`` per batch,
    all remaining if ``None``).  Depth colours use a fixed per-sample range
    ``[min_depth, max_depth]`` from the outputs (the domain's evaluation range), so colours
    are comparable across steps.  At the end of the validation epoch the panels go to every
    WandbLogger as ``val/depth_panels`` and to ``<log dir>/media/val_depth_panels_step<N>.png``.
    """

    KEY = "val/depth_panels"

    def __init__(
        self,
        every_n_steps: int = 50,
        n_panels: int = 4,
        max_per_batch: int | None = None,
        cmap: str = "magma_r",
        err_cmap: str = "inferno",
        err_max: float = 0.5,
        log_sanity_check: bool = False,
    ) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        if n_panels < 1:
            raise ValueError("n_panels must be >= 1")
        self.every_n_steps = int(every_n_steps)
        self.n_panels = int(n_panels)
        self.max_per_batch = max_per_batch
        self.cmap = cmap
        self.err_cmap = err_cmap
        self.err_max = float(err_max)
        self.log_sanity_check = log_sanity_check
        self._panels: list[np.ndarray] = []
        self._captions: list[str] = []
        self.last_path: Path | None = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._panels, self._captions = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx % self.every_n_steps != 0 or len(self._panels) >= self.n_panels:
            return
        if not _active(trainer, self.log_sanity_check) or not isinstance(outputs, Mapping):
            return
        if any(outputs.get(k) is None for k in ("image", "depth", "pred")):
            return
        batch_size = int(outputs["depth"].shape[0])
        take = min(batch_size, self.n_panels - len(self._panels))
        if self.max_per_batch is not None:
            take = min(take, int(self.max_per_batch))
        valid_all = outputs.get("valid")
        for i in range(take):
            gt = viz.to_numpy(outputs["depth"][i])
            valid = viz.to_numpy(valid_all[i]).astype(bool) if valid_all is not None else None
            vmin = sample_item(outputs.get("min_depth"), i, 0.0)
            vmax = sample_item(outputs.get("max_depth"), i, None)
            if vmax is None:
                ok = np.isfinite(gt) & (gt > 0) & (valid if valid is not None else True)
                vmax = float(gt[ok].max()) if ok.any() else 1.0
            vmin, vmax = float(vmin), float(vmax)
            panel = viz.depth_panel(
                outputs["image"][i], gt, outputs["pred"][i], valid, vmin, vmax,
                cmap=self.cmap, err_cmap=self.err_cmap, err_max=self.err_max,
            )
            self._panels.append(panel)
            cap = _caption(outputs, i, vmin, vmax)
            self._captions.append(f"{cap} | batch {batch_idx}" if cap else f"batch {batch_idx}")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._panels:
            return
        if _active(trainer, self.log_sanity_check):
            self.last_path = log_images(trainer, self.KEY, self._panels, self._captions)
        self._panels, self._captions = [], []
