"""MiDaS DPT files (zoe_lightning.weights.formats.midas).

Files are synthesised from MiDaS's documented layout (``pretrained.*`` / ``scratch.*``), written
out here independently of zoe_lightning.weights, from a tiny model's weights.
"""

import pytest
import torch

import zoe_lightning as zl
from zoe_lightning.errors import UserError
from zoe_lightning.weights import Checkpoint, core_state_from_file, detect, infer_backbone

from .tiny import N_BLOCKS, SMALL, TINY_BEIT, TOKENS, X, randomise


def to_midas(core_state):
    """Our ``core.*`` keys -> a MiDaS DPT checkpoint (``pretrained.*`` + ``scratch.*``)."""
    out = {k[len("core."):]: v for k, v in core_state.items() if k.startswith("core.")}
    for i in range(N_BLOCKS):
        out[f"pretrained.model.blocks.{i}.attn.relative_position_index"] = torch.zeros(TOKENS, TOKENS,
                                                                                       dtype=torch.long)
    return out


def test_midas_layout_as_relative_model_and_as_stage2_core(tmp_path):
    rel_cfg = zl.load_config("base", TINY_BEIT + SMALL + ["stage=relative"])
    rel = randomise(zl.build_model(rel_cfg))
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

    def swin(width, v2):  # facts §1.3: patch embedding to C = 192 (L) / 128 (B) / 96 (T)
        state = {"pretrained.model.layers.0.blocks.0.attn.qkv.weight": torch.zeros(1),
                 "pretrained.model.patch_embed.proj.weight": torch.zeros(width, 3, 4, 4)}
        if v2:
            state["pretrained.model.layers.0.blocks.0.attn.logit_scale"] = torch.zeros(1)
        return state

    assert infer_backbone(swin(192, True)) == ("swinv2_large_window12to24_192to384", [384, 384])
    assert infer_backbone(swin(128, True)) == ("swinv2_base_window12to24_192to384", [384, 384])
    assert infer_backbone(swin(96, True)) == ("swinv2_tiny_window16_256", [256, 256])
    assert infer_backbone(swin(192, False)) == ("swin_large_patch4_window12_384", [384, 384])
    with pytest.raises(UserError, match=r"Swin \(v1\) of width 96 is not a MiDaS v3\.1 backbone"):
        infer_backbone(swin(96, False))


def test_midas_swinv2_layout_with_old_timm_stage_order(tmp_path):
    """MiDaS's SwinV2 files come from timm 0.6: patch merging sits at the END of a stage
    (``layers.i.downsample``, stage 0 included); today's timm puts it at the start of the next."""
    over = ["stage=relative", "model.backbone=test_swinv2", "model.img_size=[64,64]", "model.features=32"]
    rel = randomise(zl.build_model(zl.load_config("base", over)))
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
