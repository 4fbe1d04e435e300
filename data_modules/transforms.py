"""Loader-side transforms for file datasets: the original training augmentation and the
resize-to-network policies, built on albumentations 2.x.

A transform is a callable ``transform(sample) -> sample`` on a reader's numpy dict:
``image`` uint8 (H, W, 3) RGB, ``depth`` float32 (H, W), ``valid`` bool (H, W); every other key
passes through and ``intrinsics`` ``[fx, fy, cx, cy]`` (pixel centres at integer coordinates)
follows each crop, flip, resize and pad. The result holds ``image`` float32 (H', W', 3) in
[0, 1], ``depth`` float32 (H', W') (0 where invalid) and ``valid`` bool (H', W').

Order (the original's, facts §4.6, then the resize the original did inside the network):

1. KB crop (datasets that declare it, e.g. KITTI): bottom 352 rows, centred 1216 columns;
   idempotent on an already cropped 352×1216 sample.
2. train: rotation by an angle drawn uniformly in ±``rotate_degrees`` (1° in the original,
   applied to every training sample): bilinear image, nearest depth/valid, zero border = invalid.
3. train: optional random crop (``random_crop: [h, w]``).
4. train: horizontal flip, probability 0.5.
5. resize policy to ``image_size`` (H, W): ``none``; ``squash`` (exactly H×W); ``keep_aspect``
   (MiDaS "minimal": the per-axis scale closer to 1 for both axes, the height's on a tie, sides
   rounded to a multiple of ``multiple_of``); ``pad`` (fit inside H×W keeping the aspect ratio, zero-pad the rest,
   padding is invalid depth).
6. uint8 -> float32 in [0, 1] and, in training with probability 0.5, the original's colour
   jitter: x ** gamma, gamma ~ U(0.9, 1.1); times brightness ~ U(0.75, 1.25) indoors (domain
   ``nyu``) or U(0.9, 1.1) otherwise; times a per-channel gain ~ U(0.9, 1.1); clipped to [0, 1].
   Both are one float32 look-up table per channel (``cv2.LUT``) — the depth is never touched.

Depth and validity travel together as one 2-channel float32 albumentations ``mask`` target
(``additional_targets``: channel 0 = depth with 0 where invalid, channel 1 = validity), so every
geometric step moves them with the image in a single call. Resizing depth never mixes valid and invalid pixels:

* ``nearest`` (default for sparse, LiDAR-like depth): each output pixel copies one input pixel,
  depth and validity together.
* ``masked`` (default for dense depth): ``depth * valid`` and ``valid`` are resized bilinearly
  (non-negative weights) and divided; a pixel is valid where at least half of its interpolation
  weight falls on valid input pixels. A valid output depth is therefore a convex combination of
  valid input depths only — never pulled towards the 0 of a hole.

Random draws come from one generator per process, created the first time a process uses the
transform: from (``seed``, DataLoader worker id) when ``seed`` is given, else from
``torch.initial_seed()``, which torch (and Lightning's ``seed_everything(workers=True)``) makes
distinct and reproducible per worker.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

__all__ = [
    "RESIZE_POLICIES",
    "DEPTH_INTERPOLATIONS",
    "KB_CROP",
    "DepthTransform",
    "build_transform",
    "keep_aspect_size",
    "kb_crop_box",
]

RESIZE_POLICIES = ("none", "squash", "keep_aspect", "pad")
DEPTH_INTERPOLATIONS = ("auto", "nearest", "masked")
KB_CROP = (352, 1216)  # height, width of the KITTI benchmark crop
KB_CROP_DATASETS = {"kitti", "vkitti2", "kitti_relative"}
INDOOR_BRIGHTNESS = (0.75, 1.25)
OUTDOOR_BRIGHTNESS = (0.9, 1.1)


def kb_crop_box(height: int, width: int) -> Tuple[int, int, int, int]:
    """(x_min, y_min, x_max, y_max) of the KB crop: bottom 352 rows, 1216 columns centred as
    ``left = int((W - 1216) / 2)``. Images smaller than 352×1216 raise ValueError."""
    ch, cw = KB_CROP
    if height < ch or width < cw:
        raise ValueError(f"KB crop needs an image of at least {ch}x{cw}, got {height}x{width}")
    top, left = height - ch, int((width - cw) / 2)
    return left, top, left + cw, top + ch


def keep_aspect_size(height: int, width: int, target: Sequence[int], multiple_of: int = 32) -> Tuple[int, int]:
    """MiDaS "minimal" resize to ``target``: the model's own rule
    (:func:`zoe_lightning.models.zoedepth.network_size` with keep-aspect on; a tie fits the height)."""
    from zoe_lightning.models.zoedepth import network_size

    return network_size(height, width, target, True, multiple_of)


def _fit_size(height: int, width: int, target: Sequence[int]) -> Tuple[int, int]:
    scale = min(target[0] / height, target[1] / width)
    return max(1, min(target[0], int(round(height * scale)))), max(1, min(target[1], int(round(width * scale))))


class DepthTransform:
    """The loader pipeline of one dataset (see the module docstring); ``train`` selects the
    random steps. Build it with :func:`build_transform`."""

    def __init__(self, train: bool, *, image_size: Optional[Sequence[int]] = None, resize: str = "squash",
                 multiple_of: int = 32, kb_crop: bool = False, random_crop: Optional[Sequence[int]] = None,
                 augment: bool = True, rotate_degrees: float = 1.0, flip_p: float = 0.5, color_p: float = 0.5,
                 gamma: Sequence[float] = (0.9, 1.1), brightness: Sequence[float] = INDOOR_BRIGHTNESS,
                 gain: Sequence[float] = (0.9, 1.1), depth_interpolation: str = "nearest",
                 seed: Optional[int] = None) -> None:
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"data.resize: unknown policy {resize!r}; expected one of {RESIZE_POLICIES}")
        if depth_interpolation not in ("nearest", "masked"):
            raise ValueError(f"data.depth_interpolation: expected 'nearest' or 'masked', got {depth_interpolation!r}")
        if image_size is not None and (len(image_size) != 2 or min(image_size) <= 0):
            raise ValueError(f"data.image_size must be [height, width] > 0, got {list(image_size)}")
        if resize != "none" and image_size is None:
            resize = "none"
        if random_crop is not None and (len(random_crop) != 2 or min(random_crop) <= 0):
            raise ValueError(f"data.random_crop must be [height, width] > 0, got {list(random_crop)}")
        self.train, self.augment = bool(train), bool(augment) and bool(train)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.resize, self.multiple_of, self.kb_crop = resize, int(multiple_of), bool(kb_crop)
        self.random_crop = None if random_crop is None else (int(random_crop[0]), int(random_crop[1]))
        self.rotate_degrees, self.flip_p, self.color_p = float(rotate_degrees), float(flip_p), float(color_p)
        self.gamma, self.brightness, self.gain = tuple(gamma), tuple(brightness), tuple(gain)
        self.depth_interpolation, self.seed = depth_interpolation, seed
        self._pipelines: Dict[Tuple[int, int], Tuple[A.Compose, Tuple[int, int]]] = {}
        self._rng: Optional[np.random.Generator] = None
        self._pid: Optional[int] = None
        self._plain_lut = (np.arange(256, dtype=np.float32) / np.float32(255)).reshape(256, 1, 1).repeat(3, 2)

    # ------------------------------------------------------------------ randomness
    def _generator(self) -> np.random.Generator:
        """One generator per process, (re)seeded the first time a process (worker) calls us."""
        pid = os.getpid()
        if self._rng is None or self._pid != pid:
            import torch
            from torch.utils.data import get_worker_info

            if self.seed is not None:  # a fixed seed: distinct, reproducible streams per worker
                worker = get_worker_info()
                entropy = [int(self.seed), 0 if worker is None else int(worker.id) + 1]
            else:  # torch (and Lightning's seed_everything(workers=True)) seeds each worker apart
                entropy = [int(torch.initial_seed()) % (2**63)]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._pid = pid
            for compose, _ in self._pipelines.values():
                compose.set_random_seed(int(self._rng.integers(2**31)))
        return self._rng

    # ------------------------------------------------------------------ geometry
    def _output_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.resize == "squash":
            return self.image_size
        if self.resize == "keep_aspect":
            return keep_aspect_size(h, w, self.image_size, self.multiple_of)
        if self.resize == "pad":
            return self.image_size
        return h, w

    def _pipeline(self, h: int, w: int) -> Tuple[A.Compose, Tuple[int, int]]:
        """The albumentations pipeline for inputs of size h×w (cached per input size)."""
        key = (h, w)
        if key in self._pipelines:
            return self._pipelines[key]
        steps = []
        if self.kb_crop:
            x0, y0, x1, y1 = kb_crop_box(h, w)
            steps.append(A.Crop(x_min=x0, y_min=y0, x_max=x1, y_max=y1))
            h, w = y1 - y0, x1 - x0
        mask_interp = cv2.INTER_NEAREST if self.depth_interpolation == "nearest" else cv2.INTER_LINEAR
        if self.augment and self.rotate_degrees > 0:
            steps.append(A.Rotate(limit=(-self.rotate_degrees, self.rotate_degrees), interpolation=cv2.INTER_LINEAR,
                                  mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT,
                                  fill=0, fill_mask=0, crop_border=False, p=1.0))
        if self.train and self.random_crop is not None:
            steps.append(A.RandomCrop(*self.random_crop, pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT,
                                      fill=0, fill_mask=0, pad_position="center"))
            h, w = self.random_crop
        if self.augment and self.flip_p > 0:
            steps.append(A.HorizontalFlip(p=self.flip_p))
        out = self._output_size(h, w)
        if self.resize == "pad":
            fit = _fit_size(h, w, self.image_size)
            if fit != (h, w):
                steps.append(A.Resize(*fit, interpolation=cv2.INTER_LINEAR, mask_interpolation=mask_interp))
            steps.append(A.PadIfNeeded(*self.image_size, position="center", border_mode=cv2.BORDER_CONSTANT,
                                       fill=0, fill_mask=0))
        elif out != (h, w):
            steps.append(A.Resize(*out, interpolation=cv2.INTER_LINEAR, mask_interpolation=mask_interp))
        compose = A.Compose(steps, additional_targets={"depth": "mask"},
                            save_applied_params=True, seed=0)
        if self._rng is not None:
            compose.set_random_seed(int(self._rng.integers(2**31)))
        self._pipelines[key] = (compose, out)
        return compose, out

    @staticmethod
    def _move_intrinsics(k: np.ndarray, applied, resize_to: Tuple[int, int]) -> np.ndarray:
        fx, fy, cx, cy = (float(v) for v in k)
        for name, params in applied:
            h, w = params["shape"][:2]
            if name in ("Crop", "RandomCrop"):
                x0, y0 = params["crop_coords"][:2]
                pad = params.get("pad_params") or {}
                cx, cy = cx - x0 + pad.get("pad_left", 0), cy - y0 + pad.get("pad_top", 0)
            elif name == "HorizontalFlip":
                cx = (w - 1) - cx
            elif name == "Resize":
                th, tw = resize_to
                sx, sy = tw / w, th / h
                fx, fy, cx, cy = fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
            elif name == "PadIfNeeded":
                cx, cy = cx + params["pad_left"], cy + params["pad_top"]
            # Rotate: an in-plane rotation of at most a degree about the image centre has no
            # pinhole-intrinsics equivalent; the intrinsics are left as they are.
        return np.array([fx, fy, cx, cy], np.float32)

    # ------------------------------------------------------------------ call
    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        image, depth, valid = sample["image"], sample["depth"], sample["valid"]
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"transform: 'image' must be uint8 HxWx3, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if depth.shape != (h, w) or valid.shape != (h, w):
            raise ValueError(f"transform: depth {depth.shape} / valid {valid.shape} differ from image {(h, w)}")
        rng = self._generator()
        compose, out_hw = self._pipeline(h, w)
        result = dict(sample)
        if not compose.transforms:  # nothing geometric to do (eval at native size)
            result["depth"] = np.where(valid, depth, np.float32(0)).astype(np.float32, copy=False)
            result["valid"] = np.asarray(valid, dtype=bool)
            result["image"] = cv2.LUT(np.ascontiguousarray(image), self._colour_lut(rng, sample))
            return result
        masked = self.depth_interpolation == "masked"
        # depth (0 where invalid) and validity travel together as one 2-channel float32 mask, so
        # each geometric step moves them in one call with the same interpolation
        packed = np.empty((h, w, 2), np.float32)
        packed[..., 0] = np.where(valid, depth, np.float32(0))
        packed[..., 1] = valid
        res = compose(image=image, depth=packed)
        image, packed = res["image"], res["depth"]
        resize_to = out_hw if self.resize != "pad" else _fit_size(*self._cropped_size(h, w), self.image_size)
        k = sample.get("intrinsics")
        if k is not None:
            result["intrinsics"] = self._move_intrinsics(np.asarray(k, np.float32), res["applied_transforms"],
                                                         resize_to)
        dmask, vmask = packed[..., 0], packed[..., 1]
        if masked:
            new_valid = vmask >= 0.5
            new_depth = np.where(new_valid, dmask / np.maximum(vmask, np.float32(1e-12)), np.float32(0))
        else:
            new_valid = vmask > 0.5
            new_depth = np.where(new_valid, dmask, np.float32(0))
        result["depth"] = new_depth.astype(np.float32, copy=False)
        result["valid"] = new_valid
        result["image"] = cv2.LUT(np.ascontiguousarray(image), self._colour_lut(rng, sample))
        return result

    def _cropped_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.kb_crop:
            h, w = KB_CROP
        if self.train and self.random_crop is not None:
            h, w = self.random_crop
        return h, w

    def _colour_lut(self, rng: np.random.Generator, sample: Dict[str, Any]) -> np.ndarray:
        """256×1×3 float32 table: uint8 -> [0, 1], with the colour jitter folded in when drawn."""
        if not (self.augment and self.color_p > 0 and rng.random() < self.color_p):
            return self._plain_lut
        gamma = rng.uniform(*self.gamma)
        bright = rng.uniform(*self.brightness)
        gains = rng.uniform(self.gain[0], self.gain[1], 3)
        base = (np.arange(256, dtype=np.float64) / 255.0) ** gamma * bright
        lut = np.clip(base[:, None] * gains[None, :], 0.0, 1.0).astype(np.float32)
        return lut.reshape(256, 1, 3)


def _attr(dataset: Any, name: str, default: Any = None) -> Any:
    if isinstance(dataset, dict):
        return dataset.get(name, default)
    return getattr(dataset, name, default)


def build_transform(kind: str, dataset: Any = None, **options: Any) -> DepthTransform:
    """The loader transform for ``dataset`` (a dataset object, a dict of its attributes or its
    registry name). ``kind``: ``"train"`` (augmentation when ``augment``) or ``"eval"``.

    Options (all optional): ``image_size`` [H, W], ``resize`` (none|squash|keep_aspect|pad),
    ``multiple_of``, ``augment``, ``random_crop`` [h, w], ``rotate_degrees``, ``flip_p``,
    ``color_p``, ``gamma``, ``brightness``, ``gain``, ``depth_interpolation``
    (auto|nearest|masked), ``kb_crop`` (default: the dataset's ``kb_crop`` attribute, else True
    for KITTI-like names), ``seed``.
    """
    if kind not in ("train", "eval"):
        raise ValueError(f"build_transform: kind must be 'train' or 'eval', got {kind!r}")
    name = dataset if isinstance(dataset, str) else _attr(dataset, "name", None)
    domain = _attr(dataset, "domain", None) if not isinstance(dataset, str) else None
    sparse = bool(_attr(dataset, "sparse", False)) if not isinstance(dataset, str) else name in KB_CROP_DATASETS
    opts = dict(options)
    interp = opts.pop("depth_interpolation", "auto") or "auto"
    if interp not in DEPTH_INTERPOLATIONS:
        raise ValueError(f"data.depth_interpolation: expected one of {DEPTH_INTERPOLATIONS}, got {interp!r}")
    if interp == "auto":
        interp = "nearest" if sparse else "masked"
    if opts.get("kb_crop") is None:
        declared = None if isinstance(dataset, str) else _attr(dataset, "kb_crop", None)
        opts["kb_crop"] = bool(declared) if declared is not None else name in KB_CROP_DATASETS
    if opts.get("brightness") is None:
        opts["brightness"] = INDOOR_BRIGHTNESS if (domain or "nyu") == "nyu" and name not in KB_CROP_DATASETS \
            else OUTDOOR_BRIGHTNESS
    opts = {k: v for k, v in opts.items() if v is not None}
    return DepthTransform(kind == "train", depth_interpolation=interp, **opts)
