"""Speed switches (issue #7): each is config and computes the same function (within 1e-4).

The references are independent: the explicit attention formula, the vectorised attractor of the
original, autograd of the plain log-binomial expression, finite differences (gradcheck), the
contiguous / eager / un-checkpointed model, and hand-computed metric values.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoe_lightning.losses import silog_loss
from zoe_lightning.models import build_model
from zoe_lightning.models.bins import AttractorLayer, LogBinomial, _AttractorSum, _LogBinomialSoftmax
from zoe_lightning.models.encoder import Encoder

from ..conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.img_size=[32,48]", "model.features=32", "model.head.bin_embedding_dim=16",
         "model.head.seed_mlp_dim=16", "model.head.projector_mlp_dim=16"]
BEIT = ["model.backbone=test_beit", *SMALL]


def _pair(*overrides, base=BEIT):
    """Two models with identical weights: the defaults and the defaults + ``overrides``."""
    torch.manual_seed(0)
    ref = build_model(tiny_config(*base))
    other = build_model(tiny_config(*base, *overrides))
    other.load_state_dict(ref.state_dict())
    return ref, other


def _forward_and_grads(model, image):
    out = model(image, domain=torch.zeros(image.shape[0], dtype=torch.long))
    loss = (out.metric_depth * torch.linspace(0.5, 1.5, out.metric_depth.numel()).view_as(out.metric_depth)).sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    return out.metric_depth.detach(), grads


def _assert_same(ref, other, image, atol=1e-4, rtol=1e-4):
    d1, g1 = _forward_and_grads(ref, image)
    d2, g2 = _forward_and_grads(other, image)
    torch.testing.assert_close(d2, d1, atol=atol, rtol=rtol)
    for a, b in zip(g1, g2):
        if a is not None or b is not None:
            torch.testing.assert_close(b, a, atol=atol, rtol=rtol)


class SavedBytes:
    """Bytes of the tensors autograd saves for backward (unique storages) inside the context."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)

    @property
    def total(self):
        return sum(self.storages.values())


# ---------------------------------------------------------------------------------- attention


def test_fused_attention_switch_is_config_and_matches_explicit_attention():
    ref, explicit = _pair("model.fused_attention=false")
    assert ref.core.pretrained.fused_attention is True
    assert explicit.core.pretrained.fused_attention is False
    image = torch.rand(2, 3, 32, 48)
    _assert_same(ref, explicit, image)  # training mode (dropout rates are 0): outputs and gradients


def test_fused_attention_switch_reaches_timm_blocks():
    torch.manual_seed(0)
    enc = Encoder("test_vit", (32, 48))
    flags = [m.fused_attn for m in enc.model.modules() if hasattr(m, "fused_attn")]
    assert flags, "timm ViT attention exposes fused_attn"
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        fused = enc(x)
        enc.set_fused_attention(False)
        assert not any(m.fused_attn for m in enc.model.modules() if hasattr(m, "fused_attn"))
        explicit = enc(x)
    for a, b in zip(fused, explicit):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------- attractors


@pytest.mark.parametrize("kind", ["inv", "exp"])
@pytest.mark.parametrize("normed", [True, False])
def test_memory_efficient_attractor_gradients_equal_the_vectorised_original(kind, normed):
    torch.manual_seed(0)
    layer = AttractorLayer(6, 4, 8, 1e-3, 10.0, normed=normed, kind=kind, alpha=300.0, gamma=2.0,
                           memory_efficient=False).double()
    x = torch.randn(2, 6, 5, 4, dtype=torch.double, requires_grad=True)
    prev = torch.rand(2, 7, 5, 4, dtype=torch.double, requires_grad=True)
    weights = torch.randn(2, 7, 5, 4, dtype=torch.double)

    def run():
        carried, metric = layer(x, prev)
        loss = (carried * weights).sum() + (metric * weights.flip(1)).sum()
        return [carried, metric], torch.autograd.grad(loss, [x, prev, *layer.parameters()])

    outs_full, grads_full = run()
    layer.memory_efficient = True
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
    layer = AttractorLayer(4, a, 4, 1e-3, 10.0, normed=False, memory_efficient=False)
    points = torch.rand(b, a, h, w, requires_grad=True)
    centers = torch.rand(b, n, h, w, requires_grad=True)
    with SavedBytes() as full:
        layer.delta(points, centers)
    layer.memory_efficient = True
    with SavedBytes() as eff:
        layer.delta(points, centers)
    inputs = 4 * b * (a + n) * h * w
    assert eff.total == inputs  # exactly points + centers
    assert full.total >= 4 * b * a * n * h * w  # at least one full (B,A,N,h,w) tensor


