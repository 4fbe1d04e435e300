"""Speed variants of the metric bins modules against independent references: the vectorised attractor
of the original, autograd of the plain log-binomial expression, finite differences (gradcheck), and
the original expected-depth recipe written out in float64."""

import pytest
import torch

from zoe_lightning.accel.bins import AcceleratedAttractorLayer, _AttractorSum
from zoe_lightning.accel.log_binomial import FastConditionalLogBinomial, MemoryEfficientLogBinomial, _LogBinomialSoftmax
from zoe_lightning.models.bins import AttractorLayer, LogBinomial

from .helpers import SavedBytes, as_variant


@pytest.mark.parametrize("kind", ["inv", "exp"])
@pytest.mark.parametrize("normed", [True, False])
def test_memory_efficient_attractor_gradients_equal_the_vectorised_original(kind, normed):
    torch.manual_seed(0)
    layer = AttractorLayer(6, 4, 8, 1e-3, 10.0, normed=normed, kind=kind, alpha=300.0, gamma=2.0).double()
    x = torch.randn(2, 6, 5, 4, dtype=torch.double, requires_grad=True)
    prev = torch.rand(2, 7, 5, 4, dtype=torch.double, requires_grad=True)
    weights = torch.randn(2, 7, 5, 4, dtype=torch.double)

    def run():
        carried, metric = layer(x, prev)
        loss = (carried * weights).sum() + (metric * weights.flip(1)).sum()
        return [carried, metric], torch.autograd.grad(loss, [x, prev, *layer.parameters()])

    outs_full, grads_full = run()
    layer = as_variant(layer, AcceleratedAttractorLayer, fast_path=False, memory_efficient=True)
    outs_eff, grads_eff = run()
    for a, b in zip(outs_full + list(grads_full), outs_eff + list(grads_eff)):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("kind", ["inv", "exp"])
def test_attractor_sum_gradient_matches_finite_differences(kind):
    torch.manual_seed(1)
    points = torch.rand(1, 3, 2, 2, dtype=torch.double, requires_grad=True)
    centers = torch.rand(1, 5, 2, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, c: _AttractorSum.apply(p, c, kind, 7.0, 2.0), (points, centers))


def test_memory_efficient_attractor_saves_only_its_inputs():
    b, a, n, h, w = 2, 16, 64, 8, 8
    layer = AttractorLayer(4, a, 4, 1e-3, 10.0, normed=False)
    points = torch.rand(b, a, h, w, requires_grad=True)
    centers = torch.rand(b, n, h, w, requires_grad=True)
    with SavedBytes() as full:
        layer.delta(points, centers)
    layer = as_variant(layer, AcceleratedAttractorLayer, fast_path=True, memory_efficient=True)
    with SavedBytes() as eff:
        layer.delta(points, centers)
    inputs = 4 * b * (a + n) * h * w
    assert eff.total == inputs  # exactly points + centers
    assert full.total >= 4 * b * a * n * h * w  # at least one full (B,A,N,h,w) tensor


