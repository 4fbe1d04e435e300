"""Readers for the zero-shot evaluation sets of ZoeDepth (on :class:`~.layouts.LayoutReader`).

Each reader follows the on-disk layout, depth unit and evaluation range of the original ZoeDepth
loader for that set (``zoedepth/data/*.py`` and ``DATASETS_CONFIG`` in ``zoedepth/utils/config.py``;
see docs/zero-shot-and-m12.md for the table and the sources):

========================  ==========================================================  =========
name                      layout under ``root``                                        depth
========================  ==========================================================  =========
``sunrgbd``               ``rgb/rgb/<n>.jpg`` + ``gt/gt/<n>.png``                        uint16/1000 m
``ibims``                 ``imagelist.txt``, ``rgb|depth|mask_invalid|mask_transp/<n>.png``  uint16*50/65535 m
``diode_indoor|outdoor``  ``<scene>/<scan>/<n>.png`` + ``<n>_depth.npy`` (+ mask)        m
``hypersim``              ``<scene>/images/scene_cam_XX_final_preview/<f>.tonemap.jpg``  HDF5 distance -> planar m
``vkitti2``               ``rgb/<Scene>/<var>/frames/rgb/Camera_0/rgb_<k>.jpg``           uint16/100 m
``ddad``                  ``<id>_rgb.png`` + ``<id>_depth.npy``                           m
``diml_indoor``           ``LR/<scene>/color/<n>_c.png`` + ``depth_filled/<n>_depth_filled.png``  uint16/1000 m
``diml_outdoor``          ``[<scene>/]outleft/<n>.png`` + ``depthmap/<n>.png``           uint16/1000 m
========================  ==========================================================  =========

All of them are evaluation sets: every split name (train/val/test) gives the whole set, except
``vkitti2`` (a deterministic 92/8 per-scene train/test split) and readers given a ``split_file``.
Resizing the RGB to the network (the original's 480×640 for DIODE/HyperSim/DIML indoor, 352×1216
for DDAD) is the transform's job; ground truth stays at its native size, as in the original.
"""

from __future__ import annotations

import functools
import os
from typing import Dict, List

import numpy as np

from zoe_lightning.errors import UserError

from .io import read_hdf5
from .kitti import KittiDataset
from .layouts import LayoutReader, parse_split_file, replace_dir, swap_ext

__all__ = [
    "SUNRGBD",
    "IBims",
    "DIODEIndoor",
    "DIODEOutdoor",
    "HyperSim",
    "VKITTI2",
    "DDAD",
    "DIMLIndoor",
    "DIMLOutdoor",
    "hypersim_distance_to_depth",
    "ZERO_SHOT_READERS",
]


# -------------------------------------------------------------------------------------- SUN RGB-D
class SUNRGBD(LayoutReader):
    """SUN RGB-D test set in the original's layout: ``rgb/rgb/<n>.jpg``, depth ``gt/gt/<n>.png``
    (uint16 / 1000 m; Depth-Anything's copy is /10000: set ``depth_divisor``). Valid: 0 < d < 8 m
    (the original sets d > 8 to -1 and evaluates 0 < d < 8); eigen crop."""

    name, depth_kind, domain, eval_crop = "sunrgbd", "metric", "nyu", "eigen"
    min_depth, max_depth = 0.0, 8.0
    image_patterns = ("rgb/rgb/*.jpg", "rgb/rgb/*.png")
    depth_divisor = 1000.0

    def depth_path(self, image):
        return os.path.splitext(replace_dir(replace_dir(image, "rgb", "gt"), "rgb", "gt"))[0] + ".png"