# ---------------------------------------------------------------------------------- log-binomial


@pytest.mark.parametrize("stirling", [False, True])
def test_log_binomial_softmax_equals_plain_autograd(stirling):
    torch.manual_seed(2)
    module = LogBinomial(12, stirling).double()
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
    module = LogBinomial(32)
    p = torch.rand(2, 1, 16, 16).clamp(0.05, 0.95).requires_grad_()
    t = (torch.rand(2, 1, 16, 16) + 0.2).requires_grad_()
    with SavedBytes() as saved:
        module(p, t)
    full = 4 * 2 * 32 * 16 * 16
    assert full <= saved.total < 2 * full  # the probabilities, plus (B,1,H,W)-sized inputs


# ---------------------------------------------------------------------------------- fast path


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
        clb.fast_path = fast
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                depth, probs, up_centers = clb.expected_depth(feats, cond, centers)
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
        clb.fast_path = fast
        depth, _, _ = clb.expected_depth(feats, cond, centers)
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
            clb.fast_path = fast
            depth, probs, _ = clb.expected_depth(feats, cond, centers)
            errors[fast] = float((depth.double() - ref).abs().max())
            if fast:
                assert depth.dtype == probs.dtype == torch.float32
    # only the bf16 MLP rounds (p and T move by ~1e-2): depths within 0.2 m over 0.5-9.5 m
    assert errors[True] < 0.2 and errors[True] <= errors[False]


@pytest.mark.parametrize("source, target, band", [((12, 20), (24, 40), 5), ((7, 9), (31, 17), 1),
                                                  ((1, 6), (5, 6), 2), ((10, 16), (10, 16), 3), ((5, 8), (64, 96), 64)])
def test_row_upsampler_bands_equal_full_bilinear_interpolation(source, target, band):
    from zoe_lightning.models.fastpath import RowUpsampler

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
    banded = ConditionalLogBinomial._depth_bands
    monkeypatch.setattr(ConditionalLogBinomial, "_depth_bands", lambda *a: calls.append(1) or banded(*a))

    torch.manual_seed(3)
    clb = ConditionalLogBinomial(33, 16, 32)
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
    clb = ConditionalLogBinomial(33, 16, 24)
    feats = [torch.rand(1, 32, 10, 14), torch.rand(1, 1, 10, 14)]
    cond, centers = torch.randn(1, 16, 5, 7), 0.5 + 9 * torch.rand(1, 24, 5, 7)
    depth, probs, _ = clb.expected_depth(feats, cond, centers, maps=False)
    assert probs is None and depth.requires_grad
    ref, _, _ = clb.expected_depth(feats, cond, centers)
    g1 = torch.autograd.grad(depth.sum(), clb.mlp[0].weight)[0]
    g2 = torch.autograd.grad(ref.sum(), clb.mlp[0].weight)[0]
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("kind, gamma", [("inv", 2.0), ("inv", 3.0), ("exp", 2.0)])
@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_inplace_attractor_delta_matches_float64_formula_and_keeps_inputs(kind, gamma, aggregation):
    torch.manual_seed(8)
    layer = AttractorLayer(8, 3, 8, 0.0, 10.0, False, kind, aggregation, alpha=2.0, gamma=gamma)
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


