"""DPT decoder (MiDaS v3.1 naming): ``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}``,
``scratch.output_conv``; and :class:`DPTCore`, the relative-depth network whose taps feed the
metric heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fastpath import FastPath, Upsampled, conv1x1, conv3x3, upsample_conv3x3, upsample_conv3x3_applies
from .encoder import Encoder

__all__ = ["DPTCore", "CoreOutput", "FeatureFusionBlock", "ResidualConvUnit"]


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))) (no batch norm).

    ``winograd`` (``model.winograd``): at CPU inference the convolutions run as Winograd
    F(2x2, 3x3) (:func:`~zoe_lightning.models.fastpath.conv3x3`; the same function).
    """

    winograd: bool = True

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(conv3x3(F.relu(x), self.conv1, self.winograd))
        return x + conv3x3(hidden, self.conv2, self.winograd)


class FeatureFusionBlock(FastPath, nn.Module):
    """Fuse a coarser path with an optional skip map, upsample, then a 1x1 conv.

    ``resConfUnit1`` exists in every block (refinenet4 never uses it; kept for checkpoint parity).
    With ``fast_path`` the 1x1 conv runs before the upsampling, on 4x fewer pixels: both maps are
    linear and bilinear weights sum to one, so the result is the same function.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def _fuse(self, x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.resConfUnit2(x)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, size=None) -> torch.Tensor:
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)  # residual units keep the size
        if self.fast_path:
            return _up(self.forward_low(x, skip), size)
        return self.out_conv(_up(self._fuse(x, skip), size))

    def forward_low(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output before its final 2x upsampling (the fast path's order: 1x1 conv, then
        upsampling), for consumers that apply linear maps first (:class:`Upsampled`)."""
        return conv1x1(self._fuse(x, skip), self.out_conv)


class Interpolate(nn.Module):
    def __init__(self, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=True)


class Scratch(nn.Module):
    def __init__(self, in_channels: Sequence[int], features: int = 256, head_features: int = 32) -> None:
        super().__init__()
        for i, ch in enumerate(in_channels, start=1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
            self.add_module(f"refinenet{i}", FeatureFusionBlock(features))
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Interpolate(2),
            nn.Conv2d(features // 2, head_features, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(head_features, 1, 1),
            nn.ReLU(True),
            nn.Identity(),
        )


@dataclass
class CoreOutput:
    """Relative depth and the decoder taps used by the metric heads."""

    relative_depth: torch.Tensor  # (B,1,H,W) non-negative, affine-invariant inverse depth
    out_conv: torch.Tensor  # (B,32,H,W) after the ReLU of the 128->32 conv
    bottleneck: torch.Tensor  # (B,256,H/32,W/32) = layer4_rn
    # [r4 (/16), r3 (/8), r2 (/4), r1 (/2)]; on the CPU with the fast path r1 is an
    # Upsampled (its /4 source: the consumers' 1x1 convs run before the upsampling)
    fusion: List[Union[torch.Tensor, Upsampled]]


class DPTCore(FastPath, nn.Module):
    """MiDaS-style DPT: ``pretrained`` (encoder) + ``scratch`` (decoder and relative head).

    ``winograd``: the ``layer*_rn`` convolutions as in :class:`ResidualConvUnit`, and the first output
    convolution where the fused path below does not apply.
    ``fast_path``: on the CPU (inference and training) the finest fusion map ``r1`` is never
    upsampled: the first output convolution reads it through
    :func:`~zoe_lightning.models.fastpath.upsample_conv3x3` (its channel mixes at the lower
    resolution), so does the 128 -> 32 convolution after the head's 2x upsampling, and the
    metric head's projector receives it as an
    :class:`~zoe_lightning.models.fastpath.Upsampled` map (first 1x1 conv before the upsampling).
    The same function; no full-resolution 256- or 128-channel map is allocated.
    """

    winograd: bool = True

    def __init__(
        self,
        backbone: str,
        img_size: Sequence[int] = (384, 512),
        features: int = 256,
        readout: str = "project",
        hooks: Optional[Sequence[int]] = None,
        channels: Optional[Sequence[int]] = None,
        timm_kwargs=None,
    ) -> None:
        super().__init__()
        self.pretrained = Encoder(backbone, img_size, readout, hooks, channels, timm_kwargs)
        self.scratch = Scratch(self.pretrained.channels, features)
        self.features = features
        self.out_channels = self.scratch.output_conv[2].out_channels

    def forward(self, x: torch.Tensor) -> CoreOutput:
        l1, l2, l3, l4 = self.pretrained(x)
        s = self.scratch
        wg = self.winograd
        l1, l2, l3, l4 = (conv3x3(l, conv, wg) for l, conv in zip((l1, l2, l3, l4), (s.layer1_rn, s.layer2_rn,
                                                                                    s.layer3_rn, s.layer4_rn)))
        r4 = s.refinenet4(l4, size=l3.shape[-2:])
        r3 = s.refinenet3(r4, l3, size=l2.shape[-2:])
        r2 = s.refinenet2(r3, l2, size=l1.shape[-2:])
        head = s.output_conv
        if (self.fast_path and s.refinenet1.fast_path and isinstance(head[1], Interpolate)
                and upsample_conv3x3_applies(r2, head[0]) and upsample_conv3x3_applies(r2, head[2])):
            low = s.refinenet1.forward_low(r2, l1)
            r1 = Upsampled(low, (2 * low.shape[-2], 2 * low.shape[-1]))
            x = upsample_conv3x3(low, head[0], r1.size)
            size = (int(x.shape[-2] * head[1].scale_factor), int(x.shape[-1] * head[1].scale_factor))
            out_conv = head[3](upsample_conv3x3(x, head[2], size))
        else:
            r1 = s.refinenet1(r2, l1)
            out_conv = head[3](head[2](head[1](conv3x3(r1, head[0], wg))))
        relative = head[6](head[5](head[4](out_conv)))
        return CoreOutput(relative, out_conv, l4, [r4, r3, r2, r1])
