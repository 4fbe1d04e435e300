"""File layouts: which image goes with which depth file.

Split files (:func:`parse_split_file`, the lists shipped in ``data_modules/splits``) and path rules
(:func:`resolve_under`, :func:`replace_dir`, :func:`swap_ext`), and :class:`LayoutReader`, the base
of the readers whose depth file is found from the image path by a rule (the zero-shot and the
relative-depth sets).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from zoe_lightning.errors import UserError

from .base import NAN4, FileDepthDataset, Record
from .io import read_depth, read_depth_png, read_npy

__all__ = [
    "SplitRow",
    "parse_split_file",
    "package_split",
    "resolve_under",
    "replace_dir",
    "swap_ext",
    "WHOLE_SET",
    "LayoutReader",
]

log = logging.getLogger(__name__)

SPLIT_DIR = Path(__file__).resolve().parent.parent / "splits"


@dataclass(frozen=True)
class SplitRow:
    """One non-blank, non-comment line of a split file: its 1-based line number and columns."""

    file: str
    line: int
    columns: Tuple[str, ...]

    def fail(self, why: str) -> UserError:
        return UserError(f"{self.file}:{self.line}: {why}")


def parse_split_file(path, min_columns: int = 1, max_columns: Optional[int] = None,
                     float_columns: Sequence[int] = ()) -> List[SplitRow]:
    """Whitespace-separated rows of ``path``; blank lines and lines starting with ``#`` are skipped.

    A row with fewer than ``min_columns`` or more than ``max_columns`` columns, or whose column
    ``k`` in ``float_columns`` (0-based) is not a number, raises UserError naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"split file {path} is not UTF-8 text ({exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        row = SplitRow(str(path), number, tuple(stripped.split()))
        n = len(row.columns)
        if n < min_columns or (max_columns is not None and n > max_columns):
            want = f"{min_columns}" if max_columns == min_columns else \
                f"{min_columns}..{max_columns if max_columns is not None else 'any'}"
            raise row.fail(f"malformed split line {stripped!r}: expected {want} whitespace-separated "
                           f"columns, found {n}")
        for k in float_columns:
            if k < n:
                try:
                    float(row.columns[k])
                except ValueError:
                    raise row.fail(f"malformed split line {stripped!r}: column {k + 1} "
                                   f"({row.columns[k]!r}) is not a number") from None
        rows.append(row)
    return rows


def package_split(filename: str) -> Path:
    """A split list shipped with the package (``data_modules/splits/<filename>``)."""
    return SPLIT_DIR / filename


def resolve_under(root, relative: str) -> str:
    """``relative`` joined to ``root`` with one leading '/' stripped (the original's rule)."""
    rel = relative[1:] if relative.startswith("/") else relative
    return os.path.join(str(root), rel)


def replace_dir(path: str, old: str, new: str) -> str:
    """Replace the last path component equal to ``old`` by ``new``."""
    parts = path.split(os.sep)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == old:
            parts[k] = new
            return os.sep.join(parts)
    raise UserError(f"path {path} has no '{old}' folder")


def swap_ext(path: str, suffix_old: str, suffix_new: str) -> str:
    if not path.endswith(suffix_old):
        raise UserError(f"file {path} does not end with {suffix_old!r}")
    return path[: -len(suffix_old)] + suffix_new


WHOLE_SET = {"train": "all", "val": "all", "test": "all"}


