"""Parity with a peer implementation: HF transformers' ZoeDepthForDepthEstimation.

An HF model is built from a small random configuration (tiny BEiT backbone), its weights are
perturbed away from HF's initialisation (zero biases would hide mapping mistakes), saved with
``save_pretrained`` (config.json + model.safetensors, the hub layout) and loaded with our loader.

What is compared: both models see the same pixels at the network size. HF's model takes the
already-normalised tensor ``(x - 0.5) / 0.5`` (its image processor does resize / pad / normalise
outside the model); ours takes ``x`` in [0, 1] and normalises inside (no resize happens because ``x``
already has ``model.img_size``). The metric depth maps (HF ``predicted_depth`` (B,H,W), ours
``metric_depth`` (B,1,H,W)) must agree within 1e-4 relative, and for NK the domain logits too.
The input is 64x96 while the backbone was built for 64x64, so the relative-position bias tables
are resized on the way (MiDaS v3.1's method in both implementations).
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from zoe_lightning.weights import from_hf, load_model_and_config  # noqa: E402

SIZE = (64, 96)
OVERRIDES = [f"model.img_size=[{SIZE[0]},{SIZE[1]}]"]
BINS = [{"name": "nyu", "n_bins": 16, "min_depth": 1e-3, "max_depth": 10.0},
        {"name": "kitti", "n_bins": 16, "min_depth": 1e-3, "max_depth": 80.0}]


def hf_model(multi: bool, kind: str = "softplus", seed: int = 0):
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    torch.manual_seed(seed)
    backbone = BeitConfig(
        image_size=64, patch_size=16, num_hidden_layers=4, hidden_size=32, intermediate_size=64,
        num_attention_heads=2, use_relative_position_bias=True, reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"], layer_scale_init_value=0.1,
    )
    router = dict(num_patch_transformer_layers=4, patch_transformer_hidden_size=128,
                  patch_transformer_intermediate_size=64, patch_transformer_num_attention_heads=4)
    config = ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=32,
        bottleneck_features=32, num_relative_features=32, bin_embedding_dim=16, bin_centers_type=kind,
        bin_configurations=BINS if multi else [dict(BINS[1])], **(router if multi else {}),
    )
    model = ZoeDepthForDepthEstimation(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _compare(hf, ours, multi):
    x = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=(x - 0.5) / 0.5)
        out = ours(x)
    assert out.metric_depth.shape == (2, 1, *SIZE)
    expected, got = ref.predicted_depth, out.metric_depth[:, 0]
    rel = ((got - expected).abs() / expected.abs().clamp_min(1e-6)).max().item()
    assert rel < 1e-4, rel
    assert expected.std() > 0  # a non-degenerate map
    if multi:
        assert torch.allclose(out.domain_logits, ref.domain_logits, rtol=1e-4, atol=1e-5)
    return rel


@pytest.mark.parametrize("multi,kind", [(False, "softplus"), (False, "normed"), (True, "softplus")],
                         ids=["single-softplus", "single-normed", "nk"])
def test_hf_folder_parity(tmp_path, multi, kind):
    hf = hf_model(multi, kind)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    ours, cfg = load_model_and_config(tmp_path, overrides=OVERRIDES)
    assert [b.name for b in cfg.model.bins] == (["nyu", "kitti"] if multi else ["kitti"])
    assert cfg.model.faithful.stirling_log_binomial and cfg.model.faithful.fixed_alpha_gamma
    assert cfg.model.faithful.batch_vote == multi and cfg.model.faithful.nk_sixteen_attractors == multi
    _compare(hf, ours, multi)


def test_from_hf_in_memory_model_and_pytorch_bin(tmp_path):
    from safetensors.torch import load_file

    hf = hf_model(True, seed=3)
    ours = from_hf(hf, overrides=OVERRIDES)  # the in-memory model (transformers-5 module names)
    _compare(hf, ours, True)
    # the same weights as a pytorch_model.bin (the older hub format) beside config.json
    hf.save_pretrained(tmp_path)
    torch.save(load_file(str(tmp_path / "model.safetensors")), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    _compare(hf, load_model_and_config(tmp_path / "pytorch_model.bin", overrides=OVERRIDES)[0], True)


def test_hf_mismatching_preset_is_an_error(tmp_path):
    hf_model(False, "normed").save_pretrained(tmp_path)
    from zoe_lightning.errors import UserError

    with pytest.raises(UserError, match="bin_centers_type"):
        load_model_and_config(tmp_path, preset="zoed_m12_n", overrides=OVERRIDES)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["n", "k", "nk"])
def test_release_size_hf_models_map_onto_the_presets(variant):
    """HF's default (release) architecture: BEiT-L/16-384, 64 bins. The port is recognised as the
    preset's model, loads with strict keys, and gives HF's depth at the preset's network size. (K: HF keeps the
    hub loader's 10 m bound, so that is passed as an override here; the preset itself uses 80 m.)"""
    from transformers import BeitConfig, ZoeDepthConfig, ZoeDepthForDepthEstimation

    torch.manual_seed(0)
    kwargs = {"n": {}, "k": dict(bin_centers_type="normed"),
              "nk": dict(bin_configurations=[dict(b, n_bins=64) for b in BINS], num_patch_transformer_layers=4,
                         patch_transformer_hidden_size=128, patch_transformer_intermediate_size=1024,
                         patch_transformer_num_attention_heads=4)}[variant]
    # BEiT-L as in HF's conversion script, except LayerNorm eps: timm's (and so the original's) is 1e-6,
    # HF's BeitConfig default 1e-12. At random init that alone moves K's depth by ~7e-4 (relative), so
    # the file-loading path (which keeps timm's eps) is compared with eps 1e-6 on both sides.
    backbone = BeitConfig(image_size=384, num_hidden_layers=24, hidden_size=1024, intermediate_size=4096,
                          num_attention_heads=16, use_relative_position_bias=True, reshape_hidden_states=False,
                          out_features=["stage6", "stage12", "stage18", "stage24"], layer_norm_eps=1e-6)
    config = ZoeDepthConfig(backbone_config=backbone, neck_hidden_sizes=[256, 512, 1024, 1024], **kwargs)
    hf = ZoeDepthForDepthEstimation(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.01 * torch.randn_like(p))
    overrides = ["model.bins.0.max_depth=10"] if variant == "k" else []
    ours, cfg = from_hf(hf, overrides=overrides, return_config=True, match_hf_eps=False)
    assert cfg.name == f"zoed_m12_{variant}"
    x = torch.rand(1, 3, *cfg.model.img_size, generator=torch.Generator().manual_seed(1))  # K: 384x768
    with torch.no_grad():
        expected = hf(pixel_values=(x - 0.5) / 0.5).predicted_depth
        got = ours(x).metric_depth[:, 0]
    assert ((got - expected).abs() / expected.abs().clamp_min(1e-6)).max().item() < 1e-4


