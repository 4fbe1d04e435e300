# Over 400 lines: the losses of both stages (SILog variants, SSI, gradient matching, domain) share the masking and dtype helpers here.
"""Training losses for metric and relative depth. Pure PyTorch: tensors in, tensors out.

Conventions shared by every loss here:

* ``pred`` is ``(B, 1, h, w)``, ``target`` is ``(B, 1, H, W)`` and ``mask`` is a boolean
  ``(B, 1, H, W)``; ``(B, H, W)`` tensors are accepted as one channel. A prediction at another
  resolution is resized bilinearly (``align_corners=True``) to the target's.
* Everything is computed in float32 with autocast disabled.
* Invalid pixels never reach a ``log``/division, so garbage (NaN, 0, negative) there is harmless.
* No host synchronisation: counts stay tensors, empty masks are handled with ``torch.where``.
  A loss over no valid pixel is an exact zero that is still connected to the graph.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "silog_loss",
    "silog_loss_da2",
    "metric_silog",
    "SILogLoss",
    "grad_l1_loss",
    "GradL1Loss",
    "compute_scale_and_shift",
    "normalize_median_mad",
    "ssi_loss",
    "gradient_matching_loss",
    "to_disparity",
    "RelativeDepthLoss",
    "domain_loss",
]

_SQRT_MIN = 1e-12  # below this the square root (and its gradient) is taken as 0
_DISPARITY_KINDS = ("disparity",)
_DEPTH_KINDS = ("metric", "relative")


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _no_autocast(t: Tensor):
    """A context that disables autocast on ``t``'s device (a no-op where autocast is unknown)."""
    try:
        return torch.autocast(device_type=t.device.type, enabled=False)
    except (RuntimeError, ValueError):
        return contextlib.nullcontext()


def _as_4d(x: Tensor, name: str) -> Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be (B,1,H,W) or (B,H,W), got shape {tuple(x.shape)}")
    return x


def _prepare(
    pred: Tensor, target: Tensor, mask: Optional[Tensor], interpolate: bool = True
) -> Tuple[Tensor, Tensor, Tensor]:
    """Return float32 (B,1,H,W) pred/target and a bool mask, pred resized to the target."""
    pred = _as_4d(pred, "pred").float()
    target = _as_4d(target, "target").float()
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    else:
        mask = _as_4d(mask, "mask").bool()
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"batch sizes differ: pred {pred.shape[0]}, target {target.shape[0]}")
    if mask.shape != target.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != target shape {tuple(target.shape)}")
    if pred.shape[-2:] != target.shape[-2:]:
        if not interpolate:
            raise ValueError(
                f"pred size {tuple(pred.shape[-2:])} != target size {tuple(target.shape[-2:])} "
                "and interpolate=False"
            )
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=True)
    return pred, target, mask


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with value and gradient 0 at (and just above) zero instead of an infinite gradient."""
    ok = x > _SQRT_MIN
    return torch.where(ok, torch.sqrt(torch.where(ok, x, torch.ones_like(x))), x * 0.0)


def _masked_sum(x: Tensor, mask: Tensor, dim=None) -> Tensor:
    x = torch.where(mask, x, torch.zeros_like(x))
    return x.sum() if dim is None else x.sum(dim)


# ----------------------------------------------------------------------------------------------
# Metric-depth losses (ZoeDepth)
# ----------------------------------------------------------------------------------------------


def silog_loss(
    pred: Tensor,
    target: Tensor,
    mask: Optional[Tensor] = None,
    beta: float = 0.15,
    eps: float = 1e-7,
    interpolate: bool = True,
) -> Tuple[Tensor, Tensor]:
    """ZoeDepth's scale-invariant log loss, pooled over all valid pixels of the batch.

    ``g = ln(pred + eps) - ln(target + eps)``, ``D = Var(g) + beta * mean(g)^2`` with the
    unbiased (N-1) variance, ``L = 10 * sqrt(D)``. One valid pixel counts as variance 0.

    Returns ``(loss, n_valid)``; ``n_valid`` is a 0-dim int64 tensor (no host sync). With no
    valid pixel the loss is a graph-connected 0.
    """
    with _no_autocast(pred):
        pred, target, mask = _prepare(pred, target, mask, interpolate)
        n_valid = mask.sum()
        n = n_valid.to(pred.dtype)
        one = torch.ones((), dtype=pred.dtype, device=pred.device)
        g = torch.log(torch.where(mask, pred, one) + eps) - torch.log(torch.where(mask, target, one) + eps)
        mean = _masked_sum(g, mask) / n.clamp_min(1.0)
        var = _masked_sum((g - mean) ** 2, mask) / (n - 1.0).clamp_min(1.0)
        loss = 10.0 * _safe_sqrt(var + beta * mean**2)
    return loss, n_valid


def silog_loss_da2(
    pred: Tensor,
    target: Tensor,
    mask: Optional[Tensor] = None,
    lam: float = 0.5,
    interpolate: bool = True,
) -> Tuple[Tensor, Tensor]:
    """Depth Anything V2's SiLog (``metric_depth/util/loss.py``), pooled over the batch's valid pixels.

    ``d = ln(target) - ln(pred)``, ``L = sqrt(mean(d^2) - lam * mean(d)^2)``: no x10, no epsilon,
    the biased mean. ``pred`` is clamped at 1e-12 before the log (the original takes the log of
    the raw sigmoid output; this only differs where that would be -inf). Returns ``(loss, n_valid)``.
    """
    with _no_autocast(pred):
        pred, target, mask = _prepare(pred, target, mask, interpolate)
        n_valid = mask.sum()
        n = n_valid.to(pred.dtype).clamp_min(1.0)
        one = torch.ones((), dtype=pred.dtype, device=pred.device)
        d = torch.log(torch.where(mask, target, one)) - torch.log(torch.where(mask, pred, one).clamp_min(1e-12))
        mean_sq = _masked_sum(d * d, mask) / n
        mean = _masked_sum(d, mask) / n
        loss = _safe_sqrt(mean_sq - lam * mean**2)
    return loss, n_valid


def metric_silog(loss_cfg, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The SILog form ``loss.silog_form`` names: ``zoedepth`` (beta) or ``da2`` (lambda)."""
    if loss_cfg.get("silog_form", "zoedepth") == "da2":
        return silog_loss_da2(pred, target, mask, lam=float(loss_cfg.silog_lambda))
    return silog_loss(pred, target, mask, beta=float(loss_cfg.silog_beta))


