"""Kernels of the speed variants against their definitions: conv2d, interpolate-then-conv2d, the
concatenating readout, upsample-then-1x1-conv (float64 to 1e-12 where the algebra is exact)."""

import copy

import pytest
import torch

from .helpers import as_variant


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_gemm_equals_conv2d(layout, bias):
    from zoe_lightning.accel.kernels import conv1x1

    torch.manual_seed(5)
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias)
    x = torch.randn(3, 6, 7, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = conv1x1(x, conv)
    expected = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + (conv.bias.view(1, -1, 1, 1) if bias else 0)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)


def test_fast_path_modules_equal_their_original_order():
    from zoe_lightning.accel.dpt import FastFeatureFusionBlock
    from zoe_lightning.accel.encoder import FastProjectReadout
    from zoe_lightning.models.dpt import FeatureFusionBlock
    from zoe_lightning.models.encoder import ProjectReadout

    torch.manual_seed(6)
    block = FeatureFusionBlock(8)
    x, skip = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    slow = block(x, skip, size=(11, 13))  # upsample then 1x1 conv
    fast = as_variant(block, FastFeatureFusionBlock)
    torch.testing.assert_close(fast(x, skip, size=(11, 13)), slow, atol=1e-5, rtol=1e-5)
    readout = ProjectReadout(12)
    tokens, cls = torch.randn(2, 20, 12), torch.randn(2, 1, 12)
    lin = readout.project[0]
    expected = torch.nn.functional.gelu(torch.cat([tokens, cls.expand(-1, 20, -1)], -1) @ lin.weight.t() + lin.bias)
    torch.testing.assert_close(readout(tokens, cls), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(as_variant(readout, FastProjectReadout)(tokens, cls), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch,channels,out,size,layout,bias", [
    (1, 5, 7, (6, 8), "channels_last", True),
    (2, 3, 4, (10, 4), "nchw", False),
    (3, 8, 6, (2, 2), "channels_last", True),
])
def test_winograd_conv3x3_equals_conv2d_in_float64(batch, channels, out, size, layout, bias, monkeypatch):
    """The F(2x2,3x3) algebra is exact: in float64 it matches conv2d to 1e-12, for band sizes that
    do and do not divide the tile rows (1 and 2 tiles per band, and one band for everything)."""
    from zoe_lightning.accel import winograd

    torch.manual_seed(11)
    conv = torch.nn.Conv2d(channels, out, 3, padding=1, bias=bias).double()
    x = torch.randn(batch, channels, *size, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    for tiles in (1, 2 * batch * size[1] // 2 + 1, 10_000):
        monkeypatch.setattr(winograd, "WINOGRAD_BAND_TILES", tiles)
        with torch.no_grad():  # an inference kernel
            got = winograd.winograd_conv3x3(x, winograd.winograd_weight(conv.weight), conv.bias)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_winograd_conv_runs_only_at_fp32_inference_and_follows_weight_updates(monkeypatch):
    from zoe_lightning.accel import winograd

    calls = []
    real = winograd.winograd_conv3x3
    monkeypatch.setattr(winograd, "winograd_conv3x3", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(12)
    plain = torch.nn.Conv2d(64, 128, 3, padding=1)
    conv = as_variant(plain, winograd.WinogradConv2d)
    x = torch.randn(1, 64, 8, 10)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        torch.testing.assert_close(conv(x).double(), expected, atol=1e-5, rtol=1e-5)
        assert calls == [1]
        conv.weight.mul_(-2.0)  # in place (as an optimizer step): the cached filters must be recomputed
        torch.testing.assert_close(conv(x).double(), -2 * expected + 3 * conv.bias.double()
                                   .view(1, -1, 1, 1), atol=1e-5, rtol=1e-5)
        assert len(calls) == 2
        plain(x)  # the reference module (a copy)
        conv(x[..., :9])  # odd width: PyTorch's kernel
        conv.double()(x.double())  # not fp32
        conv.float()
        small = as_variant(torch.nn.Conv2d(64, 32, 3, padding=1), winograd.WinogradConv2d)  # too few outputs to pay
        small(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x)
        assert len(calls) == 2
    y = conv(x.requires_grad_())  # training: PyTorch's kernel, gradients flow
    assert len(calls) == 2 and y.requires_grad
    assert "_winograd_cache" not in "".join(conv.state_dict())


@pytest.mark.parametrize("batch,channels,out,source,target,layout,bias", [
    (1, 6, 4, (6, 8), (12, 16), "channels_last", True),  # the DPT head: 2x
    (2, 3, 5, (5, 7), (11, 13), "nchw", False),  # odd sizes, non-integer scale
    (1, 4, 3, (9, 6), (4, 5), "nchw", True),  # downsampling: bands span many source rows
    (2, 2, 2, (1, 3), (3, 1), "channels_last", True),  # one source row, one output column
])
def test_upsample_conv3x3_equals_interpolate_then_conv_in_float64(batch, channels, out, source, target, layout,
                                                                   bias, monkeypatch):
    """Moving the channel mixes before the interpolation and summing shifted taps is exact algebra:
    float64 agrees with interpolate-then-conv2d to 1e-12 for bands and chunks that do and do not
    divide the rows."""
    from zoe_lightning.accel import upconv

    torch.manual_seed(13)
    conv = torch.nn.Conv2d(channels, out, 3, padding=1, bias=bias).double()
    x = torch.randn(batch, channels, *source, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    up = torch.nn.functional.interpolate(x, size=target, mode="bilinear", align_corners=True)
    expected = torch.nn.functional.conv2d(up, conv.weight, conv.bias, padding=1)
    for band, chunk in ((1, 1), (3, 2), (8, 64)):
        monkeypatch.setattr(upconv, "UPCONV_BAND_ROWS", band)
        monkeypatch.setattr(upconv, "UPCONV_CHUNK_ROWS", chunk)
        with torch.no_grad():
            got = upconv.upsample_conv3x3(x, conv, target)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("variant", ["_upsample_conv3x3_dense", "_upsample_conv3x3_interpolate", "dispatch"])
@pytest.mark.parametrize("source,target,bias", [((4, 5), (8, 10), True), ((5, 3), (9, 7), False)])
def test_upsample_conv3x3_gradients_equal_interpolate_then_conv_in_float64(variant, source, target, bias):
    """The autograd forms (training) give the outputs and the input, weight and bias gradients of
    interpolate-then-conv2d, to 1e-12 in float64."""
    from zoe_lightning.accel import upconv

    torch.manual_seed(15)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, bias=bias).double()
    x = torch.randn(2, 3, *source, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(2, 4, *target, dtype=torch.float64)
    up = torch.nn.functional.interpolate(x, size=target, mode="bilinear", align_corners=True)
    expected = torch.nn.functional.conv2d(up, conv.weight, conv.bias, padding=1)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    want = torch.autograd.grad(expected, params, seed)
    fn = upconv.upsample_conv3x3 if variant == "dispatch" else (
        lambda a, c, size: getattr(upconv, variant)(a, c, *size))
    got = fn(x, conv, target)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    for g, w in zip(torch.autograd.grad(got, params, seed), want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-12)


def test_upsampled_map_feeds_projectors_like_the_full_map():
    """A projector given the low-resolution source of a map (Upsampled) computes what it computes
    on the upsampled map; an MLP not starting with a 1x1 conv upsamples first."""
    from zoe_lightning.accel.bins import PointwiseMLP
    from zoe_lightning.accel.kernels import Upsampled
    from zoe_lightning.models.bins import Projector

    torch.manual_seed(14)
    proj = Projector(6, 5, 7).double()
    low = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    full = torch.nn.functional.interpolate(low, size=(10, 14), mode="bilinear", align_corners=True)
    expected = torch.einsum("oc,bchw->bohw", proj._net[2].weight[:, :, 0, 0], torch.relu(
        torch.einsum("oc,bchw->bohw", proj._net[0].weight[:, :, 0, 0], full) + proj._net[0].bias.view(1, -1, 1, 1))
    ) + proj._net[2].bias.view(1, -1, 1, 1)
    torch.testing.assert_close(proj(full), expected, atol=1e-12, rtol=1e-12)  # the reference
    fast = copy.deepcopy(proj)
    fast._net.__class__ = PointwiseMLP
    torch.testing.assert_close(fast(Upsampled(low, (10, 14))), expected, atol=1e-12, rtol=1e-12)
    mlp = PointwiseMLP(torch.nn.ReLU(), *list(copy.deepcopy(proj._net))).double()  # first layer not a 1x1 conv
    torch.testing.assert_close(mlp(Upsampled(low, (10, 14))), proj._net(torch.relu(full)), atol=1e-12, rtol=1e-12)
