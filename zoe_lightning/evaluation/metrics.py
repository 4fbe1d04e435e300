"""ZoeDepth evaluation metrics: per-image depth errors averaged over images.

The formulas, prediction clamping, validity rule and crops follow ZoeDepth's ``compute_metrics``
(crops and clamp in :mod:`.protocol`, the per-image sums in :mod:`.sums`). :class:`DepthMetrics`
keeps only sums, so that its DDP reduction is exact; no host syncs.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from .protocol import CROPS, crop_box
from .sums import image_sums, metrics_from_sums

__all__ = [
    "METRIC_NAMES",
    "ERROR_METRICS",
    "ACCURACY_METRICS",
    "compute_depth_metrics",
    "DepthMetrics",
    "RoutedCounts",
    "relative_improvement",
]

METRIC_NAMES = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")
ERROR_METRICS = ("abs_rel", "rmse", "log_10")  # averaged into mRI_D
ACCURACY_METRICS = ("a1", "a2", "a3")  # averaged into mRI_theta


# ----------------------------------------------------------------------------------------------
# Per-image metrics
# ----------------------------------------------------------------------------------------------


def _as_4d(x: Tensor, name: str) -> Tensor:
    if x.dim() == 2:
        x = x[None, None]
    elif x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be (H,W), (B,H,W) or (B,1,H,W), got shape {tuple(x.shape)}")
    return x


def _check_range(min_depth: float, max_depth: float) -> None:
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")


def compute_depth_metrics(
    pred: Tensor,
    gt: Tensor,
    min_depth: float,
    max_depth: float,
    crop: Optional[str] = None,
    interpolate: bool = True,
    mask: Optional[Tensor] = None,
    fused: Optional[bool] = None,
) -> Dict[str, Tensor]:
    """Per-image ZoeDepth metrics for a batch.

    ``pred`` (B,1,h,w) is resized bilinearly (align_corners=True) to ``gt`` (B,1,H,W) and
    clamped like :func:`clamp_prediction`; valid pixels satisfy ``min_depth < gt < max_depth``,
    lie in ``crop`` and in the optional extra ``mask``. Returns a dict of (B,) tensors, one per
    name in :data:`METRIC_NAMES`, plus ``"n_valid"`` (int64 per-image valid counts). Images with
    no valid pixel have NaN metrics and ``n_valid == 0``.

    ``fused``: ``True`` uses the compiled CPU kernel whenever pred and gt are float32 CPU tensors
    (raising if it cannot be compiled), ``False`` never, ``None`` (auto) only for such batches of
    at least :data:`FUSED_MIN_PIXELS` pixels in the crop box and while compiling works. Other
    inputs (GPU, MPS, float64) take the eager path.
    """
    _check_range(min_depth, max_depth)
    gt = _as_4d(gt, "gt")
    pred = _as_4d(pred, "pred")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"batch sizes differ: pred {pred.shape[0]}, gt {gt.shape[0]}")
    with torch.no_grad():
        pred = pred.detach()
        gt = gt.detach()
        if pred.dtype not in (torch.float32, torch.float64):
            pred = pred.float()
        if pred.shape[-2:] != gt.shape[-2:]:
            if not interpolate:
                raise ValueError(f"pred size {tuple(pred.shape[-2:])} != gt size {tuple(gt.shape[-2:])}")
            pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=True)
        height, width = gt.shape[-2:]
        r0, r1, c0, c1 = crop_box(crop, height, width) or (0, height, 0, width)
        # the box as (B, h, w) views; ``detach`` drops the view's base so that dynamo sees a plain
        # strided tensor (no guards on the base's size)
        g = gt[:, 0, r0:r1, c0:c1].detach()
        p = pred[:, 0, r0:r1, c0:c1].detach()
        box_mask = None
        if mask is not None:
            box_mask = _as_4d(mask, "mask")[:, 0, r0:r1, c0:c1].bool().detach()
        box_pixels = (r1 - r0) * (c1 - c0)

        sums = image_sums(p, g, min_depth, max_depth, box_mask, fused)
    return metrics_from_sums(sums, box_pixels)


# ----------------------------------------------------------------------------------------------
# Accumulating metric
# ----------------------------------------------------------------------------------------------


class DepthMetrics(Metric):
    """Accumulates ZoeDepth metrics over batches as per-image averages.

    States are sums (one per metric over non-empty images, the image count and the count of
    images with no valid pixel), all reduced with ``sum`` so DDP sync is exact. ``compute()``
    returns each metric averaged over non-empty images, plus ``n_images`` and ``n_empty``;
    metrics are NaN before any non-empty image.

    ``fused`` picks the per-image kernel (see :func:`compute_depth_metrics`): ``None`` (default)
    uses the compiled CPU kernel for float32 CPU batches of at least :data:`FUSED_MIN_PIXELS`
    pixels in the crop box when ``torch.compile`` works, else eager PyTorch; ``True`` uses the
    kernel for every float32 CPU batch, ``False`` never.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(
        self,
        min_depth: float,
        max_depth: float,
        crop: Optional[str] = None,
        interpolate: bool = True,
        fused: Optional[bool] = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_range(min_depth, max_depth)
        if crop not in CROPS:
            raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.crop = crop
        self.interpolate = interpolate
        self.fused = fused
        for name in METRIC_NAMES:
            self.add_state(f"sum_{name}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_empty", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None) -> None:
        out = compute_depth_metrics(
            pred, gt, self.min_depth, self.max_depth, self.crop, self.interpolate, mask, self.fused
        )
        ok = out["n_valid"] > 0
        values = torch.stack([out[name] for name in METRIC_NAMES], -1)
        totals = torch.where(ok[:, None], values, torch.zeros_like(values)).sum(0)
        for i, name in enumerate(METRIC_NAMES):
            key = f"sum_{name}"
            cur = getattr(self, key)
            setattr(self, key, cur + totals[i].to(cur.dtype))
        self.n_images = self.n_images + ok.sum()
        self.n_empty = self.n_empty + (~ok).sum()

    def compute(self) -> Dict[str, Tensor]:
        count = self.n_images.to(self.sum_rmse.dtype)
        nan = torch.full_like(count, float("nan"))
        out = {
            name: torch.where(count > 0, getattr(self, f"sum_{name}") / count.clamp_min(1.0), nan)
            for name in METRIC_NAMES
        }
        out["n_images"] = self.n_images
        out["n_empty"] = self.n_empty
        return out


class RoutedCounts(Metric):
    """Images per head index (``n_heads`` counters, summed over DDP ranks)."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, n_heads: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_heads = int(n_heads)
        self.add_state("counts", default=torch.zeros(self.n_heads, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, index: Tensor) -> None:
        self.counts = self.counts + torch.bincount(index.reshape(-1).long(), minlength=self.n_heads)[: self.n_heads]

    def compute(self) -> Tensor:
        return self.counts


# ----------------------------------------------------------------------------------------------
# Relative improvement
# ----------------------------------------------------------------------------------------------


def relative_improvement(result: Mapping[str, float], reference: Mapping[str, float]) -> Dict[str, float]:
    """ZoeDepth's mean relative improvement (percent) of ``result`` over ``reference``.

    ``mRID`` averages ``(ref - res) / ref`` over the error metrics (abs_rel, rmse, log_10) present
    in both; ``mRItheta`` averages ``(res - ref) / ref`` over a1, a2, a3 present in both. NaN
    when none is present.
    """

    def mean_rel(names, sign: float) -> float:
        vals = [
            sign * (float(result[k]) - float(reference[k])) / float(reference[k])
            for k in names
            if k in result and k in reference
        ]
        return 100.0 * sum(vals) / len(vals) if vals else math.nan

    return {"mRID": mean_rel(ERROR_METRICS, -1.0), "mRItheta": mean_rel(ACCURACY_METRICS, 1.0)}