@pytest.mark.parametrize("experiment_overrides", [[], ["model.bins=[{name: nyu, n_bins: 16, min_depth: 0.001, "
                                                       "max_depth: 10}, {name: kitti, n_bins: 16, min_depth: 0.001, "
                                                       "max_depth: 80}]"], ["model.head.type=splitter"]])
def test_model_depth_only_output_equals_the_full_output(experiment_overrides):
    torch.manual_seed(0)
    model = build_model(tiny_config(*BEIT, *experiment_overrides)).eval()
    image = torch.rand(3, 3, 32, 48)
    with torch.inference_mode():
        full, lean = model(image), model(image, maps=False)
    assert lean.bin_centers is None and lean.probs is None and full.probs is not None
    torch.testing.assert_close(lean.metric_depth, full.metric_depth, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lean.domain_index, full.domain_index)


def test_evaluate_and_predict_ask_for_depth_only():
    from zoe_lightning.inference import model_depth

    model = build_model(tiny_config(*BEIT)).eval()
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("maps")), with_kwargs=True)
    with torch.inference_mode():
        depth, _ = model_depth(model, torch.rand(1, 3, 32, 48))
    assert seen == [False] and depth.shape == (1, 1, 32, 48)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_gemm_equals_conv2d(layout, bias):
    from zoe_lightning.models.fastpath import conv1x1

    torch.manual_seed(5)
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias)
    x = torch.randn(3, 6, 7, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = conv1x1(x, conv)
    expected = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + (conv.bias.view(1, -1, 1, 1) if bias else 0)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)


