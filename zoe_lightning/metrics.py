"""ZoeDepth evaluation metrics: per-image depth errors averaged over images.

The formulas, prediction clamping, validity rule and crops follow ZoeDepth's ``compute_metrics``
exactly. Per-image values are computed in float64 (float32 on MPS) without host syncs;
:class:`DepthMetrics` keeps only sums so that DDP reduction is exact.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "METRIC_NAMES",
    "ERROR_METRICS",
    "ACCURACY_METRICS",
    "CROPS",
    "garg_crop_mask",
    "eigen_kitti_crop_mask",
    "eigen_nyu_crop_mask",
    "crop_mask",
    "clamp_prediction",
    "compute_depth_metrics",
    "DepthMetrics",
    "relative_improvement",
]

METRIC_NAMES = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")
ERROR_METRICS = ("abs_rel", "rmse", "log_10")  # averaged into mRI_D
ACCURACY_METRICS = ("a1", "a2", "a3")  # averaged into mRI_theta
CROPS = (None, "eigen", "garg", "eigen_kitti")


# ----------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------


def _box_mask(height: int, width: int, r0: int, r1: int, c0: int, c1: int, device=None) -> Tensor:
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[r0:r1, c0:c1] = True
    return mask


def garg_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Garg crop (KITTI), relative to the GT size: a bool (H, W) mask."""
    return _box_mask(
        height, width,
        int(0.40810811 * height), int(0.99189189 * height),
        int(0.03594771 * width), int(0.96405229 * width),
        device,
    )


def eigen_kitti_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Eigen crop for KITTI, relative to the GT size: a bool (H, W) mask."""
    return _box_mask(
        height, width,
        int(0.3324324 * height), int(0.91351351 * height),
        int(0.0359477 * width), int(0.96405229 * width),
        device,
    )


def eigen_nyu_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Eigen crop for NYU: the fixed box rows 45:471, cols 41:601 of the GT as passed."""
    return _box_mask(height, width, 45, 471, 41, 601, device)


_CROP_FNS = {"garg": garg_crop_mask, "eigen": eigen_nyu_crop_mask, "eigen_kitti": eigen_kitti_crop_mask}


def crop_mask(crop: Optional[str], height: int, width: int, device=None) -> Optional[Tensor]:
    """The (H, W) bool mask of ``crop`` (one of :data:`CROPS`); ``None`` for no crop."""
    if crop is None:
        return None
    if crop not in _CROP_FNS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    return _CROP_FNS[crop](height, width, device)


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


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _check_range(min_depth: float, max_depth: float) -> None:
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")


def clamp_prediction(pred: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """ZoeDepth's clamping: < min -> min, > max -> max, +inf -> max, NaN (and -inf) -> min."""
    pred = torch.nan_to_num(pred, nan=min_depth, posinf=max_depth, neginf=min_depth)
    return pred.clamp(min_depth, max_depth)


def compute_depth_metrics(
    pred: Tensor,
    gt: Tensor,
    min_depth: float,
    max_depth: float,
    crop: Optional[str] = None,
    interpolate: bool = True,
    mask: Optional[Tensor] = None,
) -> Dict[str, Tensor]:
    """Per-image ZoeDepth metrics for a batch.

    ``pred`` (B,1,h,w) is resized bilinearly (align_corners=True) to ``gt`` (B,1,H,W) and
    clamped with :func:`clamp_prediction`; valid pixels satisfy ``min_depth < gt < max_depth``,
    lie in ``crop`` and in the optional extra ``mask``. Returns a dict of (B,) tensors, one per
    name in :data:`METRIC_NAMES`, plus ``"n_valid"`` (int64 per-image valid counts). Images with
    no valid pixel have NaN metrics and ``n_valid == 0``.
    """
    _check_range(min_depth, max_depth)
    gt = _as_4d(gt, "gt")
    pred = _as_4d(pred, "pred")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"batch sizes differ: pred {pred.shape[0]}, gt {gt.shape[0]}")
    dtype = _work_dtype(gt.device)
    with torch.no_grad():
        # Resizing, clamping and the validity test run in the inputs' own precision (at least
        # float32), like the original; only the statistics are accumulated in ``dtype``.
        pred = pred.detach()
        gt = gt.detach()
        if pred.dtype not in (torch.float32, torch.float64):
            pred = pred.float()
        if pred.shape[-2:] != gt.shape[-2:]:
            if not interpolate:
                raise ValueError(f"pred size {tuple(pred.shape[-2:])} != gt size {tuple(gt.shape[-2:])}")
            pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=True)
        pred = clamp_prediction(pred, min_depth, max_depth).to(dtype)
        valid = (gt > min_depth) & (gt < max_depth)
        gt = gt.to(dtype)
        box = crop_mask(crop, gt.shape[-2], gt.shape[-1], gt.device)
        if box is not None:
            valid = valid & box
        if mask is not None:
            valid = valid & _as_4d(mask, "mask").bool()

        dims = (1, 2, 3)
        n_valid = valid.sum(dims)
        n = n_valid.to(dtype).clamp_min(1.0)
        one = torch.ones((), dtype=dtype, device=gt.device)
        p = torch.where(valid, pred, one)
        g = torch.where(valid, gt, one)

        def mean(x: Tensor) -> Tensor:
            return torch.where(valid, x, torch.zeros_like(x)).sum(dims) / n

        thresh = torch.maximum(g / p, p / g)
        err_log = torch.log(p) - torch.log(g)
        out = {
            "a1": mean((thresh < 1.25).to(dtype)),
            "a2": mean((thresh < 1.25**2).to(dtype)),
            "a3": mean((thresh < 1.25**3).to(dtype)),
            "abs_rel": mean((g - p).abs() / g),
            "sq_rel": mean((g - p) ** 2 / g),
            "rmse": torch.sqrt(mean((g - p) ** 2)),
            "rmse_log": torch.sqrt(mean(err_log**2)),
            "log_10": mean((torch.log10(g) - torch.log10(p)).abs()),
            "silog": 100.0 * torch.sqrt((mean(err_log**2) - mean(err_log) ** 2).clamp_min(0.0)),
        }
        empty = n_valid == 0
        nan = torch.full((), float("nan"), dtype=dtype, device=gt.device)
        out = {k: torch.where(empty, nan, v) for k, v in out.items()}
        out["n_valid"] = n_valid
    return out


# ----------------------------------------------------------------------------------------------
# Accumulating metric
# ----------------------------------------------------------------------------------------------


class DepthMetrics(Metric):
    """Accumulates ZoeDepth metrics over batches as per-image averages.

    States are sums (one per metric over non-empty images, the image count and the count of
    images with no valid pixel), all reduced with ``sum`` so DDP sync is exact. ``compute()``
    returns each metric averaged over non-empty images, plus ``n_images`` and ``n_empty``;
    metrics are NaN before any non-empty image.
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
        for name in METRIC_NAMES:
            self.add_state(f"sum_{name}", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_empty", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None) -> None:
        out = compute_depth_metrics(
            pred, gt, self.min_depth, self.max_depth, self.crop, self.interpolate, mask
        )
        ok = out["n_valid"] > 0
        for name in METRIC_NAMES:
            v = torch.where(ok, out[name], torch.zeros_like(out[name])).sum()
            key = f"sum_{name}"
            cur = getattr(self, key)
            setattr(self, key, cur + v.to(cur.dtype))
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
