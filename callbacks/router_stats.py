"""Router statistics for multi-head (multi-domain) models: confusion matrix and head usage."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from lightning.pytorch import Callback

from zoe_lightning.evaluation import viz

from .depth_panels import _warn_once, _wandb_loggers, log_images, log_metrics

__all__ = ["RouterStatsCallback"]


class RouterStatsCallback(Callback):
    """Accumulate which head the router picked per image over a validation epoch.

    Per batch (on every rank, on the batch's device, no host sync): head-usage counts from
    ``domain_index`` and, when ``domain_label`` is given, a DxD confusion matrix
    (rows = label, cols = head used; labels outside ``[0, D)`` are ignored).  At epoch end
    the counts are summed across ranks (``trainer.strategy.reduce``) and rank zero logs to
    every logger ``val/router_accuracy`` (trace / total, only when labels were seen) and
    ``val/head_usage/<name>`` (fraction), plus a heat map ``val/router_confusion`` (W&B
    image + table, and ``<log dir>/media/val_router_confusion_step<N>.png``).

    The last epoch's results are kept as ``self.confusion`` (``(D, D)`` long, CPU, or None
    when no labels), ``self.usage`` (``(D,)`` long) and ``self.domain_names``.
    Single-head models (``len(domain_names) == 1``) and outputs without ``domain_index``
    are skipped entirely.
    """

    KEY = "val/router_confusion"

    def __init__(self, log_sanity_check: bool = False) -> None:
        super().__init__()
        self.log_sanity_check = log_sanity_check
        self.confusion: torch.Tensor | None = None
        self.usage: torch.Tensor | None = None
        self.domain_names: list[str] | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_path: Path | None = None
        self._reset()

    def _reset(self) -> None:
        self._conf: torch.Tensor | None = None
        self._usage: torch.Tensor | None = None
        self._names: list[str] | None = None
        self._labelled = False

    def _skip(self, trainer) -> bool:
        return bool(getattr(trainer, "sanity_checking", False)) and not self.log_sanity_check

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._reset()

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._skip(trainer) or not isinstance(outputs, Mapping):
            return
        names = outputs.get("domain_names")
        heads = outputs.get("domain_index")
        if heads is None or names is None or len(names) < 2:
            return
        d = len(names)
        if self._names is None:
            self._names = [str(n) for n in names]
            self._conf = torch.zeros(d, d, dtype=torch.long, device=heads.device)
            self._usage = torch.zeros(d, dtype=torch.long, device=heads.device)
        elif len(self._names) != d:
            _warn_once("router-names", "RouterStatsCallback: domain_names changed length within an epoch; "
                       "ignoring the mismatching batches")
            return
        heads = heads.detach().reshape(-1).long().to(self._usage.device)
        ok = (heads >= 0) & (heads < d)
        self._usage += torch.bincount(heads[ok], minlength=d)[:d]
        labels = outputs.get("domain_label")
        if labels is not None:
            labels = labels.detach().reshape(-1).long().to(self._conf.device)
            ok = ok & (labels >= 0) & (labels < d)
            flat = labels[ok] * d + heads[ok]
            self._conf += torch.bincount(flat, minlength=d * d)[: d * d].view(d, d)
            self._labelled = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._skip(trainer) or self._names is None:
            return
        d = len(self._names)
        stats = torch.cat([self._conf.reshape(-1), self._usage,
                           torch.tensor([int(self._labelled)], device=self._usage.device)])
        if getattr(trainer, "world_size", 1) > 1:
            stats = trainer.strategy.reduce(stats, reduce_op="sum")
        stats = stats.detach().cpu()
        conf = stats[: d * d].view(d, d).clone()
        usage = stats[d * d : d * d + d].clone()
        labelled = bool(stats[-1].item() > 0)
        names = self._names
        self.domain_names = names
        self.usage = usage
        self.confusion = conf if labelled else None
        self._reset()

        metrics: dict[str, float] = {}
        total_used = int(usage.sum())
        if total_used > 0:
            for i, n in enumerate(names):
                metrics[f"val/head_usage/{n}"] = float(usage[i]) / total_used
        total = int(conf.sum())
        if labelled and total > 0:
            metrics["val/router_accuracy"] = float(conf.diagonal().sum()) / total
        self.last_metrics = metrics
        if not trainer.is_global_zero:
            return
        log_metrics(trainer, metrics)
        if not (labelled and total > 0):
            return
        acc = metrics["val/router_accuracy"]
        arr = viz.confusion_figure(conf, names, title=f"router accuracy {acc:.3f} (n={total})")
        self.last_path = log_images(trainer, self.KEY, [arr], [f"router accuracy {acc:.3f}, n={total}"])
        self._log_table(trainer, conf, names)

    @staticmethod
    def _log_table(trainer, conf: torch.Tensor, names: list[str]) -> None:
        loggers = _wandb_loggers(trainer)
        if not loggers:
            return
        try:
            import wandb
        except Exception:  # pragma: no cover - wandb missing
            return
        columns = ["label \\ head"] + list(names)
        data = [[names[i]] + [int(v) for v in conf[i].tolist()] for i in range(len(names))]
        for logger in loggers:
            try:
                table = wandb.Table(columns=columns, data=data)
                logger.experiment.log({f"{RouterStatsCallback.KEY}_table": table,
                                       "trainer/global_step": int(trainer.global_step)})
            except Exception as err:  # pragma: no cover - depends on wandb state
                _warn_once("router-table", f"Could not log router confusion table to W&B: {err!r}")

