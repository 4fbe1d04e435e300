"""timm backbones -> four multi-scale feature maps (strides 4, 8, 16, 32).

The encoder mirrors MiDaS v3.1's ``pretrained`` module so that MiDaS / ZoeDepth checkpoints map
onto it by key: the timm network lives at ``model`` and the ViT reassemble stages at
``act_postprocess1..4`` (``.0`` readout, ``.3`` 1x1 projection, ``.4`` resampling).

Families:
* ``beit``   BEiT; any input that is a multiple of the patch size: the relative-position bias
             table is resized bilinearly to the token grid (MiDaS v3.1's method) and cached.
* ``vit``    plain ViT (timm ``VisionTransformer``); absolute position embedding resized per input.
* ``swin``   Swin / SwinV2 (fixed input size set at construction); stage outputs, no reassemble.
* ``dinov2`` timm DINOv2 ViTs (patch 14; ``vit_*_patch14_dinov2`` and the ``reg4`` variants) with the
             blocks each Depth Anything size taps and its projection widths; with the MiDaS decoder
             they run as ``vit`` (timm's position-embedding resizing), with
             ``model.decoder=depth_anything`` as :class:`~zoe_lightning.models.depth_anything.DepthAnythingCore`.
* ``conv``   any timm network with ``features_only`` (ConvNeXt, ResNet, EfficientNet, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BackboneSpec", "BACKBONES", "Encoder", "resolve_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and tap it."""

    timm_name: str
    family: str  # beit | vit | swin | conv | dinov2
    hooks: Optional[Tuple[int, ...]] = None  # block indices (beit / vit)
    channels: Optional[Tuple[int, ...]] = None  # reassembled channels (beit / vit)
    kwargs: Dict[str, object] = field(default_factory=dict)


