"""Building blocks of the metric bins module (facts file §2): seed bin regressors, projectors,
attractor layers, the LocalBins-style splitter and the conditional log-binomial.

Every MLP is a per-pixel 1x1 convolution; submodules keep the original's ``_net`` / ``mlp``
names so official checkpoints map onto them by key.
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

from .fastpath import FastPath, RowUpsampler, pixels, pointwise
from .fastpath import capturing as _capturing

ORIGINAL_ALPHA, ORIGINAL_GAMMA = 300.0, 2.0

#: floor of the max-subtracted logits before ``exp`` in the in-place softmax steps. A sharp
#: log-binomial (low temperature) puts most bins 100s-1000s below the maximum, and exp of
#: z < -87 is a subnormal float, which CPUs compute through slow microcode assists (on the
#: SwinV2-T row of benchmark 1: 272 ms instead of 15 ms for 12.5M values). exp(-80) = 1.8e-35
#: stays normal even times a bin centre of 1e-3 m, and against the maximum term (exactly 1) it
#: cannot change a float32 sum: the same values to rounding.
SOFTMAX_FLOOR = -80.0


def _up(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def centers_from_widths(widths: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Bin centres in metres from normalised widths (summing to 1 over dim 1)."""
    widths = (max_depth - min_depth) * widths
    edges = torch.cumsum(F.pad(widths, (0, 0, 0, 0, 1, 0), value=min_depth), dim=1)
    return 0.5 * (edges[:, :-1] + edges[:, 1:])


class SeedBinRegressor(FastPath, nn.Module):
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
        raw = pointwise(self._net, x, self.fast_path)
        if not self.normed:
            return raw
        raw = raw + 1e-3
        return centers_from_widths(raw / raw.sum(dim=1, keepdim=True), self.min_depth, self.max_depth)


