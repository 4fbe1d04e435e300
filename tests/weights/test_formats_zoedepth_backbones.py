"""Files the official ZoeDepth trainer writes on every MiDaS v3.1 backbone it supports.

Release-size files are synthesised without memory: the model is built on the meta device and each
tensor is a zero-stride view of one zero of the right shape (the loader reads shapes only until
it copies). The expected backbone, size and channel widths per MiDaS model type are those of the
facts file (§1.3, §1.4, §7.2), not the loader's output. Small real models check the values.
"""

import pytest
import torch

import zoe_lightning as zl
from zoe_lightning.errors import UserError
from zoe_lightning.weights import Checkpoint, core_state_from_file, detect, load_checkpoint
from zoe_lightning.weights.strict import load_strict

from .official import to_official
from .tiny import SMALL, randomise

pytestmark = pytest.mark.filterwarnings("ignore:.*meta parameter")

PRESET_SIZE = {"zoed_m12_n": [384, 512], "zoed_m12_k": [384, 768], "zoed_m12_nk": [384, 512]}
DOMAINS = {"zoed_m12_n": ["nyu"], "zoed_m12_k": ["kitti"], "zoed_m12_nk": ["nyu", "kitti"]}
# MiDaS model type -> (timm backbone, fixed input size or None, channels into scratch.layer1..4_rn)
MIDAS_TYPES = {
    "DPT_BEiT_L_384": ("beit_large_patch16_384", None, (256, 512, 1024, 1024)),
    "DPT_BEiT_L_512": ("beit_large_patch16_512", None, (256, 512, 1024, 1024)),
    "DPT_BEiT_B_384": ("beit_base_patch16_384", None, (96, 192, 384, 768)),
    "DPT_SwinV2_L_384": ("swinv2_large_window12to24_192to384", [384, 384], (192, 384, 768, 1536)),
    "DPT_SwinV2_B_384": ("swinv2_base_window12to24_192to384", [384, 384], (128, 256, 512, 1024)),
    "DPT_SwinV2_T_256": ("swinv2_tiny_window16_256", [256, 256], (96, 192, 384, 768)),
    "DPT_Swin_L_384": ("swin_large_patch4_window12_384", [384, 384], (192, 384, 768, 1536)),
    "DPT_Large": ("vit_large_patch16_384", None, (256, 512, 1024, 1024)),
}


def _zeros(*shape):
    return torch.zeros((), dtype=torch.long).expand(*shape)


def meta_model(preset, backbone, size=None):
    over = [f"model.backbone={backbone}"] + ([f"model.img_size=[{size[0]},{size[1]}]"] if size else [])
    with torch.device("meta"):
        return zl.build_model(zl.load_config(preset, over))


def meta_official(preset, midas_type):
    """(the official trainer's file for this head and backbone, zero-stride tensors)."""
    backbone, size, _ = MIDAS_TYPES[midas_type]
    model = meta_model(preset, backbone, size)
    state = {k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()}
    return to_official(state, DOMAINS[preset], like=_zeros)


def check_strict(ckpt, cfg):
    """The translated state fills a model built from ``cfg`` exactly (keys and shapes)."""
    fmt = detect(ckpt)
    with torch.device("meta"):
        model = zl.build_model(cfg)
    load_strict(model, fmt.state_dict(ckpt, cfg, model), ckpt.source, fmt.may_be_missing(cfg))


CASES = [("zoed_m12_n", t) for t in MIDAS_TYPES] + [
    ("zoed_m12_k", "DPT_BEiT_B_384"), ("zoed_m12_k", "DPT_SwinV2_T_256"), ("zoed_m12_k", "DPT_Swin_L_384"),
    ("zoed_m12_nk", "DPT_SwinV2_B_384"), ("zoed_m12_nk", "DPT_BEiT_L_512"),
]


@pytest.mark.parametrize("preset,midas_type", CASES)
def test_official_file_on_any_midas_backbone_loads_without_a_preset(preset, midas_type):
    backbone, size, channels = MIDAS_TYPES[midas_type]
    official = meta_official(preset, midas_type)
    # the synthetic file has the documented layout
    for i, ch in enumerate(channels, start=1):
        assert official[f"core.core.scratch.layer{i}_rn.weight"].shape == (256, ch, 3, 3)
    if (preset, midas_type) in [("zoed_m12_n", "DPT_BEiT_L_384"), ("zoed_m12_k", "DPT_BEiT_L_384")]:
        assert len(official) == 535  # facts §7.2
    if midas_type.startswith("DPT_Swin"):  # timm 0.6: stage 0 merges patches, 4C -> 2C
        c = channels[0]
        assert official["core.core.pretrained.model.layers.0.downsample.reduction.weight"].shape == (2 * c, 4 * c)
        assert "core.core.pretrained.model.head.weight" in official
    ckpt = Checkpoint({"model": official}, None, f"ZoeD_{midas_type}.pt")
    assert detect(ckpt).NAME == "zoedepth"
    cfg = detect(ckpt).config(ckpt)  # no preset, no overrides
    assert cfg.model.backbone == backbone
    assert list(cfg.model.img_size) == (size or PRESET_SIZE[preset])
    if size:  # Swin: one fixed input size, never keep-aspect
        assert cfg.model.keep_aspect_ratio is False
    assert [b.name for b in cfg.model.bins] == DOMAINS[preset]
    assert cfg.model.head.bin_centers_type == ("normed" if preset == "zoed_m12_k" else "softplus")
    check_strict(ckpt, cfg)
    # naming the release preset gives the same configuration
    assert detect(ckpt).config(ckpt, preset) == cfg


