"""Depth Anything checkpoints: parity with HF transformers' DepthAnythingForDepthEstimation, the
official .pth layouts (built here from the documented key layout, facts §2.5 / §3.2 / §4.3) and the
one-line errors for near misses.

HF models are tiny random DINOv2 configurations whose weights are perturbed away from HF's
initialisation, saved with ``save_pretrained`` and loaded by our loader. Both see the same pixels:
HF the ImageNet-normalised tensor, ours ``x`` in [0, 1] at the network size (no resize happens).
At 98x126 the 7x7 position table is resized to 7x9 (HF's rule, which an HF folder selects).
"""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import zoe_lightning as zl  # noqa: E402
from zoe_lightning.errors import UserError  # noqa: E402
from zoe_lightning.weights import load_model_and_config, read_checkpoint  # noqa: E402
from zoe_lightning.weights.formats import depth_anything as da_format  # noqa: E402
from zoe_lightning.weights.formats import detect  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def hf_model(kind="relative", seed=0, width=32, layers=4, heads=2, image=98, out=(1, 2, 3, 4),
             neck=(8, 16, 32, 32), fusion=16, max_depth=20, swiglu=False):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
                            patch_size=14, image_size=image, out_indices=list(out), apply_layernorm=True,
                            reshape_hidden_states=False, use_swiglu_ffn=swiglu)
    extra = dict(depth_estimation_type="metric", max_depth=max_depth) if kind == "metric" else {}
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=width, patch_size=14,
                                 fusion_hidden_size=fusion, neck_hidden_sizes=list(neck), head_hidden_size=32,
                                 **extra)
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.head.conv3.bias.add_(0.5)  # keep the relative output's final ReLU mostly open
    return model


def _rel_err(got, expected):
    return ((got - expected).abs() / expected.abs().clamp_min(1e-3 * expected.abs().max())).max().item()


def _compare(hf, ours, metric, size=(98, 126)):
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(pixel_values=(x - MEAN) / STD).predicted_depth
        out = ours(x)
    got = (out.metric_depth if metric else out.relative_depth)[:, 0]
    assert got.shape == ref.shape and ref.std() > 0
    err = _rel_err(got, ref)
    assert err <= 1e-4, err
    return err


@pytest.mark.parametrize("kind", ["relative", "metric"])
def test_hf_folder_parity(tmp_path, kind):
    hf = hf_model(kind)
    hf.save_pretrained(tmp_path)
    ours, cfg = load_model_and_config(tmp_path, overrides=["model.img_size=[98,126]"])
    assert cfg.model.decoder == "depth_anything" and cfg.model.pos_embed_resize == "size"
    assert list(cfg.model.hooks) == [0, 1, 2, 3] and list(cfg.model.reassemble_channels) == [8, 16, 32, 32]
    if kind == "metric":
        assert cfg.stage == "metric" and cfg.model.head.type == "da2_metric"
        assert cfg.model.bins[0].max_depth == 20
    else:
        assert cfg.stage == "relative"
    _compare(hf, ours, kind == "metric")


def test_hf_folder_parity_swiglu_giant_layout(tmp_path):
    """A SwiGLU (Giant-style) DINOv2: HF's gate / up halves become timm's packed fc1."""
    hf = hf_model("metric", seed=2, swiglu=True)
    hf.save_pretrained(tmp_path)
    ours, cfg = load_model_and_config(tmp_path, overrides=["model.img_size=[98,126]"])
    assert cfg.model.backbone == "vit_giant_patch14_dinov2" and cfg.model.backbone_kwargs.embed_dim == 32
    _compare(hf, ours, True)
    in_memory = da_format.hf_to_ours(dict(hf.state_dict()))  # gate_proj / up_proj / down_proj names
    from_file = da_format.hf_to_ours(read_checkpoint(tmp_path).payload)
    assert all(torch.equal(in_memory[k], from_file[k]) for k in from_file)


def test_hf_in_memory_names_equal_file_names(tmp_path):
    hf = hf_model("metric", seed=3)
    hf.save_pretrained(tmp_path)
    from_file = da_format.hf_to_ours(read_checkpoint(tmp_path).payload)
    in_memory = da_format.hf_to_ours({k: v for k, v in hf.state_dict().items()})  # q_proj / o_proj names
    assert set(from_file) == set(in_memory) and not any(k.startswith("hf:") for k in from_file)
    assert all(torch.equal(from_file[k], in_memory[k]) for k in from_file)