def hf_swinv2_model(seed: int = 0, window: int = 2, size=(96, 128)):
    """A tiny HF ZoeDepth on a SwinV2 backbone (stage outputs, no reassemble stage)."""
    from transformers import Swinv2Config, ZoeDepthConfig, ZoeDepthForDepthEstimation

    torch.manual_seed(seed)
    backbone = Swinv2Config(image_size=size, patch_size=4, embed_dim=8, depths=[2, 2, 2, 2],
                            num_heads=[1, 2, 2, 4], window_size=window,
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = ZoeDepthConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=32,
                            bottleneck_features=32, num_relative_features=32, bin_embedding_dim=16,
                            bin_configurations=[dict(BINS[0])])
    model = ZoeDepthForDepthEstimation(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_hf_swinv2_backbone_parity(tmp_path, recwarn):
    # 96x128 with 4x4 patches and 2x2 windows: stages of 24x32, 12x16, 6x8 and 3x4 tokens, the last
    # padded to whole (shifted) windows
    hf = hf_swinv2_model()
    ours = from_hf(hf)
    assert type(ours.core.pretrained.model).__name__ == "SwinTransformerV2"
    assert list(ours.core.pretrained.model.patch_embed.img_size) == [96, 128]
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(pixel_values=(x - 0.5) / 0.5).predicted_depth
        got = ours(x).metric_depth[:, 0]
        hf.save_pretrained(tmp_path)
        folder_model, cfg = load_model_and_config(tmp_path)
        again = folder_model(x).metric_depth[:, 0]
    assert expected.std() > 0
    for depth in (got, again):
        assert float(((depth - expected).abs() / expected.abs()).max()) < 1e-4
    assert cfg.model.backbone_kwargs.window_size == 2 and cfg.model.hooks is None
    assert not [w for w in recwarn if "SwinV2" in str(w.message)]


@pytest.mark.parametrize("size, match", [((64, 96), "square"), ((160, 224), "padded by 3")])
def test_hf_swinv2_window_mismatch_warns_and_is_real(size, match):
    # 64x96, 4x4 windows: the last stage (2x3 tokens) is below a window: HF's square 2x2 window vs
    # timm's 2x3; 160x224: the last stage (5x7) pads 3 rows for a shift of 2
    hf = hf_swinv2_model(window=4, size=size)
    with pytest.warns(UserWarning, match=match):
        ours = from_hf(hf)
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = hf.backbone(pixel_values=(x - 0.5) / 0.5).feature_maps[-1]
        b = ours.core.pretrained(ours.prep(x))[-1]
    assert float((a - b).abs().max()) > 1e-2  # the warning is not a false alarm


def test_hf_swinv2_with_mismatching_neck_is_an_error():
    from zoe_lightning.errors import UserError
    from zoe_lightning.weights import hf_config_to_delta

    config = hf_swinv2_model().config.to_dict()
    config["neck_hidden_sizes"] = [8, 16, 32, 32]
    with pytest.raises(UserError, match="stage widths"):
        hf_config_to_delta(config)