@pytest.mark.parametrize("kind, gamma", [("inv", 2.0), ("inv", 3.0), ("exp", 2.0)])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_inplace_attractor_delta_matches_float64_formula_and_keeps_inputs(kind, gamma, aggregation):
    torch.manual_seed(8)
    layer = as_variant(AttractorLayer(8, 3, 8, 0.0, 10.0, False, kind, aggregation, alpha=2.0, gamma=gamma),
                    AcceleratedAttractorLayer, fast_path=True, memory_efficient=True)
    points, centers = 10 * torch.rand(2, 3, 5, 6), 10 * torch.rand(2, 7, 5, 6)
    before = points.clone(), centers.clone()
    with torch.no_grad():
        delta = layer.delta(points, centers)
    d = points.double().unsqueeze(2) - centers.double().unsqueeze(1)  # (B, A, N, h, w)
    m = 2.0 * d.abs() ** gamma
    expected = (d / (1 + m) if kind == "inv" else d * torch.exp(-m)).sum(1)
    expected = expected / 3 if aggregation == "mean" else expected
    torch.testing.assert_close(delta.double(), expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(points, before[0]) and torch.equal(centers, before[1])


@pytest.mark.parametrize("stirling", [False, True])
def test_log_binomial_softmax_equals_plain_autograd(stirling):
    torch.manual_seed(2)
    module = as_variant(LogBinomial(12, stirling).double(), MemoryEfficientLogBinomial)
    p = torch.rand(2, 1, 3, 4, dtype=torch.double).clamp(0.05, 0.95).requires_grad_()
    t = (torch.rand(2, 1, 3, 4, dtype=torch.double) + 0.2).requires_grad_()
    weights = torch.randn(2, 12, 3, 4, dtype=torch.double)
    k, n = module.k_idx, module.K_minus_1
    from zoe_lightning.models.bins import log_binomial_coefficient

    plain = torch.softmax((log_binomial_coefficient(n, k, stirling) + k * torch.log(p)
                           + (n - k) * torch.log(1 - p)) / t, dim=1)
    fused = module(p, t)
    torch.testing.assert_close(fused, plain, atol=1e-12, rtol=1e-10)
    g_plain = torch.autograd.grad((plain * weights).sum(), [p, t])
    g_fused = torch.autograd.grad((fused * weights).sum(), [p, t])
    for a, b in zip(g_plain, g_fused):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8)
    args = (torch.log(p), torch.log(1 - p), t, log_binomial_coefficient(n, k, stirling), k, n)
    assert torch.autograd.gradcheck(lambda lp, lq, tt: _LogBinomialSoftmax.apply(lp, lq, tt, *args[3:]), args[:3])


def test_log_binomial_keeps_one_full_size_tensor_for_backward():
    module = as_variant(LogBinomial(32), MemoryEfficientLogBinomial)
    p = torch.rand(2, 1, 16, 16).clamp(0.05, 0.95).requires_grad_()
    t = (torch.rand(2, 1, 16, 16) + 0.2).requires_grad_()
    with SavedBytes() as saved:
        module(p, t)
    full = 4 * 2 * 32 * 16 * 16
    assert full <= saved.total < 2 * full  # the probabilities, plus (B,1,H,W)-sized inputs


def _reference_expected_depth_f64(clb, features, condition, centers):
    """The original's recipe in float64, written out independently: upsample, concatenate, 1x1
    convs as einsums, erf GELU, softplus, log-binomial with the (K-1) log(1-p) term, softmax."""
    import math

    import torch.nn.functional as F

    size = features[0].shape[-2:]
    up = lambda x: F.interpolate(x.double(), size=size, mode="bilinear", align_corners=True)  # noqa: E731
    x = torch.cat([up(f) for f in features] + [up(condition)], dim=1)
    w1, b1 = clb.mlp[0].weight.double().flatten(1), clb.mlp[0].bias.double()
    w2, b2 = clb.mlp[2].weight.double().flatten(1), clb.mlp[2].bias.double()
    h = torch.einsum("oc,bchw->bohw", w1, x) + b1.view(1, -1, 1, 1)
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    s = torch.log1p(torch.exp(torch.einsum("oc,bchw->bohw", w2, h) + b2.view(1, -1, 1, 1))) + clb.p_eps
    p = s[:, 0:1] / (s[:, 0:1] + s[:, 1:2])
    t = (clb.max_temp - clb.min_temp) * s[:, 2:3] / (s[:, 2:3] + s[:, 3:4]) + clb.min_temp
    n_bins = clb.log_binomial_transform.K
    k = torch.arange(n_bins, dtype=torch.double).view(1, -1, 1, 1)
    n = n_bins - 1
    coeff = torch.tensor([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(n_bins)],
                         dtype=torch.double).view(1, -1, 1, 1)
    logits = (coeff + k * torch.log(p.clamp(1e-4, 1)) + (n - k) * torch.log((1 - p).clamp(1e-4, 1))) / t
    probs = torch.softmax(logits, dim=1)
    return (probs * up(centers)).sum(1, keepdim=True), probs


