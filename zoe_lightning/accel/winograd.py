"""Winograd F(2x2, 3x3): the decoder's 3x3 convolutions at CPU fp32 inference (``model.speed.winograd``)."""

from __future__ import annotations

import torch
import torch.nn as nn

from .kernels import capturing

__all__ = ["winograd_weight", "winograd_conv3x3", "WinogradConv2d"]

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
    whole BEiT-B training step of benchmark row 2 slower (benchmarks/RESULTS.md)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and not capturing()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and conv.weight.dtype == torch.float32
            and _winograd_pays(conv.in_channels, conv.out_channels, x.shape[-2], x.shape[-1]))


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (same parameters) that runs by Winograd F(2x2, 3x3) where
    :func:`_winograd_applies` (the same function), else as PyTorch's kernel.

    The transformed filters are cached on the module (a plain attribute, not in the state dict) and
    recomputed when the weight changes (new storage, an in-place update such as an optimizer step,
    another device or dtype).
    """

    reference = nn.Conv2d
    _winograd_cache = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _winograd_applies(x, self):
            return super().forward(x)
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        if self._winograd_cache is None or self._winograd_cache[0] != key:
            self._winograd_cache = (key, winograd_weight(weight.detach()))
        return winograd_conv3x3(x, self._winograd_cache[1], self.bias)
