"""Depth Anything (V1 / V2) core: a timm DINOv2 ViT (``pretrained``) and the Depth Anything DPT
decoder (``depth_head``), under the original's module names so its checkpoints map by key.

* ``pretrained``  timm ``vit_*_patch14_dinov2`` (patch 14). The tapped blocks' tokens pass the
  final norm; prefix tokens (class, registers) are dropped (the original's ``use_clstoken=False``).
* ``depth_head.projects[i]``       1x1 conv, ViT width -> ``channels[i]``
* ``depth_head.resize_layers[i]``  4x / 2x transposed conv, identity, 3x3 stride-2 conv
* ``depth_head.scratch``           ``layer{1..4}_rn`` (3x3, no bias), ``refinenet{1..4}`` (the MiDaS
  fusion blocks, no batch norm), ``output_conv1`` (3x3, features -> features/2), then a bilinear
  resize to the input size and ``output_conv2`` (3x3 -> 32, ReLU, 1x1 -> 1, ReLU, Identity).

The output is relative inverse depth (disparity). The taps of the ZoeDepth heads are the same as on
the MiDaS core: ``out_conv`` (the 32-channel ReLU output), ``layer4_rn`` and the four fusion maps.

Position embeddings are resized per input by ``pos_embed_resize``:

* ``offset``  the original DINOv2 / Depth Anything rule: bicubic with
  ``scale_factor = ((gh + 0.1) / g0, (gw + 0.1) / g0)``, no antialias, float32; skipped when the grid
  is the trained one (square). Outputs match the original code at every size.
* ``size``    HF transformers 5's Dinov2 rule: bicubic to the explicit grid size, no antialias.
* ``timm``    timm's ``dynamic_img_size`` rule (explicit size, antialias on); register (``reg4``)
  models, whose table holds no class position, always use it (DINOv2's register models do too).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .dpt import CoreOutput, FeatureFusionBlock
from .encoder import resolve_backbone

__all__ = ["DepthAnythingCore", "DepthAnythingHead", "DA_SIZES", "resize_pos_embed", "POS_EMBED_RULES"]

PATCH = 14
POS_EMBED_RULES = ("offset", "size", "timm")
# ViT width -> Depth Anything (size letter, decoder ``features``, ``out_channels``) (facts §1.1)
DA_SIZES: Dict[int, tuple] = {
    384: ("s", 64, (48, 96, 192, 384)),
    768: ("b", 128, (96, 192, 384, 768)),
    1024: ("l", 256, (256, 512, 1024, 1024)),
    1536: ("g", 384, (1536, 1536, 1536, 1536)),
}


def resize_pos_embed(pos_embed: torch.Tensor, grid, rule: str = "offset") -> torch.Tensor:
    """A (1, 1 + g0*g0, D) table (class position first) for a ``grid`` = (gh, gw) token grid."""
    gh, gw = int(grid[0]), int(grid[1])
    n = int(pos_embed.shape[1]) - 1
    g0 = int(round(n ** 0.5))
    if gh * gw == n and gh == gw:
        return pos_embed
    dim = pos_embed.shape[-1]
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    patches = patches.reshape(1, g0, g0, dim).permute(0, 3, 1, 2).float()
    if rule == "offset":
        patches = F.interpolate(patches, scale_factor=((gh + 0.1) / g0, (gw + 0.1) / g0), mode="bicubic",
                                antialias=False)
    elif rule == "size":
        patches = F.interpolate(patches, size=(gh, gw), mode="bicubic", align_corners=False)
    else:
        raise ValueError(f"unknown position-embedding rule '{rule}' (choices: offset, size, timm)")
    if tuple(patches.shape[-2:]) != (gh, gw):  # the offset keeps floor(g0 * scale) = g
        raise RuntimeError(f"position embedding resized to {tuple(patches.shape[-2:])}, expected {(gh, gw)}")
    patches = patches.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
    return torch.cat([cls, patches], dim=1)


class DepthAnythingScratch(nn.Module):
    def __init__(self, channels: Sequence[int], features: int, head_features: int = 32) -> None:
        super().__init__()
        for i, ch in enumerate(channels, start=1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", FeatureFusionBlock(features))
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_features, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(head_features, 1, 1),
            nn.ReLU(True),
            nn.Identity(),
        )


class DepthAnythingHead(nn.Module):
    """The original ``DPTHead`` (``use_clstoken=False``): projections, resize layers, ``scratch``."""

    def __init__(self, width: int, features: int, channels: Sequence[int]) -> None:
        super().__init__()
        c = list(channels)
        if len(c) != 4:
            raise ValueError(f"the Depth Anything decoder needs 4 projection widths, got {c}")
        self.projects = nn.ModuleList([nn.Conv2d(width, ch, 1) for ch in c])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c[0], c[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(c[1], c[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c[3], c[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = DepthAnythingScratch(c, features)


class DepthAnythingCore(nn.Module):
    """DINOv2 + Depth Anything DPT decoder, returning the same :class:`CoreOutput` as ``DPTCore``."""

    size_multiple = PATCH

    def __init__(
        self,
        backbone: str,
        features: int = 64,
        hooks: Optional[Sequence[int]] = None,
        channels: Optional[Sequence[int]] = None,
        timm_kwargs: Optional[Dict[str, object]] = None,
        pos_embed_resize: str = "offset",
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        spec = resolve_backbone(backbone)
        if spec.family != "dinov2":
            raise ValueError(f"model.decoder=depth_anything needs a DINOv2 backbone (vit_*_patch14_dinov2, "
                             f"test_dinov2), got '{backbone}'")
        if pos_embed_resize not in POS_EMBED_RULES:
            raise ValueError(f"unknown position-embedding rule '{pos_embed_resize}'")
        kwargs = dict(spec.kwargs)
        kwargs.update(timm_kwargs or {})
        kwargs.setdefault("num_classes", 0)
        kwargs["dynamic_img_size"] = True
        self.pretrained = timm.create_model(spec.timm_name, pretrained=pretrained, **kwargs)  # pretrained: timm's download
        vit = self.pretrained
        depth = len(vit.blocks)
        # negative indices count from the last block: [-4, -3, -2, -1] = Depth Anything V1's taps
        hooks = hooks if hooks is not None else spec.hooks or [depth // 4 * i - 1 for i in range(1, 5)]
        self.hooks = [int(h) + depth if int(h) < 0 else int(h) for h in hooks]
        if len(self.hooks) != 4 or max(self.hooks) >= depth or min(self.hooks) < 0:
            raise ValueError(f"hooks {self.hooks}: need 4 block indices below {depth} for '{backbone}'")
        if int(vit.patch_embed.patch_size[0]) != PATCH:
            raise ValueError(f"'{backbone}' has patch size {vit.patch_embed.patch_size}, Depth Anything needs 14")
        width = int(vit.embed_dim)
        self.width = width
        self.channels = list(channels if channels is not None else spec.channels or DA_SIZES.get(width, (
            None, None, (width // 8, width // 4, width // 2, width)))[2])
        self.features = int(features)
        self.pos_embed_resize = "timm" if vit.no_embed_class else pos_embed_resize
        self.prefix_tokens = int(vit.num_prefix_tokens)
        self.depth_head = DepthAnythingHead(width, self.features, self.channels)
        self.out_channels = self.depth_head.scratch.output_conv2[0].out_channels

    # ------------------------------------------------------------------------------------------
    def tokens(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Patch tokens (B, gh*gw, D) after the final norm, at each tapped block."""
        vit = self.pretrained
        grid = (int(x.shape[-2]) // PATCH, int(x.shape[-1]) // PATCH)  # ints, also under the exporter's tracer
        patches = vit.patch_embed(x)  # (B, gh, gw, D): dynamic_img_size
        if self.pos_embed_resize == "timm":
            t = vit._pos_embed(patches)
        else:
            b, d = patches.shape[0], patches.shape[-1]
            pos = resize_pos_embed(vit.pos_embed, grid, self.pos_embed_resize)
            cls = (vit.cls_token + pos[:, :1]).expand(b, -1, -1)
            t = torch.cat([cls, patches.reshape(b, -1, d) + pos[:, 1:]], dim=1)
            t = vit.pos_drop(t)
        t = vit.norm_pre(vit.patch_drop(t))
        checkpointing = getattr(vit, "grad_checkpointing", False) and self.training
        taps = []
        for i, block in enumerate(vit.blocks):
            if checkpointing:
                t = torch.utils.checkpoint.checkpoint(block, t, use_reentrant=False)
            else:
                t = block(t)
            if i in self.hooks:
                taps.append(vit.norm(t)[:, self.prefix_tokens:])
            if i >= max(self.hooks):
                break
        return taps

    def forward(self, x: torch.Tensor) -> CoreOutput:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % PATCH or w % PATCH:
            raise ValueError(f"input size {(h, w)} is not a multiple of the DINOv2 patch size {PATCH}")
        gh, gw = h // PATCH, w // PATCH
        head = self.depth_head
        maps = []
        for i, t in enumerate(self.tokens(x)):
            f = t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], gh, gw)
            maps.append(head.resize_layers[i](head.projects[i](f)))
        s = head.scratch
        l1, l2, l3, l4 = s.layer1_rn(maps[0]), s.layer2_rn(maps[1]), s.layer3_rn(maps[2]), s.layer4_rn(maps[3])
        r4 = s.refinenet4(l4, size=l3.shape[-2:])
        r3 = s.refinenet3(r4, l3, size=l2.shape[-2:])
        r2 = s.refinenet2(r3, l2, size=l1.shape[-2:])
        r1 = s.refinenet1(r2, l1)
        y = F.interpolate(s.output_conv1(r1), size=(gh * PATCH, gw * PATCH), mode="bilinear", align_corners=True)
        out_conv = s.output_conv2[:2](y)
        relative = s.output_conv2[2:](out_conv)
        return CoreOutput(relative, out_conv, l4, [r4, r3, r2, r1])
