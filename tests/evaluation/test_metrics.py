"""Tests for zoe_lightning.evaluation.metrics, .sums and the crops / clamp of .protocol."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoe_lightning.evaluation import sums as metrics_module
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
# Fast paths: the fused CPU kernel (float32 arithmetic) and the eager path
# ----------------------------------------------------------------------------------------------


def _uncompiled(masked, single):
    return metrics_module._KERNELS[masked, single]


@pytest.fixture
def kernel_body(monkeypatch):
    """The fused path with its kernel body run eagerly instead of compiled: the same float32
    formulas, checked in milliseconds (the compiled kernel itself: the slow test below)."""
    monkeypatch.setattr(metrics_module, "_compiled", _uncompiled)


def _random_maps(seed, b, shape, max_d, nasty=True):
    """GT with holes and out-of-range values; predictions with NaN, +-inf, negatives and values
    beyond the range, as float32 (B,1,H,W)."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 1, *shape, generator=g) * max_d * 1.1
    gt[torch.rand(gt.shape, generator=g) < 0.15] = 0.0
    pred = gt * (1 + 0.3 * torch.randn(gt.shape, generator=g)) + 0.05
    if nasty:
        u = torch.rand(gt.shape, generator=g)
        pred[u < 0.01] = float("nan")
        pred[(u >= 0.01) & (u < 0.02)] = float("inf")
        pred[(u >= 0.02) & (u < 0.03)] = float("-inf")
        pred[(u >= 0.03) & (u < 0.04)] = -1.0
        pred[(u >= 0.04) & (u < 0.05)] = 2 * max_d
    return pred, gt


def _assert_matches_reference(out, pred, gt, min_d, max_d, crop, mask, rel):
    """Per-image metrics against the numpy float64 peer: threshold accuracies and valid counts
    exactly, the others to ``rel``."""
    for i in range(gt.shape[0]):
        m = None if mask is None else mask[i, 0].numpy()
        ref = _reference_metrics(gt[i, 0].numpy(), pred[i, 0].numpy(), min_d, max_d, crop, m)
        for name in METRIC_NAMES:
            got = out[name][i].item()
            if math.isnan(ref[name]):
                assert math.isnan(got), (i, name)
            elif name in ("a1", "a2", "a3"):
                assert got == ref[name], (i, name)
            else:
                assert got == pytest.approx(ref[name], rel=rel, abs=1e-12), (i, name)


def test_log_f32_matches_float64_log():
    x = np.concatenate([
        np.geomspace(1e-6, 1e6, 200_001), np.linspace(0.5, 2.0, 100_001),
        [1.0, 0.5, 2.0, np.sqrt(0.5), np.sqrt(2.0), 1e-30, 1e30],
    ]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(0)), np.nextafter(x, np.float32(np.inf))])
    got = metrics_module._log_f32(torch.from_numpy(x)).double().numpy()
    want = np.log(x.astype(np.float64))
    near_zero = np.abs(want) < 1e-30
    assert np.all(got[near_zero] == 0.0)  # log(1) is exactly 0
    assert np.max(np.abs(got - want)[~near_zero] / np.abs(want[~near_zero])) < 4e-7  # a few float32 ulps


def test_log_f32_of_quotients_near_one_keeps_relative_accuracy():
    rng = np.random.default_rng(0)
    g = rng.uniform(0.1, 10.0, 100_000).astype(np.float32)
    p = (g * (1 + rng.uniform(-1e-4, 1e-4, g.size))).astype(np.float32)
    keep = p != g
    pt, gt = torch.from_numpy(p[keep]), torch.from_numpy(g[keep])
    want = np.log(pt.double().numpy()) - np.log(gt.double().numpy())
    got = metrics_module._log_f32(pt / gt, (pt - gt) / gt).double().numpy()
    # the quotient p/g itself is off by up to half an ulp (6e-8), i.e. up to 100% of e ~ 1e-7;
    # with the accurate p/g - 1 the log keeps float32 relative accuracy
    assert np.max(np.abs(got - want) / np.abs(want)) < 1e-6


def _boundary_pairs():
    """float32 (g, p) pairs at and within two ulps of every threshold ratio, both ways round."""
    rng = np.random.default_rng(0)
    g = np.concatenate([rng.uniform(0.5, 8.0, 3000), [4.0, 16.0, 64.0, 1.0]]).astype(np.float32)
    gs, ps = [], []
    for t in (1.25, 1.25**2, 1.25**3):
        for base in (g * np.float32(t), g / np.float32(t), (g.astype(np.float64) * t).astype(np.float32)):
            for step in range(-2, 3):
                p = base.copy()
                for _ in range(abs(step)):
                    p = np.nextafter(p, np.float32(np.inf if step > 0 else 0.0))
                gs.append(g)
                ps.append(p)
    return np.concatenate(gs), np.concatenate(ps)


