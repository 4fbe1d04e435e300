"""Speed variants of the DPT decoder (:mod:`zoe_lightning.models.dpt`), same parameters (``fast_path``)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..models.dpt import CoreOutput, DPTCore, FeatureFusionBlock, Interpolate
from .kernels import Upsampled, conv1x1
from .upconv import upsample_conv3x3, upsample_conv3x3_applies

__all__ = ["FastFeatureFusionBlock", "FastDPTCore"]


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class FastFeatureFusionBlock(FeatureFusionBlock):
    """The 1x1 conv runs before the upsampling, on 4x fewer pixels: both maps are linear and
    bilinear weights sum to one, so the result is the same function."""

    reference = FeatureFusionBlock

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, size=None) -> torch.Tensor:
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        return _up(self.forward_low(x, skip), size)

    def forward_low(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output before its final 2x upsampling (1x1 conv first)."""
        return conv1x1(self.fuse(x, skip), self.out_conv)


class FastDPTCore(DPTCore):
    """On the CPU (inference and training) the finest fusion map ``r1`` is never upsampled: the
    first output convolution reads it through :func:`~zoe_lightning.accel.upconv.upsample_conv3x3`
    (its channel mixes at the lower resolution), so does the 128 -> 32 convolution after the head's
    2x upsampling. With ``lazy_fusion`` (set by :func:`zoe_lightning.accel.apply` when every consumer
    of ``fusion`` accepts it) ``r1`` is handed on as an :class:`Upsampled` map, else materialised.
    The same function; no full-resolution 256- or 128-channel map is allocated.
    """

    reference = DPTCore
    lazy_fusion: bool = False

    def forward(self, x: torch.Tensor) -> CoreOutput:
        s = self.scratch
        head = s.output_conv
        if not isinstance(s.refinenet1, FastFeatureFusionBlock) or not isinstance(head[1], Interpolate):
            return super().forward(x)
        l1, l2, l3, l4 = self.pretrained(x)
        l1, l2, l3, l4 = s.layer1_rn(l1), s.layer2_rn(l2), s.layer3_rn(l3), s.layer4_rn(l4)
        r4 = s.refinenet4(l4, size=l3.shape[-2:])
        r3 = s.refinenet3(r4, l3, size=l2.shape[-2:])
        r2 = s.refinenet2(r3, l2, size=l1.shape[-2:])
        if not (upsample_conv3x3_applies(r2, head[0]) and upsample_conv3x3_applies(r2, head[2])):
            r1 = s.refinenet1(r2, l1)
            out_conv = head[:4](r1)
            return CoreOutput(head[4:](out_conv), out_conv, l4, [r4, r3, r2, r1])
        low = s.refinenet1.forward_low(r2, l1)
        size = (2 * low.shape[-2], 2 * low.shape[-1])
        y = upsample_conv3x3(low, head[0], size)
        scaled = (int(y.shape[-2] * head[1].scale_factor), int(y.shape[-1] * head[1].scale_factor))
        out_conv = head[3](upsample_conv3x3(y, head[2], scaled))
        r1 = Upsampled(low, size) if self.lazy_fusion else _up(low, size)
        return CoreOutput(head[4:](out_conv), out_conv, l4, [r4, r3, r2, r1])