@pytest.mark.parametrize("sharp", [False, True])
def test_fast_expected_depth_matches_float64_original_recipe(sharp):
    from zoe_lightning.models.bins import ConditionalLogBinomial

    torch.manual_seed(3)
    clb = ConditionalLogBinomial(33, 16, 32)
    if sharp:  # low temperatures, p near 1: logits of order 1e3-1e4, peaked but not one-hot
        with torch.no_grad():
            clb.mlp[2].bias.copy_(torch.tensor([1.0, -1.0, -6.0, 6.0]))
    feats = [torch.rand(2, 32, 24, 40), torch.rand(2, 1, 12, 20)]
    cond, centers = torch.randn(2, 16, 12, 20), 0.5 + 9 * torch.rand(2, 32, 12, 20)
    ref_depth, ref_probs = _reference_expected_depth_f64(clb, feats, cond, centers)
    if sharp:
        assert 0.5 < float(ref_probs.max(1).values.mean()) < 0.95
    # float32 rounding of logits of order 1e4 moves depths by ~1e-4 m in *both* op orders
    atol = 5e-4 if sharp else 2e-5
    errors = {}
    for fast in (True, False):
        module = as_variant(clb, FastConditionalLogBinomial) if fast else clb
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                depth, probs, up_centers = module.expected_depth(feats, cond, centers)
            assert depth.shape == (2, 1, 24, 40) and probs.shape == up_centers.shape == (2, 32, 24, 40)
            torch.testing.assert_close(depth.double(), ref_depth, atol=atol, rtol=0)
            torch.testing.assert_close(probs.double(), ref_probs, atol=atol / 5, rtol=0)
            errors[fast] = float((depth.double() - ref_depth).abs().max())
    assert errors[True] <= 3 * errors[False] + 1e-5  # no worse than the original order's own rounding


def test_fast_expected_depth_gradients_equal_the_original_order():
    from zoe_lightning.models.bins import ConditionalLogBinomial

    torch.manual_seed(4)
    clb = ConditionalLogBinomial(33, 16, 24).double()
    feats = [torch.rand(1, 32, 10, 14, dtype=torch.double).requires_grad_(),
             torch.rand(1, 1, 10, 14, dtype=torch.double).requires_grad_()]
    cond = torch.randn(1, 16, 5, 7, dtype=torch.double).requires_grad_()
    centers = (0.5 + 9 * torch.rand(1, 24, 5, 7, dtype=torch.double)).requires_grad_()
    inputs = [*feats, cond, centers, *clb.parameters()]
    weights = torch.rand(1, 1, 10, 14, dtype=torch.double)
    grads = {}
    for fast in (False, True):
        module = as_variant(clb, FastConditionalLogBinomial, share=True) if fast else clb
        depth, _, _ = module.expected_depth(feats, cond, centers)
        grads[fast] = torch.autograd.grad((depth * weights).sum(), inputs)
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("grad", [False, True])
def test_fast_log_binomial_stays_fp32_under_bf16_autocast(grad):
    from zoe_lightning.models.bins import ConditionalLogBinomial

    torch.manual_seed(3)
    clb = ConditionalLogBinomial(33, 16, 32)
    with torch.no_grad():  # sharp: logits of order 1e3, which bf16 (8-bit mantissa) would wreck
        clb.mlp[2].bias.copy_(torch.tensor([1.0, -1.0, -6.0, 6.0]))
    feats = [torch.rand(2, 32, 24, 40), torch.rand(2, 1, 12, 20)]
    cond, centers = torch.randn(2, 16, 12, 20), 0.5 + 9 * torch.rand(2, 32, 12, 20)
    ref, _ = _reference_expected_depth_f64(clb, feats, cond, centers)
    errors = {}
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        for fast in (True, False):
            module = as_variant(clb, FastConditionalLogBinomial) if fast else clb
            depth, probs, _ = module.expected_depth(feats, cond, centers)
            errors[fast] = float((depth.double() - ref).abs().max())
            if fast:
                assert depth.dtype == probs.dtype == torch.float32
    # only the bf16 MLP rounds (p and T move by ~1e-2): depths within 0.2 m over 0.5-9.5 m
    assert errors[True] < 0.2 and errors[True] <= errors[False]


@pytest.mark.parametrize("source, target, band", [((12, 20), (24, 40), 5), ((7, 9), (31, 17), 1),
                                                  ((1, 6), (5, 6), 2), ((10, 16), (10, 16), 3), ((5, 8), (64, 96), 64)])
