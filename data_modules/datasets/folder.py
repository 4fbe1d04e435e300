"""A generic reader configured entirely from YAML: any folder of images with depth maps.

Pairs come from ONE of:

* ``split_file``: lines ``<image> <depth> [focal]`` relative to ``image_root`` / ``depth_root``
  (both default to ``root``); a depth of ``None`` means no ground truth (the row is skipped);
* ``image_glob`` + ``depth_glob`` (relative to ``root``, ``**`` recursive): an image and a depth
  map pair up when their *keys* match. A key is the path below the glob's fixed leading folder
  (the part before the first wildcard), without extension and without ``image_suffix`` /
  ``depth_suffix`` at the end of the name (e.g. ``_rgb`` / ``_depth``);
* ``image_glob`` + ``depth_replace``: the depth path is the image path with each
  ``[old, new]`` string replacement applied in order.

Depth files are decoded by extension (16-bit PNG/TIFF, NPY/NPZ, PFM, HDF5, EXR) and divided by
``depth_divisor``; ``depth_key`` picks the array inside NPZ/HDF5 files. ``invalid_value`` marks an
extra invalid code (0 and non-positive values are always invalid). ``crop``: ``kb`` (the KITTI
benchmark crop) or ``[top, left, height, width]``, applied by the reader to image and depth.
``intrinsics``: ``[fx, fy, cx, cy]`` of the stored images, when known.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from zoe_lightning.errors import UserError

from .base import NAN4, FileDepthDataset, Record
from .io import read_depth
from .layouts import parse_split_file, resolve_under
from .kitti import KB_CROP_SIZE, kb_crop_offsets

__all__ = ["FolderDataset"]


def _glob_base(pattern: str) -> str:
    """The leading folder of ``pattern`` that holds no wildcard."""
    parts = pattern.replace("\\", "/").split("/")
    fixed = []
    for part in parts[:-1]:
        if re.search(r"[*?\[]", part):
            break
        fixed.append(part)
    return "/".join(fixed)


class FolderDataset(FileDepthDataset):
    name = "folder"
    depth_kind = "metric"
    domain = "nyu"
    min_depth = 1e-3
    max_depth = 10.0
    eval_crop = None
    sparse = False
    kb_crop = False
    default_split_map = {"train": "train", "val": "val", "test": "test"}

    def __init__(self, split: str = "train", root: Optional[str] = None, image_glob: Optional[str] = None,
                 depth_glob: Optional[str] = None, depth_replace: Optional[Sequence[Sequence[str]]] = None,
                 image_suffix: str = "", depth_suffix: str = "", image_root: Optional[str] = None,
                 depth_root: Optional[str] = None, depth_divisor: float = 1.0, depth_key: Optional[str] = None,
                 crop: Any = None, intrinsics: Optional[Sequence[float]] = None, sparse: bool = False,
                 **options: Any) -> None:
        self.image_glob, self.depth_glob = image_glob, depth_glob
        self.depth_replace = [tuple(pair) for pair in (depth_replace or [])]
        for pair in self.depth_replace:
            if len(pair) != 2:
                raise UserError(f"folder: depth_replace entries must be [old, new] pairs, got {list(pair)}")
        self.image_suffix, self.depth_suffix = str(image_suffix or ""), str(depth_suffix or "")
        self.image_root_option, self.depth_root_option = image_root, depth_root
        self.depth_divisor, self.depth_key = float(depth_divisor), depth_key
        if self.depth_divisor <= 0:
            raise UserError(f"folder: depth_divisor must be positive, got {depth_divisor}")
        self.sparse = bool(sparse)
        self.crop = self._parse_crop(crop)
        self.kb_crop = False  # the reader applies any crop itself
        if intrinsics is not None and len(list(intrinsics)) != 4:
            raise UserError(f"folder: intrinsics must be [fx, fy, cx, cy], got {list(intrinsics)}")
        self.fixed_intrinsics = None if intrinsics is None else tuple(float(v) for v in intrinsics)
        super().__init__(split=split, root=root, **options)

    @staticmethod
    def _parse_crop(crop):
        if crop is None or crop is False:
            return None
        if isinstance(crop, str):
            if crop.lower() == "kb":
                return "kb"
            raise UserError(f"folder: crop must be 'kb' or [top, left, height, width], got {crop!r}")
        box = [int(v) for v in crop]
        if len(box) != 4 or min(box) < 0 or box[2] == 0 or box[3] == 0:
            raise UserError(f"folder: crop must be 'kb' or [top, left, height, width] (non-negative), got {list(crop)}")
        return tuple(box)

    # ------------------------------------------------------------------ pairing
    def list_records(self) -> List[Record]:
        root = self.require_root(self.root)
        if self.split_file is not None:
            if self.image_glob or self.depth_glob:
                raise UserError("folder: give either split_file or image_glob/depth_glob, not both")
            return self._from_split_file(root)
        if not self.image_glob:
            raise UserError("folder: set split_file, or image_glob with depth_glob or depth_replace")
        if bool(self.depth_glob) == bool(self.depth_replace):
            raise UserError("folder: with image_glob, set exactly one of depth_glob and depth_replace")
        images = sorted(glob.glob(os.path.join(glob.escape(root), self.image_glob), recursive=True))
        images = [p for p in images if os.path.isfile(p)]
        if not images:
            raise UserError(f"folder: image_glob {self.image_glob!r} matches no file under {root}")
        if self.depth_replace:
            return [Record(path, self._replace(path), {}) for path in images]
        depths = sorted(glob.glob(os.path.join(glob.escape(root), self.depth_glob), recursive=True))
        depths = [p for p in depths if os.path.isfile(p)]
        by_key: Dict[str, str] = {}
        depth_base = os.path.join(root, _glob_base(self.depth_glob))
        for path in depths:
            key = self._key(path, depth_base, self.depth_suffix)
            if key in by_key:
                raise UserError(f"folder: depth files {by_key[key]} and {path} share the key {key!r}; "
                                "set depth_suffix or narrow depth_glob")
            by_key[key] = path
        image_base = os.path.join(root, _glob_base(self.image_glob))
        records = []
        for path in images:
            key = self._key(path, image_base, self.image_suffix)
            # an image without a matching depth file counts as a missing file (error or skip_missing)
            records.append(Record(path, by_key.get(key, os.path.join(depth_base, key + ".<depth>")), {"key": key}))
        return records

    def _from_split_file(self, root: str) -> List[Record]:
        image_root = self.require_root(self.image_root_option, "image_root") if self.image_root_option else root
        depth_root = self.require_root(self.depth_root_option, "depth_root") if self.depth_root_option else root
        self.split_file_used = self.split_file
        records = []
        for row in parse_split_file(self.split_file, min_columns=2, max_columns=3, float_columns=(2,)):
            if row.columns[1] == "None":
                self.stats["no_gt_skipped"] += 1
                continue
            focal = float(row.columns[2]) if len(row.columns) > 2 else None
            records.append(Record(resolve_under(image_root, row.columns[0]), resolve_under(depth_root, row.columns[1]),
                                  {"focal": focal, "line": row.line}))
        return records

    @staticmethod
    def _key(path: str, base: str, suffix: str) -> str:
        rel = os.path.relpath(path, base).replace("\\", "/")
        stem = os.path.splitext(rel)[0]
        if suffix and stem.endswith(suffix):
            stem = stem[: -len(suffix)]
        return stem

    def _replace(self, path: str) -> str:
        for old, new in self.depth_replace:
            path = path.replace(old, new)
        return path

    # ------------------------------------------------------------------ samples
    def read_depth_map(self, record: Record, index: int):
        return read_depth(record.depth, self.depth_divisor, self.depth_key, index), None

    def intrinsics_of(self, record: Record, height: int, width: int) -> Sequence[float]:
        if self.fixed_intrinsics is not None:
            return self.fixed_intrinsics
        focal = record.extra.get("focal")
        return NAN4 if focal is None else (focal, focal, float("nan"), float("nan"))

    def adjust(self, sample: Dict[str, Any], record: Record) -> Dict[str, Any]:
        if self.crop is None:
            return sample
        height, width = sample["image"].shape[:2]
        if self.crop == "kb":
            if height < KB_CROP_SIZE[0] or width < KB_CROP_SIZE[1]:
                raise UserError(f"folder: image {record.image} is {height}x{width}, smaller than the KB crop "
                                f"{KB_CROP_SIZE[0]}x{KB_CROP_SIZE[1]}")
            (top, left), (ch, cw) = kb_crop_offsets(height, width), KB_CROP_SIZE
        else:
            top, left, ch, cw = self.crop
            if top + ch > height or left + cw > width:
                raise UserError(f"folder: crop {list(self.crop)} (top, left, height, width) does not fit image "
                                f"{record.image} of {height}x{width}")
        window = (slice(top, top + ch), slice(left, left + cw))
        for key in ("image", "depth", "valid"):
            sample[key] = np.ascontiguousarray(sample[key][window])
        k = np.array(sample["intrinsics"], dtype=np.float32)
        k[2] -= left
        k[3] -= top
        sample["intrinsics"] = k
        return sample
