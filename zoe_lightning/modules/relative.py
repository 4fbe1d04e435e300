"""Stage 1: relative (affine-invariant inverse) depth over a weighted mixture of datasets."""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from ..losses import RelativeDepthLoss, compute_scale_and_shift, to_disparity
from .base import DepthModule


def aligned_disparity_errors(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
    """Per-image REL and delta1 in disparity space after a least-squares scale/shift fit."""
    s, t = compute_scale_and_shift(pred, target, valid)
    aligned = (s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1)).clamp_min(1e-6)
    valid = valid & (target > 0)
    n = valid.flatten(1).sum(1).clamp_min(1)
    rel = torch.where(valid, (aligned - target).abs() / target.clamp_min(1e-6), 0).flatten(1).sum(1) / n
    ratio = torch.maximum(aligned / target.clamp_min(1e-6), target / aligned)
    d1 = torch.where(valid, (ratio < 1.25).float(), 0).flatten(1).sum(1) / n
    keep = valid.flatten(1).any(1)
    return rel[keep], d1[keep]


class RelativeDepthModule(DepthModule):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        loss = self.cfg.loss
        self.criterion = RelativeDepthLoss(loss.ssi_alignment, loss.ssi_trim, loss.w_gradient_matching,
                                           loss.gradient_scales)
        self.val_rel, self.val_delta1 = MeanMetric(), MeanMetric()

    def forward(self, image: torch.Tensor):
        return self.model(image)

    def _pred(self, batch):
        rel = self.model(batch["image"]).relative_depth
        return F.interpolate(rel, size=batch["depth"].shape[-2:], mode="bilinear", align_corners=True)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.criterion(self._pred(batch), batch["depth"], batch["valid"], list(batch["depth_kind"]))
        bs = batch["image"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log("train/ssi", losses["ssi"], batch_size=bs)
        self.log("train/gradient_matching", losses["grad"], batch_size=bs)
        return losses["loss"]

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        pred = self._pred(batch)
        kinds = list(batch["depth_kind"])
        target = torch.stack([
            to_disparity(d, v) if k != "disparity" else torch.where(v, d, 0)
            for d, v, k in zip(batch["depth"], batch["valid"], kinds)
        ])
        rel, d1 = aligned_disparity_errors(pred, target, batch["valid"])
        if rel.numel():
            self.val_rel.update(rel)
            self.val_delta1.update(d1)

    def on_validation_epoch_end(self) -> None:
        self.log("val/rel", self.val_rel.compute(), prog_bar=True)
        self.log("val/a1", self.val_delta1.compute(), prog_bar=True)
        self.val_rel.reset()
        self.val_delta1.reset()
