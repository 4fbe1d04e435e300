"""Depth from a model: the one place that runs a metric model on images.

* :func:`model_depth`: one forward pass -> ``(metric depth at network resolution, head index)``,
  passing domain labels to routers that need them.
* :func:`tta_depth`: the same with flip test-time augmentation (the evaluation protocol; used by
  ``MetricDepthModule.test_step`` / ``predict_step``).
* :func:`predict_depth` / :func:`predict_images`: the original ``infer_pil`` recipe for images of
  any size -- reflect padding, resize to the network size, flip TTA, upsampling back, un-padding
  (the ``predict`` command).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError
from .evaluation.protocol import flip_tta

__all__ = ["needs_labels", "model_depth", "tta_depth", "pad_amount", "network_input_size", "predict_images",
           "predict_depth"]


def needs_labels(model) -> bool:
    """Whether ``model`` routes images by their domain label (a router with ``needs_labels``)."""
    return bool(getattr(getattr(model, "router", None), "needs_labels", False))


def _labels(model, images: Tensor, domain: Union[None, int, Tensor]) -> Optional[Tensor]:
    if domain is None:
        if needs_labels(model):
            raise UserError("this model routes by domain label (labeled router) but the images' domain is not one "
                            "of its heads; pass --domain")
        return None
    if isinstance(domain, Tensor):
        return domain.to(images.device).long().view(-1)
    return torch.full((images.shape[0],), int(domain), dtype=torch.long, device=images.device)


def model_depth(model, images: Tensor, domain: Union[None, int, Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """``(depth (B,1,h,w) at network resolution, head index per image or None)`` of one forward pass.

    ``domain``: head index (an int for every image, or a (B,) tensor), passed only to routers that
    need labels."""
    # only depth is needed: the bins heads skip their full-resolution per-bin maps
    kwargs: Dict[str, Any] = {"maps": False} if getattr(model, "head", None) is not None else {}
    labels = _labels(model, images, domain) if needs_labels(model) else None
    if labels is not None:
        kwargs["domain"] = labels
    out = model(images, **kwargs)
    depth = getattr(out, "metric_depth", out)
    if depth is None:
        raise UserError("this command needs a metric model; the checkpoint is a relative (stage-1) model")
    return depth, getattr(out, "domain_index", None)


def tta_depth(model, images: Tensor, flip: bool = True,
              domain: Union[None, int, Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Flip-TTA depth at network resolution and the head index of the un-flipped pass."""
    routes: List[Optional[Tensor]] = []

    def forward(x: Tensor) -> Tensor:
        depth, index = model_depth(model, x, domain)
        routes.append(index)
        return depth

    return flip_tta(forward, images, flip), routes[0]


def pad_amount(height: int, width: int) -> Tuple[int, int]:
    """The original ``infer``'s reflect padding: ``int(sqrt(H/2) * 3)`` rows and
    ``int(sqrt(W/2) * 3)`` columns on each side."""
    return int(math.sqrt(height / 2) * 3), int(math.sqrt(width / 2) * 3)


def network_input_size(model, height: int, width: int) -> Tuple[int, int]:
    """The size the model's own preprocessing resizes a ``height x width`` image to."""
    prep = getattr(model, "prep", None)
    if prep is None or not getattr(prep, "resize", True):
        return height, width
    from .models.zoedepth import network_size

    return network_size(height, width, prep.img_size, bool(prep.keep_aspect))


def predict_images(
    model,
    images: Sequence[Tensor],
    *,
    flip: bool = True,
    pad: bool = True,
    upsample: str = "bicubic",
    domain: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
) -> List[Tensor]:
    """Metric depth ``(H_i, W_i)`` float32 CPU tensors for images ``(3, H_i, W_i)`` in [0, 1].

    Each image is (optionally) reflect-padded, resized to its network size the way the model's
    own preprocessing would, grouped with others of the same network size, run (with flip TTA),
    upsampled back to the padded size and un-padded.
    """
    prepared = []
    for img in images:
        x = img.to(device).float()[None]
        h, w = x.shape[-2:]
        ph, pw = pad_amount(h, w) if pad else (0, 0)
        if ph or pw:
            if ph >= h or pw >= w:  # reflect needs the pad smaller than the image
                ph, pw = min(ph, h - 1), min(pw, w - 1)
            x = F.pad(x, (pw, pw, ph, ph), mode="reflect")
        size = network_input_size(model, x.shape[-2], x.shape[-1])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        prepared.append((x, (h, w), (ph, pw)))
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, (x, _, _) in enumerate(prepared):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    results: List[Any] = [None] * len(prepared)
    with torch.inference_mode():
        for idx in groups.values():
            pred, _ = tta_depth(model, torch.cat([prepared[i][0] for i in idx]), flip, domain)
            for j, i in enumerate(idx):
                _, (h, w), (ph, pw) = prepared[i]
                p = pred[j: j + 1].float()
                full = (h + 2 * ph, w + 2 * pw)
                if tuple(p.shape[-2:]) != full:
                    kwargs = {} if upsample == "nearest" else {"align_corners": False}
                    p = F.interpolate(p, size=full, mode=upsample, **kwargs)
                results[i] = p[0, 0, ph: ph + h, pw: pw + w].cpu().contiguous()
    return results


def predict_depth(model, image: Tensor, *, flip: bool = True, pad: bool = True, upsample: str = "bicubic",
                  domain: Optional[int] = None) -> Tensor:
    """Metric depth of ``image`` (3,H,W) -> (H,W), or of a batch (B,3,H,W) -> (B,1,H,W), in metres
    at the input size: reflect padding, flip TTA and bicubic upsampling by default (the original
    ``infer_pil``). Runs on the model's device."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else image.device
    batch = image if image.dim() == 4 else image[None]
    depths = predict_images(model, list(batch), flip=flip, pad=pad, upsample=upsample, domain=domain, device=device)
    out = torch.stack(depths)[:, None]
    return out if image.dim() == 4 else out[0, 0]
