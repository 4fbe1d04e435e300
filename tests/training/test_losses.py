"""Tests for zoe_lightning.losses."""

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from zoe_lightning.losses import (
    GradL1Loss,
    RelativeDepthLoss,
    SILogLoss,
    compute_scale_and_shift,
    domain_loss,
    grad_l1_loss,
    gradient_matching_loss,
    normalize_median_mad,
    silog_loss,
    ssi_loss,
    to_disparity,
)


def _img(values, shape):
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


def _expected_silog(g, beta=0.15):
    """SILog from a list of log-differences, by hand (unbiased variance)."""
    mean = sum(g) / len(g)
    var = statistics.variance(g) if len(g) > 1 else 0.0
    return 10.0 * math.sqrt(var + beta * mean**2)


# ----------------------------------------------------------------------------------------------
# SILog
# ----------------------------------------------------------------------------------------------


def test_silog_hand_computed_three_pixels():
    # g = ln(pred) - ln(1) = [1, 2, 0]: mean 1, unbiased var ((0)^2 + 1^2 + (-1)^2) / 2 = 1
    pred = _img([math.e, math.e**2, 1.0], (1, 1, 1, 3))
    target = torch.ones(1, 1, 1, 3)
    mask = torch.ones(1, 1, 1, 3, dtype=torch.bool)
    loss, n = silog_loss(pred, target, mask, eps=0.0)
    assert int(n) == 3
    assert loss.item() == pytest.approx(10.0 * math.sqrt(1.0 + 0.15 * 1.0), rel=1e-5)


def test_silog_hand_computed_with_mask_and_eps():
    pred = _img([2.0, 3.0, 0.5, 7.0], (1, 1, 2, 2))
    target = _img([1.0, 4.0, 0.25, 100.0], (1, 1, 2, 2))
    mask = torch.tensor([True, True, True, False]).reshape(1, 1, 2, 2)
    eps = 1e-7
    g = [math.log(p + eps) - math.log(t + eps) for p, t in [(2.0, 1.0), (3.0, 4.0), (0.5, 0.25)]]
    loss, n = silog_loss(pred, target, mask, beta=0.3)
    assert int(n) == 3
    assert loss.item() == pytest.approx(_expected_silog(g, beta=0.3), rel=1e-5)
    # the module gives the same
    mod_loss, _ = SILogLoss(beta=0.3)(pred, target, mask)
    assert mod_loss.item() == pytest.approx(loss.item(), rel=1e-6)


def test_silog_pooled_over_batch_not_per_image():
    # image 0: g = [0, 0]; image 1: g = [1, 1]
    target = torch.ones(2, 1, 1, 2)
    pred = torch.ones(2, 1, 1, 2)
    pred[1] = math.e
    mask = torch.ones(2, 1, 1, 2, dtype=torch.bool)
    loss, n = silog_loss(pred, target, mask, eps=0.0)
    pooled = _expected_silog([0.0, 0.0, 1.0, 1.0])
    per_image = 0.5 * (_expected_silog([0.0, 0.0]) + _expected_silog([1.0, 1.0]))
    assert int(n) == 4
    assert loss.item() == pytest.approx(pooled, rel=1e-5)
    assert abs(pooled - per_image) > 1.0


def test_silog_empty_mask_is_zero_with_finite_grads():
    pred = torch.full((2, 1, 4, 4), float("nan"))
    pred[0, 0, 0, 0] = -3.0
    pred.requires_grad_(True)
    target = torch.zeros(2, 1, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    loss, n = silog_loss(pred, target, mask)
    assert int(n) == 0
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silog_single_pixel_is_finite():
    pred = torch.rand(1, 1, 3, 3).add(0.5).requires_grad_(True)
    target = torch.rand(1, 1, 3, 3).add(0.5)
    mask = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, 1, 2] = True
    loss, n = silog_loss(pred, target, mask, eps=0.0)
    g = math.log(pred[0, 0, 1, 2].item()) - math.log(target[0, 0, 1, 2].item())
    assert int(n) == 1
    assert loss.item() == pytest.approx(10.0 * math.sqrt(0.15) * abs(g), rel=1e-4)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silog_perfect_prediction_zero_loss_finite_grad():
    target = torch.rand(2, 1, 5, 5).add(0.1)
    pred = target.clone().requires_grad_(True)
    loss, _ = silog_loss(pred, target, torch.ones_like(target, dtype=torch.bool))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_silog_resizes_prediction():
    torch.manual_seed(0)
    pred = torch.rand(2, 1, 4, 6).add(0.5)
    target = torch.rand(2, 1, 8, 12).add(0.5)
    mask = torch.rand(2, 1, 8, 12) > 0.3
    up = F.interpolate(pred, size=(8, 12), mode="bilinear", align_corners=True)
    loss, _ = silog_loss(pred, target, mask)
    ref, _ = silog_loss(up, target, mask)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    # constant maps stay constant: loss = 10 * sqrt(beta) * |ln c|
    loss_c, _ = silog_loss(torch.full((1, 1, 2, 2), 2.0), torch.ones(1, 1, 5, 5), None, eps=0.0)
    assert loss_c.item() == pytest.approx(10.0 * math.sqrt(0.15) * math.log(2.0), rel=1e-5)
    with pytest.raises(ValueError):
        silog_loss(pred, target, mask, interpolate=False)


