"""The model family: shapes, gradients, formulas against hand-computed values, routing."""

import itertools
import math

import pytest
import torch
import torch.nn as nn

import zoe_lightning as zl
from zoe_lightning.models.bins import (
    AttractorLayer,
    ConditionalLogBinomial,
    LogBinomial,
    SeedBinRegressor,
    exponential_attractor,
    inverse_attractor,
    log_binomial_coefficient,
)
from zoe_lightning.models.encoder import Encoder, _relative_position_index

from ..conftest import NK_BINS, tiny_config

HEADS = ["metric_bins", "splitter", "naive"]
BIN_TYPES = ["softplus", "normed", "hybrid1", "hybrid2"]
KINDS = ["inv", "exp"]
ROUTERS = ["labeled", "trained", "auto"]


# ---------------------------------------------------------------------------------- formulas


def test_inverse_and_exponential_attractor_hand_values():
    d = torch.tensor([0.1, -0.1, 0.0, 0.5])
    # d / (1 + alpha |d|^gamma) with alpha=300, gamma=2: 0.1 / (1 + 3) = 0.025
    assert torch.allclose(inverse_attractor(d, 300.0, 2.0), torch.tensor([0.025, -0.025, 0.0, 0.5 / 76.0]))
    # d exp(-alpha |d|^gamma) with alpha=10, gamma=1
    expected = torch.tensor([0.1 * math.exp(-1.0), -0.1 * math.exp(-1.0), 0.0, 0.5 * math.exp(-5.0)])
    assert torch.allclose(exponential_attractor(d, 10.0, 1.0), expected)


def test_attractor_delta_mean_and_sum_hand_values():
    layer = AttractorLayer(8, 2, 8, 0.0, 10.0, normed=False, kind="inv", aggregation="mean", alpha=300, gamma=2)
    points = torch.tensor([1.0, 1.3]).view(1, 2, 1, 1)
    centers = torch.tensor([1.1]).view(1, 1, 1, 1)
    f = lambda x: x / (1 + 300 * x * x)  # noqa: E731
    expected = (f(1.0 - 1.1) + f(1.3 - 1.1)) / 2
    assert layer.delta(points, centers).item() == pytest.approx(expected, rel=1e-5)
    layer.aggregation = "sum"
    assert layer.delta(points, centers).item() == pytest.approx(2 * expected, rel=1e-5)


def test_normed_attractor_discard_norm_switch():
    torch.manual_seed(0)
    layer = AttractorLayer(4, 3, 4, 0.0, 1.0, normed=True, discard_norm=False)
    x = torch.randn(1, 4, 2, 2)
    raw = layer._net(x) + 1e-3
    pairs = raw.view(1, 3, 2, 2, 2)
    assert torch.allclose(layer.attractor_points(x), pairs[:, :, 0] / pairs.sum(dim=2))
    layer.discard_norm = True  # the original: raw first element of each pair
    assert torch.allclose(layer.attractor_points(x), pairs[:, :, 0])


def test_normed_seed_bins_are_ordered_centres_inside_range():
    torch.manual_seed(0)
    seed = SeedBinRegressor(8, 5, 8, 2.0, 12.0, normed=True)
    c = seed(torch.randn(3, 8, 4, 4))
    assert c.shape == (3, 5, 4, 4)
    assert (c > 2.0).all() and (c < 12.0).all()
    assert (c[:, 1:] > c[:, :-1]).all()
    # centres are midpoints of edges: first centre = min + w0/2, last = max - w_last/2
    raw = seed._net(torch.zeros(1, 8, 1, 1)) + 1e-3
    w = 10.0 * raw / raw.sum(dim=1, keepdim=True)
    c0 = seed(torch.zeros(1, 8, 1, 1))
    assert c0[0, 0].item() == pytest.approx(2.0 + w[0, 0].item() / 2, rel=1e-5)
    assert c0[0, -1].item() == pytest.approx(12.0 - w[0, -1].item() / 2, rel=1e-5)


