"""Tests for zoe_lightning.evaluation.metrics, .sums and the crops / clamp of .protocol."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoe_lightning.evaluation.metrics import METRIC_NAMES, DepthMetrics, compute_depth_metrics, relative_improvement
from zoe_lightning.evaluation.protocol import (
    clamp_prediction,
    crop_mask,
    eigen_kitti_crop_mask,
    eigen_nyu_crop_mask,
    garg_crop_mask,
)


def _reference_metrics(gt, pred, min_depth, max_depth, crop=None, mask=None):
    """Straightforward per-image numpy reference of ZoeDepth's compute_metrics (2-D arrays).

    Like the original, clamping and the validity test happen in the arrays' own precision
    (a python float is cast to a float32 array's dtype); the statistics are computed in float64.
    """
    pred = pred.copy()
    pred[pred < min_depth] = min_depth
    pred[pred > max_depth] = max_depth
    pred[np.isinf(pred)] = max_depth
    pred[np.isnan(pred)] = min_depth
    valid = (gt > min_depth) & (gt < max_depth)
    pred = pred.astype(np.float64)
    gt = gt.astype(np.float64)
    h, w = gt.shape
    if crop is not None:
        box = np.zeros_like(valid)
        if crop == "garg":
            box[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
        elif crop == "eigen_kitti":
            box[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = True
        else:
            box[45:471, 41:601] = True
        valid &= box
    if mask is not None:
        valid &= mask.astype(bool)
    if not valid.any():
        return dict.fromkeys(METRIC_NAMES, float("nan"))
    g, p = gt[valid], pred[valid]
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "a1": (thresh < 1.25).mean(),
        "a2": (thresh < 1.25**2).mean(),
        "a3": (thresh < 1.25**3).mean(),
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "log_10": np.mean(np.abs(np.log10(g) - np.log10(p))),
        "silog": np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100,
    }


def _t(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


# ----------------------------------------------------------------------------------------------
# Per-image metrics
# ----------------------------------------------------------------------------------------------


def test_metrics_hand_computed():
    gt = [1.0, 2.0, 4.0, 8.0]
    pred = [1.0, 2.4, 2.0, 9.0]
    out = compute_depth_metrics(_t(pred), _t(gt), 0.1, 10.0)
    # ratios max(g/p, p/g) = 1, 1.2, 2, 1.125
    assert out["a1"].item() == pytest.approx(3 / 4)
    assert out["a2"].item() == pytest.approx(3 / 4)
    assert out["a3"].item() == pytest.approx(3 / 4)  # 2 is not < 1.25**3 = 1.953125
    assert out["abs_rel"].item() == pytest.approx((0 + 0.4 / 2 + 2 / 4 + 1 / 8) / 4)
    assert out["sq_rel"].item() == pytest.approx((0 + 0.16 / 2 + 4 / 4 + 1 / 8) / 4)
    assert out["rmse"].item() == pytest.approx(math.sqrt((0 + 0.16 + 4 + 1) / 4))
    e = [math.log(p) - math.log(g) for p, g in zip(pred, gt)]
    assert out["rmse_log"].item() == pytest.approx(math.sqrt(sum(x * x for x in e) / 4))
    l10 = [abs(math.log10(g) - math.log10(p)) for p, g in zip(pred, gt)]
    assert out["log_10"].item() == pytest.approx(sum(l10) / 4)
    mean_e = sum(e) / 4
    silog = 100 * math.sqrt(sum(x * x for x in e) / 4 - mean_e**2)
    assert out["silog"].item() == pytest.approx(silog, rel=1e-6)
    assert out["n_valid"].tolist() == [4]


def test_metrics_validity_is_strict():
    # gt equal to min or max depth is invalid (compared in gt's float32, as the original does);
    # so are NaN and inf
    gt = _t([0.1, 10.0, float("nan"), float("inf"), 2.0])
    pred = _t([5.0, 5.0, 5.0, 5.0, 2.0])
    out = compute_depth_metrics(pred, gt, 0.1, 10.0)
    assert out["n_valid"].tolist() == [1]
    assert out["abs_rel"].item() == 0.0
    assert out["a1"].item() == 1.0


def test_prediction_clamping():
    pred = _t([float("inf"), float("nan"), float("-inf"), 0.0, 20.0, 3.0])
    clamped = clamp_prediction(pred, 0.5, 10.0)
    assert clamped.flatten().tolist() == [10.0, 0.5, 0.5, 0.5, 10.0, 3.0]
    gt = _t([10.0 - 1e-3, 1.0, 1.0, 1.0, 9.0, 3.0])
    out = compute_depth_metrics(pred, gt, 0.5, 10.0)
    expected = _reference_metrics(gt[0, 0].numpy(), pred[0, 0].numpy(), 0.5, 10.0)
    for name in METRIC_NAMES:
        assert torch.isfinite(out[name]).all()
        assert out[name].item() == pytest.approx(expected[name], rel=1e-6, abs=1e-9), name


@pytest.mark.parametrize(
    "crop,shape,min_d,max_d",
    [(None, (24, 32), 1e-3, 10.0), ("eigen", (480, 640), 1e-3, 10.0),
     ("garg", (352, 1216), 1e-3, 80.0), ("eigen_kitti", (352, 1216), 1e-3, 80.0)],
)
def test_metrics_match_numpy_reference(crop, shape, min_d, max_d):
    g = torch.Generator().manual_seed(0)
    b = 3
    gt = torch.rand(b, 1, *shape, generator=g) * max_d * 1.1  # some above max
    gt[torch.rand(gt.shape, generator=g) < 0.2] = 0.0  # holes
    pred = gt * (1 + 0.3 * torch.randn(gt.shape, generator=g)) + 0.05
    out = compute_depth_metrics(pred, gt, min_d, max_d, crop=crop)
    for i in range(b):
        ref = _reference_metrics(gt[i, 0].numpy(), pred[i, 0].numpy(), min_d, max_d, crop)
        for name in METRIC_NAMES:
            assert out[name][i].item() == pytest.approx(ref[name], rel=1e-5, abs=1e-9), (i, name)


def test_metrics_resize_prediction_and_shapes():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 1, 12, 16, generator=g) * 5 + 0.5
    pred = torch.rand(2, 1, 6, 8, generator=g) * 5 + 0.5
    up = F.interpolate(pred, size=(12, 16), mode="bilinear", align_corners=True)
    a = compute_depth_metrics(pred, gt, 0.1, 10.0)
    b = compute_depth_metrics(up, gt, 0.1, 10.0)
    c = compute_depth_metrics(pred[:, 0], gt[:, 0], 0.1, 10.0)  # (B,H,W) inputs
    for name in METRIC_NAMES:
        torch.testing.assert_close(a[name], b[name])
        torch.testing.assert_close(a[name], c[name])


def test_metrics_empty_image_flagged():
    gt = torch.rand(2, 1, 4, 4) + 1.0
    gt[1] = 0.0
    out = compute_depth_metrics(gt.clone(), gt, 0.1, 10.0)
    assert out["n_valid"].tolist() == [16, 0]
    assert out["rmse"][0].item() == 0.0
    assert all(math.isnan(out[name][1].item()) for name in METRIC_NAMES)


# ----------------------------------------------------------------------------------------------
# Crops
# ----------------------------------------------------------------------------------------------


def _box(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_crop_masks_index_arithmetic():
    h, w = 352, 1216
    # garg: rows int(0.40810811*352)=143 .. int(0.99189189*352)=349, cols 43 .. 1172
    assert (int(0.40810811 * h), int(0.99189189 * h), int(0.03594771 * w), int(0.96405229 * w)) == (143, 349, 43, 1172)
    np.testing.assert_array_equal(garg_crop_mask(h, w).numpy(), _box(h, w, 143, 349, 43, 1172))
    # eigen (KITTI): rows int(0.3324324*352)=117 .. int(0.91351351*352)=321, cols 43 .. 1172
    assert (int(0.3324324 * h), int(0.91351351 * h), int(0.0359477 * w)) == (117, 321, 43)
    np.testing.assert_array_equal(eigen_kitti_crop_mask(h, w).numpy(), _box(h, w, 117, 321, 43, 1172))
    # eigen (NYU): fixed box
    m = eigen_nyu_crop_mask(480, 640)
    np.testing.assert_array_equal(m.numpy(), _box(480, 640, 45, 471, 41, 601))
    assert int(m.sum()) == 426 * 560
    assert crop_mask(None, 10, 10) is None
    assert torch.equal(crop_mask("garg", 480, 640), garg_crop_mask(480, 640))
    with pytest.raises(ValueError):
        crop_mask("nyu", 10, 10)


# ----------------------------------------------------------------------------------------------
# DepthMetrics
# ----------------------------------------------------------------------------------------------


def test_depth_metrics_two_updates_equal_one():
    g = torch.Generator().manual_seed(2)
    gt = torch.rand(5, 1, 20, 24, generator=g) * 9 + 0.5
    pred = gt * (1 + 0.2 * torch.randn(gt.shape, generator=g))
    split = DepthMetrics(0.1, 10.0)
    split.update(pred[:2], gt[:2])
    split.update(pred[2:], gt[2:])
    whole = DepthMetrics(0.1, 10.0)
    whole.update(pred, gt)
    a, b = split.compute(), whole.compute()
    assert a["n_images"].item() == b["n_images"].item() == 5
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(b[name].item(), rel=1e-12)
    per_image = compute_depth_metrics(pred, gt, 0.1, 10.0)
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(per_image[name].mean().item(), rel=1e-12)


def test_depth_metrics_per_image_average_not_pooled():
    # image 0: 4 pixels each off by 1 -> rmse 1; image 1: 1 valid pixel off by 3 -> rmse 3
    gt = torch.full((2, 1, 2, 2), 5.0)
    gt[1, 0, 0, 1:] = 0.0
    gt[1, 0, 1, :] = 0.0
    pred = torch.cat([torch.full((1, 1, 2, 2), 6.0), torch.full((1, 1, 2, 2), 8.0)])
    m = DepthMetrics(0.1, 10.0)
    m.update(pred, gt)
    out = m.compute()
    assert out["rmse"].item() == pytest.approx((1.0 + 3.0) / 2)
    pooled = math.sqrt((4 * 1.0 + 9.0) / 5)
    assert abs(out["rmse"].item() - pooled) > 0.1


def test_depth_metrics_empty_images_counted_separately_and_reset():
    gt = torch.rand(3, 1, 4, 4) + 1.0
    gt[1] = 20.0  # all above max_depth
    pred = gt * 1.1
    m = DepthMetrics(0.1, 10.0, crop=None)
    m.update(pred, gt)
    out = m.compute()
    assert out["n_images"].item() == 2 and out["n_empty"].item() == 1
    assert out["abs_rel"].item() == pytest.approx(0.1, rel=1e-6)
    m.reset()
    m.update(pred[1:2], gt[1:2])
    out = m.compute()
    assert out["n_images"].item() == 0 and out["n_empty"].item() == 1
    assert math.isnan(out["rmse"].item())


def test_depth_metrics_states_are_sums():
    m = DepthMetrics(1e-3, 80.0, crop="garg")
    assert m.full_state_update is False
    assert all(fx == "sum" or getattr(fx, "__name__", "") == "dim_zero_sum" for fx in m._reductions.values())
    with pytest.raises(ValueError):
        DepthMetrics(1e-3, 80.0, crop="kitti")


# ----------------------------------------------------------------------------------------------
# Relative improvement
# ----------------------------------------------------------------------------------------------


def test_relative_improvement_worked_example():
    reference = {"abs_rel": 0.10, "rmse": 0.40, "log_10": 0.050, "a1": 0.80, "a2": 0.90, "a3": 0.95}
    result = {"abs_rel": 0.09, "rmse": 0.36, "log_10": 0.045, "a1": 0.88, "a2": 0.99, "a3": 0.95}
    # every error metric improves by 10%; a1 +10%, a2 +10%, a3 0% -> 20/3
    out = relative_improvement(result, reference)
    assert out["mRID"] == pytest.approx(10.0)
    assert out["mRItheta"] == pytest.approx(20.0 / 3.0)
    # only metrics present in both count; tensors are accepted
    partial = relative_improvement({"rmse": torch.tensor(0.5)}, {"rmse": torch.tensor(0.4), "a1": 0.9})
    assert partial["mRID"] == pytest.approx(-25.0)
    assert math.isnan(partial["mRItheta"])