class SILogLoss(nn.Module):
    """Module form of :func:`silog_loss`; ``forward`` returns ``(loss, n_valid)``."""

    def __init__(self, beta: float = 0.15, eps: float = 1e-7) -> None:
        super().__init__()
        self.beta = beta
        self.eps = eps

    def forward(
        self, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, interpolate: bool = True
    ) -> Tuple[Tensor, Tensor]:
        return silog_loss(pred, target, mask, beta=self.beta, eps=self.eps, interpolate=interpolate)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, eps={self.eps}"


def _grad_mag_angle(x: Tensor) -> Tuple[Tensor, Tensor]:
    dx = x[..., 1:, 1:] - x[..., 1:, :-1]
    dy = x[..., 1:, 1:] - x[..., :-1, 1:]
    return dx**2 + dy**2, torch.atan(dy / (dx + 1e-10))


def grad_l1_loss(
    pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, interpolate: bool = True
) -> Tensor:
    """ZoeDepth's optional gradient loss.

    Forward differences on the ``[1:, 1:]`` crop give a magnitude ``dx^2 + dy^2`` and an angle
    ``atan(dy / (dx + 1e-10))``; the loss is the mean L1 of magnitudes plus the mean L1 of
    angles over pixels whose own, left and upper neighbours are all valid.
    """
    with _no_autocast(pred):
        pred, target, mask = _prepare(pred, target, mask, interpolate)
        zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
        mag_p, ang_p = _grad_mag_angle(torch.where(mask, pred, zero))
        mag_t, ang_t = _grad_mag_angle(torch.where(mask, target, zero))
        mask_g = mask[..., 1:, 1:] & mask[..., 1:, :-1] & mask[..., :-1, 1:]
        n = mask_g.sum().to(pred.dtype).clamp_min(1.0)
        total = _masked_sum((mag_p - mag_t).abs(), mask_g) + _masked_sum((ang_p - ang_t).abs(), mask_g)
        return total / n


class GradL1Loss(nn.Module):
    """Module form of :func:`grad_l1_loss`."""

    def forward(
        self, pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, interpolate: bool = True
    ) -> Tensor:
        return grad_l1_loss(pred, target, mask, interpolate=interpolate)


# ----------------------------------------------------------------------------------------------
# Relative-depth (stage-1) losses, MiDaS style, in disparity space
# ----------------------------------------------------------------------------------------------