def test_core_checkpoint_from_hf_folder(tmp_path):
    hf_model("relative", seed=4).save_pretrained(tmp_path / "hf")
    cfg = zl.load_config("base", ["model.decoder=depth_anything", "model.backbone=test_dinov2", "model.features=16",
                                  "model.img_size=[98,98]", "model.head.type=da2_metric",
                                  f"model.core_checkpoint={tmp_path / 'hf'}"])
    model = zl.build_model(cfg)
    from zoe_lightning.weights import init_core

    init_core(model, cfg)
    hf_state = da_format.hf_to_ours(read_checkpoint(tmp_path / "hf").payload)
    assert torch.equal(model.core.state_dict()["depth_head.scratch.output_conv1.weight"],
                       hf_state["core.depth_head.scratch.output_conv1.weight"])
    cfg2 = zl.load_config("base", ["model.decoder=depth_anything", "model.backbone=test_dinov2", "model.features=16",
                                   "model.img_size=[98,98]", f"model.core_checkpoint={tmp_path / 'hf'}",
                                   "model.core_checkpoint_part=encoder"])
    model2 = zl.build_model(cfg2)
    before = model2.core.depth_head.scratch.output_conv1.weight.clone()
    init_core(model2, cfg2)
    assert torch.equal(model2.core.depth_head.scratch.output_conv1.weight, before)  # decoder left alone
    assert torch.equal(model2.core.pretrained.pos_embed, hf_state["core.pretrained.pos_embed"])


# ---------------------------------------------------------------------------------------------
# official layouts, from HF weights by the documented renaming (facts §4.3, read backwards)
# ---------------------------------------------------------------------------------------------


def hf_to_official(hf_state):
    """HF file names -> the official flat layout (``pretrained.*`` + ``depth_head.*``)."""
    out = {}
    for k, v in hf_state.items():
        k2 = (k.replace("backbone.embeddings.cls_token", "pretrained.cls_token")
              .replace("backbone.embeddings.mask_token", "pretrained.mask_token")
              .replace("backbone.embeddings.position_embeddings", "pretrained.pos_embed")
              .replace("backbone.embeddings.patch_embeddings.projection", "pretrained.patch_embed.proj")
              .replace("backbone.layernorm", "pretrained.norm")
              .replace("backbone.encoder.layer.", "pretrained.blocks.")
              .replace("layer_scale1.lambda1", "ls1.gamma").replace("layer_scale2.lambda1", "ls2.gamma")
              .replace("attention.output.dense", "attn.proj")
              .replace("neck.reassemble_stage.layers.", "depth_head.PROJ.")
              .replace("head.conv1", "depth_head.scratch.output_conv1")
              .replace("head.conv2", "depth_head.scratch.output_conv2.0")
              .replace("head.conv3", "depth_head.scratch.output_conv2.2"))
        if ".PROJ." in k2:
            i, rest = k2.split(".PROJ.")[1].split(".", 1)
            kind, param = rest.split(".")
            k2 = f"depth_head.{'projects' if kind == 'projection' else 'resize_layers'}.{i}.{param}"
        if k2.startswith("neck.convs."):
            i, param = k2[len("neck.convs."):].split(".")
            k2 = f"depth_head.scratch.layer{int(i) + 1}_rn.{param}"
        if k2.startswith("neck.fusion_stage.layers."):
            i, rest = k2[len("neck.fusion_stage.layers."):].split(".", 1)
            rest = rest.replace("projection", "out_conv").replace("residual_layer", "resConfUnit") \
                .replace("convolution", "conv")
            k2 = f"depth_head.scratch.refinenet{4 - int(i)}.{rest}"
        if ".attention.attention." in k2:
            continue
        out[k2] = v
    for layer in {k.split(".")[3] for k in hf_state if ".attention.attention.query." in k}:
        base = f"backbone.encoder.layer.{layer}.attention.attention."
        for p in ("weight", "bias"):
            out[f"pretrained.blocks.{layer}.attn.qkv.{p}"] = torch.cat(
                [hf_state[base + n + "." + p] for n in ("query", "key", "value")])
    return out


def _tiny_preset(tmp_path, parent, extra=""):
    path = tmp_path / f"tiny_{parent}.yaml"
    path.write_text(f"extends: {parent}\nmodel:\n  backbone: test_dinov2\n  features: 16\n"
                    f"  img_size: [98, 98]\n{extra}")
    return str(path)


def test_official_flat_layout_loads_strictly_and_matches_hf_at_the_trained_size(tmp_path):
    hf = hf_model("metric", seed=5, max_depth=80)
    hf.save_pretrained(tmp_path / "hf")
    official = hf_to_official(read_checkpoint(tmp_path / "hf").payload)
    assert "pretrained.mask_token" in official and "depth_head.scratch.refinenet4.out_conv.weight" in official
    torch.save({"model": {"module." + k: v for k, v in official.items()}, "epoch": 3}, tmp_path / "latest.pth")
    torch.save(official, tmp_path / "da2.pth")
    preset = _tiny_preset(tmp_path, "da2_metric_vkitti_vits", "  hooks: [0, 1, 2, 3]\n"
                          "  reassemble_channels: [8, 16, 32, 32]\n")
    for name in ("da2.pth", "latest.pth"):  # flat, and train.py's {model: module.*} wrapper
        ours, cfg = load_model_and_config(tmp_path / name, preset)
        assert cfg.model.pos_embed_resize == "offset" and cfg.model.head.type == "da2_metric"
        assert cfg.model.bins[0].max_depth == 80
        _compare(hf, ours, True, size=(98, 98))  # trained grid: every position rule agrees


