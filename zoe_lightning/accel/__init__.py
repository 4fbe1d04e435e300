"""Equal-output speed variants of the reference modules in :mod:`zoe_lightning.models`.

:func:`apply` swaps them into a built model in place, by class (``module.__class__``): every
variant subclasses its reference module and keeps its parameters and buffers, so the state-dict
keys and values do not change. Calling :func:`apply` again with other switches first restores
the reference classes. The switches are ``model.speed`` (:class:`zoe_lightning.config.SpeedConfig`):

=====================  ==========================================================================
``fast_path``          1x1 convolutions as GEMMs and before upsampling, fused upsample + 3x3 conv
                       in the DPT head, pixel-major and banded log-binomial, in-place attractors
``winograd``           decoder 3x3 convolutions by Winograd F(2x2, 3x3) at CPU fp32 inference
``memory_efficient``   attractor sum and log-binomial softmax as autograd functions saving inputs only
``fused_attention``    one ``scaled_dot_product_attention`` per attention layer
``grad_checkpointing`` backbone blocks recomputed in backward (less memory, more time)
``channels_last``      NHWC weights and inputs
``compile``            ``torch.compile`` of the model's forward
=====================  ==========================================================================
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..models.bins import AttractorLayer, ConditionalLogBinomial, LogBinomial, Projector, SeedBinRegressor, Splitter
from ..models.depth_anything import DepthAnythingCore
from ..models.dpt import DPTCore, FeatureFusionBlock, ResidualConvUnit
from ..models.encoder import Encoder, ProjectReadout
from ..models.heads import MetricHead, _BinsHead
from ..models.zoedepth import Prep
from .bins import AcceleratedAttractorLayer, FastSeedBinRegressor, PointwiseMLP
from .dpt import FastDPTCore, FastFeatureFusionBlock
from .encoder import AcceleratedEncoder, FastProjectReadout, configure_timm
from .log_binomial import FastConditionalLogBinomial, MemoryEfficientLogBinomial
from .winograd import WinogradConv2d

__all__ = ["apply", "restore", "ChannelsLastPrep"]

SWITCHES = ("fast_path", "winograd", "memory_efficient", "fused_attention", "grad_checkpointing", "channels_last",
            "compile")


class ChannelsLastPrep(Prep):
    """:class:`~zoe_lightning.models.zoedepth.Prep` returning a channels-last image."""

    reference = Prep

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return super().forward(image).contiguous(memory_format=torch.channels_last)


#: reference class -> its ``fast_path`` variant (modules whose own forward changes)
FAST = {SeedBinRegressor: FastSeedBinRegressor, ConditionalLogBinomial: FastConditionalLogBinomial,
        FeatureFusionBlock: FastFeatureFusionBlock, DPTCore: FastDPTCore, ProjectReadout: FastProjectReadout}


def _swap(module: nn.Module, cls: type) -> None:
    module.__class__ = cls


def restore(model: nn.Module) -> nn.Module:
    """Every speed variant in ``model`` back to its reference class (in place)."""
    for module in model.modules():
        reference = type(module).__dict__.get("reference")
        if reference is not None:
            _swap(module, reference)
    return model


def _winograd_convs(model: nn.Module):
    """The decoder's 3x3 convolutions that may run by Winograd: the residual units', the
    ``layer*_rn`` ones and the first output convolution."""
    for module in model.modules():
        if isinstance(module, ResidualConvUnit):
            yield module.conv1
            yield module.conv2
        elif isinstance(module, DPTCore):
            s = module.scratch
            yield from (getattr(s, f"layer{i}_rn") for i in range(1, 5))
            yield s.output_conv[0]
        elif isinstance(module, DepthAnythingCore):
            s = module.depth_head.scratch
            yield from (getattr(s, f"layer{i}_rn") for i in range(1, 5))
            yield s.output_conv1


def _fusion_accepts_upsampled(model: nn.Module) -> bool:
    """Whether every consumer of the core's ``fusion`` maps takes an ``Upsampled`` map: no head,
    a head that ignores ``fusion``, or the bins heads' projectors run as :class:`PointwiseMLP`."""
    head = getattr(model, "head", None)
    if head is None or type(head).shared is MetricHead.shared:
        return True
    return (type(head).shared is _BinsHead.shared
            and all(isinstance(p._net, PointwiseMLP) for p in head.projectors))


def apply(model: nn.Module, speed) -> nn.Module:
    """Swap the speed variants ``speed`` (``model.speed``) asks for into ``model``, in place."""
    was_channels_last = isinstance(getattr(model, "prep", None), ChannelsLastPrep)
    restore(model)
    for module in list(model.modules()):
        if speed.fast_path:
            if type(module) in FAST:
                _swap(module, FAST[type(module)])
            if type(module) in (Projector, AttractorLayer, Splitter) and type(module._net) is nn.Sequential:
                _swap(module._net, PointwiseMLP)
        if type(module) is AttractorLayer and (speed.fast_path or speed.memory_efficient):
            _swap(module, AcceleratedAttractorLayer)
            module.fast_path, module.memory_efficient = bool(speed.fast_path), bool(speed.memory_efficient)
        if type(module) is LogBinomial and speed.memory_efficient:
            _swap(module, MemoryEfficientLogBinomial)
        if isinstance(module, DepthAnythingCore):  # timm's blocks, run by the core's own loop
            configure_timm(module.pretrained, bool(speed.fused_attention), bool(speed.grad_checkpointing))
        if isinstance(module, Encoder):
            configure_timm(module, bool(speed.fused_attention), bool(speed.grad_checkpointing))
            if speed.fused_attention or speed.grad_checkpointing:
                _swap(module, AcceleratedEncoder)
                module.fused_attention = bool(speed.fused_attention)
                module.grad_checkpointing = bool(speed.grad_checkpointing)
    if speed.winograd:
        for conv in list(_winograd_convs(model)):
            if type(conv) is nn.Conv2d:
                _swap(conv, WinogradConv2d)
    for module in model.modules():
        if isinstance(module, FastDPTCore):
            module.lazy_fusion = _fusion_accepts_upsampled(model)
    prep = getattr(model, "prep", None)
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
        if type(prep) is Prep:
            _swap(prep, ChannelsLastPrep)
    elif was_channels_last:
        model.to(memory_format=torch.contiguous_format)
    if speed.compile:
        model.compile()
    return model
