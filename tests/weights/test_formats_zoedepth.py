"""The released ZoeDepth files (zoe_lightning.weights.formats.zoedepth).

Files are synthesised from the DOCUMENTED key structure: the renaming rules of facts §7.2 are
written out in tests/weights/official.py, independently of zoe_lightning.weights, and applied to a
tiny model's weights; the loader must undo them exactly (same outputs as the source model).
"""

import pytest
import torch

import zoe_lightning as zl
from zoe_lightning.errors import UserError
from zoe_lightning.weights import load_model_and_config

from .official import to_official
from .tiny import E, N_BLOCKS, SMALL, TINY_BEIT, TOKENS, metric_depth, tiny_model


@pytest.mark.parametrize("preset,domains", [("zoed_m12_n", ["nyu"]), ("zoed_m12_k", ["kitti"]),
                                            ("zoed_m12_nk", ["nyu", "kitti"])])
def test_official_layout_loads_and_infers_variant(tmp_path, preset, domains):
    model, cfg = tiny_model(preset)
    official = to_official(model.state_dict(), domains, 64)
    # a few documented names (facts §7.2) really are present in the synthetic file
    assert official["core.core.pretrained.model.blocks.3.attn.relative_position_index"].shape == (TOKENS, TOKENS)
    assert sum(k.endswith("relative_position_index") for k in official) == N_BLOCKS
    assert "core.core.pretrained.model.blocks.0.attn.qkv.weight" in official
    assert "core.core.scratch.output_conv.4.weight" in official
    if preset == "zoed_m12_nk":
        assert official["attractors.kitti.3._net.2.weight"].shape[0] == 16  # 16 attractors at every level
        # no relative-depth channel: 32 + E inputs, bottleneck factor 4
        assert official["conditional_log_binomial.nyu.mlp.0.weight"].shape[:2] == ((32 + E) // 4, 32 + E)
        assert "patch_transformer.embedding_convPxP.weight" in official and "mlp_classifier.2.weight" in official
    else:
        n_last = {"zoed_m12_n": 1, "zoed_m12_k": 2}[preset]  # K: 2 outputs per attractor (normed)
        assert official["attractors.3._net.2.weight"].shape[0] == n_last
        assert official["seed_bin_regressor._net.2.weight"].shape[0] == 64
        # 32 + 1 (relative depth) + E inputs, bottleneck factor 2 (161 -> 80 at E = 128)
        assert official["conditional_log_binomial.mlp.0.weight"].shape[:2] == ((33 + E) // 2, 33 + E)
    path = tmp_path / "ZoeD.pt"
    torch.save({"model": official}, path)
    loaded, loaded_cfg = load_model_and_config(path, overrides=TINY_BEIT + SMALL)  # no preset: inferred
    assert [b.name for b in loaded_cfg.model.bins] == domains
    if preset == "zoed_m12_k":
        assert loaded_cfg.model.bins[0].max_depth == 80.0  # not the hub loader's 10 m
        assert loaded_cfg.model.head.bin_centers_type == "normed"
    assert loaded_cfg.model.faithful.stirling_log_binomial and loaded_cfg.model.faithful.fixed_alpha_gamma
    assert torch.equal(metric_depth(loaded), metric_depth(model))
    # a timm >= 0.9 re-save (no relative_position_index) loads too, to the same weights
    newer = {k: v for k, v in official.items() if not k.endswith("relative_position_index")}
    torch.save({"model": newer}, path)
    again = zl.load_model(path, overrides=TINY_BEIT + SMALL).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_official_layout_errors(tmp_path):
    model, _ = tiny_model("zoed_m12_k")
    official = to_official(model.state_dict(), ["kitti"], 64)
    path = tmp_path / "k.pt"
    torch.save({"model": official}, path)
    with pytest.raises(UserError, match="zoed_m12_n.*zoed_m12_k"):
        zl.load_model(path, preset="zoed_m12_n", overrides=TINY_BEIT + SMALL)  # wrong preset named
    broken = dict(official)
    del broken["conv2.weight"]
    broken["extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, path)
    with pytest.raises(UserError, match=r"missing keys: head\.conv2\.weight.*unexpected keys: .*extra\.weight"):
        zl.load_model(path, overrides=TINY_BEIT + SMALL)
    wrong_bins = dict(official)
    wrong_bins["conditional_log_binomial.log_binomial_transform.k_idx"] = torch.arange(32).view(1, -1, 1, 1)
    torch.save({"model": wrong_bins}, path)
    with pytest.raises(UserError, match="k_idx.*n_bins=64"):
        zl.load_model(path, overrides=TINY_BEIT + SMALL)
    # the right keys on the wrong backbone: shape mismatches are listed
    torch.save({"model": official}, path)
    with pytest.raises(UserError, match="shape mismatches"):
        zl.load_model(path, overrides=SMALL + ["model.backbone=small_beit", "model.img_size=[64,64]"])


@pytest.mark.slow
def test_presets_match_the_documented_parameter_counts():
    # facts §1.7 / §7.2: parameters, and state-dict tensors minus the 24 relative_position_index
    # buffers and the log-binomial buffers (2 per head) that this implementation does not store
    for preset, params, tensors in [("zoed_m12_n", 344_816_746, 535 - 24 - 2),
                                    ("zoed_m12_k", 344_820_487, 535 - 24 - 2),
                                    ("zoed_m12_nk", 346_100_355, 615 - 24 - 4)]:
        model = zl.build_model(zl.load_config(preset))
        assert sum(p.numel() for p in model.parameters()) == params, preset
        assert len(model.state_dict()) == tensors, preset
        del model