class LayoutReader(FileDepthDataset):
    """A reader for "image file -> depth file found by a path rule" layouts.

    Subclasses set ``image_patterns`` (globs under ``root``) and implement :meth:`depth_path`
    (and :meth:`mask_paths` for per-pixel validity masks stored next to the depth). A
    ``split_file`` (lines ``<image> [[<other>] <depth>]`` relative to ``root``: first column the
    image, last the depth; ``#`` comments allowed) replaces the glob. ``depth_divisor`` (stored
    value / divisor = depth in the dataset's unit) and ``depth_key`` (HDF5/NPZ array name) can be
    overridden per dataset entry.
    """

    image_patterns: Tuple[str, ...] = ()
    depth_divisor = 1.0
    depth_key: Optional[str] = None
    default_split_map = WHOLE_SET
    intrinsics: Sequence[float] = NAN4  # of the native frame, when the dataset documents them

    def __init__(self, split: str = "test", depth_divisor: Optional[float] = None, depth_key: Optional[str] = None,
                 **options: Any) -> None:
        if depth_divisor is not None:
            if not float(depth_divisor) > 0:
                raise UserError(f"{self.name}: depth_divisor must be positive, got {depth_divisor}")
            self.depth_divisor = float(depth_divisor)
        if depth_key is not None:
            self.depth_key = str(depth_key)
        super().__init__(split=split, **options)

    # ---------------------------------------------------------------- layout rules
    def depth_path(self, image: str) -> str:
        raise NotImplementedError

    def mask_paths(self, image: str) -> List[str]:
        """Files whose non-zero pixels are valid (all must hold); default none."""
        return []

    def select(self, images: List[str]) -> List[str]:
        """The images of ``self.split`` among all found (sorted); default: all of them."""
        return images

    # ---------------------------------------------------------------- records
    def find_images(self, root: str) -> List[str]:
        found = set()
        for pattern in self.image_patterns:
            found.update(glob.glob(os.path.join(glob.escape(root), pattern), recursive=True))
        if not found:
            raise UserError(f"{self.name}: no images matching {' or '.join(self.image_patterns)} under {root}")
        return sorted(found)

    def list_records(self) -> List[Record]:
        root = self.require_root(self.root)
        if self.split_file:
            self.split_file_used = self.split_file
            records = []
            for row in parse_split_file(self.split_file, 1, 3):
                image = resolve_under(root, row.columns[0])
                depth = resolve_under(root, row.columns[-1]) if len(row.columns) > 1 else self.depth_path(image)
                records.append(Record(image, depth, {"masks": self.mask_paths(image)}))
        else:
            records = [Record(im, self.depth_path(im), {"masks": self.mask_paths(im)})
                       for im in self.select(self.find_images(root))]
        return self._check_masks(records)

    def _check_masks(self, records: List[Record]) -> List[Record]:
        """Mask files are part of a sample: missing ones fail (or are skipped) like images."""
        missing = [m for r in records for m in r.extra.get("masks", ()) if not os.path.exists(m)]
        if not missing:
            return records
        kept = [r for r in records if all(os.path.exists(m) for m in r.extra.get("masks", ()))]
        if not self.skip_missing:
            raise UserError(f"{self.name} ({self.split}): {len(missing)} mask file(s) are missing "
                            f"({len(records) - len(kept)} of {len(records)} samples), first: "
                            f"{', '.join(missing[:3])}; fix the root or set skip_missing: true")
        self.stats["missing_skipped"] += len(records) - len(kept)
        log.warning("%s (%s): skipped %d samples with missing mask files, first: %s",
                    self.name, self.split, len(records) - len(kept), missing[0])
        return kept

    # ---------------------------------------------------------------- decoding
    def decode_depth(self, path: str, index: int) -> np.ndarray:
        return read_depth(path, self.depth_divisor, self.depth_key, index)

    def read_depth_map(self, record: Record, index: int):
        depth = self.decode_depth(record.depth, index)
        valid = None
        for mask in record.extra.get("masks", ()):
            m = (read_npy(mask, index=index) if mask.endswith((".npy", ".npz"))
                 else read_depth_png(mask, index=index)) > 0
            if m.shape != depth.shape:
                raise UserError(f"{self.name}: mask {mask} has shape {m.shape} but depth {record.depth} "
                                f"is {depth.shape} (sample {index})")
            valid = m if valid is None else valid & m
        return depth, valid

    def intrinsics_of(self, record: Record, height: int, width: int) -> Sequence[float]:
        return self.intrinsics
