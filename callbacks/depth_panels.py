"""Depth panel callback plus the logging helpers shared by all visual callbacks.

The helpers never call ``trainer.log_dir`` (it broadcasts across ranks and would deadlock
when reached from rank zero only); they resolve the same directory locally instead.
"""

from __future__ import annotations

import re
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
    "sample_domain",
    "domain_key",
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


def _name_of(outputs: Mapping, idx: Any) -> str | None:
    if idx is None:
        return None
    idx = int(idx)
    names = outputs.get("domain_names")
    return names[idx] if names is not None and 0 <= idx < len(names) else str(idx)


def sample_domain(outputs: Mapping, i: int) -> str:
    """The domain of sample ``i``: ``outputs["domain"]``, else the name of its domain label,
    else its dataset name, else ``"all"``."""
    dom = sample_item(outputs.get("domain"), i)
    if dom is None:
        label = sample_item(outputs.get("domain_label"), i)
        dom = _name_of(outputs, label) if label is not None and int(label) >= 0 else None
    if dom is None:
        dom = sample_item(outputs.get("dataset"), i)
    return str(dom) if dom is not None else "all"


def _caption(outputs: Mapping, i: int, step: int | None = None, rel: float | None = None) -> str:
    """``dataset X · domain Y · step N · REL r · head Z`` for sample ``i`` (parts that are known)."""
    parts = []
    dataset = sample_item(outputs.get("dataset"), i)
    if dataset is not None:
        parts.append(f"dataset {dataset}")
    parts.append(f"domain {sample_domain(outputs, i)}")
    if step is not None:
        parts.append(f"step {int(step)}")
    if rel is not None and np.isfinite(rel):
        parts.append(f"REL {rel:.3f}")
    names = outputs.get("domain_names")
    head = sample_item(outputs.get("domain_index"), i)
    if head is not None and names is not None and len(names) > 1:
        parts.append(f"head {_name_of(outputs, head)}")
    return " · ".join(parts)


def domain_key(key: str, domain: str) -> str:
    """``<key>/<domain>`` with characters other than letters, digits, ``_ . -`` replaced by ``_``."""
    return f"{key}/{re.sub(r'[^A-Za-z0-9_.-]', '_', domain)}"


# ----------------------------------------------------------------------------- callback
class DepthPanelCallback(Callback):
    """Log labelled ``image | ground truth | prediction | error`` panels during validation,
    one set per domain.

    Each domain gets up to ``n_panels`` samples per validation epoch (at most ``max_per_batch``
    per batch), taken from batches with ``batch_idx % every_n_steps == 0`` or holding a domain
    that has no panel yet (so every domain of a mixed run, e.g. NYU and KITTI, is shown).
    Colours of ground truth and prediction span :func:`zoe_lightning.evaluation.viz.depth_range`
    (0 to the domain's ``max_depth``, the rule ``eval --panels`` uses too); the error tile shows
    the signed relative error on a diverging palette.  Each panel carries column titles, colour
    bars with their scales, the dataset / domain, the step and the sample's REL.  At the end of
    the validation epoch each domain's panels go to every WandbLogger as
    ``val/depth_panels/<domain>`` and to ``<log dir>/media/val_depth_panels_<domain>_step<N>.png``.
    """

    KEY = "val/depth_panels"

    def __init__(
        self,
        every_n_steps: int = 50,
        n_panels: int = 4,
        max_per_batch: int | None = None,
        cmap: str = viz.DEPTH_CMAP,
        err_cmap: str = viz.ERR_CMAP,
        err_max: float = viz.ERR_MAX,
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
        self._panels: dict[str, list[np.ndarray]] = {}
        self._captions: dict[str, list[str]] = {}
        self.last_path: Path | None = None
        self.last_paths: dict[str, Path] = {}
        self.last_ranges: dict[str, list[tuple[float, float]]] = {}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._panels, self._captions, self.last_ranges = {}, {}, {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not _active(trainer, self.log_sanity_check) or not isinstance(outputs, Mapping):
            return
        if any(outputs.get(k) is None for k in ("image", "depth", "pred")):
            return
        batch_size = int(outputs["depth"].shape[0])
        domains = [sample_domain(outputs, i) for i in range(batch_size)]
        if batch_idx % self.every_n_steps != 0 and all(d in self._panels for d in domains):
            return
        valid_all = outputs.get("valid")
        taken = 0
        step = int(trainer.global_step)
        for i, dom in enumerate(domains):
            if self.max_per_batch is not None and taken >= int(self.max_per_batch):
                break
            if len(self._panels.get(dom, [])) >= self.n_panels:
                continue
            gt = viz.to_numpy(outputs["depth"][i])
            valid = viz.to_numpy(valid_all[i]).astype(bool) if valid_all is not None else None
            pred = viz.to_numpy(outputs["pred"][i])
            vmin, vmax = viz.depth_range(sample_item(outputs.get("min_depth"), i, None),
                                         sample_item(outputs.get("max_depth"), i, None), gt, valid)
            rel = viz.sample_abs_rel(gt, pred, valid)
            caption = _caption(outputs, i, step, rel)
            panel = viz.labelled_depth_panel(
                outputs["image"][i], gt, pred, valid, vmin, vmax, header=caption,
                cmap=self.cmap, err_cmap=self.err_cmap, err_max=self.err_max,
            )
            self._panels.setdefault(dom, []).append(panel)
            self._captions.setdefault(dom, []).append(f"{caption} · batch {batch_idx}")
            self.last_ranges.setdefault(dom, []).append((vmin, vmax))
            taken += 1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._panels:
            return
        if _active(trainer, self.log_sanity_check):
            self.last_paths = {}
            for dom, panels in self._panels.items():
                path = log_images(trainer, domain_key(self.KEY, dom), panels, self._captions[dom])
                if path is not None:
                    self.last_paths[dom] = path
                    self.last_path = path
        self._panels, self._captions = {}, {}