# -------------------------------------------------------------------------------------- iBims-1
class IBims(LayoutReader):
    """iBims-1 core: ``imagelist.txt`` names, ``rgb/<n>.png``, ``depth/<n>.png`` (uint16 × 50 / 65535 m),
    ``mask_invalid/<n>.png`` and ``mask_transp/<n>.png`` (0 = invalid / transparent)."""

    name, depth_kind, domain, eval_crop = "ibims", "metric", "nyu", "eigen"
    min_depth, max_depth = 0.0, 10.0
    depth_divisor = 65535.0 / 50.0

    def find_images(self, root):
        listing = os.path.join(root, "imagelist.txt")
        if not os.path.isfile(listing):
            raise UserError(f"{self.name}: {listing} not found (iBims-1 core lists its images there)")
        return [os.path.join(root, "rgb", row.columns[0] + ("" if row.columns[0].endswith(".png") else ".png"))
                for row in parse_split_file(listing, 1, 1)]

    def depth_path(self, image):
        return replace_dir(image, "rgb", "depth")

    def mask_paths(self, image):
        return [replace_dir(image, "rgb", "mask_invalid"), replace_dir(image, "rgb", "mask_transp")]


# -------------------------------------------------------------------------------------- DIODE
class _DIODE(LayoutReader):
    """DIODE (val) ``<scene>/<scan>/<n>.png``, ``<n>_depth.npy`` (H×W×1 m), ``<n>_depth_mask.npy``.

    ``root`` is the ``indoors`` / ``outdoor`` folder holding ``scene_*`` (the original's
    ``diode_indoor`` / ``diode_outdoor`` roots), or DIODE's top folder holding ``val/`` and
    ``train/``: then ``val``/``test`` read ``val/<part>`` and ``train`` reads ``train/<part>``.
    The original loads but drops the mask; here it is applied by default (``use_mask: false``
    reproduces the original, where zero depth is excluded by the range check anyway)."""

    part = "indoors"
    default_split_map = {"train": "train", "val": "val", "test": "val"}

    def __init__(self, split: str = "test", use_mask: bool = True, **options):
        self.use_mask = bool(use_mask)
        super().__init__(split=split, **options)

    def find_images(self, root):
        nested = os.path.join(root, self.default_split_map[self.split], self.part)
        self.image_patterns = (os.path.join(os.path.relpath(nested, root), "*", "*", "*.png"),) \
            if os.path.isdir(nested) else ("*/*/*.png",)
        return super().find_images(root)

    def depth_path(self, image):
        return swap_ext(image, ".png", "_depth.npy")

    def mask_paths(self, image):
        return [swap_ext(image, ".png", "_depth_mask.npy")] if self.use_mask else []


class DIODEIndoor(_DIODE):
    name, depth_kind, domain, eval_crop = "diode_indoor", "metric", "nyu", "eigen"
    min_depth, max_depth = 1e-3, 10.0


class DIODEOutdoor(_DIODE):
    name, depth_kind, domain, eval_crop = "diode_outdoor", "metric", "kitti", "garg"
    part = "outdoor"
    min_depth, max_depth = 1e-3, 80.0


# -------------------------------------------------------------------------------------- HyperSim
HYPERSIM_FOCAL = 886.81  # pixels, for the 1024×768 frames (the original's constant)


def hypersim_distance_to_depth(distance: np.ndarray, focal: float = HYPERSIM_FOCAL) -> np.ndarray:
    """Planar depth from HyperSim's distance along each pixel's ray.

    Pixel ``(u, v)`` sits at ``x = u - (W - 1) / 2``, ``y = v - (H - 1) / 2`` on the image plane
    ``z = focal`` (principal point at the image centre), so depth = distance · f / ‖(x, y, f)‖.
    """
    distance = np.asarray(distance, dtype=np.float32)
    return distance * _ray_cosine(distance.shape[0], distance.shape[1], float(focal))


@functools.lru_cache(maxsize=8)
def _ray_cosine(h: int, w: int, focal: float) -> np.ndarray:
    """f / ‖(x, y, f)‖ per pixel (float32 H×W, read-only), cached per frame size and focal."""
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    y = np.arange(h, dtype=np.float64) - (h - 1) / 2.0
    cosine = (focal / np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + focal ** 2)).astype(np.float32)
    cosine.setflags(write=False)
    return cosine


