"""Dataset registry: ``build_dataset(name, split, **options)`` returns a torch ``Dataset``.

``synthetic_style<k>`` (any integer ``k``) is the relative-depth synthetic set in style ``k``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Dict

from torch.utils.data import Dataset

from zoe_lightning.errors import UserError

from .base import FileDepthDataset
from .folder import FolderDataset
from .kitti import KittiDataset
from .nyu import NYUDataset
from .synthetic import SyntheticDepthDataset

__all__ = ["DATASETS", "READER_CLASSES", "build_dataset", "SyntheticDepthDataset", "FileDepthDataset", "NYUDataset", "KittiDataset",
           "FolderDataset"]


def _synthetic(fixed: Dict[str, Any], defaults: Dict[str, Any]) -> Callable[..., Dataset]:
    """A builder with options that callers may not change (``fixed``) and ones they may."""

    def build(split: str, **options: Any) -> Dataset:
        clash = sorted(set(fixed) & set(options))
        if clash:
            raise ValueError(f"option(s) {clash} are fixed for this dataset ({fixed})")
        merged = {**defaults, **options, **fixed}
        if "dataset_name" not in merged and merged.get("style"):
            merged["dataset_name"] = f"synthetic_relative_style{int(merged['style'])}"
        return SyntheticDepthDataset(split=split, **merged)

    return build


DATASETS: Dict[str, Callable[..., Dataset]] = {
    "synthetic_indoor": _synthetic({"domain": "nyu", "depth_kind": "metric"}, {}),
    "synthetic_outdoor": _synthetic({"domain": "kitti", "depth_kind": "metric"}, {}),
    "synthetic_relative": _synthetic({"depth_kind": "disparity"}, {"domain": "nyu"}),
}


def _reader(cls: type, **defaults: Any) -> Callable[..., Dataset]:
    """A builder for a file reader class; an unknown option raises one clear line."""

    def build(split: str, **options: Any) -> Dataset:
        try:
            return cls(split=split, **{**defaults, **options})
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc):
                bad = str(exc).split("argument")[-1].strip()
                raise UserError(f"dataset {defaults.get('dataset_name', cls.name)!r}: unknown option {bad}") from None
            raise

    return build


# registry name -> reader class (for class attributes such as ``domain`` without building a dataset)
from .relative_sets import RELATIVE_READERS  # noqa: E402
from .zero_shot import ZERO_SHOT_READERS  # noqa: E402

READER_CLASSES: Dict[str, type] = {
    "nyu": NYUDataset, "kitti": KittiDataset, "folder": FolderDataset,
    "nyu_relative": NYUDataset, "kitti_relative": KittiDataset,
    **ZERO_SHOT_READERS, **RELATIVE_READERS,
}
_ALIASES = {"nyu_relative", "kitti_relative"}  # the M12 copies of the metric sets, under their own name
DATASETS.update({
    name: _reader(cls, dataset_name=name) if name in _ALIASES else _reader(cls)
    for name, cls in READER_CLASSES.items()
})


def build_dataset(name: str, split: str, **options: Any) -> Dataset:
    """Build the dataset registered as ``name`` for ``split``; unknown names raise ValueError."""
    if name in DATASETS:
        return DATASETS[name](split, **options)
    styled = re.fullmatch(r"synthetic_style(\d+)", name)
    if styled:
        if "style" in options:
            raise ValueError(f"{name!r} fixes the style; drop the 'style' option")
        options.setdefault("dataset_name", name)
        return DATASETS["synthetic_relative"](split, style=int(styled.group(1)), **options)
    known = sorted(DATASETS) + ["synthetic_style<k>"]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint} (known: {', '.join(known)})")
