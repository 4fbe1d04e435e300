"""Speed variants of the conditional log-binomial (:mod:`zoe_lightning.models.bins`), same parameters.

* :class:`MemoryEfficientLogBinomial` (``memory_efficient``): an autograd function that saves only
  the probabilities.
* :class:`FastConditionalLogBinomial` (``fast_path``): expected depth with less work, and outside
  autograd band by band of output rows (no full-resolution intermediate).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..models.bins import ConditionalLogBinomial, LogBinomial, _up, log_binomial_coefficient
from .kernels import RowUpsampler, capturing, pixels

__all__ = ["MemoryEfficientLogBinomial", "FastConditionalLogBinomial", "SOFTMAX_FLOOR"]

#: floor of the max-subtracted logits before ``exp`` in the in-place softmax steps. A sharp
#: log-binomial (low temperature) puts most bins 100s-1000s below the maximum, and exp of
#: z < -87 is a subnormal float, which CPUs compute through slow microcode assists (on the
#: SwinV2-T row of benchmark 1 about 18x slower; benchmarks/RESULTS.md). exp(-80) = 1.8e-35
#: stays normal even times a bin centre of 1e-3 m, and against the maximum term (exactly 1) it
#: cannot change a float32 sum: the same values to rounding.
SOFTMAX_FLOOR = -80.0


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


class MemoryEfficientLogBinomial(LogBinomial):
    reference = LogBinomial

    def forward(self, p: torch.Tensor, temperature: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
        if not (torch.is_grad_enabled() and (p.requires_grad or temperature.requires_grad)):
            return super().forward(p, temperature, eps)
        q = torch.clamp(1 - p, eps, 1)
        p = torch.clamp(p, eps, 1)
        k, n = self.k_idx.to(p.dtype), self.K_minus_1.to(p.dtype)
        coeff = log_binomial_coefficient(self.K_minus_1, self.k_idx, self.stirling).to(p.dtype)
        return _LogBinomialSoftmax.apply(torch.log(p), torch.log(q), temperature, coeff, k, n)


class FastConditionalLogBinomial(ConditionalLogBinomial):
    """:class:`ConditionalLogBinomial` whose :meth:`expected_depth` does less work (same function)."""

    reference = ConditionalLogBinomial

    #: output pixels per band of the banded inference path (a band's intermediates stay cache-sized)
    band_pixels: int = 8192

    def expected_depth(self, features: List[torch.Tensor], condition: torch.Tensor, centers: torch.Tensor,
                       maps: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """:meth:`ConditionalLogBinomial.expected_depth`; probs and centres are channels-last views.

        The same function is computed with less work: the embedding part of the
        first 1x1 convolution runs *before* the upsampling (a 1x1 conv and bilinear interpolation
        are both linear and the interpolation weights sum to one, so they commute, bias included),
        no full-resolution concatenation is built, 1x1 convolutions are GEMMs over pixels, and the
        softmax over bins runs on contiguous pixel-major logits ``(coeff_k + k logit(p)) / T``
        (the dropped ``(K-1) log(1-p) / T`` is constant over k: softmax is unchanged).

        Outside autograd, autocast and graph capture, everything is computed in bands of rows (:meth:`_depth_bands`): no full-resolution
        intermediate is allocated, only the outputs (and no per-bin map at all with ``maps=False``).
        """
        size = features[0].shape[-2:]
        features = [_up(f, size) for f in features]
        if not torch.is_grad_enabled() and not torch.is_autocast_enabled(features[0].device.type) \
                and not capturing():
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