def test_log_binomial_exact_and_stirling():
    n, k = torch.tensor(63.0), torch.arange(64.0)
    exact = torch.tensor([math.log(math.comb(63, int(i))) for i in k])
    assert torch.allclose(log_binomial_coefficient(n, k, stirling=False), exact, atol=1e-3)
    stirling = log_binomial_coefficient(n, k, stirling=True)
    eps = 1e-7
    nn_, kk = 63 + eps, 31 + eps
    by_hand = nn_ * math.log(nn_) - kk * math.log(kk) - (nn_ - kk) * math.log(nn_ - kk + eps)
    assert stirling[31].item() == pytest.approx(by_hand, rel=1e-5)
    assert (stirling - exact).abs().max().item() == pytest.approx(2.30, abs=0.05)  # facts file §2.5


@pytest.mark.parametrize("stirling", [False, True])
def test_log_binomial_probabilities_sum_to_one_and_mode_follows_p(stirling):
    lb = LogBinomial(64, stirling)
    p = torch.tensor([0.1, 0.3, 0.8]).view(3, 1, 1, 1)
    probs = lb(p, torch.full((3, 1, 1, 1), 0.0212))
    assert torch.allclose(probs.sum(dim=1), torch.ones(3, 1, 1), atol=1e-5)
    modes = probs.argmax(dim=1).view(-1).float()
    assert torch.allclose(modes, p.view(-1) * 63, atol=1.5)
    flat = lb(p, torch.full((3, 1, 1, 1), 50.0))
    assert flat.max() < probs.max()  # high temperature flattens


def test_conditional_log_binomial_shapes_and_normalisation():
    clb = ConditionalLogBinomial(33, 16, 32, bottleneck_factor=2)
    assert clb.mlp[0].out_channels == (33 + 16) // 2
    probs = clb(torch.randn(2, 33, 5, 7), torch.randn(2, 16, 5, 7))
    assert probs.shape == (2, 32, 5, 7)
    assert torch.allclose(probs.sum(1), torch.ones(2, 5, 7), atol=1e-5)


# ---------------------------------------------------------------------------------- encoder


def test_beit_encoder_matches_timm_at_native_grid():
    torch.manual_seed(0)
    enc = Encoder("test_beit").eval()
    for blk in enc.model.blocks:  # give the relative-position tables non-trivial values
        nn.init.normal_(blk.attn.relative_position_bias_table, std=0.5)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, _ = enc._beit_tokens(x)
        ref = enc.model.forward_intermediates(x, indices=enc.hooks, return_prefix_tokens=True, output_fmt="NLC",
                                              intermediates_only=True)
    for a, (spatial, prefix) in zip(ours, ref):
        assert torch.allclose(a, torch.cat([prefix, spatial], 1), atol=1e-5)


def test_relative_position_index_matches_timm():
    from timm.models.beit import gen_relative_position_index

    for grid in [(4, 4), (3, 5), (6, 2)]:
        assert torch.equal(_relative_position_index(grid, torch.device("cpu")), gen_relative_position_index(grid))


@pytest.mark.parametrize("backbone, size", [("test_beit", (64, 96)), ("test_beit", (96, 64)), ("test_vit", (64, 128)),
                                            ("test_swinv2", (64, 64)), ("test_convnext", (64, 96)),
                                            ("test_resnet", (96, 64))])
