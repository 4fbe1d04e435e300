"""NYU Depth v2 in the BTS "sync" layout, with the split lists shipped in ``data_modules/splits``.

On disk (``root`` = the folder holding both parts; each part may also be given directly)::

    <root>/sync/<scene>/rgb_XXXXX.jpg            train images (JPEG 640×480)
    <root>/sync/<scene>/sync_depth_XXXXX.png     train depth (16-bit PNG, millimetres)
    <root>/official_splits/test/<category>/rgb_XXXXX.jpg, sync_depth_XXXXX.png   the 654 test frames

Split lines are ``<rgb path> <depth path> <focal>`` relative to the part's folder (one leading
'/' stripped). ``split`` ``train`` reads ``nyudepthv2_train_files_with_gt.txt``; ``val`` and
``test`` read ``nyudepthv2_test_files_with_gt.txt`` (the original validates on the test frames).

Options beyond the common ones: ``image_root`` / ``depth_root`` (the original's ``data_path`` /
``gt_path``: folders the split's rgb / depth columns are relative to; default: the split's part
of ``root``), ``depth_divisor`` (1000).
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence

from .base import FileDepthDataset, Record
from .io import read_depth_png
from .layouts import package_split, parse_split_file, resolve_under

__all__ = ["NYUDataset", "NYU_INTRINSICS"]

# RGB camera of the NYU Depth v2 toolbox (camera_params.m): fx, fy, cx, cy in pixels, 640×480.
NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)


class NYUDataset(FileDepthDataset):
    name = "nyu"
    depth_kind = "metric"
    domain = "nyu"
    min_depth = 1e-3
    max_depth = 10.0
    eval_crop = "eigen"
    sparse = False
    kb_crop = False
    split_files = {"train": "nyudepthv2_train_files_with_gt.txt", "test": "nyudepthv2_test_files_with_gt.txt"}
    parts = {"train": "sync", "test": os.path.join("official_splits", "test")}

    def __init__(self, split: str = "train", root: Optional[str] = None, image_root: Optional[str] = None,
                 depth_root: Optional[str] = None, depth_divisor: float = 1000.0, **options: Any) -> None:
        self.image_root_option, self.depth_root_option = image_root, depth_root
        self.depth_divisor = float(depth_divisor)
        if self.depth_divisor <= 0:
            raise ValueError(f"{self.name}: depth_divisor must be positive, got {depth_divisor}")
        super().__init__(split=split, root=root, **options)

    def _part_root(self) -> str:
        part = self.parts[self.default_split_map[self.split]]
        if self.image_root_option is not None and self.depth_root_option is not None:
            return ""
        root = self.require_root(self.root)
        candidate = os.path.join(root, part)
        return candidate if os.path.isdir(candidate) else root

    def list_records(self) -> List[Record]:
        base = self._part_root()
        image_root = self.require_root(self.image_root_option, "image_root") if self.image_root_option else base
        depth_root = self.require_root(self.depth_root_option, "depth_root") if self.depth_root_option else base
        self.image_root, self.depth_root = image_root, depth_root
        default = package_split(self.split_files[self.default_split_map[self.split]])
        self.split_file_used = self.split_file or str(default)
        records = []
        for row in parse_split_file(self.split_file_used, min_columns=2, max_columns=5, float_columns=(2,)):
            focal = float(row.columns[2]) if len(row.columns) > 2 else None
            records.append(Record(resolve_under(image_root, row.columns[0]), resolve_under(depth_root, row.columns[1]),
                                  {"focal": focal, "line": row.line}))
        return records

    def read_depth_map(self, record: Record, index: int):
        return read_depth_png(record.depth, self.depth_divisor, index), None

    def intrinsics_of(self, record: Record, height: int, width: int) -> Sequence[float]:
        fx, fy, cx, cy = NYU_INTRINSICS
        if (height, width) != (480, 640):  # a resized copy: scale the 640×480 camera
            sx, sy = width / 640, height / 480
            fx, fy, cx, cy = fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
        return fx, fy, cx, cy
