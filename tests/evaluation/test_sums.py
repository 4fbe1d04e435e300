"""Tests for zoe_lightning.evaluation.sums: the fused CPU kernel (float32 arithmetic) and the eager path."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoe_lightning.evaluation import sums as metrics_module
from zoe_lightning.evaluation.metrics import METRIC_NAMES, DepthMetrics, compute_depth_metrics

from .test_metrics import _reference_metrics


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