def compute_scale_and_shift(pred: Tensor, target: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Per image, the ``(s, t)`` minimising ``sum_valid (s * pred + t - target)^2``; each (B,).

    This is the solution of the 2x2 normal equations (a00=sum p^2, a01=sum p, a11=N,
    b0=sum p*t, b1=sum t), evaluated in the equivalent centred form, which is stable in float32.
    Images whose determinant is ~0 (fewer than 2 valid pixels, or a constant prediction) get
    ``s = t = 0``.
    """
    with _no_autocast(pred):
        pred, target, mask = _prepare(pred, target, mask, interpolate=False)
        dims = (1, 2, 3)
        zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
        p = torch.where(mask, pred, zero)
        t = torch.where(mask, target, zero)
        n = mask.sum(dims).to(pred.dtype)
        p_mean = p.sum(dims) / n.clamp_min(1.0)
        t_mean = t.sum(dims) / n.clamp_min(1.0)
        pc = torch.where(mask, p - p_mean.view(-1, 1, 1, 1), zero)
        tc = torch.where(mask, t - t_mean.view(-1, 1, 1, 1), zero)
        s_pp = (pc * pc).sum(dims)  # = det / N
        s_pt = (pc * tc).sum(dims)
        a00 = (p * p).sum(dims)
        ok = (n >= 2) & (s_pp > 0) & (s_pp > 1e-10 * a00)
        scale = torch.where(ok, s_pt / torch.where(ok, s_pp, torch.ones_like(s_pp)), zero)
        shift = torch.where(ok, t_mean - scale * p_mean, zero)
    return scale, shift


def normalize_median_mad(x: Tensor, mask: Tensor) -> Tensor:
    """Per image ``(x - t) / s`` with ``t`` the (lower) median over valid pixels and ``s`` the
    mean absolute deviation from ``t`` over valid pixels (clamped at >= 1e-6).

    An image with no valid pixel uses ``t = 0``. The output has ``x``'s shape and is 0 at
    invalid pixels (so garbage there never reaches a gradient).
    """
    shape = x.shape
    with _no_autocast(x):
        x4 = _as_4d(x, "x").float()
        m = _as_4d(mask, "mask").bool()
        if m.shape != x4.shape:
            raise ValueError(f"mask shape {tuple(m.shape)} != x shape {tuple(x4.shape)}")
        b = x4.shape[0]
        nan = torch.full((), float("nan"), dtype=x4.dtype, device=x4.device)
        med = torch.nanmedian(torch.where(m, x4, nan).reshape(b, -1), dim=1).values
        med = torch.nan_to_num(med, nan=0.0).view(-1, 1, 1, 1)
        n = m.sum((1, 2, 3)).to(x4.dtype).clamp_min(1.0)
        x4 = torch.where(m, x4, med)
        mad = _masked_sum((x4 - med).abs(), m, (1, 2, 3)) / n
        out = (x4 - med) / mad.clamp_min(1e-6).view(-1, 1, 1, 1)
        out = torch.where(m, out, torch.zeros_like(out))
    return out.reshape(shape)


def ssi_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    alignment: str = "trimmed",
    trim: float = 0.2,
    interpolate: bool = True,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Scale-and-shift-invariant loss, batch-based reduction (sum over images / total valid).

    * ``"lstsq"``: ``pred`` is aligned to ``target`` by :func:`compute_scale_and_shift`; the
      loss is ``sum_valid (aligned - target)^2 / (2 * sum M)``.
    * ``"trimmed"``: both are normalised by :func:`normalize_median_mad`; per image the largest
      ``floor(trim * M)`` residuals ``|p - t|`` are dropped; loss = ``sum_kept / (2 * sum M)``.

    Returns ``(loss, pred_aligned, target_aligned)`` (all at the target's resolution), ready for
    :func:`gradient_matching_loss`.
    """
    if alignment not in ("trimmed", "lstsq"):
        raise ValueError(f"alignment must be 'trimmed' or 'lstsq', got {alignment!r}")
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    with _no_autocast(pred):
        pred, target, mask = _prepare(pred, target, mask, interpolate)
        # zero invalid pixels so garbage there cannot leak into (s, t) / median / MAD gradients
        pred = torch.where(mask, pred, torch.zeros_like(pred))
        target = torch.where(mask, target, torch.zeros_like(target))
        b = pred.shape[0]
        m_count = mask.sum((1, 2, 3))
        denom = 2.0 * m_count.sum().to(pred.dtype).clamp_min(1.0)
        if alignment == "lstsq":
            scale, shift = compute_scale_and_shift(pred, target, mask)
            pred_al = scale.view(-1, 1, 1, 1) * pred + shift.view(-1, 1, 1, 1)
            target_al = target
            res = torch.where(mask, pred_al - target_al, torch.zeros_like(pred_al))
            loss = (res * res).sum() / denom
        else:
            pred_al = normalize_median_mad(pred, mask)
            target_al = normalize_median_mad(target, mask)
            inf = torch.full((), float("inf"), dtype=pred.dtype, device=pred.device)
            res = torch.where(mask, (pred_al - target_al).abs(), inf).reshape(b, -1)
            res_sorted = torch.sort(res, dim=1).values
            n = m_count.to(pred.dtype)
            keep = n - torch.floor(trim * n + 1e-4)
            rank = torch.arange(res.shape[1], device=pred.device, dtype=pred.dtype)
            kept = rank.unsqueeze(0) < keep.unsqueeze(1)
            loss = torch.where(kept, res_sorted, torch.zeros_like(res_sorted)).sum() / denom
    return loss, pred_al, target_al


def gradient_matching_loss(
    pred_aligned: Tensor, target_aligned: Tensor, mask: Tensor, scales: int = 4
) -> Tensor:
    """Multi-scale gradient matching on ``R = pred_aligned - target_aligned``.

    At scale ``k`` every ``2^k``-th pixel is kept; ``sum |d_x R| + |d_y R|`` over differences
    whose two pixels are valid, divided by that scale's valid-pixel count; summed over scales.
    """
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    with _no_autocast(pred_aligned):
        p = _as_4d(pred_aligned, "pred_aligned").float()
        t = _as_4d(target_aligned, "target_aligned").float()
        m = _as_4d(mask, "mask").bool()
        if not (p.shape == t.shape == m.shape):
            raise ValueError(
                f"shapes differ: pred {tuple(p.shape)}, target {tuple(t.shape)}, mask {tuple(m.shape)}"
            )
        r = torch.where(m, p - t, torch.zeros_like(p))
        total = r.sum() * 0.0
        for k in range(scales):
            step = 2**k
            rk = r[..., ::step, ::step]
            mk = m[..., ::step, ::step]
            mx = mk[..., :, 1:] & mk[..., :, :-1]
            my = mk[..., 1:, :] & mk[..., :-1, :]
            gx = _masked_sum((rk[..., :, 1:] - rk[..., :, :-1]).abs(), mx)
            gy = _masked_sum((rk[..., 1:, :] - rk[..., :-1, :]).abs(), my)
            total = total + (gx + gy) / mk.sum().to(r.dtype).clamp_min(1.0)
    return total


def to_disparity(depth: Tensor, mask: Tensor) -> Tensor:
    """``1 / depth`` on valid pixels with positive depth, 0 elsewhere."""
    ok = mask.bool() & (depth > 0)
    return torch.where(ok, 1.0 / torch.where(ok, depth, torch.ones_like(depth)), torch.zeros_like(depth))


class RelativeDepthLoss(nn.Module):
    """Stage-1 loss: ``ssi + alpha * gradient_matching`` in disparity space.

    ``forward(pred, target, mask, target_kind)`` takes ``target_kind`` per image (a list, or one
    string for the whole batch): ``"metric"``/``"relative"`` targets are depths converted with
    :func:`to_disparity` (non-positive depths become invalid); ``"disparity"`` is used as is.
    Returns ``{"loss", "ssi", "grad"}``.
    """

    def __init__(
        self, alignment: str = "trimmed", trim: float = 0.2, alpha: float = 0.5, scales: int = 4
    ) -> None:
        super().__init__()
        if alignment not in ("trimmed", "lstsq"):
            raise ValueError(f"alignment must be 'trimmed' or 'lstsq', got {alignment!r}")
        self.alignment = alignment
        self.trim = trim
        self.alpha = alpha
        self.scales = scales

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        mask: Tensor,
        target_kind: Union[str, Sequence[str]] = "disparity",
    ) -> Dict[str, Tensor]:
        with _no_autocast(pred):
            pred, target, mask = _prepare(pred, target, mask, interpolate=True)
            b = target.shape[0]
            kinds = [target_kind] * b if isinstance(target_kind, str) else list(target_kind)
            if len(kinds) != b:
                raise ValueError(f"target_kind has {len(kinds)} entries for a batch of {b}")
            unknown = sorted({k for k in kinds if k not in _DEPTH_KINDS + _DISPARITY_KINDS})
            if unknown:
                raise ValueError(
                    f"unknown target_kind {unknown}; expected one of {_DEPTH_KINDS + _DISPARITY_KINDS}"
                )
            if any(k in _DEPTH_KINDS for k in kinds):
                convert = torch.tensor([k in _DEPTH_KINDS for k in kinds], device=target.device)
                convert = convert.view(-1, 1, 1, 1)
                target = torch.where(convert, to_disparity(target, mask), target)
                mask = torch.where(convert, mask & (target > 0), mask)
            ssi, pred_al, target_al = ssi_loss(pred, target, mask, self.alignment, self.trim)
            grad = gradient_matching_loss(pred_al, target_al, mask, self.scales)
        return {"loss": ssi + self.alpha * grad, "ssi": ssi, "grad": grad}

    def extra_repr(self) -> str:
        return f"alignment={self.alignment!r}, trim={self.trim}, alpha={self.alpha}, scales={self.scales}"


# ----------------------------------------------------------------------------------------------
# Domain classification
# ----------------------------------------------------------------------------------------------


def domain_loss(
    logits: Tensor, labels: Tensor, weight: Optional[Tensor] = None, label_smoothing: float = 0.0
) -> Tensor:
    """Cross-entropy of domain ``logits`` (B, C) against integer ``labels`` (B,); 0 on empty input."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels.long(), weight=weight, label_smoothing=label_smoothing)