# MiDaS v3.1 backbones (facts §1.3) and tiny test models. Unknown names fall back to a generic
# spec inferred from the timm class, so any timm ViT / ConvNet works.
BACKBONES: Dict[str, BackboneSpec] = {
    "beit_large_patch16_384": BackboneSpec("beit_large_patch16_384", "beit", (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "beit_large_patch16_512": BackboneSpec("beit_large_patch16_512", "beit", (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "beit_base_patch16_384": BackboneSpec("beit_base_patch16_384", "beit", (2, 5, 8, 11), (96, 192, 384, 768)),
    "vit_large_patch16_384": BackboneSpec("vit_large_patch16_384", "vit", (5, 11, 17, 23), (256, 512, 1024, 1024)),
    "vit_base_patch16_384": BackboneSpec("vit_base_patch16_384", "vit", (2, 5, 8, 11), (96, 192, 384, 768)),
    "swinv2_large_window12to24_192to384": BackboneSpec("swinv2_large_window12to24_192to384", "swin"),
    "swinv2_base_window12to24_192to384": BackboneSpec("swinv2_base_window12to24_192to384", "swin"),
    "swinv2_tiny_window16_256": BackboneSpec("swinv2_tiny_window16_256", "swin"),
    # tiny models for tests and CPU runs
    "test_beit": BackboneSpec(
        "beit_base_patch16_384", "beit", (0, 1, 2, 3), (16, 32, 64, 64),
        dict(embed_dim=64, depth=4, num_heads=2, img_size=64, num_classes=0),
    ),
    "test_swinv2": BackboneSpec(
        "swinv2_tiny_window16_256", "swin", None, None,
        dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=4, num_classes=0),
    ),
    "test_vit": BackboneSpec("test_vit", "vit", (1, 2, 3, 5), (16, 32, 64, 64)),
    "test_dinov2": BackboneSpec(
        "vit_small_patch14_dinov2", "dinov2", (0, 1, 2, 3), (8, 16, 32, 32),
        dict(embed_dim=32, depth=4, num_heads=2, img_size=98),
    ),
    "test_dinov2_reg4": BackboneSpec(
        "vit_small_patch14_reg4_dinov2", "dinov2", (0, 1, 2, 3), (8, 16, 32, 32),
        dict(embed_dim=32, depth=4, num_heads=2, img_size=98),
    ),
    "small_beit": BackboneSpec(
        "beit_base_patch16_384", "beit", (1, 3, 5, 7), (32, 64, 128, 128),
        dict(embed_dim=128, depth=8, num_heads=4, img_size=128, num_classes=0),
    ),
}


# DINOv2 (timm, patch 14, trained at 518): the blocks Depth Anything V2 taps (V1 tapped the last 4:
# set model.hooks) and its reassemble widths (``out_channels``), per size (facts §1.1).
_DINOV2 = {"small": ((2, 5, 8, 11), (48, 96, 192, 384)), "base": ((2, 5, 8, 11), (96, 192, 384, 768)),
           "large": ((4, 11, 17, 23), (256, 512, 1024, 1024)), "giant": ((9, 19, 29, 39), (1536,) * 4)}
for _size, (_hooks, _channels) in _DINOV2.items():
    for _name in (f"vit_{_size}_patch14_dinov2", f"vit_{_size}_patch14_reg4_dinov2"):
        BACKBONES[_name] = BackboneSpec(_name, "dinov2", _hooks, _channels)


def resolve_backbone(name: str) -> BackboneSpec:
    if name in BACKBONES:
        return BACKBONES[name]
    base = name.split(".")[0]
    if base in BACKBONES:  # a pretrained tag: vit_small_patch14_dinov2.lvd142m
        return BACKBONES[base]
    if base.startswith("beit"):
        return BackboneSpec(name, "beit")
    if base.startswith("swin"):
        return BackboneSpec(name, "swin")
    if base.startswith(("vit_", "deit", "test_vit", "eva")):
        return BackboneSpec(name, "vit")
    if name not in timm.list_models() and base not in timm.list_models():
        import difflib

        hits = difflib.get_close_matches(name, list(BACKBONES) + timm.list_models(), n=3)
        raise ValueError(f"unknown backbone '{name}'." + (f" Did you mean: {', '.join(hits)}?" if hits else ""))
    return BackboneSpec(name, "conv")


# ----------------------------------------------------------------------------------------------
# building blocks of the reassemble stage
# ----------------------------------------------------------------------------------------------


class ProjectReadout(nn.Module):
    """Concatenate each patch token with the class token, then Linear(2C -> C) + GELU."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([tokens, cls.expand_as(tokens)], dim=-1))


class AddReadout(nn.Module):
    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return tokens + cls


class IgnoreReadout(nn.Module):
    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return tokens


def _readout(kind: str, width: int) -> nn.Module:
    return {"project": lambda: ProjectReadout(width), "add": AddReadout, "ignore": IgnoreReadout}[kind]()


def _reassemble(level: int, width: int, channels: int, readout: str) -> nn.Sequential:
    """``act_postprocess{level}``: readout, (2 slots kept for key parity), 1x1 conv, resample."""
    if level == 1:
        resample: nn.Module = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=4)
    elif level == 2:
        resample = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
    elif level == 3:
        resample = nn.Identity()
    else:
        resample = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    return nn.Sequential(
        _readout(readout, width), nn.Identity(), nn.Identity(),
        nn.Conv2d(width, channels, kernel_size=1), resample,
    )


# ----------------------------------------------------------------------------------------------
# BEiT with resizable relative-position bias
# ----------------------------------------------------------------------------------------------


def _relative_position_index(grid: Tuple[int, int], device: torch.device) -> torch.Tensor:
    """Index into a (2h-1)(2w-1)+3 table for a (1 + h*w) token sequence (class token first)."""
    h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += h - 1
    rel[:, :, 1] += w - 1
    rel[:, :, 0] *= 2 * w - 1
    n = (2 * h - 1) * (2 * w - 1)
    index = torch.zeros((h * w + 1,) * 2, dtype=torch.long, device=device)
    index[1:, 1:] = rel.sum(-1)
    index[0, :] = n  # class token -> patches
    index[:, 0] = n + 1  # patches -> class token
    index[0, 0] = n + 2  # class token -> class token
    return index


def resize_relative_bias_table(table: torch.Tensor, old: Tuple[int, int], new: Tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize the spatial part of a BEiT bias table; keep the 3 class-token rows."""
    if tuple(old) == tuple(new):
        return table
    heads = table.shape[1]
    spatial, extra = table[:-3], table[-3:]
    grid = spatial.reshape(2 * old[0] - 1, 2 * old[1] - 1, heads).permute(2, 0, 1)[None]
    grid = F.interpolate(grid, size=(2 * new[0] - 1, 2 * new[1] - 1), mode="bilinear", align_corners=False)
    return torch.cat([grid[0].permute(1, 2, 0).reshape(-1, heads), extra], dim=0)


def beit_qkv(attn: nn.Module, x: torch.Tensor):
    """Queries, keys and values (B, heads, N, C/heads) of a timm BEiT attention module."""
    b, n, _ = x.shape
    qkv_bias = None
    if attn.q_bias is not None:
        qkv_bias = torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    qkv = F.linear(x, attn.qkv.weight, qkv_bias).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    return qkv.unbind(0)


def beit_attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """BEiT attention ``softmax(q k^T * scale + bias) v`` with an externally supplied
    relative-position bias."""
    q, k, v = beit_qkv(attn, x)
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias.to(q.dtype)
    out = attn.attn_drop(weights.softmax(dim=-1)) @ v
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)))


