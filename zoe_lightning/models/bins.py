"""Building blocks of the metric bins module (facts file §2): seed bin regressors, projectors,
attractor layers, the LocalBins-style splitter and the conditional log-binomial.

Every MLP is a per-pixel 1x1 convolution; submodules keep the original's ``_net`` / ``mlp``
names so official checkpoints map onto them by key. These are the reference modules, in the
original's op order; equal-output speed variants live in :mod:`zoe_lightning.accel`.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SeedBinRegressor",
    "Projector",
    "AttractorLayer",
    "inverse_attractor",
    "exponential_attractor",
    "Splitter",
    "ConditionalLogBinomial",
    "log_binomial_coefficient",
    "centers_from_widths",
]

ORIGINAL_ALPHA, ORIGINAL_GAMMA = 300.0, 2.0


def _up(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def centers_from_widths(widths: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Bin centres in metres from normalised widths (summing to 1 over dim 1)."""
    widths = (max_depth - min_depth) * widths
    edges = torch.cumsum(F.pad(widths, (0, 0, 0, 0, 1, 0), value=min_depth), dim=1)
    return 0.5 * (edges[:, :-1] + edges[:, 1:])


class SeedBinRegressor(nn.Module):
    """Bottleneck -> ``n_bins`` seed bin centres (metres).

    ``normed``: positive widths normalised over [min_depth, max_depth] (ordered, bounded centres).
    ``softplus``: the softplus outputs are the centres themselves (unordered, unbounded).
    """

    def __init__(self, in_features: int, n_bins: int, mlp_dim: int, min_depth: float, max_depth: float,
                 normed: bool) -> None:
        super().__init__()
        self.normed, self.min_depth, self.max_depth = normed, min_depth, max_depth
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(True),
            nn.Conv2d(mlp_dim, n_bins, 1), nn.ReLU(True) if normed else nn.Softplus(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_centers(self._net(x))

    def to_centers(self, raw: torch.Tensor) -> torch.Tensor:
        """MLP output -> bin centres."""
        if not self.normed:
            return raw
        raw = raw + 1e-3
        return centers_from_widths(raw / raw.sum(dim=1, keepdim=True), self.min_depth, self.max_depth)


class Projector(nn.Module):
    def __init__(self, in_features: int, out_features: int, mlp_dim: int) -> None:
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(True), nn.Conv2d(mlp_dim, out_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net(x)


def inverse_attractor(d: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """f(d) = d / (1 + alpha |d|^gamma) (|d|^gamma = d^gamma for the original's even gamma)."""
    return d / (1.0 + alpha * d.abs().pow(gamma))


def exponential_attractor(d: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """f(d) = d exp(-alpha |d|^gamma)."""
    return d * torch.exp(-alpha * d.abs().pow(gamma))


ATTRACTORS = {"inv": inverse_attractor, "exp": exponential_attractor}


class AttractorLayer(nn.Module):
    """Move bin centres towards ``n_attractors`` predicted points (one decoder level).

    ``normed=True`` works in normalised [0,1] space and returns sorted, clipped metric centres;
    ``normed=False`` works in metres. ``discard_norm`` reproduces the original normed layer,
    whose pair-normalised attractors were overwritten by the raw first channel of each pair.
    """

    def __init__(self, in_features: int, n_attractors: int, mlp_dim: int, min_depth: float, max_depth: float,
                 normed: bool, kind: str = "inv", aggregation: str = "mean", alpha: float = 300.0,
                 gamma: float = 2.0, discard_norm: bool = False) -> None:
        super().__init__()
        self.n_attractors, self.normed = n_attractors, normed
        self.min_depth, self.max_depth = min_depth, max_depth
        self.kind, self.fn, self.aggregation = kind, ATTRACTORS[kind], aggregation
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.discard_norm = discard_norm
        out = 2 * n_attractors if normed else n_attractors
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(True),
            nn.Conv2d(mlp_dim, out, 1), nn.ReLU(True) if normed else nn.Softplus(),
        )

    def attractor_points(self, x: torch.Tensor) -> torch.Tensor:
        a = self._net(x)
        if not self.normed:
            return a
        a = (a + 1e-3).unflatten(1, (self.n_attractors, 2))
        return a[:, :, 0] if self.discard_norm else a[:, :, 0] / a.sum(dim=2)

    def delta(self, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Aggregate f(a_k - c_j) over attractors k: (B,A,h,w), (B,N,h,w) -> (B,N,h,w)."""
        total = self.fn(points.unsqueeze(2) - centers.unsqueeze(1), self.alpha, self.gamma).sum(dim=1)
        return total / points.shape[1] if self.aggregation == "mean" else total

    def forward(self, x: torch.Tensor, prev_centers: torch.Tensor,
                prev_embedding: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (centres carried to the next level, metric centres of this level)."""
        if prev_embedding is not None:
            x = x + _up(prev_embedding, x.shape[-2:])
        points = self.attractor_points(x)
        centers = _up(prev_centers, x.shape[-2:])
        new = centers + self.delta(points, centers)
        if not self.normed:
            return new, new
        metric = (self.max_depth - self.min_depth) * new + self.min_depth
        metric = torch.sort(metric, dim=1).values.clamp(self.min_depth, self.max_depth)
        return new, metric


class Splitter(nn.Module):
    """LocalBins-style level: split every bin of the previous level into ``split`` sub-bins."""

    def __init__(self, in_features: int, prev_bins: int, split: int, mlp_dim: int, min_depth: float,
                 max_depth: float) -> None:
        super().__init__()
        self.prev_bins, self.split = prev_bins, split
        self.min_depth, self.max_depth = min_depth, max_depth
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1), nn.GELU(),
            nn.Conv2d(mlp_dim, prev_bins * split, 1), nn.ReLU(True),
        )

    def forward(self, x: torch.Tensor, prev_widths: torch.Tensor,
                prev_embedding: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (normalised widths (B, prev*split, h, w), metric centres)."""
        if prev_embedding is not None:
            x = x + _up(prev_embedding, x.shape[-2:])
        frac = (self._net(x) + 1e-3).unflatten(1, (self.prev_bins, self.split))
        frac = frac / frac.sum(dim=2, keepdim=True)
        prev = _up(prev_widths, x.shape[-2:])
        prev = prev / prev.sum(dim=1, keepdim=True)
        widths = (prev.unsqueeze(2) * frac).flatten(1, 2)
        return widths, centers_from_widths(widths, self.min_depth, self.max_depth)


def log_binomial_coefficient(n: torch.Tensor, k: torch.Tensor, stirling: bool) -> torch.Tensor:
    """log C(n, k): exact (lgamma) or the original's truncated Stirling approximation."""
    if not stirling:
        return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
    eps = 1e-7
    n, k = n + eps, k + eps
    return n * torch.log(n) - k * torch.log(k) - (n - k) * torch.log(n - k + eps)


class LogBinomial(nn.Module):
    """Softmax over k of log Binomial(k; K-1, p) / T for K classes."""

    def __init__(self, n_classes: int, stirling: bool = False) -> None:
        super().__init__()
        self.K, self.stirling = n_classes, stirling
        self.register_buffer("k_idx", torch.arange(n_classes, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("K_minus_1", torch.tensor([[[[n_classes - 1.0]]]]), persistent=False)

    def forward(self, p: torch.Tensor, temperature: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
        q = torch.clamp(1 - p, eps, 1)
        p = torch.clamp(p, eps, 1)
        k, n = self.k_idx, self.K_minus_1
        y = log_binomial_coefficient(n, k, self.stirling) + k * torch.log(p) + (n - k) * torch.log(q)
        return torch.softmax(y / temperature, dim=1)


class ConditionalLogBinomial(nn.Module):
    """Per-pixel (p, temperature) from features + bin embedding -> probabilities over bins."""

    def __init__(self, in_features: int, condition_dim: int, n_classes: int, bottleneck_factor: int = 2,
                 min_temp: float = 0.0212, max_temp: float = 50.0, stirling: bool = False,
                 p_eps: float = 1e-4) -> None:
        super().__init__()
        self.min_temp, self.max_temp, self.p_eps = min_temp, max_temp, p_eps
        hidden = (in_features + condition_dim) // bottleneck_factor
        self.mlp = nn.Sequential(
            nn.Conv2d(in_features + condition_dim, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, 4, 1), nn.Softplus(),
        )
        self.log_binomial_transform = LogBinomial(n_classes, stirling)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        s = self.mlp(torch.cat([x, condition], dim=1)) + self.p_eps
        p = s[:, 0:1] / (s[:, 0:1] + s[:, 1:2])
        tau = s[:, 2:3] / (s[:, 2:3] + s[:, 3:4])
        temperature = (self.max_temp - self.min_temp) * tau + self.min_temp
        return self.log_binomial_transform(p, temperature)

    def expected_depth(self, features: List[torch.Tensor], condition: torch.Tensor, centers: torch.Tensor,
                       maps: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Depth = sum_k probs_k * centres_k at the resolution of ``features``.

        ``features``: full-resolution maps whose channels concatenate to ``x`` of :meth:`forward`
        (e.g. decoder output and relative depth, the latter resized if needed); ``condition`` and
        ``centers``: the bin embedding and bin centres at their own (lower) resolution, resized
        bilinearly (align_corners) as the original does. Returns (depth (B,1,H,W), probs (B,K,H,W),
        centres (B,K,H,W)); ``maps=False`` returns ``(depth, None, None)``.
        """
        size = features[0].shape[-2:]
        features = [_up(f, size) for f in features]
        probs = self(torch.cat(features, dim=1) if len(features) > 1 else features[0], _up(condition, size))
        centers = _up(centers, size)
        depth = (probs * centers).sum(dim=1, keepdim=True)
        return (depth, probs, centers) if maps else (depth, None, None)
