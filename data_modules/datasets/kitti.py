"""KITTI, Eigen split: raw images plus the annotated depth maps of the depth-prediction benchmark.

On disk::

    <root>/<date>/<date>_drive_<id>_sync/image_02/data/<10 digits>.png      raw RGB (PNG, ~375×1242)
    <root>/<date>/calib_cam_to_cam.txt                                      optional: intrinsics
    <depth_root>/<date>_drive_<id>_sync/proj_depth/groundtruth/image_02/<10 digits>.png
                                                   annotated depth (16-bit PNG, metres × 256, 0 = none)

``root`` is the original's ``data_path`` (KITTI raw) and ``depth_root`` its ``gt_path``
(default: ``root``). Split lines are ``<rgb path> <depth path> <focal>``; rows whose depth is
``None`` (45 of the 697 test rows) have no ground truth and are skipped, counted in
``stats['no_gt_skipped']``. ``train`` reads ``kitti_eigen_train_files_with_gt.txt``; ``val`` and
``test`` read ``kitti_eigen_test_files_with_gt.txt``.

``kb_crop`` (default true): the reader crops image and depth to the KITTI benchmark frame,
352×1216, bottom rows and horizontally centred (``top = H - 352``, ``left = int((W - 1216) / 2)``),
for every split as the original does, and moves the principal point with it. The transform's own
KB crop is then a no-op. Intrinsics come from ``calib_cam_to_cam.txt`` (``P_rect_02`` /
``P_rect_03``) when present, else ``[focal, focal, NaN, NaN]`` from the split line.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from zoe_lightning.errors import UserError

from .base import NAN4, FileDepthDataset, Record
from .io import read_depth_png
from .layouts import package_split, parse_split_file, resolve_under

__all__ = ["KittiDataset", "KB_CROP_SIZE", "kb_crop_offsets", "read_kitti_calib"]

log = logging.getLogger(__name__)

KB_CROP_SIZE = (352, 1216)


def kb_crop_offsets(height: int, width: int) -> Tuple[int, int]:
    """(top, left) of the KB crop of an H×W frame; smaller frames raise UserError."""
    ch, cw = KB_CROP_SIZE
    if height < ch or width < cw:
        raise UserError(f"KB crop needs at least {ch}x{cw} pixels, got {height}x{width}")
    return height - ch, int((width - cw) / 2)


def read_kitti_calib(path: str) -> Dict[str, np.ndarray]:
    """``key: numbers`` lines of a KITTI calibration file; non-numeric entries are ignored."""
    values: Dict[str, np.ndarray] = {}
    with open(path, "r", encoding="utf-8") as fh:
        for line in fh:
            key, sep, rest = line.partition(":")
            if not sep:
                continue
            try:
                values[key.strip()] = np.array([float(x) for x in rest.split()], dtype=np.float64)
            except ValueError:
                continue
    return values


class KittiDataset(FileDepthDataset):
    name = "kitti"
    depth_kind = "metric"
    domain = "kitti"
    min_depth = 1e-3
    max_depth = 80.0
    eval_crop = "garg"
    sparse = True
    kb_crop = True
    split_files = {"train": "kitti_eigen_train_files_with_gt.txt", "test": "kitti_eigen_test_files_with_gt.txt"}

    def __init__(self, split: str = "train", root: Optional[str] = None, depth_root: Optional[str] = None,
                 kb_crop: bool = True, depth_divisor: float = 256.0, use_calib: bool = True,
                 **options: Any) -> None:
        self.depth_root_option = depth_root
        self.kb_crop = bool(kb_crop)
        self.use_calib = bool(use_calib)
        self.depth_divisor = float(depth_divisor)
        if self.depth_divisor <= 0:
            raise ValueError(f"{self.name}: depth_divisor must be positive, got {depth_divisor}")
        self._calib: Dict[str, Optional[Dict[str, np.ndarray]]] = {}
        super().__init__(split=split, root=root, **options)

    def list_records(self) -> List[Record]:
        image_root = self.require_root(self.root)
        depth_root = self.require_root(self.depth_root_option, "depth_root") if self.depth_root_option else image_root
        self.depth_root = depth_root
        default = package_split(self.split_files[self.default_split_map[self.split]])
        self.split_file_used = self.split_file or str(default)
        records = []
        for row in parse_split_file(self.split_file_used, min_columns=2, max_columns=5, float_columns=(2,)):
            if row.columns[1] == "None":
                self.stats["no_gt_skipped"] += 1
                continue
            focal = float(row.columns[2]) if len(row.columns) > 2 else None
            records.append(Record(resolve_under(image_root, row.columns[0]), resolve_under(depth_root, row.columns[1]),
                                  {"focal": focal, "line": row.line, "relative": row.columns[0]}))
        if self.stats["no_gt_skipped"]:
            log.info("%s (%s): skipped %d rows without ground truth ('None') in %s", self.name, self.split,
                     self.stats["no_gt_skipped"], self.split_file_used)
        return records

    def read_depth_map(self, record: Record, index: int):
        return read_depth_png(record.depth, self.depth_divisor, index), None

    def _calibration(self, record: Record) -> Optional[Dict[str, np.ndarray]]:
        rel = record.extra.get("relative", "")
        date = rel.lstrip("/").split("/")[0] if rel else ""
        if not date:
            return None
        if date not in self._calib:
            path = os.path.join(self.root, date, "calib_cam_to_cam.txt")
            self._calib[date] = read_kitti_calib(path) if self.use_calib and os.path.isfile(path) else None
        return self._calib[date]

    def intrinsics_of(self, record: Record, height: int, width: int) -> Sequence[float]:
        calib = self._calibration(record)
        camera = re.search(r"image_0(\d)", record.image)
        key = f"P_rect_0{camera.group(1)}" if camera else "P_rect_02"
        if calib is not None and key in calib and calib[key].size == 12:
            p = calib[key].reshape(3, 4)
            return float(p[0, 0]), float(p[1, 1]), float(p[0, 2]), float(p[1, 2])
        focal = record.extra.get("focal")
        if focal is None:
            return NAN4
        return float(focal), float(focal), float("nan"), float("nan")

    def adjust(self, sample: Dict[str, Any], record: Record) -> Dict[str, Any]:
        if not self.kb_crop:
            return sample
        height, width = sample["image"].shape[:2]
        if height < KB_CROP_SIZE[0] or width < KB_CROP_SIZE[1]:
            raise UserError(f"{self.name}: image {record.image} is {height}x{width}, smaller than the KB crop "
                            f"{KB_CROP_SIZE[0]}x{KB_CROP_SIZE[1]}; set kb_crop: false for such data")
        top, left = kb_crop_offsets(height, width)
        ch, cw = KB_CROP_SIZE
        window = (slice(top, top + ch), slice(left, left + cw))
        sample["image"] = np.ascontiguousarray(sample["image"][window])
        sample["depth"] = np.ascontiguousarray(sample["depth"][window])
        sample["valid"] = np.ascontiguousarray(sample["valid"][window])
        k = np.array(sample["intrinsics"], dtype=np.float32)
        k[2] -= left
        k[3] -= top
        sample["intrinsics"] = k
        return sample
