"""The sample contract and the base of the file-based dataset readers.

A reader subclasses :class:`FileDepthDataset` and implements :meth:`FileDepthDataset.list_records`
(which image goes with which depth file; see ``layouts.py``) and, when its depth is not a plain
file read by :func:`~.io.read_depth` with a divisor, :meth:`FileDepthDataset.read_depth_map`. The
base class does the rest: the missing-file check at construction, image decoding with a clear
error for corrupt files (``io.py``), the size check between image and depth, the validity rules
(non-finite pixels masked and counted, the depth range, an optional invalid value), the optional
transform and the conversion to the project's sample dict.

``load_raw(i)`` returns the numpy sample (``image`` uint8 H×W×3 RGB, ``depth`` float32 H×W in the
dataset's unit with 0 where invalid, ``valid`` bool H×W, ``intrinsics`` float32 ``[fx, fy, cx, cy]``
(NaN where unknown) and the scalar keys); ``__getitem__`` applies the transform and returns
tensors (``image`` float32 3×H×W in [0, 1], ``depth`` float32 1×H×W, ``valid`` bool 1×H×W).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from zoe_lightning.errors import UserError

from .io import read_depth, read_image

__all__ = [
    "DEPTH_KINDS",
    "DOMAINS",
    "EVAL_CROPS",
    "NAN4",
    "FileDepthDataset",
    "Record",
    "to_tensors",
]

log = logging.getLogger(__name__)

DEPTH_KINDS = ("metric", "disparity", "relative")
DOMAINS = ("nyu", "kitti")
EVAL_CROPS = (None, "eigen", "garg", "eigen_kitti")
NAN4 = (float("nan"),) * 4


@dataclass
class Record:
    """One sample on disk: the image, its depth file (None = no ground truth) and extras
    (``focal``, per-reader fields)."""

    image: str
    depth: Optional[str]
    extra: Dict[str, Any] = field(default_factory=dict)


class FileDepthDataset(Dataset):
    """Base of every file reader; see the module docstring.

    Subclasses set the class attributes and implement :meth:`list_records`. Common options:
    ``root`` (dataset folder), ``split``, ``transform`` (callable on the numpy sample),
    ``skip_missing`` (drop listed samples whose files are missing, with a logged count, instead
    of failing), ``split_file`` (a list replacing the default), ``min_depth``/``max_depth``
    (validity and evaluation range), ``depth_kind``/``domain``/``dataset_name`` overrides and
    ``check_files`` (the existence check at construction, default on).

    ``stats`` counts, in this process: ``missing_skipped``, ``no_gt_skipped``, ``nonfinite_pixels``
    (NaN/inf depth pixels masked), ``empty_samples`` (samples returned with no valid pixel). Each
    DataLoader worker holds its own copy.
    """

    name = "file"
    depth_kind = "metric"
    domain = "nyu"
    min_depth = 1e-3
    max_depth = 10.0
    eval_crop: Optional[str] = None
    sparse = False
    kb_crop = False
    default_split_map: Dict[str, str] = {"train": "train", "val": "test", "test": "test"}

    def __init__(self, split: str = "train", root: Optional[str] = None, transform: Optional[Callable] = None,
                 skip_missing: bool = False, split_file: Optional[str] = None, min_depth: Optional[float] = None,
                 max_depth: Optional[float] = None, depth_kind: Optional[str] = None, domain: Optional[str] = None,
                 dataset_name: Optional[str] = None, eval_crop: Any = "default", check_files: bool = True,
                 invalid_value: Optional[float] = None) -> None:
        if split not in self.default_split_map:
            raise UserError(f"{self.name}: unknown split {split!r}; expected one of {sorted(self.default_split_map)}")
        self.split = split
        self.root = None if root is None else os.path.expanduser(str(root))
        self.skip_missing = bool(skip_missing)
        self.split_file = None if split_file is None else os.path.expanduser(str(split_file))
        if dataset_name is not None:
            self.name = str(dataset_name)
        if depth_kind is not None:
            if depth_kind not in DEPTH_KINDS:
                raise UserError(f"{self.name}: depth_kind {depth_kind!r} is not one of {list(DEPTH_KINDS)}")
            self.depth_kind = depth_kind
        if domain is not None:
            self.domain = str(domain)
        if min_depth is not None:
            self.min_depth = float(min_depth)
        if max_depth is not None:
            self.max_depth = float(max_depth)
        if not self.min_depth < self.max_depth:
            raise UserError(f"{self.name}: min_depth {self.min_depth} must be below max_depth {self.max_depth}")
        if eval_crop != "default":
            if eval_crop not in EVAL_CROPS:
                raise UserError(f"{self.name}: eval_crop {eval_crop!r} is not one of {list(EVAL_CROPS)}")
            self.eval_crop = eval_crop
        self.invalid_value = None if invalid_value is None else float(invalid_value)
        self.stats: Dict[str, int] = {"missing_skipped": 0, "no_gt_skipped": 0, "nonfinite_pixels": 0,
                                      "empty_samples": 0}
        self.transform = self._make_transform(transform)
        records = self.list_records()
        self.records: List[Record] = self._check_files(records) if check_files else list(records)

    # -------------------------------------------------------------- for subclasses
    def list_records(self) -> List[Record]:
        """The samples of ``self.split`` in order (files need not exist yet)."""
        raise NotImplementedError

    def read_depth_map(self, record: Record, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Depth in the dataset's unit (float32 H×W) and an optional extra validity mask."""
        return read_depth(record.depth, index=index), None

    def adjust(self, sample: Dict[str, Any], record: Record) -> Dict[str, Any]:
        """Hook after decoding and masking (e.g. a crop); default: unchanged."""
        return sample

    def intrinsics_of(self, record: Record, height: int, width: int) -> Sequence[float]:
        """``[fx, fy, cx, cy]`` of the decoded image (NaN where unknown)."""
        return NAN4

    # -------------------------------------------------------------- helpers
    def require_root(self, root: Optional[str], option: str = "root") -> str:
        if root is None:
            raise UserError(f"{self.name}: option '{option}' is required (the dataset folder)")
        if not os.path.isdir(root):
            raise UserError(f"{self.name}: {option} {root!r} is not a directory")
        return root

    def _make_transform(self, transform):
        if transform is None or callable(transform):
            return transform
        if isinstance(transform, str):
            kind, opts = transform, {}
        elif isinstance(transform, dict) or hasattr(transform, "items"):
            opts = dict(transform)
            kind = opts.pop("kind", "train" if self.split == "train" else "eval")
        else:
            raise UserError(f"{self.name}: transform must be a callable, a kind name or a mapping, "
                            f"got {type(transform).__name__}")
        from ..transforms import build_transform

        return build_transform(kind, self, **opts)

    def _check_files(self, records: List[Record]) -> List[Record]:
        missing, kept = [], []
        for record in records:
            absent = [p for p in (record.image, record.depth) if p is not None and not os.path.exists(p)]
            if absent:
                missing.extend(absent)
            else:
                kept.append(record)
        if missing:
            dropped = len(records) - len(kept)
            where = f" listed in {self.split_file_used}" if getattr(self, "split_file_used", None) else ""
            if not self.skip_missing:
                first = ", ".join(missing[:3])
                raise UserError(f"{self.name} ({self.split}): {len(missing)} file(s){where} are missing "
                                f"({dropped} of {len(records)} samples), first: {first}; "
                                "fix the root/split or set skip_missing: true")
            self.stats["missing_skipped"] += dropped
            log.warning("%s (%s): skipped %d of %d samples with missing files (%d files)%s, first: %s",
                        self.name, self.split, dropped, len(records), len(missing), where, missing[0])
        if not kept:
            raise UserError(f"{self.name} ({self.split}): no samples found"
                            + (f" (root {self.root})" if self.root else ""))
        return kept

    # -------------------------------------------------------------- sample
    def __len__(self) -> int:
        return len(self.records)

    def valid_mask(self, depth: np.ndarray) -> np.ndarray:
        """The dataset's validity rule on finite depth: metric ``min < d < max`` (strict, as the
        original); disparity/relative ``d > 0``; never the stored ``invalid_value`` (compared before
        the reader's ``depth_divisor``, bit-exactly as the decoders divide)."""
        if self.depth_kind == "metric":
            valid = (depth > self.min_depth) & (depth < self.max_depth)
        else:
            valid = depth > 0
        if self.invalid_value is not None:
            divisor = np.float32(getattr(self, "depth_divisor", 1.0) or 1.0)
            code = np.float32(self.invalid_value) if divisor == 1 else np.float32(self.invalid_value) / divisor
            valid &= depth != code
        return valid

    def load_raw(self, index: int) -> Dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples of {self.name}")
        index %= len(self)
        record = self.records[index]
        image = read_image(record.image, index)
        depth, extra_valid = self.read_depth_map(record, index)
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != image.shape[:2]:
            raise UserError(f"{self.name}: depth {record.depth} has shape {tuple(depth.shape)} but image "
                            f"{record.image} is {image.shape[0]}x{image.shape[1]} (sample {index})")
        finite = np.isfinite(depth)
        bad = int(finite.size - np.count_nonzero(finite))
        if bad:
            if self.stats["nonfinite_pixels"] == 0:
                log.warning("%s: %d NaN/inf depth pixels in %s (sample %d) masked as invalid; counted in "
                            "stats['nonfinite_pixels']", self.name, bad, record.depth, index)
            self.stats["nonfinite_pixels"] += bad
            depth = np.where(finite, depth, np.float32(0))
        valid = self.valid_mask(depth) & finite
        if extra_valid is not None:
            valid &= np.asarray(extra_valid, dtype=bool)
        depth = np.where(valid, depth, np.float32(0)).astype(np.float32, copy=False)
        sample = {
            "image": image,
            "depth": depth,
            "valid": valid,
            "depth_kind": self.depth_kind,
            "domain": self.domain,
            "dataset": self.name,
            "intrinsics": np.asarray(self.intrinsics_of(record, *image.shape[:2]), dtype=np.float32),
            "min_depth": float(self.min_depth),
            "max_depth": float(self.max_depth),
            "path": record.image,
        }
        return self.adjust(sample, record)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.load_raw(index)
        if self.transform is not None:
            sample = self.transform(sample)
        sample = to_tensors(sample)
        if not bool(sample["valid"].any()):
            self.stats["empty_samples"] += 1
            log.debug("%s: sample %d has no valid depth pixel", self.name, index)
        return sample


def to_tensors(sample: Dict[str, Any]) -> Dict[str, Any]:
    """numpy sample (HWC image uint8 or float in [0, 1]) -> the project's tensor sample dict."""
    out = dict(sample)
    image = np.asarray(sample["image"])
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255)
    out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    out["depth"] = torch.from_numpy(np.ascontiguousarray(sample["depth"], dtype=np.float32)[None])
    out["valid"] = torch.from_numpy(np.ascontiguousarray(sample["valid"], dtype=bool)[None])
    k = sample.get("intrinsics")
    out["intrinsics"] = torch.as_tensor(np.asarray(NAN4 if k is None else k, dtype=np.float32))
    out["min_depth"], out["max_depth"] = float(sample["min_depth"]), float(sample["max_depth"])
    return out