def test_beit_l_384_needs_no_backbone_key_and_keeps_the_preset():
    official = meta_official("zoed_m12_n", "DPT_BEiT_L_384")
    cfg = detect(Checkpoint({"model": official})).config(Checkpoint({"model": official}))
    assert cfg == zl.load_config("zoed_m12_n")  # the release: exactly the preset


def _one_line(exc_info, source):
    msg = str(exc_info.value)
    assert msg.startswith(source + ": ") and "\n" not in msg, msg
    return msg


def test_near_misses_are_one_line_errors_naming_the_file():
    fmt_of = lambda state, src: detect(Checkpoint({"model": state}, None, src))  # noqa: E731
    # BEiT-L with 12 blocks is no MiDaS backbone
    official = meta_official("zoed_m12_n", "DPT_BEiT_L_384")
    short = {k: v for k, v in official.items()
             if not any(f".blocks.{i}." in k for i in range(12, 24))}
    with pytest.raises(UserError, match=r"width 1024, depth 12.*not a MiDaS v3\.1 backbone") as info:
        fmt_of(short, "short.pt").config(Checkpoint({"model": short}, None, "short.pt"))
    _one_line(info, "short.pt")
    # DPT_Hybrid: ViT-B + ResNet-50 patch embedding
    hybrid = dict(meta_official("zoed_m12_n", "DPT_Large"))
    hybrid["core.core.pretrained.model.patch_embed.backbone.stem.conv.weight"] = _zeros(64, 3, 7, 7)
    with pytest.raises(UserError, match="DPT_Hybrid") as info:
        fmt_of(hybrid, "hybrid.pt").config(Checkpoint({"model": hybrid}, None, "hybrid.pt"))
    _one_line(info, "hybrid.pt")
    # MiDaS_small (EfficientNet-Lite3): nothing to infer
    small = {"core.core.pretrained.layer1.0.weight": _zeros(32, 3, 3, 3), "core.core.scratch.layer1_rn.weight":
             _zeros(64, 32, 3, 3), "conv2.weight": _zeros(1), "attractors.0._net.2.weight": _zeros(16, 128, 1, 1),
             "attractors.3._net.2.weight": _zeros(1, 128, 1, 1)}
    with pytest.raises(UserError, match="cannot infer the backbone") as info:
        fmt_of(small, "small.pt").config(Checkpoint({"model": small}, None, "small.pt"))
    _one_line(info, "small.pt")
    # a BEiT core without its class token
    no_cls = {k: v for k, v in official.items() if not k.endswith("model.cls_token")}
    with pytest.raises(UserError, match=r"BEiT core without core\.core\.pretrained\.model\.cls_token"):
        fmt_of(no_cls, "nocls.pt").config(Checkpoint({"model": no_cls}, None, "nocls.pt"))
    # SwinV2 of a width MiDaS never used
    swin = dict(meta_official("zoed_m12_n", "DPT_SwinV2_T_256"))
    swin["core.core.pretrained.model.patch_embed.proj.weight"] = _zeros(64, 3, 4, 4)
    with pytest.raises(UserError, match="SwinV2 of width 64") as info:
        fmt_of(swin, "swin.pt").config(Checkpoint({"model": swin}, None, "swin.pt"))
    _one_line(info, "swin.pt")