def test_silog_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 8, 8)
    target = torch.rand(2, 1, 16, 16).add(0.5)
    mask = torch.rand(2, 1, 16, 16) > 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = F.softplus(conv(x)) + 0.1
        assert pred.dtype == torch.bfloat16
        loss, _ = silog_loss(pred, target, mask)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())


# ----------------------------------------------------------------------------------------------
# Gradient L1
# ----------------------------------------------------------------------------------------------


def test_grad_l1_zero_when_equal_and_positive_otherwise():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 6, 7).add(0.5)
    mask = torch.rand(2, 1, 6, 7) > 0.2
    assert grad_l1_loss(target.clone(), target, mask).item() == 0.0
    pred = target + 0.3 * torch.rand_like(target)
    assert grad_l1_loss(pred, target, mask).item() > 0.0
    assert GradL1Loss()(pred, target, mask).item() == grad_l1_loss(pred, target, mask).item()


def test_grad_l1_hand_computed():
    # 2x2 image: only pixel (1,1) has left and upper neighbours.
    pred = _img([0.0, 1.0, 2.0, 4.0], (1, 1, 2, 2))  # dx = 4-2 = 2, dy = 4-1 = 3
    target = _img([0.0, 0.0, 0.0, 1.0], (1, 1, 2, 2))  # dx = 1, dy = 1
    mag = abs((2**2 + 3**2) - (1**2 + 1**2))
    ang = abs(math.atan(3 / (2 + 1e-10)) - math.atan(1 / (1 + 1e-10)))
    loss = grad_l1_loss(pred, target, torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx(mag + ang, rel=1e-5)
    # invalidating the upper neighbour leaves no pixel: zero
    mask = torch.tensor([True, False, True, True]).reshape(1, 1, 2, 2)
    assert grad_l1_loss(pred, target, mask).item() == 0.0


def test_grad_l1_empty_mask_zero_finite_grads():
    pred = torch.rand(1, 1, 5, 5).requires_grad_(True)
    loss = grad_l1_loss(pred, torch.rand(1, 1, 5, 5), torch.zeros(1, 1, 5, 5, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


# ----------------------------------------------------------------------------------------------
# Scale-and-shift invariant losses
# ----------------------------------------------------------------------------------------------


def _ssi_data(seed=0, b=2, h=16, w=20):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 1, h, w, generator=g).add(0.2)
    mask = torch.rand(b, 1, h, w, generator=g) > 0.25
    return target, mask


def test_compute_scale_and_shift_recovers_affine():
    target_pred, mask = _ssi_data()
    pred = target_pred
    s_true = torch.tensor([2.5, 0.4])
    t_true = torch.tensor([-0.7, 3.0])
    target = s_true.view(-1, 1, 1, 1) * pred + t_true.view(-1, 1, 1, 1)
    target = torch.where(mask, target, torch.full_like(target, float("nan")))  # garbage off-mask
    s, t = compute_scale_and_shift(pred, target, mask)
    torch.testing.assert_close(s, s_true, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t, t_true, rtol=1e-5, atol=1e-5)


def test_compute_scale_and_shift_degenerate_images_are_zero():
    pred = torch.rand(3, 1, 4, 4)
    pred[1] = 0.37  # constant prediction: singular system
    target = torch.rand(3, 1, 4, 4)
    mask = torch.ones(3, 1, 4, 4, dtype=torch.bool)
    mask[2] = False  # empty image
    s, t = compute_scale_and_shift(pred, target, mask)
    assert torch.isfinite(s).all() and torch.isfinite(t).all()
    assert s[1].item() == 0.0 and t[1].item() == 0.0
    assert s[2].item() == 0.0 and t[2].item() == 0.0


def test_normalize_median_mad():
    x = _img([1.0, 2.0, 3.0, 10.0, 100.0, -50.0], (1, 1, 2, 3))
    mask = torch.tensor([True, True, True, True, True, False]).reshape(1, 1, 2, 3)
    # valid = [1, 2, 3, 10, 100]: median 3, mean |x - 3| = (2 + 1 + 0 + 7 + 97) / 5 = 21.4
    out = normalize_median_mad(x, mask)
    expected = (x - 3.0) / 21.4
    torch.testing.assert_close(out[mask], expected[mask])
    # constant image: MAD clamped, no inf/NaN
    out_c = normalize_median_mad(torch.full((1, 1, 2, 2), 5.0), torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert torch.isfinite(out_c).all()


@pytest.mark.parametrize("alignment", ["lstsq", "trimmed"])
def test_ssi_loss_invariant_to_scale_and_shift(alignment):
    target, mask = _ssi_data(1)
    pred = torch.rand_like(target).add(0.1)
    base, _, _ = ssi_loss(pred, target, mask, alignment=alignment)
    moved, _, _ = ssi_loss(3.0 * pred + 2.0, target, mask, alignment=alignment)
    assert base.item() > 1e-3
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)
    exact, _, _ = ssi_loss(0.5 * target + 1.5, target, mask, alignment=alignment)
    assert exact.item() == pytest.approx(0.0, abs=1e-5)


def test_ssi_lstsq_hand_computed():
    # pred [0, 1, 2] vs target [0, 2, 1]: least squares line s = 0.5, t = 0.5
    # aligned = [0.5, 1.0, 1.5], residuals [0.5, -1, 0.5] -> sum sq 1.5, / (2 * 3)
    pred = _img([0.0, 1.0, 2.0], (1, 1, 1, 3))
    target = _img([0.0, 2.0, 1.0], (1, 1, 1, 3))
    loss, aligned, _ = ssi_loss(pred, target, torch.ones(1, 1, 1, 3, dtype=torch.bool), alignment="lstsq")
    assert loss.item() == pytest.approx(1.5 / 6.0, rel=1e-5)
    torch.testing.assert_close(aligned, _img([0.5, 1.0, 1.5], (1, 1, 1, 3)))


def test_ssi_trimmed_drops_outliers():
    target, mask = _ssi_data(2, b=2, h=20, w=20)
    pred = 2.0 * target + 1.0
    # Corrupt 10% of each image's valid pixels by permuting their values cyclically: the value
    # multiset (hence median and MAD) is unchanged, so only the corrupted residuals are non-zero
    # and trimming 20% removes all of them.
    g = torch.Generator().manual_seed(3)
    corrupted = pred.clone()
    for b in range(pred.shape[0]):
        idx = mask[b].flatten().nonzero().flatten()
        k = int(0.1 * idx.numel())
        pick = idx[torch.randperm(idx.numel(), generator=g)[:k]]
        flat = corrupted[b].view(-1)
        flat[pick] = flat[pick.roll(1)]
    trimmed, _, _ = ssi_loss(corrupted, target, mask, alignment="trimmed", trim=0.2)
    untrimmed, _, _ = ssi_loss(corrupted, target, mask, alignment="trimmed", trim=0.0)
    assert trimmed.item() == pytest.approx(0.0, abs=1e-6)
    assert untrimmed.item() > 0.05
    # Gross outliers (+50 on 10%): the MAD scale is still inflated, but trimming removes the
    # outlier residuals themselves and the loss drops well below the untrimmed one.
    outliers = torch.rand(target.shape, generator=g) < 0.1
    gross = torch.where(outliers, pred + 50.0, pred)
    trimmed, _, _ = ssi_loss(gross, target, mask, alignment="trimmed", trim=0.2)
    untrimmed, _, _ = ssi_loss(gross, target, mask, alignment="trimmed", trim=0.0)
    assert untrimmed.item() > 2.0 * trimmed.item()


def test_ssi_trimmed_hand_computed():
    # target == pred after normalisation except one outlier; trim=0.2 of 5 pixels drops 1 residual
    target = _img([1.0, 2.0, 3.0, 4.0, 5.0], (1, 1, 1, 5))
    pred = _img([1.0, 2.0, 3.0, 4.0, 50.0], (1, 1, 1, 5))
    mask = torch.ones(1, 1, 1, 5, dtype=torch.bool)
    # target: median 3, MAD (2+1+0+1+2)/5 = 1.2 ; pred: median 3, MAD (2+1+0+1+47)/5 = 10.2
    t_hat = [(v - 3.0) / 1.2 for v in [1, 2, 3, 4, 5]]
    p_hat = [(v - 3.0) / 10.2 for v in [1, 2, 3, 4, 50]]
    res = sorted(abs(p - t) for p, t in zip(p_hat, t_hat))
    loss, _, _ = ssi_loss(pred, target, mask, alignment="trimmed", trim=0.2)
    assert loss.item() == pytest.approx(sum(res[:4]) / (2 * 5), rel=1e-5)


@pytest.mark.parametrize("alignment", ["lstsq", "trimmed"])
def test_ssi_empty_mask_zero_finite_grads(alignment):
    pred = torch.rand(2, 1, 6, 6).requires_grad_(True)
    loss, _, _ = ssi_loss(pred, torch.rand(2, 1, 6, 6), torch.zeros(2, 1, 6, 6, dtype=torch.bool), alignment)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_gradient_matching_zero_for_affine_and_positive_otherwise():
    target, mask = _ssi_data(4, h=32, w=32)
    for alignment in ("lstsq", "trimmed"):
        _, p_al, t_al = ssi_loss(4.0 * target - 0.5, target, mask, alignment=alignment)
        assert gradient_matching_loss(p_al, t_al, mask).item() == pytest.approx(0.0, abs=1e-4)
        _, p_al, t_al = ssi_loss(torch.rand_like(target), target, mask, alignment=alignment)
        assert gradient_matching_loss(p_al, t_al, mask).item() > 1e-2


def test_gradient_matching_hand_computed():
    # one scale, 2x2 residual [[0, 1], [3, 3]] fully valid:
    # |dx| = |1-0| + |3-3| = 1, |dy| = |3-0| + |3-1| = 5, / 4 pixels
    r = _img([0.0, 1.0, 3.0, 3.0], (1, 1, 2, 2))
    mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    loss = gradient_matching_loss(r, torch.zeros_like(r), mask, scales=1)
    assert loss.item() == pytest.approx(6.0 / 4.0)
    # second scale of a 2x2 image is one pixel: no difference, adds 0
    assert gradient_matching_loss(r, torch.zeros_like(r), mask, scales=2).item() == pytest.approx(1.5)
    # masking pixel (0,1) removes the two differences touching it: |3-0| + |3-3|... -> (0+3)/3
    mask[0, 0, 0, 1] = False
    assert gradient_matching_loss(r, torch.zeros_like(r), mask, scales=1).item() == pytest.approx(3.0 / 3.0)


def test_to_disparity():
    depth = _img([2.0, 4.0, 0.0, 5.0], (1, 1, 2, 2))
    mask = torch.tensor([True, True, True, False]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(to_disparity(depth, mask), _img([0.5, 0.25, 0.0, 0.0], (1, 1, 2, 2)))


@pytest.mark.parametrize("alignment", ["lstsq", "trimmed"])
def test_relative_depth_loss_kinds(alignment):
    g = torch.Generator().manual_seed(5)
    depth = torch.rand(1, 1, 16, 16, generator=g) * 9 + 1
    disp = torch.rand(1, 1, 16, 16, generator=g) + 0.1
    target = torch.cat([depth, disp])
    mask = torch.rand(2, 1, 16, 16, generator=g) > 0.2
    pred = torch.cat([3.0 / depth + 1.0, 2.0 * disp + 0.5])
    crit = RelativeDepthLoss(alignment=alignment)
    out = crit(pred, target, mask, ["metric", "disparity"])
    assert set(out) == {"loss", "ssi", "grad"}
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-4)
    # using the depth as if it were disparity is wrong: positive loss
    bad = crit(pred, target, mask, ["disparity", "disparity"])
    assert bad["loss"].item() > 1e-2
    torch.testing.assert_close(bad["loss"], bad["ssi"] + 0.5 * bad["grad"])
    with pytest.raises(ValueError):
        crit(pred, target, mask, ["metric"])
    with pytest.raises(ValueError):
        crit(pred, target, mask, ["metric", "inverse"])


def test_relative_depth_loss_empty_and_resized():
    pred = torch.rand(2, 1, 8, 8).requires_grad_(True)
    out = RelativeDepthLoss()(pred, torch.rand(2, 1, 16, 16), torch.zeros(2, 1, 16, 16, dtype=torch.bool), "metric")
    assert all(v.item() == 0.0 for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(pred.grad).all()


# ----------------------------------------------------------------------------------------------
# Domain loss
# ----------------------------------------------------------------------------------------------


def test_domain_loss():
    logits = torch.randn(4, 2, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(domain_loss(logits, labels), F.cross_entropy(logits, labels))
    empty = domain_loss(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0


@pytest.mark.parametrize("alignment", ["lstsq", "trimmed"])
def test_relative_depth_loss_garbage_off_mask_gives_finite_grads(alignment):
    torch.manual_seed(0)
    mask = torch.rand(3, 1, 8, 8) > 0.3
    mask[1] = False
    mask[1, 0, 0, 0] = True  # a single valid pixel
    mask[2] = False  # an empty image
    pred = torch.rand(3, 1, 8, 8)
    pred[~mask] = float("nan")
    pred.requires_grad_(True)
    target = torch.rand(3, 1, 8, 8) + 0.1
    target[~mask] = -1.0
    out = RelativeDepthLoss(alignment=alignment)(pred, target, mask, ["metric", "relative", "disparity"])
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert torch.isfinite(pred.grad).all()
