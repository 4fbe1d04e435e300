"""Row 5 of RESULTS.md: evaluation metrics against a per-image numpy implementation."""

from __future__ import annotations

import time
from typing import Dict, List

import torch

from common import median_time, row


def numpy_metrics(pred, gt, min_depth: float, max_depth: float, eigen_crop: bool) -> Dict[str, float]:
    """The ZoeDepth formulas for one image, written plainly in numpy (float64)."""
    import numpy as np

    pred = np.clip(np.nan_to_num(pred.astype(np.float64), nan=min_depth, posinf=max_depth, neginf=min_depth),
                   min_depth, max_depth)
    gt = gt.astype(np.float64)
    valid = (gt > min_depth) & (gt < max_depth)
    if eigen_crop:
        box = np.zeros_like(valid)
        box[45:471, 41:601] = True
        valid &= box
    p, g = pred[valid], gt[valid]
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "a1": float((thresh < 1.25).mean()), "a2": float((thresh < 1.25 ** 2).mean()),
        "a3": float((thresh < 1.25 ** 3).mean()), "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)), "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(err ** 2))),
        "log_10": float(np.mean(np.abs(np.log10(g) - np.log10(p)))),
        "silog": float(100 * np.sqrt(max(np.mean(err ** 2) - np.mean(err) ** 2, 0.0))),
    }


def make_maps(n: int, size=(480, 640), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = 0.5 + 9.0 * torch.rand(n, 1, *size, generator=g)
    gt[torch.rand(n, 1, *size, generator=g) < 0.1] = 0.0  # invalid pixels
    pred = gt * (1 + 0.2 * torch.randn(n, 1, *size, generator=g)).clamp_min(0.05)
    return pred, gt


def bench_metrics(n_maps: int, reps: int, warmup: int, device: str = "cpu", chunk: int = 64) -> List[Dict]:
    from zoe_lightning.evaluation.metrics import METRIC_NAMES, DepthMetrics
    from zoe_lightning.evaluation.sums import FUSED_MIN_PIXELS, fused_metrics_available

    pred, gt = make_maps(n_maps)
    pred_np, gt_np = pred.numpy(), gt.numpy()
    pred_d, gt_d = pred.to(device), gt.to(device)

    def ours(fused=None):
        # default fused=None: the compiled CPU kernel for these batches (eager PyTorch elsewhere)
        metric = DepthMetrics(1e-3, 10.0, crop="eigen", fused=fused).to(device)
        for i in range(0, n_maps, chunk):
            metric.update(pred_d[i:i + chunk], gt_d[i:i + chunk])
        return {k: float(v) for k, v in metric.compute().items() if k in METRIC_NAMES}

    def reference():
        sums = dict.fromkeys(METRIC_NAMES, 0.0)
        for i in range(n_maps):
            for k, v in numpy_metrics(pred_np[i, 0], gt_np[i, 0], 1e-3, 10.0, True).items():
                sums[k] += v
        return {k: v / n_maps for k, v in sums.items()}

    t0 = time.perf_counter()
    vals_ref = reference()  # one timed run: the slow side
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    vals_ours = ours()  # also the warm-up; compiles the CPU kernel once per process
    t_first = time.perf_counter() - t0
    worst = max(abs(vals_ours[k] - vals_ref[k]) / max(abs(vals_ref[k]), 1e-12) for k in METRIC_NAMES)
    t_ours = median_time(ours, reps, max(0, warmup - 1), device)["median"]
    batches = [min(chunk, n_maps - i) for i in range(0, n_maps, chunk)]
    n_fused = sum(b * 426 * 560 >= FUSED_MIN_PIXELS for b in batches) if device == "cpu" else 0
    fused = n_fused > 0 and fused_metrics_available()
    note = (f"values match: max relative difference {worst:.1e} over the 9 metrics; DepthMetrics default: "
            + (f"compiled CPU kernel (torch.compile) for {n_fused} of {len(batches)} batches, first call incl. "
               f"compiling {t_first:.1f} s" if fused else "eager PyTorch"))
    t_eager = None
    if fused:  # the eager fallback (float64, as the original), one run
        t0 = time.perf_counter()
        vals_eager = ours(fused=False)
        t_eager = time.perf_counter() - t0
        worst_eager = max(abs(vals_eager[k] - vals_ref[k]) / max(abs(vals_ref[k]), 1e-12) for k in METRIC_NAMES)
        note += f"; eager fallback {t_eager:.2f} s (max relative difference {worst_eager:.1e})"
    return [row(5, f"metrics on {n_maps} NYU-size maps (480x640, eigen crop): DepthMetrics vs per-image numpy",
                t_ours, t_ref, "s", 0.05, note, max_rel_diff=worst, values_ours=vals_ours, values_ref=vals_ref,
                first_call_s=t_first, eager_s=t_eager)]