def test_row_upsampler_bands_equal_full_bilinear_interpolation(source, target, band):
    from zoe_lightning.accel.kernels import RowUpsampler

    torch.manual_seed(7)
    low = torch.randn(2, *source, 3)  # (B, h, w, C) pixel-major
    full = torch.nn.functional.interpolate(low.permute(0, 3, 1, 2).double(), size=target, mode="bilinear",
                                           align_corners=True).permute(0, 2, 3, 1)
    up = RowUpsampler(source[0], target[0], low)
    rows = [up.band(low, r0, min(target[0], r0 + band), target[1]) for r0 in range(0, target[0], band)]
    assert all(r.is_contiguous() for r in rows)
    torch.testing.assert_close(torch.cat(rows, dim=1).double(), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sharp", [False, True])
@pytest.mark.parametrize("band_pixels", [40, 1000, 10 ** 6])
def test_depth_only_bands_match_float64_original_recipe(sharp, band_pixels, monkeypatch):
    from zoe_lightning.models.bins import ConditionalLogBinomial

    calls = []
    banded = FastConditionalLogBinomial._depth_bands
    monkeypatch.setattr(FastConditionalLogBinomial, "_depth_bands", lambda *a: calls.append(1) or banded(*a))

    torch.manual_seed(3)
    clb = as_variant(ConditionalLogBinomial(33, 16, 32), FastConditionalLogBinomial)
    clb.band_pixels = band_pixels  # 40 px: one row per band (and less than a row)
    if sharp:
        with torch.no_grad():
            clb.mlp[2].bias.copy_(torch.tensor([1.0, -1.0, -6.0, 6.0]))
    # relative at a lower resolution, centres at another one than the condition
    feats = [torch.rand(2, 32, 23, 40).contiguous(memory_format=torch.channels_last), torch.rand(2, 1, 12, 20)]
    cond, centers = torch.randn(2, 16, 12, 20), 0.5 + 9 * torch.rand(2, 32, 6, 11)
    with torch.no_grad():
        ref_depth, _ = _reference_expected_depth_f64(clb, feats, cond, centers)
    with torch.inference_mode():
        depth, probs, up_centers = clb.expected_depth(feats, cond, centers, maps=False)
        assert calls == [1]  # the banded path ran
        full, _, _ = clb.expected_depth(feats, cond, centers)
    assert probs is None and up_centers is None and depth.shape == (2, 1, 23, 40)
    atol = 5e-4 if sharp else 2e-5
    torch.testing.assert_close(depth.double(), ref_depth, atol=atol, rtol=0)
    assert float((depth - full).abs().max()) <= float((full.double() - ref_depth).abs().max()) + atol


def test_depth_only_keeps_autograd_when_gradients_are_needed():
    from zoe_lightning.models.bins import ConditionalLogBinomial

    torch.manual_seed(4)
    clb = as_variant(ConditionalLogBinomial(33, 16, 24), FastConditionalLogBinomial)
    feats = [torch.rand(1, 32, 10, 14), torch.rand(1, 1, 10, 14)]
    cond, centers = torch.randn(1, 16, 5, 7), 0.5 + 9 * torch.rand(1, 24, 5, 7)
    depth, probs, _ = clb.expected_depth(feats, cond, centers, maps=False)
    assert probs is None and depth.requires_grad
    ref, _, _ = clb.expected_depth(feats, cond, centers)
    g1 = torch.autograd.grad(depth.sum(), clb.mlp[0].weight)[0]
    g2 = torch.autograd.grad(ref.sum(), clb.mlp[0].weight)[0]
    torch.testing.assert_close(g1, g2)


def test_memory_efficient_attractor_equals_vectorised():
    torch.manual_seed(0)
    layer = AttractorLayer(8, 4, 8, 1e-3, 10.0, normed=True)
    x, prev, emb = torch.randn(2, 8, 6, 6), torch.rand(2, 16, 3, 3), torch.randn(2, 8, 3, 3)
    a = layer(x, prev, emb)
    b = as_variant(layer, AcceleratedAttractorLayer, fast_path=False, memory_efficient=True)(x, prev, emb)
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-6)