def test_fast_path_modules_equal_their_original_order():
    from zoe_lightning.models.dpt import FeatureFusionBlock
    from zoe_lightning.models.encoder import ProjectReadout

    torch.manual_seed(6)
    block = FeatureFusionBlock(8)
    x, skip = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    block.fast_path = False
    slow = block(x, skip, size=(11, 13))  # upsample then 1x1 conv
    block.fast_path = True
    torch.testing.assert_close(block(x, skip, size=(11, 13)), slow, atol=1e-5, rtol=1e-5)
    readout = ProjectReadout(12)
    tokens, cls = torch.randn(2, 20, 12), torch.randn(2, 1, 12)
    lin = readout.project[0]
    expected = torch.nn.functional.gelu(torch.cat([tokens, cls.expand(-1, 20, -1)], -1) @ lin.weight.t() + lin.bias)
    torch.testing.assert_close(readout(tokens, cls), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("experiment_overrides", [[], ["model.bins=[{name: nyu, n_bins: 16, min_depth: 0.001, "
                                                       "max_depth: 10}, {name: kitti, n_bins: 16, min_depth: 0.001, "
                                                       "max_depth: 80}]"]])
def test_fast_path_switch_is_config_and_keeps_outputs_and_gradients(experiment_overrides):
    from zoe_lightning.models.fastpath import FastPath

    ref, slow = _pair("model.fast_path=false", base=[*BEIT, *experiment_overrides])
    flags = {m.fast_path for m in slow.modules() if isinstance(m, FastPath)}
    assert flags == {False} and {m.fast_path for m in ref.modules() if isinstance(m, FastPath)} == {True}
    image = torch.rand(2, 3, 32, 48)
    ref.eval(), slow.eval()
    _assert_same(ref, slow, image)  # with autograd: training path
    with torch.inference_mode():  # in-place inference path
        a, b = ref(image), slow(image)
    for name in ("metric_depth", "relative_depth", "probs", "bin_centers"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------- layout, checkpointing


def test_channels_last_is_config_and_keeps_outputs():
    ref, nhwc = _pair("model.channels_last=true")
    conv = nhwc.core.scratch.layer1_rn.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    image = torch.rand(2, 3, 32, 48)
    assert nhwc.prep(image).is_contiguous(memory_format=torch.channels_last)
    ref.eval(), nhwc.eval()
    _assert_same(ref, nhwc, image)


@pytest.mark.parametrize("backbone", ["test_beit", "test_vit"])
def test_grad_checkpointing_keeps_gradients_and_saves_less(backbone):
    base = [f"model.backbone={backbone}", *SMALL]
    ref, ckpt = _pair("model.grad_checkpointing=true", base=base)
    image = torch.rand(2, 3, 32, 48)
    _assert_same(ref, ckpt, image)
    # the backbone's activations are no longer kept for backward
    with SavedBytes() as plain:
        ref.core.pretrained(ref.prep(image))
    with SavedBytes() as checkpointed:
        ckpt.core.pretrained(ckpt.prep(image))
    tokens = (32 // 16) * (48 // 16) + 1
    width = ref.core.pretrained.model.embed_dim
    one_activation = 4 * 2 * tokens * width
    assert plain.total >= len(ref.core.pretrained.hooks) * one_activation
    assert checkpointed.total < plain.total / 2


# ---------------------------------------------------------------------------------- precision


def test_bf16_autocast_keeps_silog_in_fp32():
    torch.manual_seed(0)
    model = build_model(tiny_config(*BEIT)).eval()
    image = torch.rand(2, 3, 32, 48)
    depth = 1 + 4 * torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        ref = model(image).metric_depth
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(image).metric_depth
            loss, _ = silog_loss(out, depth)
            loss_fp32_pred, _ = silog_loss(out.float(), depth)
    assert loss.dtype == torch.float32
    assert loss.item() == loss_fp32_pred.item()  # the loss itself is computed in fp32
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)  # bf16: ~3 significant digits


@pytest.mark.slow
def test_compile_switch_keeps_outputs_and_state_dict_keys():
    ref, compiled = _pair("model.compile=true")
    assert list(compiled.state_dict()) == list(ref.state_dict())
    ref.eval(), compiled.eval()
    image = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(compiled(image).metric_depth, ref(image).metric_depth, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------- benchmark helpers


def test_numpy_reference_metrics_hand_values():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np

    import bench_model

    gt = np.array([[1.0, 2.0, 0.0]])  # the 0 is invalid
    pred = np.array([[1.0, 4.0, 3.0]])
    m = bench_model.numpy_metrics(pred, gt, 1e-3, 10.0, eigen_crop=False)
    assert m["abs_rel"] == pytest.approx(0.5)  # (0 + 2/2) / 2
    assert m["a1"] == pytest.approx(0.5)  # ratios 1 and 2
    assert m["a2"] == pytest.approx(0.5)  # 2 > 1.25^2 = 1.5625
    assert m["a3"] == pytest.approx(0.5)  # 2 > 1.25^3 = 1.953125
    assert m["rmse"] == pytest.approx(2 ** 0.5)  # sqrt((0 + 4) / 2)
    assert m["sq_rel"] == pytest.approx(1.0)  # (0 + 4/2) / 2
    assert m["log_10"] == pytest.approx(np.log10(2) / 2)
    assert m["silog"] == pytest.approx(100 * np.log(2) / 2)  # sqrt(mean(e^2) - mean(e)^2), e = (0, ln 2)


def test_bench_cli_rejects_unknown_rows():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--rows", "9"],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 2
    assert "unknown row" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------- optimizer


@pytest.mark.parametrize("kind", ["fused", "foreach"])
def test_adamw_implementations_match_the_per_parameter_loop(kind):
    from omegaconf import OmegaConf

    from zoe_lightning.modules.base import make_adamw

    torch.manual_seed(7)
    params = {name: [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))] for name in ("a", "b")}
    for pa, pb in zip(params["a"], params["b"]):
        pb.data.copy_(pa.data)
    opts = {}
    for name, impl in (("a", "loop"), ("b", kind)):
        cfg = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.1, "adamw": impl})
        groups = [{"params": params[name][:1], "lr": 1e-2}, {"params": params[name][1:], "lr": 1e-3}]
        opts[name] = make_adamw(groups, cfg)
    for step in range(3):
        grads = [torch.randn(5, 3), torch.randn(4)]
        for name in ("a", "b"):
            for p, g in zip(params[name], grads):
                p.grad = g.clone()
            opts[name].param_groups[0]["betas"] = (0.9 - 0.02 * step, 0.999)  # OneCycle cycles momentum
            opts[name].step()
    for pa, pb in zip(params["a"], params["b"]):
        assert not torch.equal(pa.data, torch.zeros_like(pa))
        torch.testing.assert_close(pb.data, pa.data, atol=1e-6, rtol=1e-6)


