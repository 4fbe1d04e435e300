"""Equal-output fast paths shared by the model modules (``model.fast_path``).

Every module deriving from :class:`FastPath` computes the same function two ways: the original
op order (``fast_path = False``, kept as the reference and for the benchmarks' baseline) and a
cheaper one built from exact identities (1x1 convolutions as GEMMs, linear maps moved before
bilinear upsampling, concatenations replaced by split weights). Outputs agree to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["FastPath", "pixels", "conv1x1", "is_pointwise_conv", "pointwise", "RowUpsampler", "capturing",
           "winograd_weight", "winograd_conv3x3", "conv3x3", "upsample_conv3x3", "Upsampled", "interpolation_weights"]


def capturing() -> bool:
    """Inside ONNX export, tracing or torch.compile: a graph is being recorded, so shape-dependent
    Python loops (banded paths) would be frozen into it; the plain ops are used instead."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def pixels(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> a (B,H*W,C) *view* (no copy) for NCHW and channels-last tensors alike."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 1x1 convolution, computed as one GEMM over the pixels.

    CPU convolution kernels copy or reorder their input for 1x1 kernels; a matrix product on
    the (B, H*W, C) view does not. The output keeps the input's memory format.
    """
    weight = conv.weight.flatten(1)  # (O, C)
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        out = torch.matmul(weight, flat) if conv.bias is None else torch.baddbmm(
            conv.bias.view(1, -1, 1), weight.expand(b, -1, -1), flat)
        return out.view(b, -1, h, w)
    out = F.linear(x.permute(0, 2, 3, 1), weight, conv.bias)  # (B,H,W,O) contiguous
    return out.permute(0, 3, 1, 2)


def is_pointwise_conv(layer: nn.Module) -> bool:
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding in ((0, 0), "valid") and layer.groups == 1)


def pointwise(layers: nn.Module, x, fast: bool) -> torch.Tensor:
    """Run a per-pixel MLP (a Sequential of 1x1 convolutions and activations).

    ``fast`` runs the 1x1 convolutions with :func:`conv1x1`; the function is the same. ``x`` may be
    an :class:`Upsampled` map: the first layer, if a 1x1 convolution, then runs before the
    upsampling (linear maps commute with bilinear interpolation, whose weights sum to one).
    """
    if isinstance(x, Upsampled):
        if fast and isinstance(layers, nn.Sequential) and len(layers) and is_pointwise_conv(layers[0]):
            x = F.interpolate(conv1x1(x.low, layers[0]), size=x.size, mode="bilinear", align_corners=True)
            layers = layers[1:]
        else:
            x = x.full()
    if not fast or not isinstance(layers, nn.Sequential):
        return layers(x)
    for layer in layers:
        if is_pointwise_conv(layer):
            x = conv1x1(x, layer)
        else:
            x = layer(x)
    return x


def interpolation_weights(source: int, size: int, pad: int = 0):
    """``align_corners=True`` linear interpolation from ``source`` to ``size`` positions as a dense
    float64 (size + 2 pad, source) matrix (``pad`` zero rows before and after: a convolution's zero
    padding just outside the interpolated map), with each output position's two source indices
    (``lo``, ``hi`` lists, unpadded)."""
    pos = torch.arange(size, dtype=torch.float64) * ((source - 1) / (size - 1) if size > 1 else 0.0)
    lo = pos.floor().clamp(max=source - 1)
    frac = pos - lo
    hi = (lo + 1).clamp(max=source - 1)
    weights = torch.zeros(size + 2 * pad, source, dtype=torch.float64)
    rows = torch.arange(pad, size + pad)
    weights[rows, lo.long()] += 1 - frac
    weights[rows, hi.long()] += frac
    return weights, lo.long().tolist(), hi.long().tolist()


class RowUpsampler:
    """Bilinear (``align_corners=True``) upsampling of a pixel-major map, one band of rows at a time.

    ``F.interpolate(x, (H, W), mode="bilinear", align_corners=True)`` restricted to the output rows
    ``[r0, r1)``: output row ``y`` reads source row ``y (h - 1) / (H - 1)`` linearly interpolated, so a
    band needs only the source rows around it. The height pass is a small dense matrix product
    over those rows, the width pass is PyTorch's own kernel on the band. Bilinear interpolation is
    separable, so the result is the full upsampled map's band (to float rounding) without the
    full-resolution map ever existing.
    """

    def __init__(self, source_rows: int, rows: int, like: torch.Tensor) -> None:
        weights, self.lo, self.hi = interpolation_weights(source_rows, rows)
        self.weights = weights.to(device=like.device, dtype=like.dtype)

    def band(self, low: torch.Tensor, r0: int, r1: int, width: int) -> torch.Tensor:
        """Rows ``[r0, r1)`` of ``low`` (B, h, w, C) contiguous upsampled to (B, r1 - r0, width, C)."""
        s0, s1 = self.lo[r0], self.hi[r1 - 1] + 1
        b, _, w, c = low.shape
        rows = torch.matmul(self.weights[r0:r1, s0:s1], low[:, s0:s1].reshape(b, s1 - s0, w * c))
        rows = rows.view(b, r1 - r0, w, c)
        if w == width:
            return rows
        out = F.interpolate(rows.permute(0, 3, 1, 2), size=(r1 - r0, width), mode="bilinear", align_corners=True)
        return out.permute(0, 2, 3, 1)  # contiguous: the kernel keeps the channels-last layout


#: output rows per band of :func:`upsample_conv3x3` and source rows per chunk of its 1x1 stage (of
#: bands 4-16 and chunks 16-64, these ran fastest at 384x512, 128 -> 32 channels, 1 thread)
UPCONV_BAND_ROWS = 8
UPCONV_CHUNK_ROWS = 64


def _upsample_conv3x3_dense(x: torch.Tensor, conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """:func:`upsample_conv3x3` for autograd, as three matrix products: the 9 channel mixes at the
    source resolution, the three ``ky`` taps' shifted height interpolations as one (H, 3h) matrix,
    the three ``kx`` taps' shifted width interpolations as one (W, 3w) matrix. The interpolation
    matrices are dense (cost ~ H h + W w per pixel): for the small maps of CPU training."""
    b, c, h, w = x.shape
    o = conv.out_channels
    a = interpolation_weights(h, height, pad=1)[0].to(device=x.device, dtype=x.dtype)
    a = torch.cat([a[0:height], a[1:height + 1], a[2:height + 2]], 1)  # (H, ky * h)
    bw = interpolation_weights(w, width, pad=1)[0].to(device=x.device, dtype=x.dtype)
    bw = torch.cat([bw[0:width], bw[1:width + 1], bw[2:width + 2]], 1)  # (W, kx * w)
    mixes = conv.weight.permute(2, 1, 3, 0).reshape(3, c, 3 * o)  # (ky, C, kx * O)
    z = torch.matmul(x.permute(0, 2, 3, 1).reshape(b, 1, h * w, c), mixes)  # (B, ky, h w, kx O)
    rows = torch.matmul(a, z.reshape(b, 3 * h, w * 3 * o))  # (B, H, w kx O): the ky taps summed
    rows = rows.view(b, height, w, 3, o).transpose(2, 3).reshape(b * height, 3 * w, o)
    y = torch.matmul(bw, rows).view(b, height, width, o)  # the kx taps summed
    if conv.bias is not None:
        y = y + conv.bias
    return y.permute(0, 3, 1, 2)


def _upsample_conv3x3_interpolate(x: torch.Tensor, conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """:func:`upsample_conv3x3` for autograd with PyTorch's interpolation (cost linear in the
    pixels): the 9 channel mixes, a height interpolation of all of them, the ``ky`` taps summed
    with their row shifts, a width interpolation, the ``kx`` taps summed with their column shifts."""
    b, c, h, w = x.shape
    o = conv.out_channels
    mixes = conv.weight.permute(1, 2, 3, 0).reshape(c, 9 * o)  # (C, ky * kx * O)
    z = torch.matmul(x.permute(0, 2, 3, 1), mixes)  # (B, h, w, 9 O)
    u = F.interpolate(z.permute(0, 3, 1, 2), size=(height, w), mode="bilinear", align_corners=True)
    u = u.permute(0, 2, 3, 1).unflatten(-1, (3, 3 * o))  # (B, H, w, ky, kx O)
    v = u[:, :, :, 1] + F.pad(u[:, :-1, :, 0], (0, 0, 0, 0, 1, 0)) + F.pad(u[:, 1:, :, 2], (0, 0, 0, 0, 0, 1))
    t = F.interpolate(v.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=True)
    t = t.permute(0, 2, 3, 1).unflatten(-1, (3, o))  # (B, H, W, kx, O)
    y = t[:, :, :, 1] + F.pad(t[:, :, :-1, 0], (0, 0, 1, 0)) + F.pad(t[:, :, 1:, 2], (0, 0, 0, 1))
    if conv.bias is not None:
        y = y + conv.bias
    return y.permute(0, 3, 1, 2)


def upsample_conv3x3(x: torch.Tensor, conv: nn.Conv2d, size) -> torch.Tensor:
    """``conv(F.interpolate(x, size, mode="bilinear", align_corners=True))`` for a 3x3 / stride 1 /
    padding 1 convolution, computed without the upsampled map. Returns a channels-last
    (B, O, H, W) tensor.

    The convolution is a sum over its 9 taps of a channel mix ``W[:, :, ky, kx]`` applied to the
    upsampled map shifted by ``(ky - 1, kx - 1)``. Channel mixing commutes with the per-channel
    interpolation, so the 9 mixes run first, at the source resolution, as one GEMM with
    ``9 * O`` outputs (4x fewer pixels than the upsampled map). Bilinear interpolation is
    separable: per band of output rows, a small matrix product with the height-interpolation
    weights shifted by ``ky - 1`` (zero rows outside the map: the padding) sums the three ``ky``
    taps; PyTorch's width interpolation of the band then gives each ``kx`` tap's map, summed
    with its shift of ``kx - 1`` columns. Exact in real arithmetic (float64 agrees to 1e-14).

    Under autograd the same algebra runs unbanded and PyTorch differentiates it:
    :func:`_upsample_conv3x3_dense` while its dense interpolation products cost at most twice the
    channel mixing (small maps: CPU training sizes), else :func:`_upsample_conv3x3_interpolate`.
    At 128x160 training (batch 2) the DPT head's two such convs took 200 ms forward + backward
    instead of 650 ms (measured 2026-12-04).
    """
    b, c, h, w = x.shape
    height, width = int(size[0]), int(size[1])
    o = conv.out_channels
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        mixing = h * w * c * 9 * o  # multiply-adds
        dense = height * 3 * h * w * 3 * o + height * width * 3 * w * o
        if dense <= 2 * mixing:
            return _upsample_conv3x3_dense(x, conv, height, width)
        return _upsample_conv3x3_interpolate(x, conv, height, width)
    mixes = conv.weight.permute(1, 2, 3, 0).reshape(c, 9 * o)  # (C, ky * kx * O)
    heights, lo, hi = interpolation_weights(h, height, pad=1)  # row 0 / H + 1: the zero padding
    heights = heights.to(device=x.device, dtype=x.dtype)
    # each band reads upsampled rows r0 - 1 .. r1 (taps ky = 0..2), i.e. source rows s0 .. s1 - 1
    bands = [(r0, min(height, r0 + UPCONV_BAND_ROWS)) for r0 in range(0, height, UPCONV_BAND_ROWS)]
    bands = [(r0, r1, lo[max(r0 - 1, 0)], hi[min(r1, height - 1)] + 1) for r0, r1 in bands]
    chunk_rows = min(h, max(UPCONV_CHUNK_ROWS, max(s1 - s0 for _, _, s0, s1 in bands)))
    out = x.new_empty(b, height, width, o)
    src = x.permute(0, 2, 3, 1)  # (B, h, w, C)
    chunk = x.new_empty(chunk_rows * w, 9 * o)
    for i in range(b):
        c0 = c1 = 0
        for r0, r1, s0, s1 in bands:
            if s1 > c1:  # the 9 channel mixes of the next chunk of source rows
                c0, c1 = s0, min(h, s0 + chunk_rows)
                torch.matmul(src[i, c0:c1].reshape(-1, c), mixes, out=chunk[:(c1 - c0) * w])
            mixed = chunk[:(c1 - c0) * w].view(c1 - c0, w, 3, 3 * o)[s0 - c0:s1 - c0]
            rows = torch.mm(heights[r0:r1, s0:s1], mixed[:, :, 0].flatten(1))
            rows.addmm_(heights[r0 + 1:r1 + 1, s0:s1], mixed[:, :, 1].flatten(1))
            rows.addmm_(heights[r0 + 2:r1 + 2, s0:s1], mixed[:, :, 2].flatten(1))
            n = r1 - r0
            taps = F.interpolate(rows.view(1, n, w, 3 * o).permute(0, 3, 1, 2), size=(n, width), mode="bilinear",
                                 align_corners=True).permute(0, 2, 3, 1).view(n, width, 3, o)
            y = out[i, r0:r1]
            y.copy_(taps[:, :, 1])
            y[:, 1:] += taps[:, :-1, 0]
            y[:, :-1] += taps[:, 1:, 2]
    if conv.bias is not None:
        out.add_(conv.bias)
    return out.permute(0, 3, 1, 2)


def upsample_conv3x3_applies(x: torch.Tensor, conv: nn.Module) -> bool:
    """Where :func:`upsample_conv3x3` is used: on the CPU (inference and training; GPUs keep their
    convolution kernels, unmeasured there), without autocast or graph capture, for a plain 3x3 /
    stride 1 / padding 1 convolution."""
    return (isinstance(conv, nn.Conv2d) and x.device.type == "cpu" and x.dim() == 4 and x.is_floating_point()
            and not torch.is_autocast_enabled("cpu") and not capturing()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.weight.dtype == x.dtype)


class Upsampled:
    """A decoder map kept as its low-resolution source and the size it is bilinearly upsampled to
    (``align_corners=True``), so that a consumer can apply its linear maps first, on 4x fewer
    pixels. Only the CPU inference fast path produces these; :meth:`full` materializes the map."""

    def __init__(self, low: torch.Tensor, size) -> None:
        self.low, self.size = low, (int(size[0]), int(size[1]))

    def full(self) -> torch.Tensor:
        return F.interpolate(self.low, size=self.size, mode="bilinear", align_corners=True)


class FastPath:
    """Mixin: ``fast_path`` switches a module between the original op order and an equal but
    cheaper one (``model.fast_path``, set on every module by the model builder)."""

    fast_path: bool = True


# ----------------------------------------------------------------------------------------------
# Winograd F(2x2, 3x3): the decoder's 3x3 convolutions at inference on the CPU
# ----------------------------------------------------------------------------------------------
#
# A 2x2 output tile of a 3x3 convolution (cross-correlation) needs a 4x4 input tile d. With
#   B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]          (input transform)
#   G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]             (filter transform)
#   A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]                                        (output transform)
# the tile is A^T [(G g G^T) * (B^T d B)] A: the channel sum becomes 16 independent matrix
# products (tiles x C_in) @ (C_in x C_out), 16 multiplies per 4 outputs instead of 36 (2.25x
# fewer FLOPs); the transforms are additions only. Rows of tiles are processed in bands so the
# transformed tiles stay cache-sized and the scratch buffers are reused (no page faults).

#: tiles per band: of 64-1024, 256 ran fastest on the decoder's shapes at 1 thread (larger matrix
#: products against scratch that still fits the last-level cache)
WINOGRAD_BAND_TILES = 256


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """(O, C, 3, 3) filters -> (16, C, O) transformed filters ``G g G^T``, flattened row-major."""

    def g_rows(g0, g1, g2):  # G applied along one axis
        return g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2

    rows = torch.stack(g_rows(weight[:, :, 0], weight[:, :, 1], weight[:, :, 2]), dim=2)  # (O, C, 4, 3)
    tiles = torch.stack(g_rows(rows[..., 0], rows[..., 1], rows[..., 2]), dim=3)  # (O, C, 4, 4)
    return tiles.permute(2, 3, 1, 0).reshape(16, weight.shape[1], weight.shape[0]).contiguous()


def _b_transform(d0, d1, d2, d3, out: torch.Tensor) -> None:
    """``B^T`` along one axis, written into ``out[0..3]``."""
    torch.sub(d0, d2, out=out[0])
    torch.add(d1, d2, out=out[1])
    torch.sub(d2, d1, out=out[2])
    torch.sub(d1, d3, out=out[3])


def _a_transform(m0, m1, m2, m3, out0: torch.Tensor, out1: torch.Tensor) -> None:
    """``A^T`` along one axis: (m0 + m1 + m2, m1 - m2 - m3)."""
    torch.add(m0, m1, out=out0).add_(m2)
    torch.sub(m1, m2, out=out1).sub_(m3)


def winograd_conv3x3(x: torch.Tensor, weight_t: torch.Tensor, bias) -> torch.Tensor:
    """3x3 convolution, stride 1, padding 1, of ``x`` (B, C, H, W) with even H and W (no autograd).

    ``weight_t``: :func:`winograd_weight` of the filters. Returns a channels-last (B, O, H, W)
    tensor equal to ``F.conv2d(x, weight, bias, padding=1)`` to float rounding.
    """
    b, c, h, w = x.shape
    o = weight_t.shape[-1]
    src = x.permute(0, 2, 3, 1)  # (B, H, W, C): a view of a channels-last input
    th, tw = h // 2, w // 2
    band = max(1, WINOGRAD_BAND_TILES // (b * tw))
    # the zero-padded input exists one band at a time (rows 2 i0 - 1 .. 2 (i0 + nb) of x, plus the
    # zero columns): no full padded copy, whose fresh pages cost more than the copy itself
    padded = x.new_empty(b, 2 * band + 2, w + 2, c)
    padded[:, :, 0].zero_()
    padded[:, :, w + 1].zero_()
    sb, sh, sw, sc = padded.stride()
    out = x.new_empty(b, h, w, o)
    rows = x.new_empty(4, b, band, tw, 4, c)  # B^T along the tile rows
    tiles = x.new_empty(4, 4, b, band, tw, c)  # B^T d B
    prod = x.new_empty(16, b * band * tw, o)
    half = x.new_empty(2, 4, b, band, tw, o)  # A^T along the tile rows
    for i0 in range(0, th, band):
        nb = min(band, th - i0)
        n = b * nb * tw
        top, bottom = 2 * i0 - 1, 2 * (i0 + nb) + 1  # x rows [top, bottom) in padded rows 0 ..
        lo, hi = max(top, 0), min(bottom, h)
        if top < 0:
            padded[:, 0].zero_()
        if bottom > h:
            padded[:, hi - top:bottom - top].zero_()
        padded[:, lo - top:hi - top, 1:w + 1].copy_(src[:, lo:hi])
        d = padded.as_strided((b, nb, tw, 4, 4, c), (sb, 2 * sh, 2 * sw, sh, sw, sc), padded.storage_offset())
        r, t = rows[:, :, :nb], tiles[:, :, :, :nb]
        _b_transform(d[:, :, :, 0], d[:, :, :, 1], d[:, :, :, 2], d[:, :, :, 3], r)
        _b_transform(r[..., 0, :], r[..., 1, :], r[..., 2, :], r[..., 3, :], t.transpose(0, 1))
        m = torch.bmm(t.reshape(16, n, c), weight_t, out=prod[:, :n]).view(4, 4, b, nb, tw, o)
        hf = half[:, :, :, :nb]
        _a_transform(m[0], m[1], m[2], m[3], hf[0], hf[1])
        y = out[:, 2 * i0:2 * (i0 + nb)].view(b, nb, 2, tw, 2, o)
        for a in range(2):
            _a_transform(hf[a, 0], hf[a, 1], hf[a, 2], hf[a, 3], y[:, :, a, :, 0], y[:, :, a, :, 1])
    if bias is not None:
        out.add_(bias)
    return out.permute(0, 3, 1, 2)


def _winograd_pays(in_channels: int, out_channels: int, height: int, width: int) -> bool:
    """Enough channels for the 16 matrix products to pay for the transforms (measured in
    benchmarks/RESULTS.md: thin convolutions, e.g. 128 -> 32, run faster in oneDNN), even sizes."""
    return out_channels >= 128 and in_channels >= 64 and height % 2 == 0 and width % 2 == 0


def _winograd_applies(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Where :func:`winograd_conv3x3` is used: CPU fp32 inference (no autograd, autocast or graph
    capture: tracing, ONNX export, ``torch.compile``) of a 3x3 / stride 1 / padding 1 convolution,
    wide and even enough (:func:`_winograd_pays`). Training keeps PyTorch's kernels: a Winograd
    forward + input gradient (filter gradient from PyTorch) was on par per convolution but made the
    whole BEiT-B training step of benchmark row 2 slower (5.4 s vs 4.5 s, measured 2026-12-04)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and not capturing()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.weight.dtype == torch.float32
            and _winograd_pays(conv.in_channels, conv.out_channels, x.shape[-2], x.shape[-1]))


def conv3x3(x: torch.Tensor, conv: nn.Conv2d, winograd: bool) -> torch.Tensor:
    """``conv(x)``; by Winograd F(2x2, 3x3) where :func:`_winograd_applies` (same function).

    The transformed filters are cached on ``conv`` and recomputed when its weight changes
    (new storage, an in-place update such as an optimizer step, another device or dtype).
    """
    if not (winograd and _winograd_applies(x, conv)):
        return conv(x)
    weight = conv.weight
    key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
    cached = conv.__dict__.get("_winograd_cache")
    if cached is None or cached[0] != key:
        cached = (key, winograd_weight(weight.detach()))
        conv.__dict__["_winograd_cache"] = cached
    return winograd_conv3x3(x, cached[1], conv.bias)