def beit_block(block: nn.Module, x: torch.Tensor, bias: torch.Tensor, attention=beit_attention) -> torch.Tensor:
    a = attention(block.attn, block.norm1(x), bias)
    if block.gamma_1 is not None:
        a = block.gamma_1 * a
    x = x + block.drop_path1(a)
    m = block.mlp(block.norm2(x))
    if block.gamma_2 is not None:
        m = block.gamma_2 * m
    return x + block.drop_path2(m)


# ----------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """timm backbone + reassemble -> four NCHW maps at strides 4, 8, 16, 32.

    ``channels`` lists the channel count of each output map. ``pretrained``: timm builds the
    backbone with its pretrained weights (timm downloads and caches them).
    """

    def __init__(
        self,
        backbone: str,
        img_size: Sequence[int] = (384, 384),
        readout: str = "project",
        hooks: Optional[Sequence[int]] = None,
        channels: Optional[Sequence[int]] = None,
        timm_kwargs: Optional[Dict[str, object]] = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        spec = resolve_backbone(backbone)
        self.family = spec.family
        kwargs = dict(spec.kwargs)
        kwargs.update(timm_kwargs or {})
        if self.family == "swin":
            kwargs.setdefault("img_size", tuple(img_size))
            self.model = timm.create_model(spec.timm_name, pretrained=pretrained, **kwargs)
            self.channels = [int(info["num_chs"]) for info in self.model.feature_info][-4:]
            self.fixed_size = tuple(self.model.patch_embed.img_size)
            return
        if self.family == "conv":
            net = timm.create_model(spec.timm_name, pretrained=False, features_only=True, **kwargs)
            reductions = list(net.feature_info.reduction())
            wanted = [reductions.index(s) for s in (4, 8, 16, 32) if s in reductions]
            if len(wanted) != 4:
                raise ValueError(f"backbone '{backbone}' has no feature maps at strides 4/8/16/32 ({reductions})")
            self.model = timm.create_model(
                spec.timm_name, pretrained=pretrained, features_only=True, out_indices=wanted, **kwargs
            )
            self.channels = [int(c) for c in self.model.feature_info.channels()]
            return

        # token models (beit / vit / dinov2)
        if self.family in ("vit", "dinov2"):
            kwargs.setdefault("dynamic_img_size", True)
        self.model = timm.create_model(spec.timm_name, pretrained=pretrained, **kwargs)
        depth = len(self.model.blocks)
        self.hooks = list(hooks or spec.hooks or [depth // 4 * i - 1 for i in range(1, 5)])
        if max(self.hooks) >= depth:
            raise ValueError(f"hooks {self.hooks} exceed the {depth} blocks of '{backbone}'")
        width = int(self.model.embed_dim)
        self.patch = int(self.model.patch_embed.patch_size[0])
        self.prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 1))
        if self.prefix_tokens == 0:
            readout = "ignore"
        self.channels = list(channels or spec.channels or [width // 4, width // 2, width, width])
        for i, ch in enumerate(self.channels, start=1):
            self.add_module(f"act_postprocess{i}", _reassemble(i, width, ch, readout))
        if self.family == "beit":
            self.train_grid = tuple(self.model.patch_embed.grid_size)
            self._index_cache: Dict[Tuple[int, int, str], torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------
    def run_block(self, block: nn.Module, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One BEiT block with the given relative-position bias."""
        return beit_block(block, tokens, bias)

    def _beit_tokens(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], Tuple[int, int]]:
        model = self.model
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if getattr(model, "pos_embed", None) is not None:
            raise ValueError("BEiT variants with absolute position embeddings are not supported")
        tokens = model.pos_drop(tokens)
        key = (grid[0], grid[1], str(x.device))
        index = self._index_cache.get(key)
        if index is None:
            with torch.inference_mode(False):  # a normal tensor, reusable by a later autograd forward
                index = self._index_cache[key] = _relative_position_index(grid, x.device)
        n = tokens.shape[1]
        taps = []
        for i, block in enumerate(model.blocks):
            table = resize_relative_bias_table(block.attn.relative_position_bias_table, self.train_grid, grid)
            # gathered straight into (heads, n, n) order: a contiguous mask, no transposing copy
            bias = table.t().index_select(1, index.view(-1)).view(1, -1, n, n)
            tokens = self.run_block(block, tokens, bias)
            if i in self.hooks:
                taps.append(tokens)
            if i >= max(self.hooks):
                break
        return taps, grid

    def _vit_tokens(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], Tuple[int, int]]:
        grid = (x.shape[-2] // self.patch, x.shape[-1] // self.patch)
        outs = self.model.forward_intermediates(
            x, indices=self.hooks, return_prefix_tokens=True, output_fmt="NLC", intermediates_only=True, stop_early=True
        )
        taps = []
        for item in outs:
            spatial, prefix = item if isinstance(item, tuple) else (item, None)
            taps.append(spatial if prefix is None else torch.cat([prefix, spatial], dim=1))
        return taps, grid

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if self.family == "swin":
            if tuple(x.shape[-2:]) != self.fixed_size:
                raise ValueError(
                    f"Swin backbone was built for input {self.fixed_size}, got {tuple(x.shape[-2:])}; "
                    "set model.img_size to that size"
                )
            feats = self.model.forward_intermediates(x, intermediates_only=True, output_fmt="NCHW")
            return list(feats[-4:])
        if self.family == "conv":
            return list(self.model(x))
        if x.shape[-2] % self.patch or x.shape[-1] % self.patch:
            raise ValueError(f"input size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch}")
        taps, grid = self._beit_tokens(x) if self.family == "beit" else self._vit_tokens(x)
        outputs = []
        for i, tokens in enumerate(taps, start=1):
            post = getattr(self, f"act_postprocess{i}")
            if self.prefix_tokens:
                cls, patches = tokens[:, :1], tokens[:, self.prefix_tokens:]
            else:
                cls, patches = tokens[:, :1], tokens
            feat = post[0](patches, cls)
            feat = feat.transpose(1, 2).reshape(feat.shape[0], -1, *grid)
            outputs.append(post[4](post[3](feat)))
        return outputs