def test_encoder_strides_for_any_multiple_of_32(backbone, size):
    enc = Encoder(backbone, img_size=size)
    feats = enc(torch.randn(1, 3, *size))
    assert [tuple(f.shape[-2:]) for f in feats] == [(size[0] // s, size[1] // s) for s in (4, 8, 16, 32)]
    assert [f.shape[1] for f in feats] == enc.channels


def test_swin_wrong_size_is_a_clear_error():
    enc = Encoder("test_swinv2", img_size=(64, 64))
    with pytest.raises(ValueError, match="set model.img_size"):
        enc(torch.randn(1, 3, 64, 96))


# ---------------------------------------------------------------------------------- whole models


@pytest.mark.parametrize("head, bins, kind", [
    (h, b, k) for h, b, k in itertools.product(HEADS, BIN_TYPES, KINDS) if h == "metric_bins" or k == "inv"
])
def test_single_head_shapes(head, bins, kind):
    cfg = tiny_config(f"model.head.type={head}", f"model.head.bin_centers_type={bins}",
                      f"model.head.attractor_type={kind}", "model.bins=[{name: nyu, n_bins: 16}]")
    model = zl.build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 48, 80))
    assert out.metric_depth.shape == (2, 1, 64, 96)
    assert out.relative_depth.shape == (2, 1, 64, 96)
    assert torch.isfinite(out.metric_depth).all() and (out.metric_depth >= 0).all()
    if head == "naive":
        assert out.bin_centers is None
    else:
        assert out.bin_centers.shape == out.probs.shape == (2, 16, 64, 96)
        assert torch.allclose(out.probs.sum(1), torch.ones(2, 64, 96), atol=1e-4)


@pytest.mark.parametrize("head, router", list(itertools.product(HEADS, ROUTERS)))
def test_multi_domain_shapes(head, router):
    cfg = tiny_config(f"model.head.type={head}", f"model.router.type={router}", NK_BINS)
    model = zl.build_model(cfg).eval()
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        out = model(torch.rand(3, 3, 64, 96), domain=labels)
    assert out.metric_depth.shape == (3, 1, 64, 96)
    assert out.domain_index.shape == (3,)
    if router == "labeled":
        assert out.domain_index.tolist() == [0, 1, 1] and out.domain_logits is None
    else:
        assert out.domain_logits.shape == (3, 2)
        assert torch.equal(out.domain_index, out.domain_logits.argmax(1))


def test_normed_depth_lies_inside_bin_range():
    cfg = tiny_config("model.head.bin_centers_type=normed", "model.bins=[{name: k, n_bins: 16, min_depth: 2.0, "
                      "max_depth: 30.0}]")
    model = zl.build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 96) * 3)
    assert out.metric_depth.min() >= 2.0 - 1e-4 and out.metric_depth.max() <= 30.0 + 1e-4
    assert out.bin_centers.min() >= 2.0 - 1e-4 and out.bin_centers.max() <= 30.0 + 1e-4


def test_alpha_gamma_are_used_unless_faithful():
    def depth(*extra):
        torch.manual_seed(0)
        model = zl.build_model(tiny_config("model.head.bin_centers_type=normed", *extra)).eval()
        torch.manual_seed(1)
        with torch.no_grad():
            return model(torch.rand(1, 3, 64, 96)).metric_depth

    base = depth("model.head.attractor_alpha=1000", "model.head.attractor_gamma=2")
    assert not torch.allclose(base, depth("model.head.attractor_alpha=5", "model.head.attractor_gamma=2"))
    assert not torch.allclose(base, depth("model.head.attractor_alpha=1000", "model.head.attractor_gamma=1"))
    fixed = ["model.faithful.fixed_alpha_gamma=true"]
    a = depth(*fixed, "model.head.attractor_alpha=1000", "model.head.attractor_gamma=2")
    b = depth(*fixed, "model.head.attractor_alpha=5", "model.head.attractor_gamma=1")
    assert torch.equal(a, b)
    assert torch.allclose(a, depth("model.head.attractor_alpha=300", "model.head.attractor_gamma=2"))


def _named_grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


# parameters the architecture never uses (kept for checkpoint parity): refinenet4's first residual
# unit, the timm classifier / final norm, and ViT blocks after the last hook.
UNUSED = ("refinenet4.resConfUnit1", ".model.head.", ".model.fc_norm", ".model.norm.", "model.blocks.4.",
          "model.blocks.5.")


