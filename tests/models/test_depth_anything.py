"""The DINOv2 backbones and the Depth Anything core (models/depth_anything.py), on tiny models.

Peers: timm's own DINOv2 forward (at the trained grid, where every position rule is the identity)
and the DINOv2 resizing rule written out here from its definition (facts §5)."""

import math

import pytest
import torch
import torch.nn.functional as F

import zoe_lightning as zl
from zoe_lightning.models.depth_anything import DepthAnythingCore, resize_pos_embed
from zoe_lightning.models.encoder import BACKBONES

TINY = ["model.backbone=test_dinov2", "model.decoder=depth_anything", "model.img_size=[98,126]",
        "model.features=16", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
        "model.head.projector_mlp_dim=16", "model.bins.0.n_bins=16"]


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_registry_taps_and_widths_per_size():
    assert BACKBONES["vit_small_patch14_dinov2"].hooks == (2, 5, 8, 11)
    assert BACKBONES["vit_base_patch14_reg4_dinov2"].channels == (96, 192, 384, 768)
    assert BACKBONES["vit_large_patch14_dinov2"].hooks == (4, 11, 17, 23)
    assert BACKBONES["vit_giant_patch14_dinov2"].hooks == (9, 19, 29, 39)
    assert BACKBONES["vit_giant_patch14_dinov2"].channels == (1536,) * 4


def test_offset_rule_is_dinov2s_definition():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 7 * 7, 8)
    for grid in [(7, 9), (5, 5), (11, 4)]:
        got = resize_pos_embed(pos, grid, "offset")
        # DINOv2: bicubic by scale factor (g + 0.1) / g0, no antialias; class position kept
        table = pos[:, 1:].reshape(1, 7, 7, 8).permute(0, 3, 1, 2)
        want = F.interpolate(table, scale_factor=((grid[0] + 0.1) / 7, (grid[1] + 0.1) / 7), mode="bicubic")
        want = torch.cat([pos[:, :1], want.permute(0, 2, 3, 1).reshape(1, -1, 8)], 1)
        assert torch.equal(got, want)
        explicit = resize_pos_embed(pos, grid, "size")
        assert explicit.shape == got.shape and not torch.allclose(explicit, got)  # the rules differ
    assert resize_pos_embed(pos, (7, 7), "offset") is pos  # trained grid: unchanged


def test_tokens_match_timm_at_trained_size():
    core = _randomise(DepthAnythingCore("test_dinov2", 16))
    x = torch.randn(2, 3, 98, 98)
    with torch.no_grad():
        ours = core.tokens(x)
        ref = core.pretrained.forward_intermediates(x, indices=core.hooks, norm=True, output_fmt="NLC",
                                                    intermediates_only=True)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-5)


def test_register_model_uses_timms_rule():
    core = _randomise(DepthAnythingCore("test_dinov2_reg4", 16, pos_embed_resize="offset"))
    assert core.pos_embed_resize == "timm" and core.prefix_tokens == 5
    x = torch.randn(1, 3, 98, 140)
    with torch.no_grad():
        ours = core.tokens(x)
        ref = core.pretrained.forward_intermediates(x, indices=core.hooks, norm=True, output_fmt="NLC",
                                                    intermediates_only=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, ref))


def test_shapes_keys_and_sizes():
    core = DepthAnythingCore("test_dinov2", 16).eval()
    with torch.no_grad():
        out = core(torch.randn(1, 3, 98, 126))
    assert out.relative_depth.shape == (1, 1, 98, 126) and out.out_conv.shape == (1, 32, 98, 126)
    # l4 by the stride-2 conv of a 7x9 grid; refinenet1 at 2x the 4x-upsampled map
    assert out.bottleneck.shape == (1, 16, 4, 5) and out.fusion[-1].shape == (1, 16, 56, 72)
    keys = set(core.state_dict())
    assert {"depth_head.resize_layers.0.weight", "depth_head.scratch.output_conv2.2.weight",
            "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight", "pretrained.pos_embed"} <= keys
    assert "depth_head.scratch.layer1_rn.bias" not in keys
    with pytest.raises(ValueError, match="multiple of the DINOv2 patch size"):
        core(torch.randn(1, 3, 98, 100))


@pytest.mark.parametrize("head", ["da2_metric", "metric_bins", "splitter", "naive"])
def test_heads_on_dinov2_core(head):
    cfg = zl.load_config("base", TINY + [f"model.head.type={head}", "model.bins.0.max_depth=20"])
    model = _randomise(zl.build_model(cfg))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 98, 126))
    assert out.metric_depth.shape == (2, 1, 98, 126) and torch.isfinite(out.metric_depth).all()
    if head == "da2_metric":
        assert 0 < out.metric_depth.min() and out.metric_depth.max() < 20
        assert sum(p.numel() for p in model.head.parameters()) == 33  # one 32 -> 1 conv


def test_da2_metric_head_is_sigmoid_times_max_depth():
    cfg = zl.load_config("base", TINY + ["model.head.type=da2_metric", "model.bins.0.max_depth=80",
                                         "model.speed.fast_path=false", "model.speed.winograd=false"])
    model = _randomise(zl.build_model(cfg))
    x = torch.rand(1, 3, 98, 126)
    with torch.no_grad():
        core = model.core(model.prep(x))
        conv = model.head.regressors["nyu"]
        want = 80 * torch.sigmoid(F.conv2d(core.out_conv, conv.weight, conv.bias))
        assert torch.allclose(model(x).metric_depth, want, atol=1e-6)


def test_speed_variants_equal_reference_and_groups():
    from zoe_lightning import accel
    from zoe_lightning.config import SpeedConfig

    cfg = zl.load_config("base", TINY + ["model.speed.winograd=false"])
    model = _randomise(zl.build_model(cfg))
    x = torch.rand(1, 3, 98, 126)
    with torch.no_grad():
        fast = model(x).metric_depth
        accel.apply(model, SpeedConfig(fast_path=False, winograd=False, memory_efficient=False,
                                       channels_last=False))
        ref = model(x).metric_depth
    assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5)
    groups = {g["name"]: len(g["params"]) for g in model.parameter_groups(1e-4)}
    assert groups["positional"] == 1 and groups["decoder"] > 0 and groups["encoder"] > 0


def test_config_refuses_non_dinov2_and_non_multiple_of_14():
    with pytest.raises(zl.config.ConfigError, match="DINOv2 backbone"):
        zl.load_config("base", ["model.decoder=depth_anything"])
    with pytest.raises(zl.config.ConfigError, match="multiples of 14"):
        zl.load_config("base", ["model.decoder=depth_anything", "model.backbone=test_dinov2",
                                "model.img_size=[96,126]"])


def test_negative_hooks_count_from_the_end():
    assert DepthAnythingCore("test_dinov2", 16, hooks=[-4, -3, -2, -1]).hooks == [0, 1, 2, 3]
    assert DepthAnythingCore("test_dinov2", 16, hooks=[-2, -1, 1, 0]).hooks == [2, 3, 1, 0]
    with pytest.raises(ValueError, match="hooks"):
        DepthAnythingCore("test_dinov2", 16, hooks=[0, 1, 2, 4])
