"""Weight loading: this project's checkpoints and the foreign layouts (facts file §7).

Foreign files are synthesised here from the DOCUMENTED key structure: the renaming rules of
facts §7.2 (released ZoeDepth files) and of MiDaS (``pretrained.*`` / ``scratch.*``) are written out
in this file, independently of zoe_lightning.weights, and applied to a tiny model's
weights; the loader must undo them exactly (same outputs as the source model).
"""

import pickle

import pytest
import torch
from omegaconf import OmegaConf

import zoe_lightning as zl
from zoe_lightning.errors import UserError
from zoe_lightning.weights import (
    Checkpoint,
    core_state_from_file,
    detect,
    infer_backbone,
    load_model_and_config,
    save_model,
)

TINY_BEIT = ["model.backbone=test_beit", "model.img_size=[64,64]"]
E = 16  # bin embedding width of the tiny heads (the release uses 128)
SMALL = ["model.features=32", f"model.head.bin_embedding_dim={E}", "model.head.seed_mlp_dim=16",
         "model.head.projector_mlp_dim=16", "model.router.ffn_dim=64"]
X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
N_BLOCKS = 4  # test_beit depth
TOKENS = 4 * 4 + 1  # 64x64 input, 16px patches, + class token


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _source(preset, *extra):
    cfg = zl.load_config(preset, TINY_BEIT + SMALL + list(extra))
    return _randomise(zl.build_model(cfg)), cfg


def _depth(model, x=X):
    with torch.no_grad():
        return model(x).metric_depth


# ------------------------------------------------------------------ the documented layouts


def to_official(state, domains, n_bins):
    """Our keys -> the released ZoeDepth layout (facts §7.2), timm-0.6 style with its buffers."""
    single = len(domains) == 1
    out = {}
    for k, v in state.items():
        if k.startswith("core."):
            out["core.core." + k[len("core."):]] = v
        elif k.startswith("router."):  # NK: patch_transformer.*, mlp_classifier.* at the top level
            out[k[len("router."):]] = v
        elif single and k.startswith(f"head.seed_bin_regressors.{domains[0]}."):
            out["seed_bin_regressor." + k.split(".", 3)[3]] = v
        elif single and k.startswith(f"head.attractors.{domains[0]}."):
            out["attractors." + k.split(".", 3)[3]] = v
        elif single and k.startswith(f"head.conditional_log_binomial.{domains[0]}."):
            out["conditional_log_binomial." + k.split(".", 3)[3]] = v
        else:
            assert k.startswith("head.")
            out[k[len("head."):]] = v
    for i in range(N_BLOCKS):  # persistent in timm 0.6: (tokens x tokens) index per block
        out[f"core.core.pretrained.model.blocks.{i}.attn.relative_position_index"] = torch.zeros(
            TOKENS, TOKENS, dtype=torch.long)
    for d in domains:
        prefix = "conditional_log_binomial." + ("" if single else f"{d}.") + "log_binomial_transform."
        out[prefix + "k_idx"] = torch.arange(n_bins).view(1, -1, 1, 1)
        out[prefix + "K_minus_1"] = torch.tensor([[[[n_bins - 1.0]]]])
    return out


def to_midas(core_state):
    """Our ``core.*`` keys -> a MiDaS DPT checkpoint (``pretrained.*`` + ``scratch.*``)."""
    out = {k[len("core."):]: v for k, v in core_state.items() if k.startswith("core.")}
    for i in range(N_BLOCKS):
        out[f"pretrained.model.blocks.{i}.attn.relative_position_index"] = torch.zeros(TOKENS, TOKENS,
                                                                                       dtype=torch.long)
    return out


# ------------------------------------------------------------------ this project's files


def test_lightning_checkpoint_layout_roundtrip(tmp_path):
    model, cfg = _source("base")
    container = OmegaConf.to_container(cfg, resolve=True)
    ckpt = {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.6.0",
            "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
            "hyper_parameters": {"cfg": container}, "optimizer_states": [], "lr_schedulers": []}
    path = tmp_path / "best.ckpt"
    torch.save(ckpt, path)
    loaded, loaded_cfg = zl.load_model_and_config(path)
    assert not loaded.training
    assert loaded_cfg.model.backbone == "test_beit" and list(loaded_cfg.model.img_size) == [64, 64]
    assert torch.equal(_depth(loaded), _depth(model))
    # overrides apply on top of the stored configuration
    _, cfg2 = zl.load_model_and_config(path, overrides=["model.bins.0.max_depth=20"])
    assert cfg2.model.bins[0].max_depth == 20


def test_save_model_roundtrip_and_plain_state_dict(tmp_path):
    model, cfg = _source("zoed_m12_k")
    path = save_model(model, cfg, tmp_path / "w.pt")
    assert torch.equal(_depth(zl.load_model(path)), _depth(model))
    plain = tmp_path / "plain.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, plain)  # DDP-wrapped names
    with pytest.raises(UserError, match="preset"):
        zl.load_model(plain)
    loaded = zl.load_model(plain, preset="zoed_m12_k", overrides=TINY_BEIT + SMALL)
    assert torch.equal(_depth(loaded), _depth(model))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "fn": OmegaConf}, f)  # a class: needs code to unpickle
    torch.save({"model": {"w": torch.zeros(1)}, "obj": torch.nn.Linear(1, 1)}, tmp_path / "module.pt")
    for p in (path, tmp_path / "module.pt"):
        with pytest.raises(UserError, match="weights_only|cannot read"):
            zl.load_model(p)
    with pytest.raises(FileNotFoundError):
        zl.load_model(tmp_path / "missing.pt")


