"""Stage 2: metric fine-tuning with SILog (+ gradient loss, + domain loss for a trained router)."""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F

from ..losses import domain_loss, grad_l1_loss, silog_loss
from ..metrics import DepthMetrics
from .base import DepthModule


class MetricDepthModule(DepthModule):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.domain_names = [b.name for b in self.cfg.model.bins]
        self.val_metrics = torch.nn.ModuleDict({
            b.name: DepthMetrics(float(b.min_depth), float(b.max_depth)) for b in self.cfg.model.bins
        })
        self.empty_batches = 0

    def _labels(self, batch: Dict[str, Any]):
        labels = batch.get("domain_label")
        if labels is None or (labels < 0).any():
            return None
        return labels

    def forward(self, image: torch.Tensor, domain=None):
        return self.model(image, domain=domain)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        labels = self._labels(batch)
        out = self.model(batch["image"], domain=labels)
        loss_cfg = self.cfg.loss
        silog, n_valid = silog_loss(out.metric_depth, batch["depth"], batch["valid"], beta=loss_cfg.silog_beta)
        loss = loss_cfg.w_silog * silog
        bs = batch["image"].shape[0]
        self.log("train/silog", silog, prog_bar=True, batch_size=bs)
        if int(n_valid) == 0:
            self.empty_batches += 1
            self.log("train/empty_batches", float(self.empty_batches), batch_size=bs)
        if loss_cfg.w_grad > 0:
            pred = F.interpolate(out.metric_depth, size=batch["depth"].shape[-2:], mode="bilinear", align_corners=True)
            grad = grad_l1_loss(pred, batch["depth"], batch["valid"])
            loss = loss + loss_cfg.w_grad * grad
            self.log("train/grad_l1", grad, batch_size=bs)
        if out.domain_logits is not None and labels is not None and self.cfg.model.router.type == "trained":
            dom = domain_loss(out.domain_logits, labels)
            loss = loss + loss_cfg.w_domain * dom
            self.log("train/domain_loss", dom, batch_size=bs)
            acc = (out.domain_logits.argmax(1) == labels).float().mean()
            self.log("train/router_accuracy", acc, batch_size=bs)
        self.log("train/loss", loss, batch_size=bs)
        return loss

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, Any]:
        labels = self._labels(batch)
        router = self.cfg.model.router.type
        out = self.model(batch["image"], domain=labels if router == "labeled" else None)
        gt, valid = batch["depth"], batch["valid"]
        pred = F.interpolate(out.metric_depth, size=gt.shape[-2:], mode="bilinear", align_corners=True)
        silog, _ = silog_loss(pred, gt, valid, beta=self.cfg.loss.silog_beta)
        self.log("val/silog", silog, batch_size=gt.shape[0], sync_dist=True)
        for name, metric in self.val_metrics.items():
            sel = [i for i, d in enumerate(batch["domain"]) if d == name]
            if sel:
                idx = torch.tensor(sel, device=gt.device)
                metric.update(pred.index_select(0, idx), gt.index_select(0, idx))
        return {
            "image": batch["image"], "depth": gt, "valid": valid, "pred": pred, "bin_centers": out.bin_centers,
            "domain_names": self.domain_names, "domain_label": labels, "domain_index": out.domain_index,
            "min_depth": batch["min_depth"], "max_depth": batch["max_depth"], "dataset": batch["dataset"],
        }

    def on_validation_epoch_end(self) -> None:
        results = {}
        for name, metric in self.val_metrics.items():
            # domain absent from the validation data; under DDP every rank computes (the sync is a
            # collective: a rank whose shard lacks the domain must still take part)
            world = self._trainer.world_size if self._trainer is not None else 1
            if metric.update_count == 0 and world == 1:
                continue
            values = metric.compute()
            metric.reset()
            if int(values["n_images"]) == 0:
                continue
            for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog", "a1", "a2", "a3"):
                results.setdefault(key, []).append(values[key])
                self.log(f"val/{name}/{key}", values[key].float(), sync_dist=False)
        for key, vals in results.items():  # headline: mean over the domains seen
            self.log(f"val/{key}", torch.stack(vals).float().mean(), prog_bar=key in ("abs_rel", "a1"))