@pytest.mark.parametrize("path", ["eager", "kernel_body"])
def test_threshold_accuracies_exact_at_the_boundaries(path, request):
    if path == "kernel_body":
        request.getfixturevalue("kernel_body")
    g, p = _boundary_pairs()
    thresh = np.maximum(g.astype(np.float64) / p, p.astype(np.float64) / g)
    n = g.size
    gt = torch.from_numpy(g).reshape(1, 1, 1, n)
    pred = torch.from_numpy(p).reshape(1, 1, 1, n)
    out = compute_depth_metrics(pred, gt, 0.1, 1000.0, fused=path == "kernel_body")  # nothing clamped
    assert out["n_valid"].item() == n
    for name, t in (("a1", 1.25), ("a2", 1.25**2), ("a3", 1.25**3)):
        expected = int((thresh < t).sum())
        assert 0 < expected < n
        assert round(out[name].item() * n) == expected, name
        assert out[name].item() == expected / n, name


@pytest.mark.parametrize(
    "crop,shape,max_d,with_mask",
    [(None, (24, 32), 10.0, False), ("eigen", (480, 640), 10.0, True),
     ("garg", (352, 1216), 80.0, False), ("eigen_kitti", (375, 1242), 80.0, True)],
)
@pytest.mark.parametrize("path", ["eager", "kernel_body"])
def test_fast_paths_match_numpy_reference(path, crop, shape, max_d, with_mask, request):
    if path == "kernel_body":
        request.getfixturevalue("kernel_body")
    pred, gt = _random_maps(3, 3, shape, max_d)
    gt[1] = 0.0  # an image without valid pixels
    mask = None
    if with_mask:
        mask = torch.rand(gt.shape, generator=torch.Generator().manual_seed(4)) < 0.7
    out = compute_depth_metrics(pred, gt, 1e-3, max_d, crop=crop, mask=mask, fused=path == "kernel_body")
    assert out["n_valid"][1].item() == 0
    # eager: float64 throughout, as the peer; kernel: float32 pixels, float64 image sums
    _assert_matches_reference(out, pred, gt, 1e-3, max_d, crop, mask, rel=1e-12 if path == "eager" else 1e-6)


@pytest.mark.parametrize("path", ["eager", "kernel_body"])
def test_fast_paths_resize_prediction(path, request):
    if path == "kernel_body":
        request.getfixturevalue("kernel_body")
    pred, gt = _random_maps(5, 2, (60, 80), 10.0, nasty=False)
    small = pred[..., ::4, ::4].contiguous()
    up = F.interpolate(small, size=(60, 80), mode="bilinear", align_corners=True)
    out = compute_depth_metrics(small, gt, 1e-3, 10.0, fused=path == "kernel_body")
    _assert_matches_reference(out, up, gt, 1e-3, 10.0, None, None, rel=1e-12 if path == "eager" else 1e-6)


def test_eager_float64_inputs_and_empty_crop():
    pred, gt = _random_maps(6, 2, (50, 70), 10.0)
    out = compute_depth_metrics(pred.double(), gt.double(), 1e-3, 10.0, fused=True)  # float64: eager
    _assert_matches_reference(out, pred.double(), gt.double(), 1e-3, 10.0, None, None, rel=1e-12)
    # the NYU eigen box (rows 45:471) lies below a 40-row map: no valid pixel anywhere
    out = compute_depth_metrics(pred[..., :40, :], gt[..., :40, :], 1e-3, 10.0, crop="eigen")
    assert out["n_valid"].tolist() == [0, 0]
    assert all(math.isnan(v) for name in METRIC_NAMES for v in out[name].tolist())


def test_fused_choice(monkeypatch):
    calls = []

    def spy(masked, single):
        calls.append(masked)
        return _uncompiled(masked, single)

    monkeypatch.setattr(metrics_module, "_compiled", spy)
    pred, gt = _random_maps(7, 2, (20, 30), 10.0)
    mask = torch.ones_like(gt, dtype=torch.bool)
    compute_depth_metrics(pred, gt, 1e-3, 10.0)  # auto, small batch: eager
    compute_depth_metrics(pred, gt, 1e-3, 10.0, fused=False)
    compute_depth_metrics(pred.double(), gt, 1e-3, 10.0, fused=True)  # float64 pred: eager
    assert calls == []
    compute_depth_metrics(pred, gt, 1e-3, 10.0, fused=True)
    compute_depth_metrics(pred, gt, 1e-3, 10.0, mask=mask, fused=True)
    assert calls == [False, True]
    monkeypatch.setattr(metrics_module, "FUSED_MIN_PIXELS", 2 * 20 * 30)
    compute_depth_metrics(pred, gt, 1e-3, 10.0)  # auto, batch at the threshold: fused
    compute_depth_metrics(pred[:1], gt[:1], 1e-3, 10.0)  # below it: eager
    assert calls == [False, True, False]