class HyperSim(LayoutReader):
    """HyperSim: ``<scene>/images/scene_cam_XX_final_preview/<f>.tonemap.jpg`` with the distance
    along the ray in ``scene_cam_XX_geometry_hdf5/<f>.depth_meters.hdf5`` (dataset ``dataset``),
    converted to planar depth with the 886.81 px focal length. NaN (no geometry) is invalid.
    The test scene list is not public: pass a ``split_file`` or point ``root`` at the test scenes."""

    name, depth_kind, domain, eval_crop = "hypersim", "metric", "nyu", "eigen"
    min_depth, max_depth = 1e-3, 80.0
    image_patterns = ("*/images/scene_cam_*_final_preview/*.tonemap.jpg",)
    depth_key = "dataset"

    def __init__(self, split: str = "test", focal: float = HYPERSIM_FOCAL, **options):
        self.focal = float(focal)
        super().__init__(split=split, **options)

    def depth_path(self, image):
        folder, base = os.path.split(image)
        if not folder.endswith("_final_preview"):
            raise UserError(f"{self.name}: image {image} is not in a scene_cam_XX_final_preview folder")
        return os.path.join(folder[: -len("_final_preview")] + "_geometry_hdf5",
                            swap_ext(base, ".tonemap.jpg", ".depth_meters.hdf5"))

    def decode_depth(self, path, index):
        distance = read_hdf5(path, self.depth_key or "dataset", index)
        if distance.ndim == 3 and distance.shape[2] == 1:
            distance = distance[..., 0]
        return hypersim_distance_to_depth(distance, self.focal)

    def intrinsics_of(self, record, height, width):
        return (self.focal, self.focal, (width - 1) / 2.0, (height - 1) / 2.0)


# -------------------------------------------------------------------------------------- Virtual KITTI 2
class VKITTI2(LayoutReader):
    """Virtual KITTI 2: ``rgb/<Scene>/<variation>/frames/rgb/Camera_0/rgb_<k>.jpg`` and
    ``depth/<Scene>/<variation>/frames/depth/Camera_0/depth_<k>.png`` (uint16 cm; 65535 = sky).

    Depth above 80 m is invalid (the original sets it to -1). The KB crop (bottom 352 rows, 1216
    centred columns) is applied to image and depth (``kb_crop: false`` to keep the full frame).
    Split: the original writes a random, unseeded 92/8 split on first use; here each
    ``<Scene>/<variation>`` sequence is shuffled with ``split_seed`` and its first 92 % are train,
    the rest test (``val`` = ``test``) -- deterministic. A ``split_file`` replaces it.
    Intrinsics: the dataset's constant camera, fx = fy = 725.0087, cx = 620.5, cy = 187.0.
    ``rgb_dir`` / ``depth_dir`` name the two top folders (default ``rgb`` / ``depth`` as the
    original; the release archives unpack to ``vkitti_2.0.3_rgb`` / ``vkitti_2.0.3_depth``).
    """

    name, depth_kind, domain, eval_crop, sparse = "vkitti2", "metric", "kitti", "garg", False
    min_depth, max_depth = 1e-3, 80.0
    depth_divisor = 100.0
    default_split_map = {"train": "train", "val": "test", "test": "test"}
    intrinsics = (725.0087, 725.0087, 620.5, 187.0)
    TRAIN_FRACTION = 0.92

    def __init__(self, split: str = "test", kb_crop: bool = True, split_seed: int = 0, rgb_dir: str = "rgb",
                 depth_dir: str = "depth", **options):
        self.kb_crop, self.split_seed = bool(kb_crop), int(split_seed)
        self.rgb_dir, self.depth_dir = str(rgb_dir), str(depth_dir)
        self.image_patterns = (os.path.join(self.rgb_dir, "**", "frames", "rgb", "Camera_0", "*.jpg"),)
        super().__init__(split=split, **options)

    def depth_path(self, image):
        root = os.path.normpath(self.root)
        rel = os.path.relpath(image, root).split(os.sep)
        if rel[0] != self.rgb_dir:
            raise UserError(f"{self.name}: image {image} is not under {os.path.join(root, self.rgb_dir)}")
        rel[0] = self.depth_dir
        rel = replace_dir(os.sep.join(rel), "rgb", "depth").split(os.sep)
        rel[-1] = swap_ext(rel[-1].replace("rgb_", "depth_", 1), ".jpg", ".png")
        return os.path.join(root, *rel)

    def select(self, images):
        groups: Dict[str, List[str]] = {}
        for image in images:
            rel = os.path.relpath(image, self.root).split(os.sep)
            groups.setdefault(os.sep.join(rel[1:rel.index("frames")]), []).append(image)
        want = self.default_split_map[self.split]
        chosen = []
        for key in sorted(groups):
            files = sorted(groups[key])
            order = np.random.default_rng([self.split_seed, *key.encode()]).permutation(len(files))
            cut = int(len(files) * self.TRAIN_FRACTION)
            part = order[:cut] if want == "train" else order[cut:]
            chosen.extend(files[i] for i in sorted(part))
        if not chosen:
            raise UserError(f"{self.name}: the {self.split} split is empty ({len(images)} frames found)")
        return chosen

    adjust = KittiDataset.adjust  # the same KB crop (and principal-point shift) as KITTI