class Projector(FastPath, nn.Module):
    def __init__(self, in_features: int, out_features: int, mlp_dim: int) -> None:
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(True), nn.Conv2d(mlp_dim, out_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(self._net, x, self.fast_path)


def inverse_attractor(d: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """f(d) = d / (1 + alpha |d|^gamma) (|d|^gamma = d^gamma for the original's even gamma)."""
    return d / (1.0 + alpha * d.abs().pow(gamma))


def exponential_attractor(d: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """f(d) = d exp(-alpha |d|^gamma)."""
    return d * torch.exp(-alpha * d.abs().pow(gamma))


ATTRACTORS = {"inv": inverse_attractor, "exp": exponential_attractor}


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


class AttractorLayer(FastPath, nn.Module):
    """Move bin centres towards ``n_attractors`` predicted points (one decoder level).

    ``normed=True`` works in normalised [0,1] space and returns sorted, clipped metric centres;
    ``normed=False`` works in metres. ``discard_norm`` reproduces the original normed layer,
    whose pair-normalised attractors were overwritten by the raw first channel of each pair.
    """

    def __init__(self, in_features: int, n_attractors: int, mlp_dim: int, min_depth: float, max_depth: float,
                 normed: bool, kind: str = "inv", aggregation: str = "mean", alpha: float = 300.0,
                 gamma: float = 2.0, memory_efficient: bool = True, discard_norm: bool = False) -> None:
        super().__init__()
        self.n_attractors, self.normed = n_attractors, normed
        self.min_depth, self.max_depth = min_depth, max_depth
        self.kind, self.fn, self.aggregation = kind, ATTRACTORS[kind], aggregation
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.memory_efficient, self.discard_norm = memory_efficient, discard_norm
        out = 2 * n_attractors if normed else n_attractors
        self._net = nn.Sequential(
            nn.Conv2d(in_features, mlp_dim, 1), nn.ReLU(True),
            nn.Conv2d(mlp_dim, out, 1), nn.ReLU(True) if normed else nn.Softplus(),
        )

    def attractor_points(self, x: torch.Tensor) -> torch.Tensor:
        a = pointwise(self._net, x, self.fast_path)
        if not self.normed:
            return a
        a = (a + 1e-3).unflatten(1, (self.n_attractors, 2))
        return a[:, :, 0] if self.discard_norm else a[:, :, 0] / a.sum(dim=2)

    def delta(self, points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Aggregate f(a_k - c_j) over attractors k: (B,A,h,w), (B,N,h,w) -> (B,N,h,w)."""
        if self.fast_path and not torch.is_grad_enabled() and not torch.is_autocast_enabled(points.device.type):
            return self._delta_inplace(points, centers)
        if self.memory_efficient and torch.is_grad_enabled() and (points.requires_grad or centers.requires_grad):
            total = _AttractorSum.apply(points, centers, self.kind, self.alpha, self.gamma)
        elif self.memory_efficient:
            total = torch.zeros_like(centers)
            for k in range(points.shape[1]):
                total = total + self.fn(points[:, k:k + 1] - centers, self.alpha, self.gamma)
        else:
            total = self.fn(points.unsqueeze(2) - centers.unsqueeze(1), self.alpha, self.gamma).sum(dim=1)
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


class Splitter(FastPath, nn.Module):
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
        frac = (pointwise(self._net, x, self.fast_path) + 1e-3).unflatten(1, (self.prev_bins, self.split))
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


class _LogBinomialSoftmax(torch.autograd.Function):
    """softmax_k((coeff_k + k log p + (n - k) log q) / T) saving only the probabilities.

    Autograd would also keep the (B,K,H,W) logits; backward recomputes them instead.
    """

    @staticmethod
    def forward(ctx, log_p, log_q, temperature, coeff, k, n):
        z = coeff + k * log_p + (n - k) * log_q
        probs = torch.softmax(z / temperature, dim=1)
        ctx.save_for_backward(probs, log_p, log_q, temperature, coeff, k, n)
        return probs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        probs, log_p, log_q, temperature, coeff, k, n = ctx.saved_tensors
        dz = probs * (grad - (grad * probs).sum(dim=1, keepdim=True)) / temperature
        z = coeff + k * log_p + (n - k) * log_q
        d_temp = -(dz * z).sum(dim=1, keepdim=True) / temperature
        return (dz * k).sum(dim=1, keepdim=True), (dz * (n - k)).sum(dim=1, keepdim=True), d_temp, None, None, None


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
        coeff = log_binomial_coefficient(n, k, self.stirling)
        if torch.is_grad_enabled() and (p.requires_grad or temperature.requires_grad):
            k, n, coeff = k.to(p.dtype), n.to(p.dtype), coeff.to(p.dtype)
            return _LogBinomialSoftmax.apply(torch.log(p), torch.log(q), temperature, coeff, k, n)
        y = coeff + k * torch.log(p) + (n - k) * torch.log(q)
        return torch.softmax(y / temperature, dim=1)


class ConditionalLogBinomial(FastPath, nn.Module):
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

    #: output pixels per band of the banded inference path (a band's intermediates stay cache-sized)
    band_pixels: int = 8192

    def expected_depth(self, features: List[torch.Tensor], condition: torch.Tensor, centers: torch.Tensor,
                       maps: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Depth = sum_k probs_k * centres_k at the resolution of ``features``.

        ``features``: full-resolution maps whose channels concatenate to ``x`` of :meth:`forward`
        (e.g. decoder output and relative depth, the latter resized if needed); ``condition`` and
        ``centers``: the bin embedding and bin centres at their own (lower) resolution, resized
        bilinearly (align_corners) as the original does. Returns (depth (B,1,H,W),
        probs (B,K,H,W), centres (B,K,H,W)); probs and centres are channels-last views.

        With ``fast_path`` the same function is computed with less work: the embedding part of the
        first 1x1 convolution runs *before* the upsampling (a 1x1 conv and bilinear interpolation
        are both linear and the interpolation weights sum to one, so they commute, bias included),
        no full-resolution concatenation is built, 1x1 convolutions are GEMMs over pixels, and the
        softmax over bins runs on contiguous pixel-major logits ``(coeff_k + k logit(p)) / T``
        (the dropped ``(K-1) log(1-p) / T`` is constant over k: softmax is unchanged).

        ``maps=False`` returns ``(depth, None, None)``. With the fast path, outside autograd and
        autocast, everything is computed in bands of rows (:meth:`_depth_bands`): no full-resolution
        intermediate is allocated, only the outputs (and no per-bin map at all with ``maps=False``).
        """
        size = features[0].shape[-2:]
        features = [_up(f, size) for f in features]
        if self.fast_path and not torch.is_grad_enabled() and not torch.is_autocast_enabled(features[0].device.type) \
                and not _capturing():
            return self._depth_bands(features, condition, centers, maps)
        depth, probs, centers = self._expected_depth(features, condition, centers)
        return (depth, probs, centers) if maps else (depth, None, None)

    def _log_binomial_basis(self, dtype: torch.dtype) -> torch.Tensor:
        """(2, K) rows ``[coeff_k, k]``: logits are ``[1/T, logit(p)/T] @ basis`` (up to a per-pixel constant)."""
        lb = self.log_binomial_transform
        k = lb.k_idx.view(-1).to(dtype)
        return torch.stack([log_binomial_coefficient(lb.K_minus_1.view(-1).to(dtype), k, lb.stirling), k])

    def _p_and_inverse_temperature(self, s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """MLP output (..., 4) before softplus -> (logit of the clamped p, 1/T), each (...)."""
        s = F.softplus(s) + self.p_eps
        p = s[..., 0] / (s[..., 0] + s[..., 1])
        tau = s[..., 2] / (s[..., 2] + s[..., 3])
        inv_t = 1.0 / ((self.max_temp - self.min_temp) * tau + self.min_temp)
        eps = 1e-4  # LogBinomial's clamp
        logit = torch.log(torch.clamp(p, eps, 1)) - torch.log(torch.clamp(1 - p, eps, 1))
        return logit, inv_t

    def _depth_bands(self, features: List[torch.Tensor], condition: torch.Tensor, centers: torch.Tensor,
                     maps: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Inference, band by band of output rows (the same function as the fast path).

        Per band: the upsampled embedding term (:class:`RowUpsampler`), plus the features' term as
        one GEMM, GELU, the 4-channel head, the unnormalised softmax weights ``e_k`` and the upsampled
        centres ``c_k``; depth = sum_k e_k c_k / sum_k e_k. Every intermediate is band-sized; with
        ``maps`` the probabilities and centres are written into their (channels-last) outputs.
        """
        b, _, height, width = features[0].shape
        conv_in, _, conv_out, _ = self.mlp
        weight = conv_in.weight.flatten(1)
        cx = sum(f.shape[1] for f in features)
        dtype = torch.promote_types(features[0].dtype, torch.float32)
        cond = F.linear(condition.permute(0, 2, 3, 1), weight[:, cx:], conv_in.bias).contiguous()  # (B,h,w,hid)
        cen = centers.to(dtype).permute(0, 2, 3, 1).contiguous()  # (B,h,w,K)
        up_cond = RowUpsampler(cond.shape[1], height, cond)
        up_cen = up_cond if cen.shape[1] == cond.shape[1] else RowUpsampler(cen.shape[1], height, cen)
        w_x = weight[:, :cx].t()  # (C_x, hidden)
        w_out = conv_out.weight.flatten(1)
        basis = self._log_binomial_basis(dtype)
        depth = features[0].new_empty(b, height, width, dtype=dtype)
        n_bins = cen.shape[-1]
        probs_out = depth.new_empty(b, height, width, n_bins) if maps else None
        centers_out = depth.new_empty(b, height, width, n_bins) if maps else None
        step = max(1, self.band_pixels // (b * width))
        for r0 in range(0, height, step):
            r1 = min(height, r0 + step)
            hidden = up_cond.band(cond, r0, r1, width).reshape(b, -1, cond.shape[-1])
            x = [pixels(f[:, :, r0:r1]) for f in features]
            x = torch.cat(x, dim=-1) if len(x) > 1 else x[0]  # one GEMM: (B, band, C_x)
            hidden = torch.ops.aten.gelu_(hidden.baddbmm_(x, w_x.expand(b, -1, -1)))
            logit, inv_t = self._p_and_inverse_temperature(F.linear(hidden, w_out, conv_out.bias).to(dtype))
            z = torch.matmul(torch.stack([inv_t, logit.mul_(inv_t)], dim=-1), basis)  # (B, band, K)
            e = z.sub_(z.amax(dim=-1, keepdim=True)).clamp_(min=SOFTMAX_FLOOR).exp_()
            c = up_cen.band(cen, r0, r1, width)
            if maps:
                centers_out[:, r0:r1] = c
                probs = torch.div(e, e.sum(dim=-1, keepdim=True), out=probs_out[:, r0:r1].view_as(e))
                torch.linalg.vecdot(probs, c.reshape_as(e), out=depth[:, r0:r1].view(b, -1))
            else:
                num = torch.linalg.vecdot(e, c.reshape_as(e))
                depth[:, r0:r1] = num.div_(e.sum(dim=-1)).view(b, r1 - r0, width)
        if not maps:
            return depth.unsqueeze(1), None, None
        return depth.unsqueeze(1), probs_out.permute(0, 3, 1, 2), centers_out.permute(0, 3, 1, 2)

    def _expected_depth(self, features: List[torch.Tensor], condition: torch.Tensor,
                        centers: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = features[0].shape[-2:]
        if not self.fast_path:
            probs = self(torch.cat(features, dim=1) if len(features) > 1 else features[0], _up(condition, size))
            centers = _up(centers, size)
            return (probs * centers).sum(dim=1, keepdim=True), probs, centers
        b, (h, w) = features[0].shape[0], size
        # In-place arithmetic on fresh intermediates wherever autograd does not need them:
        # large CPU allocations are mmap-ed, so every new full-resolution tensor costs page faults.
        # (the in-place path also steps aside under autocast, whose casts it would fight)
        grad = torch.is_grad_enabled() or torch.is_autocast_enabled(features[0].device.type)
        conv_in, _, conv_out, _ = self.mlp
        weight = conv_in.weight.flatten(1)  # (hidden, C_x + C_condition)
        cx = sum(f.shape[1] for f in features)
        cond = F.linear(condition.permute(0, 2, 3, 1), weight[:, cx:], conv_in.bias)  # (B,h',w',hidden)
        hidden = pixels(_up(cond.permute(0, 3, 1, 2), size))  # (B,HW,hidden), contiguous
        if grad:
            x = torch.cat(features, dim=1) if len(features) > 1 else features[0]
            hidden = F.gelu(torch.baddbmm(hidden, pixels(x), weight[:, :cx].t().expand(b, -1, -1)))
        else:
            start = 0
            for f in features:
                part = weight[:, start:start + f.shape[1]]
                start += f.shape[1]
                if f.shape[1] == 1:
                    hidden.addcmul_(pixels(f), part.view(1, 1, -1))
                else:
                    hidden.baddbmm_(pixels(f), part.t().expand(b, -1, -1))
            hidden = torch.ops.aten.gelu_(hidden)
        s = F.linear(hidden, conv_out.weight.flatten(1), conv_out.bias)
        # the log-binomial in fp32 even under autocast, as in the original (whose elementwise ops
        # inherit fp32 from the MLP output); a bf16 matmul would round logits of order 1e3
        with torch.autocast(features[0].device.type, enabled=False):
            wide = torch.promote_types(s.dtype, torch.float32)  # bf16 / fp16 -> fp32, fp64 stays
            logit, inv_t = self._p_and_inverse_temperature(s.to(wide))
            z = torch.matmul(torch.stack([inv_t, logit * inv_t], dim=-1), self._log_binomial_basis(wide))  # (B,HW,K)
            if grad:
                probs = torch.softmax(z, dim=-1)
            else:  # the softmax kernel's own steps, in place
                probs = z.sub_(z.amax(dim=-1, keepdim=True)).clamp_(min=SOFTMAX_FLOOR).exp_()
                probs.div_(probs.sum(dim=-1, keepdim=True))
            centers = _up(centers.to(wide).contiguous(memory_format=torch.channels_last), size)  # channels-last
            depth = torch.bmm(probs.reshape(-1, 1, probs.shape[-1]), pixels(centers).reshape(-1, probs.shape[-1], 1))
        return (depth.view(b, 1, h, w), probs.view(b, h, w, -1).permute(0, 3, 1, 2), centers)
