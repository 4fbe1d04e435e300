"""Speed variants of the encoder (:mod:`zoe_lightning.models.encoder`), same parameters.

* :class:`FastProjectReadout` (``fast_path``): the readout weight split instead of concatenating
  the class token to every patch token (its half applied once per image).
* :class:`AcceleratedEncoder`: BEiT blocks with fused attention (``fused_attention``: one
  ``scaled_dot_product_attention`` call) and gradient checkpointing (``grad_checkpointing``:
  blocks recomputed in backward). timm's own blocks (ViT, Swin) are switched by :func:`configure_timm`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.encoder import Encoder, ProjectReadout, beit_block, beit_qkv

__all__ = ["FastProjectReadout", "AcceleratedEncoder", "fused_beit_attention", "configure_timm"]


class FastProjectReadout(ProjectReadout):
    reference = ProjectReadout

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        linear, act = self.project
        width = tokens.shape[-1]
        per_image = F.linear(cls, linear.weight[:, width:], linear.bias)  # (B,1,C)
        return act(torch.baddbmm(per_image, tokens, linear.weight[:, :width].t().expand(tokens.shape[0], -1, -1)))


def fused_beit_attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """:func:`~zoe_lightning.models.encoder.beit_attention` as one ``scaled_dot_product_attention``."""
    q, k, v = beit_qkv(attn, x)
    drop = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=drop)
    return attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)))


def _fused_beit_block(block: nn.Module, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return beit_block(block, tokens, bias, fused_beit_attention)


class AcceleratedEncoder(Encoder):
    reference = Encoder
    fused_attention: bool = True
    grad_checkpointing: bool = False

    def run_block(self, block: nn.Module, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        fn = _fused_beit_block if self.fused_attention else beit_block
        if self.grad_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(fn, block, tokens, bias, use_reentrant=False)
        return fn(block, tokens, bias)


def configure_timm(encoder: nn.Module, fused_attention: bool, grad_checkpointing: bool) -> None:
    """The same two switches inside the timm network (an :class:`Encoder`'s ``model``, or a timm
    network itself, e.g. the Depth Anything core's ``pretrained``): ``fused_attention=False`` turns off
    ``fused_attn`` of its attention modules (``True`` keeps timm's own choice per module), and
    ``set_grad_checkpointing``."""
    net = encoder.model if isinstance(encoder, Encoder) else encoder
    if not fused_attention:
        for module in net.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    if hasattr(net, "set_grad_checkpointing"):
        net.set_grad_checkpointing(grad_checkpointing)