# -------------------------------------------------------------------------------------- DDAD
class DDAD(LayoutReader):
    """DDAD (the original's exported val set): ``<id>_rgb.png`` + ``<id>_depth.npy`` (m, 0 = no
    LiDAR return; sparse). Evaluation 1e-3-80 m, garg crop (the original ignores its kb flag)."""

    name, depth_kind, domain, eval_crop, sparse = "ddad", "metric", "kitti", "garg", True
    min_depth, max_depth = 1e-3, 80.0
    image_patterns = ("*_rgb.png",)

    def depth_path(self, image):
        return swap_ext(image, "_rgb.png", "_depth.npy")


# -------------------------------------------------------------------------------------- DIML
class DIMLIndoor(LayoutReader):
    """DIML indoor: ``<level>/<scene>/color/<n>_c.png`` + ``<level>/<scene>/depth_filled/
    <n>_depth_filled.png`` (uint16 mm, the **filled** depth as in the original). ``level`` is
    ``LR`` (the original's test data) or ``HR``."""

    name, depth_kind, domain, eval_crop = "diml_indoor", "metric", "nyu", "eigen"
    min_depth, max_depth = 0.0, 10.0
    depth_divisor = 1000.0

    def __init__(self, split: str = "test", level: str = "LR", **options):
        self.image_patterns = (os.path.join(str(level), "*", "color", "*_c.png"),)
        super().__init__(split=split, **options)

    def depth_path(self, image):
        folder, base = os.path.split(replace_dir(image, "color", "depth_filled"))
        return os.path.join(folder, swap_ext(base, "_c.png", "_depth_filled.png"))


class DIMLOutdoor(LayoutReader):
    """DIML outdoor: ``<scene>/outleft/<n>.png`` + ``<scene>/depthmap/<n>.png`` (uint16 mm); the
    ``<scene>`` level is optional (Depth-Anything's copy drops it). Evaluation 2-80 m, garg crop."""

    name, depth_kind, domain, eval_crop = "diml_outdoor", "metric", "kitti", "garg"
    min_depth, max_depth = 2.0, 80.0
    image_patterns = ("*/outleft/*.png", "outleft/*.png")
    depth_divisor = 1000.0

    def depth_path(self, image):
        return replace_dir(image, "outleft", "depthmap")


ZERO_SHOT_READERS = {
    "sunrgbd": SUNRGBD,
    "ibims": IBims,
    "diode_indoor": DIODEIndoor,
    "diode_outdoor": DIODEOutdoor,
    "hypersim": HyperSim,
    "hypersim_test": HyperSim,
    "vkitti2": VKITTI2,
    "ddad": DDAD,
    "diml_indoor": DIMLIndoor,
    "diml_outdoor": DIMLOutdoor,
}
