"""Depth Anything V2's SiLog form (loss.silog_form=da2), against hand-computed values."""

import math

import torch
from omegaconf import OmegaConf

from zoe_lightning.losses import metric_silog, silog_loss, silog_loss_da2


def test_da2_silog_hand_computed_and_masked():
    e = math.e
    pred = torch.tensor([1.0, e, 5.0]).view(1, 1, 1, 3)
    target = torch.tensor([e, e, 1.0]).view(1, 1, 1, 3)
    mask = torch.tensor([True, True, False]).view(1, 1, 1, 3)
    loss, n = silog_loss_da2(pred, target, mask, lam=0.5)
    # d = ln gt - ln pred = [1, 0]: mean(d^2) = 0.5, mean(d) = 0.5 -> sqrt(0.5 - 0.5 * 0.25)
    assert int(n) == 2 and abs(loss.item() - math.sqrt(0.375)) < 1e-6
    loss0, _ = silog_loss_da2(pred, target, mask, lam=0.0)
    assert abs(loss0.item() - math.sqrt(0.5)) < 1e-6
    # scale invariance at lam = 1: a global factor on pred leaves the loss unchanged
    p, t = torch.rand(2, 1, 4, 4) + 0.1, torch.rand(2, 1, 4, 4) + 0.1
    a, _ = silog_loss_da2(p, t, lam=1.0)
    b, _ = silog_loss_da2(3.0 * p, t, lam=1.0)
    assert torch.allclose(a, b, atol=1e-5)


def test_metric_silog_picks_the_form():
    p, t = torch.rand(2, 1, 4, 4) + 0.1, torch.rand(2, 1, 4, 4) + 0.1
    zoe = OmegaConf.create({"silog_form": "zoedepth", "silog_beta": 0.15, "silog_lambda": 0.5})
    da2 = OmegaConf.create({"silog_form": "da2", "silog_beta": 0.15, "silog_lambda": 0.5})
    assert torch.equal(metric_silog(zoe, p, t)[0], silog_loss(p, t, beta=0.15)[0])
    assert torch.equal(metric_silog(da2, p, t)[0], silog_loss_da2(p, t, lam=0.5)[0])
