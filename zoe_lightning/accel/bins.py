"""Speed variants of the metric bins modules (:mod:`zoe_lightning.models.bins`), same parameters.

* :class:`PointwiseMLP` (``fast_path``): a per-pixel MLP whose 1x1 convolutions run as GEMMs;
  given an :class:`~zoe_lightning.accel.kernels.Upsampled` map, its first 1x1 convolution runs
  before the upsampling (linear maps commute with bilinear interpolation, whose weights sum to one).
* :class:`FastSeedBinRegressor` (``fast_path``): its MLP the same way.
* :class:`AcceleratedAttractorLayer`: ``memory_efficient`` (an autograd function saving only its
  inputs, one attractor at a time) and ``fast_path`` (in-place attractor sum outside autograd).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.bins import ATTRACTORS, AttractorLayer, SeedBinRegressor
from .kernels import Upsampled, conv1x1, is_pointwise_conv

__all__ = ["PointwiseMLP", "FastSeedBinRegressor", "AcceleratedAttractorLayer"]


def pointwise(layers: nn.Sequential, x) -> torch.Tensor:
    """Run a per-pixel MLP (a Sequential of 1x1 convolutions and activations), the 1x1
    convolutions as :func:`conv1x1`; ``x`` may be an :class:`Upsampled` map (see module doc)."""
    if isinstance(x, Upsampled):
        if len(layers) and is_pointwise_conv(layers[0]):
            x = F.interpolate(conv1x1(x.low, layers[0]), size=x.size, mode="bilinear", align_corners=True)
            layers = layers[1:]
        else:
            x = x.full()
    for layer in layers:
        x = conv1x1(x, layer) if is_pointwise_conv(layer) else layer(x)
    return x


class PointwiseMLP(nn.Sequential):
    """``nn.Sequential`` of a per-pixel MLP, run by :func:`pointwise` (same function)."""

    reference = nn.Sequential

    def forward(self, x):
        return pointwise(self, x)


class FastSeedBinRegressor(SeedBinRegressor):
    reference = SeedBinRegressor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_centers(pointwise(self._net, x))


def _attractor_slope(d: torch.Tensor, kind: str, alpha: float, gamma: float) -> torch.Tensor:
    """df/dd of the attractor ``kind`` (d |d|^g / dd = g |d|^g / d)."""
    m = alpha * d.abs().pow(gamma)
    if kind == "inv":
        return (1.0 + (1.0 - gamma) * m) / (1.0 + m).square()
    return torch.exp(-m) * (1.0 - gamma * m)


class _AttractorSum(torch.autograd.Function):
    """sum_k f(a_k - c) saving only ``points`` and ``centers`` for backward.

    Autograd of the plain loop would keep every per-attractor intermediate (A x (B,N,h,w)
    tensors, like the vectorised form); here backward recomputes one attractor at a time.
    """

    @staticmethod
    def forward(ctx, points, centers, kind: str, alpha: float, gamma: float):
        fn = ATTRACTORS[kind]
        total = torch.zeros_like(centers)
        for k in range(points.shape[1]):
            total += fn(points[:, k:k + 1] - centers, alpha, gamma)
        ctx.save_for_backward(points, centers)
        ctx.args = (kind, alpha, gamma)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        points, centers = ctx.saved_tensors
        grad_points = torch.empty_like(points)
        grad_centers = torch.zeros_like(centers)
        for k in range(points.shape[1]):
            g = grad * _attractor_slope(points[:, k:k + 1] - centers, *ctx.args)
            grad_points[:, k] = g.sum(dim=1)
            grad_centers -= g
        return grad_points, grad_centers, None, None, None


class AcceleratedAttractorLayer(AttractorLayer):
    """:class:`AttractorLayer` with ``memory_efficient`` and ``fast_path`` attractor sums."""

    reference = AttractorLayer
    fast_path: bool = True
    memory_efficient: bool = True

    def delta(self, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        if self.fast_path and not torch.is_grad_enabled() and not torch.is_autocast_enabled(points.device.type):
            return self._delta_inplace(points, centers)
        if not self.memory_efficient:
            return super().delta(points, centers)
        if torch.is_grad_enabled() and (points.requires_grad or centers.requires_grad):
            total = _AttractorSum.apply(points, centers, self.kind, self.alpha, self.gamma)
        else:
            total = torch.zeros_like(centers)
            for k in range(points.shape[1]):
                total = total + self.fn(points[:, k:k + 1] - centers, self.alpha, self.gamma)
        return total / points.shape[1] if self.aggregation == "mean" else total

    def _delta_inplace(self, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """:meth:`delta` without autograd: one attractor at a time, in place on its own difference
        tensor (no A x (B,N,h,w) intermediates, a third of the elementwise passes)."""
        total = None
        for k in range(points.shape[1]):
            d = points[:, k:k + 1] - centers
            if self.kind == "inv" and self.gamma == 2.0:  # d / (1 + alpha d^2): one fused pass for the denominator
                d.div_(torch.addcmul(d.new_ones(()), d, d, value=self.alpha))
            elif self.kind == "inv":
                d.div_(d.abs().pow_(self.gamma).mul_(self.alpha).add_(1.0))
            else:
                d.mul_(d.abs().pow_(self.gamma).mul_(-self.alpha).exp_())
            total = d if total is None else total.add_(d)
        return total.div_(points.shape[1]) if self.aggregation == "mean" else total
