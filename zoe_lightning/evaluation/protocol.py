"""ZoeDepth's evaluation protocol, in plain PyTorch: the crops, the prediction clamp, flip TTA.

Crops are boxes relative to the ground-truth map (Garg and Eigen for KITTI, the fixed Eigen box
for NYU); predictions are clamped to the dataset's evaluation range (NaN to the minimum, +inf to
the maximum); flip test-time augmentation averages a prediction with the un-flipped prediction of
the mirrored image.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "CROPS",
    "CROP_CHOICES",
    "crop_box",
    "garg_crop_mask",
    "eigen_kitti_crop_mask",
    "eigen_nyu_crop_mask",
    "crop_mask",
    "resolve_crop",
    "clamp_prediction",
    "flip_tta",
]

CROPS = (None, "eigen", "garg", "eigen_kitti")
CROP_CHOICES = ("auto", "none", "eigen", "garg", "eigen_kitti")  # what a user may ask for


# ----------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------


def _garg_box(height: int, width: int) -> Tuple[int, int, int, int]:
    return (int(0.40810811 * height), int(0.99189189 * height),
            int(0.03594771 * width), int(0.96405229 * width))


def _eigen_kitti_box(height: int, width: int) -> Tuple[int, int, int, int]:
    return (int(0.3324324 * height), int(0.91351351 * height),
            int(0.0359477 * width), int(0.96405229 * width))


def _eigen_nyu_box(height: int, width: int) -> Tuple[int, int, int, int]:
    return (45, 471, 41, 601)


_CROP_BOXES = {"garg": _garg_box, "eigen": _eigen_nyu_box, "eigen_kitti": _eigen_kitti_box}


def crop_box(crop: Optional[str], height: int, width: int) -> Optional[Tuple[int, int, int, int]]:
    """The box ``(row0, row1, col0, col1)`` of ``crop`` (one of :data:`CROPS`) as slice bounds,
    clipped to the ``(height, width)`` map; ``None`` for no crop."""
    if crop is None:
        return None
    if crop not in _CROP_BOXES:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    r0, r1, c0, c1 = _CROP_BOXES[crop](height, width)
    r1, c1 = min(r1, height), min(c1, width)
    return (min(r0, r1), r1, min(c0, c1), c1)


def _box_mask(height: int, width: int, box: Tuple[int, int, int, int], device=None) -> Tensor:
    r0, r1, c0, c1 = box
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[r0:r1, c0:c1] = True
    return mask


def garg_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Garg crop (KITTI), relative to the GT size: a bool (H, W) mask."""
    return _box_mask(height, width, _garg_box(height, width), device)


def eigen_kitti_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Eigen crop for KITTI, relative to the GT size: a bool (H, W) mask."""
    return _box_mask(height, width, _eigen_kitti_box(height, width), device)


def eigen_nyu_crop_mask(height: int, width: int, device=None) -> Tensor:
    """Eigen crop for NYU: the fixed box rows 45:471, cols 41:601 of the GT as passed."""
    return _box_mask(height, width, _eigen_nyu_box(height, width), device)


_CROP_FNS = {"garg": garg_crop_mask, "eigen": eigen_nyu_crop_mask, "eigen_kitti": eigen_kitti_crop_mask}


def crop_mask(crop: Optional[str], height: int, width: int, device=None) -> Optional[Tensor]:
    """The (H, W) bool mask of ``crop`` (one of :data:`CROPS`); ``None`` for no crop."""
    if crop is None:
        return None
    if crop not in _CROP_FNS:
        raise ValueError(f"unknown crop {crop!r}; expected one of {CROPS}")
    return _CROP_FNS[crop](height, width, device)



def resolve_crop(choice: str, dataset_crop: Optional[str]) -> Optional[str]:
    """The crop a dataset is scored with: ``auto`` = the dataset's own protocol crop, ``none`` = no
    crop, else the named crop."""
    if choice == "auto":
        return dataset_crop
    return None if choice == "none" else choice


# ----------------------------------------------------------------------------------------------
# Prediction clamp and flip TTA
# ----------------------------------------------------------------------------------------------


def clamp_prediction(pred: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """ZoeDepth's clamping: < min -> min, > max -> max, +inf -> max, NaN (and -inf) -> min."""
    pred = torch.nan_to_num(pred, nan=min_depth, posinf=max_depth, neginf=min_depth)
    return pred.clamp(min_depth, max_depth)


def flip_tta(predict: Callable[[Tensor], Tensor], images: Tensor, flip: bool = True) -> Tensor:
    """``0.5 * (predict(x) + unflip(predict(flip(x))))``, the original's evaluation TTA."""
    pred = predict(images)
    if not flip:
        return pred
    return 0.5 * (pred + predict(images.flip(-1)).flip(-1))
