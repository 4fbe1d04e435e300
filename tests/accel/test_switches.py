"""Each ``model.speed`` switch is config and the model computes the same function with it on and off
(within 1e-4): against the reference model (every switch off for its modules) with the same weights."""

import pytest
import torch

from zoe_lightning.losses import silog_loss
from zoe_lightning.models import build_model
from zoe_lightning.models.dpt import DPTCore
from zoe_lightning.models.encoder import Encoder

from ..conftest import tiny_config
from .helpers import BEIT, SMALL, SavedBytes, _assert_same, _pair


def test_fused_attention_switch_is_config_and_matches_explicit_attention():
    from zoe_lightning.accel.encoder import AcceleratedEncoder

    ref, explicit = _pair("model.speed.fused_attention=false")
    assert type(ref.core.pretrained) is AcceleratedEncoder and ref.core.pretrained.fused_attention is True
    assert type(explicit.core.pretrained) is Encoder  # the reference: explicit attention
    image = torch.rand(2, 3, 32, 48)
    _assert_same(ref, explicit, image)  # training mode (dropout rates are 0): outputs and gradients


def test_fused_attention_switch_reaches_timm_blocks():
    from zoe_lightning.accel.encoder import configure_timm

    torch.manual_seed(0)
    enc = Encoder("test_vit", (32, 48))
    flags = [m.fused_attn for m in enc.model.modules() if hasattr(m, "fused_attn")]
    assert flags, "timm ViT attention exposes fused_attn"
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        fused = enc(x)
        configure_timm(enc, fused_attention=False, grad_checkpointing=False)
        assert not any(m.fused_attn for m in enc.model.modules() if hasattr(m, "fused_attn"))
        explicit = enc(x)
    for a, b in zip(fused, explicit):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("experiment_overrides", [[], ["model.bins=[{name: nyu, n_bins: 16, min_depth: 0.001, "
                                                       "max_depth: 10}, {name: kitti, n_bins: 16, min_depth: 0.001, "
                                                       "max_depth: 80}]"]])
def test_fast_path_switch_is_config_and_keeps_outputs_and_gradients(experiment_overrides):
    from zoe_lightning.accel.dpt import FastDPTCore

    ref, slow = _pair("model.speed.fast_path=false", base=[*BEIT, *experiment_overrides])
    assert type(ref.core) is FastDPTCore and type(slow.core) is DPTCore
    assert not any(type(m).__name__.startswith("Fast") for m in slow.modules())
    image = torch.rand(2, 3, 32, 48)
    ref.eval(), slow.eval()
    _assert_same(ref, slow, image)  # with autograd: training path
    with torch.inference_mode():  # in-place inference path
        a, b = ref(image), slow(image)
    for name in ("metric_depth", "relative_depth", "probs", "bin_centers"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)


def test_channels_last_is_config_and_keeps_outputs():
    ref, nhwc = _pair("model.speed.channels_last=true", base=[*BEIT, "model.speed.channels_last=false"])
    assert ref.core.scratch.layer1_rn.weight.is_contiguous() and ref.prep(torch.rand(1, 3, 32, 48)).is_contiguous()
    conv = nhwc.core.scratch.layer1_rn.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    image = torch.rand(2, 3, 32, 48)
    assert nhwc.prep(image).is_contiguous(memory_format=torch.channels_last)
    ref.eval(), nhwc.eval()
    _assert_same(ref, nhwc, image)


@pytest.mark.parametrize("backbone", ["test_beit", "test_vit"])
def test_grad_checkpointing_keeps_gradients_and_saves_less(backbone):
    base = [f"model.backbone={backbone}", *SMALL]
    ref, ckpt = _pair("model.speed.grad_checkpointing=true", base=base)
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
    ref, compiled = _pair("model.speed.compile=true")
    assert list(compiled.state_dict()) == list(ref.state_dict())
    ref.eval(), compiled.eval()
    image = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(compiled(image).metric_depth, ref(image).metric_depth, atol=1e-4, rtol=1e-4)


def test_winograd_switch_is_config_and_keeps_outputs():
    from zoe_lightning.accel.winograd import WinogradConv2d

    wide = [*BEIT, "model.features=128", "model.img_size=[64,96]"]  # 128-channel decoder: Winograd applies
    ref, direct = _pair("model.speed.winograd=false", base=wide)
    assert not any(isinstance(m, WinogradConv2d) for m in direct.modules())
    rcu = ref.core.scratch.refinenet1.resConfUnit2
    assert type(rcu.conv1) is WinogradConv2d and type(ref.core.scratch.layer1_rn) is WinogradConv2d
    assert type(ref.core.scratch.output_conv[2]) is torch.nn.Conv2d  # 32 outputs: never pays
    ref.eval(), direct.eval()
    image = torch.rand(2, 3, 64, 96)
    _assert_same(ref, direct, image)  # training: outputs and every gradient
    with torch.inference_mode():
        a, b = ref(image), direct(image)
        exact = direct.double()(image.double())
    assert rcu.conv1._winograd_cache is not None
    assert getattr(direct.core.scratch.refinenet1.resConfUnit2.conv1, "_winograd_cache", None) is None
    for name in ("metric_depth", "relative_depth", "probs", "bin_centers"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)
    # as close to the float64 function as PyTorch's own fp32 kernels are
    err_wino = (a.relative_depth.double() - exact.relative_depth).abs().max()
    err_direct = (b.relative_depth.double() - exact.relative_depth).abs().max()
    assert err_wino <= 4 * err_direct + 1e-6


def test_upsample_conv3x3_dispatch_and_model_use(monkeypatch):
    """The DPT head uses the fused convs on the CPU with ``fast_path`` (inference and training);
    autocast and ``fast_path=false`` run interpolate + conv2d, with equal outputs and gradients."""
    from zoe_lightning.accel import dpt
    from zoe_lightning.accel import upconv

    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    x = torch.randn(1, 4, 5, 6)
    assert upconv.upsample_conv3x3_applies(x, conv)
    assert not upconv.upsample_conv3x3_applies(x, torch.nn.Conv2d(4, 3, 3, padding=2, dilation=2))
    assert not upconv.upsample_conv3x3_applies(x, torch.nn.Conv2d(4, 3, 3, padding=1, stride=2))
    assert not upconv.upsample_conv3x3_applies(x.double(), conv)  # weight dtype differs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not upconv.upsample_conv3x3_applies(x, conv)

    calls = []
    real = dpt.upsample_conv3x3
    monkeypatch.setattr(dpt, "upsample_conv3x3", lambda *a: calls.append(a[2]) or real(*a))
    ref, slow = _pair("model.speed.fast_path=false", base=BEIT)
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