@pytest.mark.parametrize("head", HEADS)
def test_gradients_reach_every_trainable_parameter(head):
    model = zl.build_model(tiny_config(f"model.head.type={head}", NK_BINS, "model.router.type=trained"))
    out = model(torch.rand(4, 3, 64, 96), domain=torch.tensor([0, 1, 0, 1]))
    loss = out.metric_depth.mean() + nn.functional.cross_entropy(out.domain_logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    missing = [n for n, g in _named_grads(model).items() if g is None and not any(u in n for u in UNUSED)]
    assert not missing, missing


def test_auto_router_learns_from_depth_loss_alone():
    model = zl.build_model(tiny_config(NK_BINS, "model.router.type=auto"))
    out = model(torch.rand(2, 3, 64, 96))
    assert out.domain_logits is not None
    out.metric_depth.mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("router.")]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_per_image_routing_sends_each_image_to_its_own_head():
    torch.manual_seed(0)
    model = zl.build_model(tiny_config(NK_BINS, "model.router.type=labeled")).eval()
    images, labels = torch.rand(4, 3, 64, 96), torch.tensor([1, 0, 0, 1])
    with torch.no_grad():
        mixed = model(images, domain=labels).metric_depth
        for i in range(4):
            alone = model(images[i:i + 1], domain=labels[i:i + 1]).metric_depth
            assert torch.allclose(mixed[i:i + 1], alone, atol=1e-5)
            other = model(images[i:i + 1], domain=1 - labels[i:i + 1]).metric_depth
            assert not torch.allclose(alone, other)


def test_batch_vote_switch_routes_whole_batch_to_one_head():
    model = zl.build_model(tiny_config(NK_BINS, "model.faithful.batch_vote=true")).eval()
    with torch.no_grad():
        out = model(torch.rand(5, 3, 64, 96))
    vote = torch.softmax(out.domain_logits.sum(0), -1).argmax()
    assert (out.domain_index == vote).all()


def test_labeled_router_without_labels_is_a_clear_error():
    model = zl.build_model(tiny_config(NK_BINS, "model.router.type=labeled")).eval()
    with pytest.raises(ValueError, match="needs domain labels"):
        model(torch.rand(1, 3, 64, 96))


def test_nk_faithful_switches_change_structure():
    cfg = tiny_config(NK_BINS, "model.faithful.nk_sixteen_attractors=true", "model.faithful.nk_no_relative_input=true")
    model = zl.build_model(cfg)
    assert [layer.n_attractors for layer in model.head.attractors["nyu"]] == [16, 16, 16, 16]
    assert model.head.conditional_log_binomial["kitti"].mlp[0].in_channels == 32 + 128


def test_frozen_batchnorm_stays_frozen_after_train():
    model = zl.build_model(tiny_config("model.backbone=test_resnet", "optim.freeze_bn=true"))
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    before = bns[0].running_mean.clone()
    model(torch.rand(2, 3, 64, 96))
    assert torch.equal(before, bns[0].running_mean)
    model2 = zl.build_model(tiny_config("model.backbone=test_resnet", "optim.freeze_bn=false")).train()
    assert all(m.training for m in model2.modules() if isinstance(m, nn.BatchNorm2d))


def test_parameter_groups_use_the_original_lr_factors():
    model = zl.build_model(tiny_config("model.backbone=test_beit"))
    groups = {g["name"]: g for g in model.parameter_groups(1.0, 10.0, 5.0, 2.0)}
    assert groups["encoder"]["lr"] == pytest.approx(0.1)
    assert groups["positional"]["lr"] == pytest.approx(0.2)
    assert groups["decoder"]["lr"] == pytest.approx(0.5)
    assert groups["head"]["lr"] == 1.0
    n_total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups.values() for p in g["params"]) == n_total
    positional = {id(p) for p in groups["positional"]["params"]}
    assert all(id(b.attn.relative_position_bias_table) in positional for b in model.core.pretrained.model.blocks)
    frozen = model.parameter_groups(1.0, encoder_lr_factor=0)
    assert "encoder" not in {g["name"] for g in frozen}
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith("core.pretrained.") and "relative_position" not in n)


