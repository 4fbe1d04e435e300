"""Kernels shared by the speed variants: 1x1 convolutions as GEMMs, bilinear upsampling by bands
of rows, and :class:`Upsampled` maps (a low-resolution source plus the size it stands for).

Each computes a function of the reference modules exactly in real arithmetic (to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["capturing", "pixels", "conv1x1", "is_pointwise_conv", "interpolation_weights", "RowUpsampler",
           "Upsampled"]


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


class Upsampled:
    """A decoder map kept as its low-resolution source and the size it is bilinearly upsampled to
    (``align_corners=True``), so that a consumer can apply its linear maps first, on 4x fewer
    pixels. Only :class:`~zoe_lightning.accel.dpt.FastDPTCore` produces these; :meth:`full` materializes the map."""

    def __init__(self, low: torch.Tensor, size) -> None:
        self.low, self.size = low, (int(size[0]), int(size[1]))

    def full(self) -> torch.Tensor:
        return F.interpolate(self.low, size=self.size, mode="bilinear", align_corners=True)