def test_fused_falls_back_to_eager_when_compiling_fails(monkeypatch):
    def broken(masked, single):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(metrics_module, "_compiled", broken)
    monkeypatch.setattr(metrics_module, "_fused_broken", None)
    monkeypatch.setattr(metrics_module, "FUSED_MIN_PIXELS", 1)
    pred, gt = _random_maps(8, 2, (20, 30), 10.0)
    with pytest.raises(RuntimeError):
        compute_depth_metrics(pred, gt, 1e-3, 10.0, fused=True)
    assert metrics_module.fused_metrics_available()
    with pytest.warns(RuntimeWarning, match="compiled kernel unavailable"):
        out = compute_depth_metrics(pred, gt, 1e-3, 10.0)
    _assert_matches_reference(out, pred, gt, 1e-3, 10.0, None, None, rel=1e-12)
    assert not metrics_module.fused_metrics_available()
    compute_depth_metrics(pred, gt, 1e-3, 10.0)  # no second attempt, no second warning


def test_depth_metrics_fused_switch_and_inference_mode(kernel_body):
    pred, gt = _random_maps(9, 4, (48, 64), 10.0)
    fused, eager = DepthMetrics(1e-3, 10.0, fused=True), DepthMetrics(1e-3, 10.0, fused=False)
    with torch.inference_mode():  # as in Lightning's validation loop
        for m in (fused, eager):
            m.update(pred[:3], gt[:3])
            m.update(pred[3:], gt[3:])
    a, b = fused.compute(), eager.compute()
    assert a["n_images"].item() == b["n_images"].item() == 4
    for name in METRIC_NAMES:
        assert a[name].item() == pytest.approx(b[name].item(), rel=1e-6), name


@pytest.mark.slow
def test_compiled_kernel_matches_eager_without_recompiling():
    if not metrics_module.fused_metrics_available():
        pytest.skip("torch.compile unavailable")
    from torch._dynamo.utils import counters

    cases = [  # (crop, batch, shape, max depth, mask): crop boxes are strided views, None is not
        ("eigen", 2, (480, 640), 10.0, False),
        ("garg", 1, (352, 1216), 80.0, True),
        (None, 2, (120, 160), 10.0, False),
    ]
    for crop, b, shape, max_d, with_mask in cases:
        pred, gt = _random_maps(10, b, shape, max_d)
        mask = (torch.rand(gt.shape, generator=torch.Generator().manual_seed(11)) < 0.7) if with_mask else None
        fused = compute_depth_metrics(pred, gt, 1e-3, max_d, crop=crop, mask=mask, fused=True)
        eager = compute_depth_metrics(pred, gt, 1e-3, max_d, crop=crop, mask=mask, fused=False)
        for name in METRIC_NAMES:
            if name in ("a1", "a2", "a3"):
                torch.testing.assert_close(fused[name], eager[name], rtol=0, atol=0)
            else:
                torch.testing.assert_close(fused[name], eager[name], rtol=1e-6, atol=1e-12)
        assert torch.equal(fused["n_valid"], eager["n_valid"])
        _assert_matches_reference(fused, pred, gt, 1e-3, max_d, crop, mask, rel=1e-6)
    # other batch and map sizes (KITTI sizes vary) reuse the compiled kernels (a batch of one has
    # its own kernel, compiled above)
    graphs = counters["stats"]["unique_graphs"]
    more = [("eigen", 5, (481, 641), 10.0, False), ("garg", 1, (375, 1242), 80.0, True), (None, 3, (100, 90), 10.0, False)]
    for crop, b, shape, max_d, with_mask in more:
        pred, gt = _random_maps(12, b, shape, max_d)
        mask = torch.rand(gt.shape) < 0.7 if with_mask else None
        fused = compute_depth_metrics(pred, gt, 1e-3, max_d, crop=crop, mask=mask, fused=True)
        _assert_matches_reference(fused, pred, gt, 1e-3, max_d, crop, mask, rel=1e-6)
    assert counters["stats"]["unique_graphs"] == graphs



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
