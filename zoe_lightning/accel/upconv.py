"""A 3x3 convolution of a bilinearly upsampled map, computed without the upsampled map
(the DPT head's two convolutions around its 2x upsampling)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import capturing, interpolation_weights

__all__ = ["upsample_conv3x3", "upsample_conv3x3_applies"]

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
    In training the DPT head's two such convs are about 3x faster than interpolate + conv2d
    (benchmarks/RESULTS.md, "Speed switches and variants not adopted").
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
