"""DPT decoder (MiDaS v3.1 naming): ``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}``,
``scratch.output_conv``; and :class:`DPTCore`, the relative-depth network whose taps feed the
metric heads. Reference modules in the original's op order (speed variants: :mod:`zoe_lightning.accel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import Encoder

__all__ = ["DPTCore", "CoreOutput", "FeatureFusionBlock", "ResidualConvUnit"]


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))) (no batch norm)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """Fuse a coarser path with an optional skip map, upsample, then a 1x1 conv.

    ``resConfUnit1`` exists in every block (refinenet4 never uses it; kept for checkpoint parity).
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def fuse(self, x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
        """The residual units: ``x`` (+ the refined skip map), refined."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.resConfUnit2(x)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, size=None) -> torch.Tensor:
        size = size if size is not None else (x.shape[-2] * 2, x.shape[-1] * 2)  # residual units keep the size
        return self.out_conv(_up(self.fuse(x, skip), size))


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
    fusion: List[torch.Tensor]  # [r4 (/16), r3 (/8), r2 (/4), r1 (/2)]


class DPTCore(nn.Module):
    """MiDaS-style DPT: ``pretrained`` (encoder) + ``scratch`` (decoder and relative head)."""

    def __init__(
        self,
        backbone: str,
        img_size: Sequence[int] = (384, 512),
        features: int = 256,
        readout: str = "project",
        hooks: Optional[Sequence[int]] = None,
        channels: Optional[Sequence[int]] = None,
        timm_kwargs=None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.pretrained = Encoder(backbone, img_size, readout, hooks, channels, timm_kwargs, pretrained)
        self.scratch = Scratch(self.pretrained.channels, features)
        self.features = features
        self.out_channels = self.scratch.output_conv[2].out_channels

    def forward(self, x: torch.Tensor) -> CoreOutput:
        l1, l2, l3, l4 = self.pretrained(x)
        s = self.scratch
        l1, l2, l3, l4 = s.layer1_rn(l1), s.layer2_rn(l2), s.layer3_rn(l3), s.layer4_rn(l4)
        r4 = s.refinenet4(l4, size=l3.shape[-2:])
        r3 = s.refinenet3(r4, l3, size=l2.shape[-2:])
        r2 = s.refinenet2(r3, l2, size=l1.shape[-2:])
        r1 = s.refinenet1(r2, l1)
        out_conv = s.output_conv[:4](r1)  # conv, 2x upsampling, conv, ReLU: the metric heads' input
        relative = s.output_conv[4:](out_conv)
        return CoreOutput(relative, out_conv, l4, [r4, r3, r2, r1])
