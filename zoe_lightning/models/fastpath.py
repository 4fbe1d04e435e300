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

__all__ = ["FastPath", "pixels", "conv1x1", "is_pointwise_conv", "pointwise", "RowUpsampler"]


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


def pointwise(layers: nn.Module, x: torch.Tensor, fast: bool) -> torch.Tensor:
    """Run a per-pixel MLP (a Sequential of 1x1 convolutions and activations).

    ``fast`` runs the 1x1 convolutions with :func:`conv1x1`; the function is the same.
    """
    if not fast or not isinstance(layers, nn.Sequential):
        return layers(x)
    for layer in layers:
        if is_pointwise_conv(layer):
            x = conv1x1(x, layer)
        else:
            x = layer(x)
    return x


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
        scale = (source_rows - 1) / (rows - 1) if rows > 1 else 0.0
        src = torch.arange(rows, dtype=torch.float64) * scale
        lo = src.floor().clamp(max=source_rows - 1)
        frac = src - lo
        hi = (lo + 1).clamp(max=source_rows - 1)
        weights = torch.zeros(rows, source_rows, dtype=torch.float64)
        weights[torch.arange(rows), lo.long()] += 1 - frac
        weights[torch.arange(rows), hi.long()] += frac
        self.lo, self.hi = lo.long().tolist(), hi.long().tolist()
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


class FastPath:
    """Mixin: ``fast_path`` switches a module between the original op order and an equal but
    cheaper one (``model.fast_path``, set on every module by the model builder)."""

    fast_path: bool = True
