"""HF ``config.json`` -> typed config delta (zoe_lightning.weights.formats.hf_config).

The HF configs and the expected deltas below are written out by hand from the HF ZoeDepthConfig
fields and this project's schema (facts §2.9, §7.3), not produced by the code under test.
"""

import copy

import pytest

from zoe_lightning.errors import UserError
from zoe_lightning.weights.formats.common import compose
from zoe_lightning.weights.formats.hf_config import hf_config_to_delta, release_preset

STAGES = ["stage1", "stage2", "stage3", "stage4"]
HEAD_DEFAULTS = dict(model_type="zoedepth", readout_type="project", reassemble_factors=[4, 2, 1, 0.5],
                     num_relative_features=32, num_attractors=[16, 8, 4, 1], attractor_kind="mean",
                     attractor_alpha=1000, attractor_gamma=2, min_temp=0.0212, max_temp=50.0,
                     add_projection=False, use_batch_norm_in_fusion_residual=False, head_in_index=-1)

TINY_K = dict(
    HEAD_DEFAULTS,
    backbone_config=dict(model_type="beit", hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=64, image_size=64, patch_size=16, out_features=STAGES,
                         layer_scale_init_value=0.1, layer_norm_eps=1e-12),
    neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=32, bottleneck_features=32,
    bin_configurations=[{"n_bins": 16, "min_depth": 0.001, "max_depth": 80.0}],
    bin_embedding_dim=16, bin_centers_type="normed",
)
QUIRKS = {"fixed_alpha_gamma": True, "discard_attractor_norm": True, "stirling_log_binomial": True}
PREP = dict(resize_input=True, keep_aspect_ratio=False, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
TINY_K_DELTA = {"model": dict(
    backbone="beit_base_patch16_384",
    backbone_kwargs=dict(embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0, img_size=64, patch_size=16,
                         num_classes=0, init_values=0.1),
    hooks=[0, 1, 2, 3], reassemble_channels=[8, 16, 32, 32], readout="project", features=32,
    bins=[{"name": "kitti", "n_bins": 16, "min_depth": 0.001, "max_depth": 80.0}],  # unnamed, > 10 m: kitti
    head=dict(type="metric_bins", bin_centers_type="normed", bin_embedding_dim=16, n_attractors=[16, 8, 4, 1],
              attractor_type="inv", attractor_aggregation="mean", attractor_alpha=1000.0, attractor_gamma=2.0,
              min_temp=0.0212, max_temp=50.0, seed_mlp_dim=256, projector_mlp_dim=128, clb_bottleneck_factor=2,
              use_relative_input=True),
    faithful=dict(QUIRKS), **PREP)}

RELEASE_NK = dict(
    HEAD_DEFAULTS,
    backbone_config=dict(model_type="beit", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                         intermediate_size=4096, image_size=384, patch_size=16,
                         out_features=["stage6", "stage12", "stage18", "stage24"]),
    neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, bottleneck_features=256,
    bin_configurations=[{"name": "nyu", "n_bins": 64, "min_depth": 0.001, "max_depth": 10.0},
                        {"name": "kitti", "n_bins": 64, "min_depth": 0.001, "max_depth": 80.0}],
    bin_embedding_dim=128, bin_centers_type="softplus", num_patch_transformer_layers=4,
    patch_transformer_hidden_size=128, patch_transformer_intermediate_size=1024,
    patch_transformer_num_attention_heads=4,
)
RELEASE_NK_DELTA = {"model": dict(
    backbone="beit_large_patch16_384", hooks=[5, 11, 17, 23], reassemble_channels=[256, 512, 1024, 1024],
    readout="project", features=256,
    bins=[{"name": "nyu", "n_bins": 64, "min_depth": 0.001, "max_depth": 10.0},
          {"name": "kitti", "n_bins": 64, "min_depth": 0.001, "max_depth": 80.0}],
    head=dict(type="metric_bins", bin_centers_type="softplus", bin_embedding_dim=128, n_attractors=[16, 8, 4, 1],
              attractor_type="inv", attractor_aggregation="mean", attractor_alpha=1000.0, attractor_gamma=2.0,
              min_temp=0.0212, max_temp=50.0, seed_mlp_dim=64, projector_mlp_dim=64, clb_bottleneck_factor=4,
              use_relative_input=True),
    faithful=dict(QUIRKS, nk_sixteen_attractors=True, nk_no_relative_input=True, batch_vote=True),
    router=dict(type="trained", dim=128, n_layers=4, n_heads=4, ffn_dim=1024), **PREP)}

TINY_SWINV2 = dict(
    HEAD_DEFAULTS,
    backbone_config=dict(model_type="swinv2", image_size=[96, 128], patch_size=4, embed_dim=8, depths=[2, 2, 2, 2],
                         num_heads=[1, 2, 2, 4], window_size=2, out_features=STAGES),
    neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=32, bottleneck_features=32, bin_embedding_dim=16,
    bin_configurations=[{"name": "nyu", "n_bins": 64, "min_depth": 0.001, "max_depth": 10.0}],
)


def _types(tree, path=""):
    """(path, type) of every leaf: 1000 and 1000.0 compare equal, their types do not."""
    if isinstance(tree, dict):
        return sorted(p for k, v in tree.items() for p in _types(v, f"{path}.{k}"))
    if isinstance(tree, list):
        return sorted(p for i, v in enumerate(tree) for p in _types(v, f"{path}[{i}]"))
    return [(path, type(tree).__name__)]


@pytest.mark.parametrize("hf,expected", [(TINY_K, TINY_K_DELTA), (RELEASE_NK, RELEASE_NK_DELTA)], ids=["tiny-k", "nk"])
def test_beit_configs_translate_to_the_expected_delta(hf, expected):
    delta = hf_config_to_delta(hf)
    assert delta == expected
    assert _types(delta) == _types(expected)


def test_swinv2_config_translates_to_the_expected_delta():
    delta = hf_config_to_delta(TINY_SWINV2)
    model = delta["model"]
    assert model["backbone"] == "swinv2_tiny_window8_256" and model["img_size"] == [96, 128]
    assert model["hooks"] is None and model["reassemble_channels"] is None and "readout" not in model
    assert model["backbone_kwargs"] == dict(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=2,
                                            patch_size=4, mlp_ratio=4.0, qkv_bias=True,
                                            pretrained_window_sizes=[0, 0, 0, 0], num_classes=0)
    assert model["features"] == 32 and model["bins"] == [{"name": "nyu", "n_bins": 64, "min_depth": 0.001,
                                                          "max_depth": 10.0}]
    assert "router" not in model and model["faithful"] == QUIRKS


def test_the_delta_merges_into_a_typed_config_and_user_overrides_stay_dot_lists():
    cfg = compose("base", hf_config_to_delta(TINY_K), ["model.bins.0.max_depth=20"])
    assert cfg.model.backbone == "beit_base_patch16_384" and cfg.model.backbone_kwargs.init_values == 0.1
    assert list(cfg.model.hooks) == [0, 1, 2, 3] and cfg.model.head.bin_centers_type == "normed"
    assert cfg.model.bins[0].name == "kitti" and cfg.model.bins[0].max_depth == 20.0
    assert isinstance(cfg.model.head.attractor_alpha, float) and cfg.model.faithful.stirling_log_binomial
    assert cfg.optim.lr == compose("base").optim.lr  # untouched sections keep base's values
    swin = compose("base", hf_config_to_delta(TINY_SWINV2))
    assert swin.model.hooks is None and swin.model.backbone_kwargs.window_size == 2


def test_release_preset_is_recognised():
    assert release_preset(RELEASE_NK) == "zoed_m12_nk"
    single = dict(RELEASE_NK, bin_configurations=[{"n_bins": 64, "min_depth": 0.001, "max_depth": 10.0}])
    assert release_preset(single) == "zoed_m12_n"
    assert release_preset(dict(single, bin_centers_type="normed")) == "zoed_m12_k"
    assert release_preset(TINY_K) is None  # not BEiT-L
    assert release_preset(dict(RELEASE_NK, bin_configurations=[dict(b, n_bins=16) for b in
                                                               RELEASE_NK["bin_configurations"]])) is None


def _with(base, path, value):
    cfg = copy.deepcopy(base)
    node = cfg
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    return cfg


@pytest.mark.parametrize("base,path,value,match", [
    (TINY_K, "model_type", "dpt", "model_type is 'dpt'"),
    (TINY_K, "backbone_config.model_type", "vit", "backbone 'vit' is not supported"),
    (TINY_K, "add_projection", True, "add_projection=True is not supported"),
    (TINY_K, "head_in_index", 0, "head_in_index=0"),
    (TINY_K, "reassemble_factors", [4, 2, 1, 1], "reassemble_factors"),
    (TINY_K, "num_relative_features", 64, "num_relative_features must be 32"),
    (TINY_K, "bottleneck_features", 64, "bottleneck_features must equal fusion_hidden_size"),
    (TINY_K, "backbone_config.out_features", ["stage1", "stage2", "stage3"], "4 stages"),
    (TINY_K, "bin_centers_type", "hybrid1", "bin_centers_type 'hybrid1'"),
    (RELEASE_NK, "bin_configurations", [{"n_bins": 64, "min_depth": 0.001, "max_depth": m} for m in (1, 2, 3)],
     "exactly 2"),
    (RELEASE_NK, "patch_transformer_hidden_size", 64, "patch_transformer_hidden_size=128"),
    (TINY_SWINV2, "neck_hidden_sizes", [8, 16, 32, 32], "stage widths"),
    (TINY_SWINV2, "backbone_config.out_features", ["stage2", "stage3", "stage4", "stage4"], "stage1-stage4"),
    (TINY_SWINV2, "backbone_config.use_absolute_embeddings", True, "absolute position embeddings"),
])
def test_unsupported_configs_are_one_line_errors(base, path, value, match):
    with pytest.raises(UserError, match=match) as info:
        hf_config_to_delta(_with(base, path, value), "hf/config.json")
    assert str(info.value).startswith("hf/config.json: ") and "\n" not in str(info.value)


def test_hand_written_configs_read_like_transformers_own():
    """transformers' ZoeDepthConfig.to_dict() of the same architectures gives the same deltas."""
    transformers = pytest.importorskip("transformers")
    bb = {k: v for k, v in TINY_K["backbone_config"].items() if k != "model_type"}
    real = transformers.ZoeDepthConfig(
        backbone_config=transformers.BeitConfig(**bb), neck_hidden_sizes=TINY_K["neck_hidden_sizes"],
        fusion_hidden_size=32, bottleneck_features=32, bin_embedding_dim=16, bin_centers_type="normed",
        bin_configurations=TINY_K["bin_configurations"]).to_dict()
    assert hf_config_to_delta(real) == TINY_K_DELTA
