"""Plot the metric bin centres a bin-based head predicts at the image centre."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from lightning.pytorch import Callback

from zoe_lightning.evaluation import viz

from .depth_panels import _active, _caption, domain_key, log_images, sample_domain, sample_item

__all__ = ["BinCentersCallback"]


class BinCentersCallback(Callback):
    """Once per validation epoch and domain, plot sorted bin centres vs. bin index and a GT histogram.

    For each domain, the first validation sample of that domain whose outputs carry
    ``bin_centers`` (``(B, N, h, w)`` or ``(B, N)``) is used: the centres at the centre pixel
    ``(h // 2, w // 2)`` are sorted and plotted (with the GT and predicted depth at the centre of
    the GT map as reference lines) next to a histogram of that sample's valid GT depths.  Logged as
    ``val/bin_centers/<domain>`` to every WandbLogger and to
    ``<log dir>/media/val_bin_centers_<domain>_step<N>.png``.  Heads without bins are ignored.
    """

    KEY = "val/bin_centers"

    def __init__(self, log_sanity_check: bool = False) -> None:
        super().__init__()
        self.log_sanity_check = log_sanity_check
        self._done: set[str] = set()
        self.last_path: Path | None = None
        self.last_paths: dict[str, Path] = {}
        self.last_centers: np.ndarray | None = None
        self.centers: dict[str, np.ndarray] = {}

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._done = set()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not _active(trainer, self.log_sanity_check) or not isinstance(outputs, Mapping):
            return
        bins = outputs.get("bin_centers")
        if bins is None or bins.ndim < 2 or bins.shape[0] == 0:
            return
        for i in range(int(bins.shape[0])):
            dom = sample_domain(outputs, i)
            if dom not in self._done:
                self._done.add(dom)
                self._plot(trainer, outputs, bins, i, dom)

    def _plot(self, trainer, outputs, bins, i: int, dom: str) -> None:
        b0 = bins[i]
        if b0.ndim >= 3:
            h, w = b0.shape[-2], b0.shape[-1]
            b0 = b0[..., h // 2, w // 2]
        centers = np.sort(viz.to_numpy(b0).astype(np.float64).reshape(-1))

        gt = valid = None
        gt_c = pred_c = None
        if outputs.get("depth") is not None:
            gt = viz.to_numpy(outputs["depth"][i]).astype(np.float64)
            gt = gt.reshape(gt.shape[-2], gt.shape[-1])
            valid_t = outputs.get("valid")
            valid = viz.to_numpy(valid_t[i]).astype(bool).reshape(gt.shape) if valid_t is not None else None
            cy, cx = gt.shape[0] // 2, gt.shape[1] // 2
            if valid is None or valid[cy, cx]:
                gt_c = float(gt[cy, cx])
            if outputs.get("pred") is not None:
                pred = viz.to_numpy(outputs["pred"][i]).astype(np.float64)
                pred_c = float(pred.reshape(pred.shape[-2], pred.shape[-1])[cy, cx])
        max_depth = sample_item(outputs.get("max_depth"), i, None)
        caption = _caption(outputs, i, int(trainer.global_step))
        arr = viz.bin_centers_figure(
            centers, gt, valid, gt_center=gt_c, pred_center=pred_c,
            max_depth=None if max_depth is None else float(max_depth),
            title=f"{caption} · {len(centers)} bins",
        )
        self.last_centers = centers
        self.centers[dom] = centers
        path = log_images(trainer, domain_key(self.KEY, dom), [arr], [caption])
        if path is not None:
            self.last_paths[dom] = path
            self.last_path = path