# ------------------------------------------------------------------ released ZoeDepth files


@pytest.mark.parametrize("preset,domains", [("zoed_m12_n", ["nyu"]), ("zoed_m12_k", ["kitti"]),
                                            ("zoed_m12_nk", ["nyu", "kitti"])])
def test_official_layout_loads_and_infers_variant(tmp_path, preset, domains):
    model, cfg = _source(preset)
    official = to_official(model.state_dict(), domains, 64)
    # a few documented names (facts §7.2) really are present in the synthetic file
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
    assert torch.equal(_depth(loaded), _depth(model))
    # a timm >= 0.9 re-save (no relative_position_index) loads too, to the same weights
    newer = {k: v for k, v in official.items() if not k.endswith("relative_position_index")}
    torch.save({"model": newer}, path)
    again = zl.load_model(path, overrides=TINY_BEIT + SMALL).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())


def test_official_layout_errors(tmp_path):
    model, _ = _source("zoed_m12_k")
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


# ------------------------------------------------------------------ MiDaS DPT files


def test_midas_layout_as_relative_model_and_as_stage2_core(tmp_path):
    rel_cfg = zl.load_config("base", TINY_BEIT + SMALL + ["stage=relative"])
    rel = _randomise(zl.build_model(rel_cfg))
    path = tmp_path / "dpt_tiny.pt"
    torch.save(to_midas(rel.state_dict()), path)
    obj = torch.load(path, weights_only=True)
    assert detect(Checkpoint(obj)).NAME == "midas"
    loaded = zl.load_model(path, preset="base", overrides=TINY_BEIT + SMALL + ["stage=relative"])
    with torch.no_grad():
        assert torch.equal(loaded(X).relative_depth, rel(X).relative_depth)
    # as the core of a stage-2 model: core weights copied, head left as initialised
    stage2, cfg = zl.load_model_and_config(path, preset="zoed_m12_n", overrides=TINY_BEIT + SMALL)
    assert cfg.stage == "metric"
    ref = rel.core.state_dict()
    for k, v in stage2.core.state_dict().items():
        assert torch.equal(v, ref[k]), k
    core = core_state_from_file(path)
    assert set(core) == set(ref)


def test_infer_backbone_from_documented_shapes():
    def beit(width, depth, rows):
        state = {"pretrained.model.cls_token": torch.zeros(1, 1, width)}
        for i in range(depth):
            state[f"pretrained.model.blocks.{i}.attn.relative_position_bias_table"] = torch.zeros(rows, 1)
        return state

    # (2*24-1)^2 + 3 = 2212 rows for 384 px (facts §1.4); (2*32-1)^2 + 3 = 3972 for 512 px
    assert infer_backbone(beit(1024, 24, 2212)) == ("beit_large_patch16_384", [384, 384])
    assert infer_backbone(beit(1024, 24, 3972)) == ("beit_large_patch16_512", [512, 512])
    assert infer_backbone(beit(768, 12, 2212)) == ("beit_base_patch16_384", [384, 384])
    vit = {"pretrained.model.pos_embed": torch.zeros(1, 577, 1024),
           "pretrained.model.blocks.0.attn.qkv.weight": torch.zeros(1)}
    assert infer_backbone(vit)[0] == "vit_large_patch16_384"
    with pytest.raises(UserError, match="preset"):
        infer_backbone({"pretrained.model.stem.weight": torch.zeros(1)})


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


def test_midas_swinv2_layout_with_old_timm_stage_order(tmp_path):
    """MiDaS's SwinV2 files come from timm 0.6: patch merging sits at the END of a stage
    (``layers.i.downsample``, stage 0 included); today's timm puts it at the start of the next."""
    over = ["stage=relative", "model.backbone=test_swinv2", "model.img_size=[64,64]", "model.features=32"]
    rel = _randomise(zl.build_model(zl.load_config("base", over)))
    midas = {}
    for k, v in to_midas(rel.state_dict()).items():
        old = k
        if k.startswith("pretrained.model.layers."):
            parts = k.split(".")
            if parts[4] == "downsample":  # pretrained.model.layers.<i>.downsample -> stage i-1
                parts[3] = str(int(parts[3]) - 1)
                old = ".".join(parts)
        if "blocks" in k and k.endswith("relative_position_index"):
            continue
        midas[old] = v
    assert "pretrained.model.layers.0.downsample.reduction.weight" in midas
    path = tmp_path / "dpt_swin2_tiny.pt"
    torch.save(midas, path)
    loaded = zl.load_model(path, preset="base", overrides=over)
    with torch.no_grad():
        assert torch.equal(loaded(X).relative_depth, rel(X).relative_depth)
