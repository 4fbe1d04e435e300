"""Data sanity before the first step: every training and validation set reports its size and the
share of valid depth pixels in a few probed samples; a set without any valid pixel, or a training
set smaller than one batch, stops the run with one ``UserError`` line naming it."""

from __future__ import annotations

import random
from typing import List, Sequence

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info

from zoe_lightning.errors import UserError

__all__ = ["DataProbe", "probe_indices"]


def probe_indices(length: int, count: int) -> List[int]:
    """Up to ``count`` indices spread evenly over ``range(length)``, first and last included."""
    if length <= 0:
        return []
    if count <= 1 or length == 1:
        return [0]
    return sorted({round(i * (length - 1) / (count - 1)) for i in range(min(count, length))})


def _set_name(wrapped, key: str) -> str:
    ds = getattr(wrapped, "dataset", wrapped)
    name = getattr(ds, "dataset_name", None) or getattr(ds, "name", None) or type(ds).__name__
    return f"{key} ({name})"


def valid_share(dataset, indices: Sequence[int]) -> float:
    """Fraction of valid depth pixels over the samples ``indices`` of ``dataset``."""
    valid = total = 0
    for i in indices:
        mask = dataset[i]["valid"]
        valid += int(mask.sum())
        total += mask.numel()
    return valid / total if total else 0.0


class DataProbe(Callback):
    """``samples``: samples probed per set (a set that shows no valid pixel is probed 4x wider)."""

    def __init__(self, samples: int = 4) -> None:
        self.samples = int(samples)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "train_sets"):
            return
        batch = max(1, int(dm.cfg.batch_size) // max(1, int(trainer.world_size)))
        # a small set inside a mixed batch is fine; alone, or batched per dataset, it never fills one
        alone = len(dm.train_sets) == 1 or dm.batching() == "per_dataset"
        # the probe must not shift the random streams the run draws from afterwards
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                for split, sets in (("train", dm.train_sets), ("val", dm.val_sets)):
                    for position, dataset in enumerate(sets):
                        self._check(dataset, f"data.{split}.{position}", split, batch if alone else 1)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

    def _check(self, dataset, key: str, split: str, batch: int) -> None:
        name, n = _set_name(dataset, key), len(dataset)
        if n == 0:
            raise UserError(f"{name}: the set has no samples")
        if split == "train" and n < batch:
            raise UserError(f"{name}: {n} sample(s), fewer than one batch ({batch} per device, data.batch_size)")
        indices = probe_indices(n, self.samples)
        share = valid_share(dataset, indices)
        if share == 0.0 and n > len(indices):
            indices = probe_indices(n, 4 * self.samples)
            share = valid_share(dataset, indices)
        if share == 0.0:
            raise UserError(f"{name}: no valid depth pixel in the {len(indices)} probed sample(s) "
                            f"(check the depth files, depth_divisor and min/max depth)")
        rank_zero_info(f"data: {split} set {name}: {n} samples, {100 * share:.1f}% valid depth pixels "
                       f"(probe of {len(indices)})")