def test_official_relative_size_inferred_without_preset(tmp_path):
    """A ViT-S-shaped file (tensors broadcast from scalars: no memory) is read as V2 relative ViT-S."""
    hf = hf_model("relative", seed=6)
    official = hf_to_official(hf.state_dict() | {})  # names only; shapes replaced below
    shapes = {"pretrained.cls_token": (1, 1, 384), "pretrained.pos_embed": (1, 1370, 384)}
    state = {k: torch.zeros(1).expand(*shapes.get(k, (1,))) for k in official if not k.startswith("pretrained.blocks.")}
    for i in range(12):
        state[f"pretrained.blocks.{i}.norm1.weight"] = torch.zeros(1).expand(384)
    for i, c in enumerate((48, 96, 192, 384)):
        state[f"depth_head.projects.{i}.weight"] = torch.zeros(1).expand(c, 384, 1, 1)
    state["depth_head.scratch.layer1_rn.weight"] = torch.zeros(1).expand(64, 48, 3, 3)
    state["depth_head.scratch.output_conv2.0.weight"] = torch.zeros(1).expand(32, 32, 3, 3)
    from zoe_lightning.weights.io import Checkpoint

    ckpt = Checkpoint(state, None, "depth_anything_v2_vits.pth")
    assert detect(ckpt) is da_format
    cfg = da_format.config(ckpt)
    assert cfg.stage == "relative" and cfg.model.backbone == "vit_small_patch14_dinov2"
    assert cfg.model.features == 64 and list(cfg.model.reassemble_channels) == [48, 96, 192, 384]
    assert cfg.model.hooks is None and list(cfg.model.img_size) == [518, 518]
    v1 = da_format.config(ckpt, "da1_relative")  # V1: same layout, the last four blocks
    assert list(v1.model.hooks) == [-4, -3, -2, -1] and v1.model.backbone == "vit_small_patch14_dinov2"
    with pytest.raises(UserError, match=r"preset 'da2_metric_hypersim_vitl' describes a ViT-L core but the file "
                                        r"holds a ViT-S"):
        da_format.config(ckpt, "da2_metric_hypersim_vitl")
    state["pretrained.blocks.12.norm1.weight"] = torch.zeros(1).expand(384)
    with pytest.raises(UserError, match="has 12 blocks, the file 13"):
        da_format.config(Checkpoint(state, None, "x.pth"))
    state["pretrained.cls_token"] = torch.zeros(1).expand(1, 1, 320)
    with pytest.raises(UserError, match="width 320 is not a Depth Anything size"):
        da_format.config(Checkpoint(state, None, "x.pth"))


