"""ZoeDepth = DPT core + metric head(s) + router, and the stage-1 relative model.

Both take images in [0, 1] of any size, resize them to the network size (squash, or MiDaS's
keep-aspect "minimal" rule), normalise, and return a typed output at network resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bins import ORIGINAL_ALPHA, ORIGINAL_GAMMA
from .depth_anything import DepthAnythingCore
from .dpt import DPTCore
from .heads import HEADS, Domain, HeadOutput, HeadSettings
from .router import ROUTERS

__all__ = ["ZoeDepth", "RelativeDepthModel", "ZoeDepthOutput", "Prep", "build_model", "network_size",
           "check_images"]


@dataclass
class ZoeDepthOutput:
    metric_depth: Optional[torch.Tensor]  # (B,1,H,W) metres (None for the relative model)
    relative_depth: torch.Tensor  # (B,1,H,W) affine-invariant inverse depth
    bin_centers: Optional[torch.Tensor] = None  # (B,N,H,W)
    probs: Optional[torch.Tensor] = None  # (B,N,H,W)
    domain_logits: Optional[torch.Tensor] = None  # (B,D) trained / auto routers
    domain_index: Optional[torch.Tensor] = None  # (B,) head used per image


def network_size(h: int, w: int, target: Sequence[int], keep_aspect: bool, multiple: int = 32) -> Tuple[int, int]:
    """The original's resize rule (MiDaS ``Resize``, method "minimal"), the one implementation in
    the project: squash to ``target`` (H_t, W_t), or keep the aspect ratio with one scale for both
    axes, W_t/w only when it is strictly closer to 1 than H_t/h (a tie fits the height), then round
    each side to the nearest multiple of ``multiple`` (halves to even, like numpy), at least one."""
    th, tw = int(target[0]), int(target[1])
    if not keep_aspect:
        return th, tw
    sh, sw = th / h, tw / w
    scale = sw if abs(1 - sw) < abs(1 - sh) else sh
    return (max(multiple, int(round(h * scale / multiple)) * multiple),
            max(multiple, int(round(w * scale / multiple)) * multiple))


_UINT8_WARNED = []


def check_images(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """The models' input check: ``image`` (B,3,H,W) float in [0, 1]. uint8 images are converted
    (``/ 255``, with a one-time warning); other non-float dtypes, an empty batch and NaN / inf
    pixels raise ``ValueError`` naming the tensor. Skipped while tracing (ONNX export) or
    compiling, so the exported / compiled graph is unchanged."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return image
    if image.dtype == torch.uint8:
        if not _UINT8_WARNED:
            _UINT8_WARNED.append(True)
            import warnings

            warnings.warn(f"{name}: uint8 images are converted to float / 255; pass float images in [0, 1]",
                          stacklevel=3)
        image = image.float() / 255.0
    elif not image.is_floating_point():
        raise ValueError(f"{name}: expected float images in [0, 1] (or uint8), got dtype {image.dtype}")
    if image.ndim >= 1 and image.shape[0] == 0:
        raise ValueError(f"{name}: empty batch {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(f"{name}: {bad} NaN / inf pixel value(s) in the input {tuple(image.shape)}")
    return image


class Prep(nn.Module):
    def __init__(self, img_size: Sequence[int], keep_aspect: bool, mean: Sequence[float], std: Sequence[float],
                 resize: bool = True, multiple: int = 32) -> None:
        super().__init__()
        self.img_size, self.keep_aspect, self.resize = list(img_size), keep_aspect, resize
        self.multiple = int(multiple)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected images of shape (B,3,H,W) in [0,1], got {tuple(image.shape)}")
        if self.resize:
            # plain ints: under the exporter's tracer the sizes are tensors (the graph keeps this size)
            size = network_size(int(image.shape[-2]), int(image.shape[-1]), self.img_size, self.keep_aspect,
                                self.multiple)
            if tuple(image.shape[-2:]) != size:
                image = F.interpolate(image, size=size, mode="bilinear", align_corners=True)
        return (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)


class _FrozenBNMixin:
    """BatchNorm layers stay in eval mode (running stats frozen) even after ``train()``."""

    freeze_bn: bool = False

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        if self.freeze_bn:
            for m in self.modules():  # type: ignore[attr-defined]
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


POSITIONAL_KEYS = ("relative_position", "pos_embed", "absolute_pos_embed", "cpb_mlp", "logit_scale")


class _GroupsMixin:
    def parameter_groups(self, lr: float, encoder_lr_factor: float = 10.0, pos_enc_lr_factor: float = 10.0,
                         decoder_lr_factor: float = 1.0, same_lr: bool = False) -> List[Dict]:
        """The original's groups: encoder lr/f_enc, position tables lr/f_pos, decoder lr/f_dec, rest lr.

        A factor <= 0 freezes that group (its parameters get ``requires_grad=False``).
        """
        named = list(self.named_parameters())  # type: ignore[attr-defined]
        if same_lr:
            return [{"name": "all", "params": [p for _, p in named], "lr": lr}]
        buckets: Dict[str, List[nn.Parameter]] = {"encoder": [], "positional": [], "decoder": [], "head": []}
        for name, param in named:
            if name.startswith("core.pretrained.") and any(k in name for k in POSITIONAL_KEYS):
                buckets["positional"].append(param)
            elif name.startswith("core.pretrained."):
                buckets["encoder"].append(param)
            elif name.startswith(("core.scratch.", "core.depth_head.")):
                buckets["decoder"].append(param)
            else:
                buckets["head"].append(param)
        factors = {"encoder": encoder_lr_factor, "positional": pos_enc_lr_factor, "decoder": decoder_lr_factor,
                   "head": 1.0}
        groups = []
        for key, params in buckets.items():
            if not params:
                continue
            if factors[key] <= 0:
                for p in params:
                    p.requires_grad_(False)
                continue
            groups.append({"name": key, "params": params, "lr": lr / factors[key]})
        return groups


class RelativeDepthModel(_GroupsMixin, _FrozenBNMixin, nn.Module):
    """Stage 1: the DPT core alone, predicting affine-invariant inverse depth."""

    def __init__(self, core: DPTCore, prep: Prep) -> None:
        super().__init__()
        self.core, self.prep = core, prep

    def forward(self, image: torch.Tensor, prepped: bool = False, **_) -> ZoeDepthOutput:
        image = check_images(image)
        out = self.core(image if prepped else self.prep(image))
        return ZoeDepthOutput(None, out.relative_depth)


class ZoeDepth(_GroupsMixin, _FrozenBNMixin, nn.Module):
    """Metric depth model: ``core`` (DPT) + ``head`` (one or more domains) + ``router``."""

    def __init__(self, core: DPTCore, head: nn.Module, router: Optional[nn.Module], prep: Prep) -> None:
        super().__init__()
        self.core, self.head, self.router, self.prep = core, head, router, prep

    @property
    def domains(self) -> List[str]:
        return self.head.domain_names

    def forward(self, image: torch.Tensor, domain: Optional[torch.Tensor] = None, prepped: bool = False,
                maps: bool = True) -> ZoeDepthOutput:
        """``image`` (B,3,H,W) in [0,1]; ``domain`` (B,) head labels for labeled / trained routing.

        ``maps=False`` leaves ``bin_centers`` / ``probs`` None: in inference the bins heads then
        compute depth band by band without any full-resolution per-bin map (evaluate / predict).
        Inputs are checked by :func:`check_images` (uint8 converted; NaN / inf, empty batch refused)."""
        image = check_images(image)
        core = self.core(image if prepped else self.prep(image))
        shared = self.head.shared(core.bottleneck, core.fusion)
        batch = image.shape[0]
        names = self.domains
        if self.router is None:
            out = self.head.forward_domain(names[0], shared, core.out_conv, core.relative_depth, maps=maps)
            index = torch.zeros(batch, dtype=torch.long, device=image.device)
            return self._output(out, core.relative_depth, None, index)
        route = self.router(shared.x0, domain)
        if torch.jit.is_tracing():  # export: every head runs, each image takes its routed head's depth
            depths = torch.stack([self.head.forward_domain(n, shared, core.out_conv, core.relative_depth,
                                                           maps=maps).depth for n in names], 1)  # B, D, 1, h, w
            pick = route.index.view(-1, 1, 1, 1, 1).expand(-1, 1, *depths.shape[2:])
            return self._output(HeadOutput(depths.gather(1, pick).squeeze(1)), core.relative_depth, route.logits,
                                route.index)
        if route.weights is not None:  # soft mixture (auto router in training)
            outs = [self.head.forward_domain(n, shared, core.out_conv, core.relative_depth, maps=maps)
                    for n in names]
            depth = sum(route.weights[:, i].view(-1, 1, 1, 1) * o.depth for i, o in enumerate(outs))
            picked = self._gather(outs, route.index)
            picked.depth = depth
            return self._output(picked, core.relative_depth, route.logits, route.index)
        used = torch.unique(route.index).tolist()
        if len(used) == 1:
            out = self.head.forward_domain(names[used[0]], shared, core.out_conv, core.relative_depth, maps=maps)
        else:
            parts = {}
            for d in used:
                idx = (route.index == d).nonzero().view(-1)
                parts[d] = (idx, self.head.forward_domain(names[d], shared, core.out_conv, core.relative_depth,
                                                          idx, maps))
            out = self._combine(parts, batch)
        return self._output(out, core.relative_depth, route.logits, route.index)

    @staticmethod
    def _output(out: HeadOutput, relative, logits, index) -> ZoeDepthOutput:
        return ZoeDepthOutput(out.depth, relative, out.bin_centers, out.probs, logits, index)

    @staticmethod
    def _combine(pieces: Dict[int, Tuple[torch.Tensor, HeadOutput]], batch: int) -> HeadOutput:
        def merge(attr: str):
            items = [(idx, getattr(o, attr)) for idx, o in pieces.values()]
            if any(t is None for _, t in items):
                return None
            first = items[0][1]
            full = first.new_zeros((batch,) + tuple(first.shape[1:]))
            for idx, t in items:
                full = full.index_copy(0, idx, t)
            return full

        return HeadOutput(merge("depth"), merge("bin_centers"), merge("probs"))

    def _gather(self, outs: List[HeadOutput], index: torch.Tensor) -> HeadOutput:
        parts = {}
        for d in torch.unique(index).tolist():
            idx = (index == d).nonzero().view(-1)
            o = outs[d]
            parts[d] = (idx, HeadOutput(o.depth.index_select(0, idx),
                                        None if o.bin_centers is None else o.bin_centers.index_select(0, idx),
                                        None if o.probs is None else o.probs.index_select(0, idx)))
        return self._combine(parts, index.shape[0])


# ----------------------------------------------------------------------------------------------
# builder
# ----------------------------------------------------------------------------------------------


def _head_settings(mcfg, multi: bool) -> HeadSettings:
    h, f = mcfg.head, mcfg.faithful
    alpha, gamma = (ORIGINAL_ALPHA, ORIGINAL_GAMMA) if f.fixed_alpha_gamma else (h.attractor_alpha, h.attractor_gamma)
    n_attractors = [16, 16, 16, 16] if (multi and f.nk_sixteen_attractors) else list(h.n_attractors)
    return HeadSettings(
        bin_centers_type=h.bin_centers_type, bin_embedding_dim=h.bin_embedding_dim, seed_mlp_dim=h.seed_mlp_dim,
        projector_mlp_dim=h.projector_mlp_dim, n_attractors=n_attractors, attractor_type=h.attractor_type,
        attractor_aggregation=h.attractor_aggregation, attractor_alpha=alpha, attractor_gamma=gamma,
        discard_attractor_norm=f.discard_attractor_norm,
        min_temp=h.min_temp, max_temp=h.max_temp, clb_bottleneck_factor=h.clb_bottleneck_factor,
        use_relative_input=h.use_relative_input and not (multi and f.nk_no_relative_input),
        stirling_log_binomial=f.stirling_log_binomial, split_factor=h.split_factor, naive_hidden=h.naive_hidden,
    )


def _plain(node) -> Dict:
    """A config mapping as plain Python containers (timm wants real lists / tuples, not ListConfig)."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def build_core(mcfg, pretrained: bool = False) -> nn.Module:
    """The core ``model.decoder`` names: :class:`DPTCore` (MiDaS) or :class:`DepthAnythingCore`."""
    if mcfg.get("decoder", "midas") == "depth_anything":
        return DepthAnythingCore(
            mcfg.backbone, mcfg.features, list(mcfg.hooks) if mcfg.hooks is not None else None,
            list(mcfg.reassemble_channels) if mcfg.reassemble_channels is not None else None,
            _plain(mcfg.backbone_kwargs) if mcfg.backbone_kwargs else None, mcfg.get("pos_embed_resize", "offset"),
            pretrained,
        )
    return DPTCore(
        mcfg.backbone, list(mcfg.img_size), mcfg.features, mcfg.readout,
        list(mcfg.hooks) if mcfg.hooks is not None else None,
        list(mcfg.reassemble_channels) if mcfg.reassemble_channels is not None else None,
        _plain(mcfg.backbone_kwargs) if mcfg.backbone_kwargs else None, pretrained,
    )


def build_model(cfg, pretrained: bool = False) -> nn.Module:
    """Build the model a config describes (a full run config or its ``model`` section).

    ``stage: relative`` gives a :class:`RelativeDepthModel`; otherwise a :class:`ZoeDepth`.
    ``pretrained``: the timm backbone starts from timm's pretrained weights (a training run with
    ``model.pretrained``); otherwise every weight is randomly initialised.
    """
    from .. import accel

    stage = cfg.get("stage", "metric") if "model" in cfg else "metric"
    mcfg = cfg.model if "model" in cfg else cfg
    core = build_core(mcfg, pretrained)
    prep = Prep(mcfg.img_size, mcfg.keep_aspect_ratio, list(mcfg.mean), list(mcfg.std), mcfg.resize_input,
                getattr(core, "size_multiple", 32))
    freeze_bn = bool(cfg.optim.freeze_bn) if "optim" in cfg else False
    if stage == "relative":
        model: nn.Module = RelativeDepthModel(core, prep)
        model.freeze_bn = freeze_bn
        return accel.apply(model.train(), mcfg.speed)
    domains = [Domain(b.name, int(b.n_bins), float(b.min_depth), float(b.max_depth)) for b in mcfg.bins]
    multi = len(domains) > 1
    head = HEADS[mcfg.head.type](domains, _head_settings(mcfg, multi), mcfg.features, core.out_channels)
    router = None
    if multi:
        router = ROUTERS[mcfg.router.type](len(domains), mcfg.features, mcfg.router, mcfg.faithful.batch_vote)
    model = ZoeDepth(core, head, router, prep)
    model.freeze_bn = freeze_bn
    return accel.apply(model.train(), mcfg.speed)