def test_a_backbone_contradicting_the_file_is_named(tmp_path):
    official = meta_official("zoed_m12_n", "DPT_BEiT_B_384")
    ckpt = Checkpoint({"model": official}, None, "beit_b.pt")
    fmt = detect(ckpt)
    with pytest.raises(UserError, match="shapes say backbone beit_base_patch16_384.*beit_large_patch16_384") as info:
        fmt.config(ckpt, overrides=["model.backbone=beit_large_patch16_384"])
    _one_line(info, "beit_b.pt")
    # an experiment of one's own is used as written: it must name the file's backbone
    exp = tmp_path / "mine.yaml"
    exp.write_text("extends: zoed_m12_n\nmodel:\n  img_size: [512, 512]\n")
    with pytest.raises(UserError, match="shapes say backbone beit_base_patch16_384"):
        fmt.config(ckpt, str(exp))
    exp.write_text("extends: zoed_m12_n\nmodel:\n  backbone: beit_base_patch16_384\n  img_size: [512, 512]\n")
    cfg = fmt.config(ckpt, str(exp))
    assert cfg.model.backbone == "beit_base_patch16_384" and list(cfg.model.img_size) == [512, 512]
    check_strict(ckpt, cfg)
    # overrides may change the size of a BEiT file (any multiple of 16 runs)
    cfg = fmt.config(ckpt, overrides=["model.img_size=[512,512]"])
    assert cfg.model.backbone == "beit_base_patch16_384" and list(cfg.model.img_size) == [512, 512]


# ------------------------------------------------------------------------------------------------
# values: real (small) models through a file, timm-0.6 Swin layouts
# ------------------------------------------------------------------------------------------------

TINY_SWINV2 = ["model.backbone=test_swinv2", "model.img_size=[64,64]"]
TINY_SWIN = ["model.backbone=swin_tiny_patch4_window7_224", "model.img_size=[64,64]",
             "model.backbone_kwargs={embed_dim: 16, depths: [1,1,1,1], num_heads: [1,1,2,2], window_size: 4, "
             "num_classes: 10}"]


@pytest.mark.parametrize("backbone", [TINY_SWINV2, TINY_SWIN], ids=["swinv2", "swin"])
@pytest.mark.parametrize("preset", ["zoed_m12_n", "zoed_m12_nk"])
def test_swin_files_in_the_timm06_layout_load_to_the_same_model(tmp_path, backbone, preset):
    over = backbone + SMALL
    model = randomise(zl.build_model(zl.load_config(preset, over)))
    official = to_official(model.state_dict(), DOMAINS[preset])
    assert "core.core.pretrained.model.layers.0.downsample.reduction.weight" in official
    assert not any(k.startswith("core.core.pretrained.model.layers.3.downsample") for k in official)
    path = tmp_path / "ZoeD_swin.pt"
    torch.save({"model": official}, path)
    loaded = zl.load_model(path, overrides=over)  # head variant inferred; tiny backbones named
    ref = model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(ref) and all(torch.equal(v, ref[k]) for k, v in got.items())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x).metric_depth, model(x).metric_depth)
    # the DPT core of such a file initialises a stage-2 model (model.core_checkpoint), today's names
    core = core_state_from_file(path)
    assert set(core) == set(model.core.state_dict())
    assert core["pretrained.model.layers.1.downsample.reduction.weight"].shape[0] == 32  # stage 0 -> 1


@pytest.mark.slow
def test_release_size_swinv2_t_file_loads_with_its_values():
    """The headline case: a ZoeD-N trained on DPT_SwinV2_T_256 (28M backbone), no preset."""
    cfg = zl.load_config("zoed_m12_n", ["model.backbone=swinv2_tiny_window16_256", "model.img_size=[256,256]"])
    model = randomise(zl.build_model(cfg))
    official = to_official(model.state_dict(), ["nyu"])
    loaded, got_cfg = load_checkpoint(Checkpoint({"model": official}, None, "ZoeD_SwinV2_T.pt"))
    assert got_cfg.model.backbone == "swinv2_tiny_window16_256" and list(got_cfg.model.img_size) == [256, 256]
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    x = torch.rand(1, 3, 240, 320, generator=torch.Generator().manual_seed(2))  # squashed to 256x256
    with torch.no_grad():
        out = loaded(x).metric_depth
        assert out.shape == (1, 1, 256, 256)
        assert torch.equal(out, model(x).metric_depth)


@pytest.mark.parametrize("midas_type", list(MIDAS_TYPES))
def test_midas_files_of_the_same_backbones_use_the_same_inference(midas_type):
    """A MiDaS v3.1 file (``pretrained.*`` + ``scratch.*``) is the ZoeDepth file's core on its own:
    a relative model at MiDaS's own size (BEiT-L-512: 512; Swin: fixed; else 384)."""
    backbone, size, _ = MIDAS_TYPES[midas_type]
    official = meta_official("zoed_m12_n", midas_type)
    core = {k[len("core.core."):]: v for k, v in official.items() if k.startswith("core.core.")}
    ckpt = Checkpoint(core, None, f"dpt_{midas_type}.pt")
    assert detect(ckpt).NAME == "midas"
    cfg = detect(ckpt).config(ckpt)
    own = size or ([512, 512] if midas_type == "DPT_BEiT_L_512" else [384, 384])
    assert (cfg.stage, cfg.model.backbone, list(cfg.model.img_size)) == ("relative", backbone, own)
    assert cfg.model.keep_aspect_ratio is (size is None)
    check_strict(ckpt, cfg)