def test_v1_metric_layout_round_trip(tmp_path):
    preset = _tiny_preset(tmp_path, "da1_metric_indoor",
                          "  reassemble_channels: [8, 16, 32, 32]\n  head:\n    bin_embedding_dim: 16\n"
                          "    seed_mlp_dim: 16\n    projector_mlp_dim: 16\n")
    cfg = zl.load_config(preset, ["model.speed.fast_path=false"])
    src = zl.build_model(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    src.eval()
    # the V1 metric_depth layout: core.core.{pretrained,depth_head}.*, the ZoeDepth head at the top
    v1 = {"core.core.pretrained.mask_token": torch.zeros(1, 32)}
    for k, v in src.state_dict().items():
        if k.startswith("core."):
            v1["core.core." + k[len("core."):]] = v
        else:
            k2 = (k.replace("head.seed_bin_regressors.nyu.", "seed_bin_regressor.")
                  .replace("head.attractors.nyu.", "attractors.")
                  .replace("head.conditional_log_binomial.nyu.", "conditional_log_binomial."))
            v1[k2[len("head."):] if k2.startswith("head.") else k2] = v
    v1["conditional_log_binomial.log_binomial_transform.k_idx"] = torch.arange(64).view(1, -1, 1, 1)
    v1["conditional_log_binomial.log_binomial_transform.K_minus_1"] = torch.tensor([[[[63.0]]]])
    torch.save({"model": v1}, tmp_path / "depth_anything_metric_depth_indoor.pt")
    ours, got_cfg = load_model_and_config(tmp_path / "depth_anything_metric_depth_indoor.pt", preset,
                                          ["model.speed.fast_path=false"])
    x = torch.rand(1, 3, 98, 98)
    with torch.no_grad():
        assert torch.allclose(ours(x).metric_depth, src(x).metric_depth, atol=1e-6)
    del v1["attractors.2._net.0.weight"]
    torch.save({"model": v1}, tmp_path / "broken.pt")
    with pytest.raises(UserError, match=r"missing keys: head.attractors.nyu.2._net.0.weight"):
        load_model_and_config(tmp_path / "broken.pt", preset)


def test_near_misses_are_one_line(tmp_path):
    hf = hf_model("relative", seed=7)
    hf.save_pretrained(tmp_path / "hf")
    state = read_checkpoint(tmp_path / "hf").payload
    torch.save(dict(state), tmp_path / "bare.pth")
    with pytest.raises(UserError, match="need their config.json") as err:
        load_model_and_config(tmp_path / "bare.pth")
    assert "\n" not in str(err.value)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    for key, value, message in [("max_depth", 20, "relative model with max_depth=20"),
                                ("head_hidden_size", 16, "head_hidden_size=16 is not supported"),
                                ("reassemble_factors", [4, 2, 1, 1], "reassemble_factors")]:
        changed = dict(config, **{key: value})
        (tmp_path / "hf" / "config.json").write_text(json.dumps(changed))
        with pytest.raises(UserError, match=message) as err:
            load_model_and_config(tmp_path / "hf")
        assert "\n" not in str(err.value)
    chunked = {"pretrained.cls_token": torch.zeros(1, 1, 384), "pretrained.blocks.0.3.norm1.weight": torch.zeros(384),
               "depth_head.projects.0.weight": torch.zeros(48, 384, 1, 1)}
    torch.save(chunked, tmp_path / "chunked.pth")
    with pytest.raises(UserError, match="chunked DINOv2 blocks"):
        load_model_and_config(tmp_path / "chunked.pth")
    with pytest.raises(UserError, match="not a Depth Anything configuration"):
        torch.save(hf_to_official(state), tmp_path / "da.pth")
        load_model_and_config(tmp_path / "da.pth", "zoed_m12_n")


@pytest.mark.slow
def test_hf_parity_at_release_size_vits(tmp_path):
    """ViT-S as released (V2 converter's out_indices [3, 6, 9, 12]), 518x686: HF's rule selected."""
    hf = hf_model("metric", seed=8, width=384, layers=12, heads=6, image=518, out=(3, 6, 9, 12),
                  neck=(48, 96, 192, 384), fusion=64, max_depth=20)
    hf.save_pretrained(tmp_path)
    ours, cfg = load_model_and_config(tmp_path, overrides=["model.img_size=[518,686]"])
    assert cfg.model.backbone == "vit_small_patch14_dinov2" and list(cfg.model.hooks) == [2, 5, 8, 11]
    _compare(hf, ours, True, size=(518, 686))


@pytest.mark.slow
def test_finetune_da2_metric_on_a_folder_from_an_official_relative_file(tmp_path):
    """The documented command (docs/depth-anything.md), tiny: V2 metric preset, a folder dataset,
    model.core_checkpoint = an official-layout relative file whose encoder (only) starts the run."""
    from zoe_lightning.train import train

    from ..fixtures.folder import make_folder

    make_folder(tmp_path / "data", n=4, size=(98, 98), depth_format="npy")
    hf = hf_model("relative", seed=9)
    hf.save_pretrained(tmp_path / "hf")
    torch.save(hf_to_official(read_checkpoint(tmp_path / "hf").payload), tmp_path / "depth_anything_v2_tiny.pth")
    entry = ("{name: folder, domain: nyu, options: {root: " + str(tmp_path / "data") + ", image_glob: images/**/*.png, "
             "depth_glob: depth/**/*.npy, image_suffix: _rgb, depth_suffix: _depth, max_depth: 20}}")
    cfg = zl.load_config("da2_metric_hypersim_vits", [
        f"model.core_checkpoint={tmp_path / 'depth_anything_v2_tiny.pth'}", f"data.train=[{entry}]",
        f"data.val=[{entry}]", "model.backbone=test_dinov2", "model.features=16",
        "model.reassemble_channels=[8,16,32,32]", "model.hooks=[0,1,2,3]", "model.img_size=[98,98]",
        "data.image_size=[98,98]", "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0",
        "trainer.accelerator=cpu", "trainer.extra={fast_dev_run: 1}", "logger.wandb=false", "callbacks.rich=false",
        "callbacks.depth_panels_every=0", "callbacks.bin_centers=false", f"output_dir={tmp_path / 'runs'}"])
    assert cfg.loss.silog_form == "da2" and cfg.optim.schedule == "poly" and cfg.model.core_checkpoint_part == "encoder"
    result = train(cfg)
    assert torch.isfinite(torch.tensor(result["metrics"]["val/nyu/abs_rel"]))