def test_adamw_choice_is_validated_and_fp16_avoids_fused():
    from omegaconf import OmegaConf

    from zoe_lightning.modules.base import make_adamw

    cfg = OmegaConf.create({"lr": 1.0, "weight_decay": 0.0, "adamw": "fused"})
    assert make_adamw([torch.nn.Parameter(torch.ones(1))], cfg).defaults["fused"]
    fp16 = make_adamw([torch.nn.Parameter(torch.ones(1))], cfg, "16-mixed")  # Lightning clips: no fused
    assert not fp16.defaults["fused"] and fp16.defaults["foreach"]

    with pytest.raises(ValueError, match="optim.adamw"):
        make_adamw([torch.nn.Parameter(torch.ones(1))], OmegaConf.create({"lr": 1.0, "weight_decay": 0.0,
                                                                          "adamw": "lion"}))


# ---------------------------------------------------------------------------------- Winograd 3x3


@pytest.mark.parametrize("batch,channels,out,size,layout,bias", [
    (1, 5, 7, (6, 8), "channels_last", True),
    (2, 3, 4, (10, 4), "nchw", False),
    (3, 8, 6, (2, 2), "channels_last", True),
])
def test_winograd_conv3x3_equals_conv2d_in_float64(batch, channels, out, size, layout, bias, monkeypatch):
    """The F(2x2,3x3) algebra is exact: in float64 it matches conv2d to 1e-12, for band sizes that
    do and do not divide the tile rows (1 and 2 tiles per band, and one band for everything)."""
    from zoe_lightning.models import fastpath

    torch.manual_seed(11)
    conv = torch.nn.Conv2d(channels, out, 3, padding=1, bias=bias).double()
    x = torch.randn(batch, channels, *size, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    for tiles in (1, 2 * batch * size[1] // 2 + 1, 10_000):
        monkeypatch.setattr(fastpath, "WINOGRAD_BAND_TILES", tiles)
        with torch.no_grad():  # an inference kernel
            got = fastpath.winograd_conv3x3(x, fastpath.winograd_weight(conv.weight), conv.bias)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_conv3x3_uses_winograd_only_at_fp32_inference_and_follows_weight_updates(monkeypatch):
    from zoe_lightning.models import fastpath

    calls = []
    real = fastpath.winograd_conv3x3
    monkeypatch.setattr(fastpath, "winograd_conv3x3", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(12)
    conv = torch.nn.Conv2d(64, 128, 3, padding=1)
    x = torch.randn(1, 64, 8, 10)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        torch.testing.assert_close(fastpath.conv3x3(x, conv, True).double(), expected, atol=1e-5, rtol=1e-5)
        assert calls == [1]
        conv.weight.mul_(-2.0)  # in place (as an optimizer step): the cached filters must be recomputed
        torch.testing.assert_close(fastpath.conv3x3(x, conv, True).double(), -2 * expected + 3 * conv.bias.double()
                                   .view(1, -1, 1, 1), atol=1e-5, rtol=1e-5)
        assert len(calls) == 2
        fastpath.conv3x3(x, conv, False)  # switched off
        fastpath.conv3x3(x[..., :9], conv, True)  # odd width: PyTorch's kernel
        fastpath.conv3x3(x.double(), conv.double(), True)  # not fp32
        conv.float()
        small = torch.nn.Conv2d(64, 32, 3, padding=1)  # too few output channels to pay off
        fastpath.conv3x3(x, small, True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fastpath.conv3x3(x, conv, True)
        assert len(calls) == 2
    y = fastpath.conv3x3(x.requires_grad_(), conv, True)  # training: PyTorch's kernel, gradients flow
    assert len(calls) == 2 and y.requires_grad


def test_winograd_switch_is_config_and_keeps_outputs():
    from zoe_lightning.models.dpt import DPTCore, ResidualConvUnit

    wide = [*BEIT, "model.features=128", "model.img_size=[64,96]"]  # 128-channel decoder: Winograd applies
    ref, direct = _pair("model.winograd=false", base=wide)
    assert {m.winograd for m in direct.modules() if isinstance(m, (ResidualConvUnit, DPTCore))} == {False}
    assert {m.winograd for m in ref.modules() if isinstance(m, (ResidualConvUnit, DPTCore))} == {True}
    ref.eval(), direct.eval()
    image = torch.rand(2, 3, 64, 96)
    _assert_same(ref, direct, image)  # training: outputs and every gradient
    with torch.inference_mode():
        a, b = ref(image), direct(image)
        exact = direct.double()(image.double())
    assert ref.core.scratch.refinenet1.resConfUnit2.conv1.__dict__.get("_winograd_cache") is not None
    assert direct.core.scratch.refinenet1.resConfUnit2.conv1.__dict__.get("_winograd_cache") is None
    for name in ("metric_depth", "relative_depth", "probs", "bin_centers"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)
    # as close to the float64 function as PyTorch's own fp32 kernels are
    err_wino = (a.relative_depth.double() - exact.relative_depth).abs().max()
    err_direct = (b.relative_depth.double() - exact.relative_depth).abs().max()
    assert err_wino <= 4 * err_direct + 1e-6


# ---------------------------------------------------------------------------------- fused upsample + 3x3 conv


@pytest.mark.parametrize("batch,channels,out,source,target,layout,bias", [
    (1, 6, 4, (6, 8), (12, 16), "channels_last", True),  # the DPT head: 2x
    (2, 3, 5, (5, 7), (11, 13), "nchw", False),  # odd sizes, non-integer scale
    (1, 4, 3, (9, 6), (4, 5), "nchw", True),  # downsampling: bands span many source rows
    (2, 2, 2, (1, 3), (3, 1), "channels_last", True),  # one source row, one output column
])
def test_upsample_conv3x3_equals_interpolate_then_conv_in_float64(batch, channels, out, source, target, layout,
                                                                   bias, monkeypatch):
    """Moving the channel mixes before the interpolation and summing shifted taps is exact algebra:
    float64 agrees with interpolate-then-conv2d to 1e-12 for bands and chunks that do and do not
    divide the rows."""
    from zoe_lightning.models import fastpath

    torch.manual_seed(13)
    conv = torch.nn.Conv2d(channels, out, 3, padding=1, bias=bias).double()
    x = torch.randn(batch, channels, *source, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    up = torch.nn.functional.interpolate(x, size=target, mode="bilinear", align_corners=True)
    expected = torch.nn.functional.conv2d(up, conv.weight, conv.bias, padding=1)
    for band, chunk in ((1, 1), (3, 2), (8, 64)):
        monkeypatch.setattr(fastpath, "UPCONV_BAND_ROWS", band)
        monkeypatch.setattr(fastpath, "UPCONV_CHUNK_ROWS", chunk)
        with torch.no_grad():
            got = fastpath.upsample_conv3x3(x, conv, target)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("variant", ["_upsample_conv3x3_dense", "_upsample_conv3x3_interpolate", "dispatch"])
@pytest.mark.parametrize("source,target,bias", [((4, 5), (8, 10), True), ((5, 3), (9, 7), False)])
def test_upsample_conv3x3_gradients_equal_interpolate_then_conv_in_float64(variant, source, target, bias):
    """The autograd forms (training) give the outputs and the input, weight and bias gradients of
    interpolate-then-conv2d, to 1e-12 in float64."""
    from zoe_lightning.models import fastpath

    torch.manual_seed(15)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=bias).double()
    x = torch.randn(2, 3, *source, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(2, 4, *target, dtype=torch.float64)
    up = torch.nn.functional.interpolate(x, size=target, mode="bilinear", align_corners=True)
    expected = torch.nn.functional.conv2d(up, conv.weight, conv.bias, padding=1)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    want = torch.autograd.grad(expected, params, seed)
    fn = fastpath.upsample_conv3x3 if variant == "dispatch" else (
        lambda a, c, size: getattr(fastpath, variant)(a, c, *size))
    got = fn(x, conv, target)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    for g, w in zip(torch.autograd.grad(got, params, seed), want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


def test_upsample_conv3x3_dispatch_and_model_use(monkeypatch):
    """The DPT head uses the fused convs on the CPU with ``fast_path`` (inference and training);
    autocast and ``fast_path=false`` run interpolate + conv2d, with equal outputs and gradients."""
    from zoe_lightning.models import dpt, fastpath

    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    x = torch.randn(1, 4, 5, 6)
    assert fastpath.upsample_conv3x3_applies(x, conv)
    assert not fastpath.upsample_conv3x3_applies(x, torch.nn.Conv2d(4, 3, 3, padding=2, dilation=2))
    assert not fastpath.upsample_conv3x3_applies(x, torch.nn.Conv2d(4, 3, 3, padding=1, stride=2))
    assert not fastpath.upsample_conv3x3_applies(x.double(), conv)  # weight dtype differs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fastpath.upsample_conv3x3_applies(x, conv)

    calls = []
    real = dpt.upsample_conv3x3
    monkeypatch.setattr(dpt, "upsample_conv3x3", lambda *a: calls.append(a[2]) or real(*a))
    ref, slow = _pair("model.fast_path=false", base=BEIT)
    ref.eval(), slow.eval()
    image = torch.rand(2, 3, 32, 48)
    with torch.inference_mode():
        a = ref(image)
        assert calls == [(16, 24), (32, 48)]  # r1 (never upsampled) -> 3x3 conv; 2x -> 3x3 conv
        b = slow(image)
        assert len(calls) == 2  # original op order: not used
    for name in ("metric_depth", "relative_depth", "probs", "bin_centers"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)
    _assert_same(ref, slow, image)  # training: outputs and every gradient
    assert len(calls) == 4


def test_upsampled_map_feeds_projectors_like_the_full_map():
    """A projector given the low-resolution source of a map (Upsampled) computes what it computes
    on the upsampled map; with fast_path off it upsamples first (the original order)."""
    from zoe_lightning.models.bins import Projector
    from zoe_lightning.models.fastpath import Upsampled

    torch.manual_seed(14)
    proj = Projector(6, 5, 7).double()
    low = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    full = torch.nn.functional.interpolate(low, size=(10, 14), mode="bilinear", align_corners=True)
    expected = proj._net(full)
    for fast in (True, False):
        proj.fast_path = fast
        torch.testing.assert_close(proj(Upsampled(low, (10, 14))), expected, atol=1e-12, rtol=1e-12)


def test_training_forward_after_an_inference_mode_forward():
    """Caches filled under ``torch.inference_mode`` (BEiT's relative-position index, transformed
    filters) must not break a later autograd forward of the same model."""
    model = build_model(tiny_config(*BEIT))
    image = torch.rand(1, 3, 32, 48)
    model.eval()
    with torch.inference_mode():
        model(image)
    model.train()
    model(image).metric_depth.mean().backward()
    vit = model.core.pretrained.model
    assert vit.patch_embed.proj.weight.grad is not None
    assert all(b.attn.relative_position_bias_table.grad is not None for b in vit.blocks)