def test_relative_stage_builds_relative_model():
    model = zl.build_model(tiny_config("stage=relative")).eval()
    out = model(torch.rand(1, 3, 64, 96))
    assert out.metric_depth is None and out.relative_depth.shape == (1, 1, 64, 96)
    assert (out.relative_depth >= 0).all()


def test_keep_aspect_resize_rule():
    from zoe_lightning.models.zoedepth import network_size

    # facts file §1.2 table
    assert network_size(480, 640, (384, 512), True) == (384, 512)
    assert network_size(375, 1242, (384, 512), True) == (384, 1280)
    assert network_size(352, 1216, (384, 768), True) == (384, 1312)
    assert network_size(768, 1024, (384, 768), True) == (576, 768)
    assert network_size(1080, 1920, (384, 512), True) == (384, 672)
    assert network_size(375, 1242, (384, 512), False) == (384, 512)
    # ties: both scales equally close to 1 -> the original fits the height (MiDaS Resize "minimal"
    # switches to the width's scale only when it is strictly closer to 1)
    assert network_size(480, 640, (384, 768), True) == (384, 512)  # 0.8 vs 1.2: 384x512, not 576x768
    assert network_size(400, 400, (300, 500), True) == (288, 288)  # 0.75 vs 1.25: 300 -> 288, not 512
    # halves round to even like numpy: 80/32 = 2.5 -> 2, 112/32 = 3.5 -> 4
    assert network_size(80, 112, (80, 112), True) == (64, 128)


@pytest.mark.parametrize("hw,target,expected", [((480, 640), (384, 768), (384, 512)),
                                                ((768, 1024), (384, 768), (576, 768))])
def test_model_prep_resizes_by_the_keep_aspect_rule(hw, target, expected):
    from zoe_lightning.models.zoedepth import Prep

    prep = Prep(target, True, [0.5] * 3, [0.5] * 3)
    assert tuple(prep(torch.rand(1, 3, *hw)).shape[-2:]) == expected


@pytest.mark.parametrize("overrides, total, head", [
    ([], 344_816_746, 478_145),  # ZoeD-N
    (["model.head.bin_centers_type=normed"], 344_820_487, 481_886),  # ZoeD-K
    (["model.bins=[{name: nyu, max_depth: 10},{name: kitti, max_depth: 80}]", "model.faithful.nk_sixteen_attractors=true",
      "model.faithful.nk_no_relative_input=true", "model.head.seed_mlp_dim=64", "model.head.projector_mlp_dim=64",
      "model.head.clb_bottleneck_factor=4"], 346_100_355, 1_761_754),  # ZoeD-NK
])
def test_parameter_counts_match_the_original(overrides, total, head):
    """Facts file §1.7: BEiT-L-384 at 384x512, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = zl.build_model(zl.load_config("base", overrides))
    n = sum(p.numel() for p in model.parameters())
    n_head = n - sum(p.numel() for p in model.core.parameters())
    assert (n, n_head) == (total, head)


@pytest.mark.parametrize("name, size, channels", [
    ("beit_large_patch16_384", (384, 512), [256, 512, 1024, 1024]),
    ("beit_large_patch16_512", (512, 512), [256, 512, 1024, 1024]),
    ("beit_base_patch16_384", (384, 384), [96, 192, 384, 768]),
    ("vit_large_patch16_384", (384, 384), [256, 512, 1024, 1024]),
    ("swinv2_large_window12to24_192to384", (384, 384), [192, 384, 768, 1536]),
    ("swinv2_base_window12to24_192to384", (384, 384), [128, 256, 512, 1024]),
    ("swinv2_tiny_window16_256", (256, 256), [96, 192, 384, 768]),
])
def test_model_zoo_backbones_build_with_midas_channels(name, size, channels):
    """Facts file §1.3 reassembled channels; built on the meta device (no memory, no download)."""
    with torch.device("meta"):
        enc = Encoder(name, img_size=size)
    assert enc.channels == channels
