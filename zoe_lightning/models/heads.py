"""Metric heads, chosen by ``model.head.type`` from the :data:`HEADS` registry.

Every head serves one or more *domains* (bin configurations). Work shared by all domains
(bottleneck conv, embeddings of every decoder level) runs once per batch in :meth:`shared`;
:meth:`forward_domain` runs one domain's modules on the images routed to it.

* ``metric_bins``  seed bins -> one attractor layer per decoder level -> conditional log-binomial
* ``splitter``     LocalBins-style: seed bins split by ``split_factor`` at every level
* ``naive``        a plain regression head on the decoder output (Table 5, first row)
* ``da2_metric``   Depth Anything V2's metric head: 1x1 conv on the decoder's 32-channel output,
                   sigmoid, times the domain's ``max_depth`` (no bins, no relative-depth input)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bins import AttractorLayer, ConditionalLogBinomial, Projector, SeedBinRegressor, Splitter

__all__ = ["HEADS", "register_head", "HeadOutput", "SharedFeatures", "MetricHead", "HeadSettings"]


@dataclass
class HeadOutput:
    depth: torch.Tensor  # (b,1,H,W) metres
    bin_centers: Optional[torch.Tensor] = None  # (b,N,H,W)
    probs: Optional[torch.Tensor] = None  # (b,N,H,W)


@dataclass
class SharedFeatures:
    x0: Optional[torch.Tensor]  # bottleneck after conv2 (router input)
    seed_embedding: Optional[torch.Tensor] = None
    embeddings: Optional[List[torch.Tensor]] = None


@dataclass
class Domain:
    name: str
    n_bins: int
    min_depth: float
    max_depth: float


@dataclass
class HeadSettings:
    """Resolved head hyper-parameters (``model.head`` with the faithful switches applied; the
    config schema holds the defaults: build one with ``zoedepth.head_settings``)."""

    bin_centers_type: str
    bin_embedding_dim: int
    seed_mlp_dim: int
    projector_mlp_dim: int
    n_attractors: Sequence[int]
    attractor_type: str
    attractor_aggregation: str
    attractor_alpha: float
    attractor_gamma: float
    discard_attractor_norm: bool
    min_temp: float
    max_temp: float
    clb_bottleneck_factor: int
    use_relative_input: bool
    stirling_log_binomial: bool
    split_factor: int
    naive_hidden: int


HEADS: Dict[str, Callable[..., "MetricHead"]] = {}


def register_head(name: str):
    def wrap(cls):
        if name in HEADS:
            raise KeyError(f"head '{name}' is registered twice")
        HEADS[name] = cls
        return cls

    return wrap


def _up(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _select(x: Optional[torch.Tensor], index: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return x if x is None or index is None else x.index_select(0, index)


class MetricHead(nn.Module):
    """Base: owns the shared bottleneck conv (``conv2``) and the domain list."""

    def __init__(self, domains: Sequence[Domain], settings: HeadSettings, features: int, out_channels: int,
                 needs_bottleneck: bool = True) -> None:
        super().__init__()
        self.domains = list(domains)
        self.domain_by_name = {d.name: d for d in self.domains}
        self.settings = settings
        self.in_channels = out_channels + (1 if settings.use_relative_input else 0)
        self.conv2 = nn.Conv2d(features, features, 1) if needs_bottleneck or len(domains) > 1 else None

    @property
    def domain_names(self) -> List[str]:
        return [d.name for d in self.domains]

    def shared(self, bottleneck: torch.Tensor, fusion: List[torch.Tensor]) -> SharedFeatures:
        """Work shared by every domain; this base ignores ``fusion``."""
        return SharedFeatures(self.conv2(bottleneck) if self.conv2 is not None else None)

    def final_features(self, out_conv: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        if not self.settings.use_relative_input:
            return out_conv
        return torch.cat([out_conv, _up(relative, out_conv.shape[-2:])], dim=1)

    # Every registered head defines
    #   forward_domain(name, shared, out_conv, relative, index=None, maps=True) -> HeadOutput
    # running domain ``name`` on the images ``index`` of the batch (all images when None);
    # ``maps=False``: only depth is needed (bin centres / probabilities may be left None).


class _BinsHead(MetricHead):
    """Shared seed projector and per-level projectors, as in ZoeDepth (N and NK)."""

    def __init__(self, domains, settings, features, out_channels) -> None:
        super().__init__(domains, settings, features, out_channels)
        e = settings.bin_embedding_dim
        self.seed_projector = Projector(features, e, settings.projector_mlp_dim)
        self.projectors = nn.ModuleList([Projector(features, e, settings.projector_mlp_dim) for _ in range(4)])
        self.conditional_log_binomial = nn.ModuleDict({
            d.name: ConditionalLogBinomial(
                self.in_channels, e, d.n_bins, settings.clb_bottleneck_factor, settings.min_temp,
                settings.max_temp, settings.stirling_log_binomial,
            )
            for d in self.domains
        })

    def shared(self, bottleneck, fusion) -> SharedFeatures:
        x0 = self.conv2(bottleneck)
        return SharedFeatures(x0, self.seed_projector(x0), [p(f) for p, f in zip(self.projectors, fusion)])

    def _finish(self, name, last_embedding, centers, out_conv, relative, index, maps) -> HeadOutput:
        feats = [_select(out_conv, index)]
        if self.settings.use_relative_input:
            feats.append(_select(relative, index))
        depth, probs, centers = self.conditional_log_binomial[name].expected_depth(feats, last_embedding, centers,
                                                                                   maps)
        return HeadOutput(depth, centers, probs)


@register_head("metric_bins")
class MetricBinsHead(_BinsHead):
    """The metric bins module: seed bins refined by attractors at each decoder level."""

    def __init__(self, domains, settings, features, out_channels) -> None:
        super().__init__(domains, settings, features, out_channels)
        kind = settings.bin_centers_type
        self.seed_normed = kind in ("normed", "hybrid1")
        self.attractor_normed = kind in ("normed", "hybrid2")
        e = settings.bin_embedding_dim
        self.seed_bin_regressors = nn.ModuleDict({
            d.name: SeedBinRegressor(features, d.n_bins, settings.seed_mlp_dim, d.min_depth, d.max_depth,
                                     self.seed_normed)
            for d in self.domains
        })
        self.attractors = nn.ModuleDict({
            d.name: nn.ModuleList([
                AttractorLayer(
                    e, n, e, d.min_depth, d.max_depth, self.attractor_normed, settings.attractor_type,
                    settings.attractor_aggregation, settings.attractor_alpha, settings.attractor_gamma,
                    settings.discard_attractor_norm,
                )
                for n in settings.n_attractors
            ])
            for d in self.domains
        })

    def forward_domain(self, name, shared, out_conv, relative, index=None, maps=True) -> HeadOutput:
        domain = self.domain_by_name[name]
        seed = self.seed_bin_regressors[name](_select(shared.x0, index))
        prev = (seed - domain.min_depth) / (domain.max_depth - domain.min_depth) if self.attractor_normed else seed
        prev_embedding = _select(shared.seed_embedding, index)
        centers = seed
        for layer, embedding in zip(self.attractors[name], shared.embeddings):
            embedding = _select(embedding, index)
            prev, centers = layer(embedding, prev, prev_embedding)
            prev_embedding = embedding
        return self._finish(name, prev_embedding, centers, out_conv, relative, index, maps)


@register_head("splitter")
class SplitterHead(_BinsHead):
    """LocalBins-style: seed of ``n_bins / split^4`` normed bins, split at each decoder level."""

    def __init__(self, domains, settings, features, out_channels) -> None:
        super().__init__(domains, settings, features, out_channels)
        split, e = settings.split_factor, settings.bin_embedding_dim
        self.seed_bins = {}
        for d in self.domains:
            seed_bins, rem = divmod(d.n_bins, split ** 4)
            if rem or seed_bins < 1:
                raise ValueError(f"splitter head: n_bins={d.n_bins} of '{d.name}' must be a multiple of "
                                 f"split_factor^4={split ** 4}")
            self.seed_bins[d.name] = seed_bins
        self.seed_bin_regressors = nn.ModuleDict({
            d.name: SeedBinRegressor(features, self.seed_bins[d.name], settings.seed_mlp_dim, d.min_depth,
                                     d.max_depth, normed=True)
            for d in self.domains
        })
        self.splitters = nn.ModuleDict({
            d.name: nn.ModuleList([
                Splitter(e, self.seed_bins[d.name] * split ** i, split, e, d.min_depth, d.max_depth)
                for i in range(4)
            ])
            for d in self.domains
        })

    def forward_domain(self, name, shared, out_conv, relative, index=None, maps=True) -> HeadOutput:
        raw = self.seed_bin_regressors[name]._net(_select(shared.x0, index)) + 1e-3
        widths = raw / raw.sum(dim=1, keepdim=True)
        prev_embedding = _select(shared.seed_embedding, index)
        centers = None
        for layer, embedding in zip(self.splitters[name], shared.embeddings):
            embedding = _select(embedding, index)
            widths, centers = layer(embedding, widths, prev_embedding)
            prev_embedding = embedding
        return self._finish(name, prev_embedding, centers, out_conv, relative, index, maps)


@register_head("naive")
class NaiveHead(MetricHead):
    """Direct regression: conv3x3 -> ReLU -> conv1x1 -> softplus on the decoder output."""

    def __init__(self, domains, settings, features, out_channels) -> None:
        super().__init__(domains, settings, features, out_channels, needs_bottleneck=False)
        h = settings.naive_hidden
        self.regressors = nn.ModuleDict({
            d.name: nn.Sequential(
                nn.Conv2d(self.in_channels, h, 3, padding=1), nn.ReLU(True), nn.Conv2d(h, 1, 1), nn.Softplus()
            )
            for d in self.domains
        })

    def forward_domain(self, name, shared, out_conv, relative, index=None, maps=True) -> HeadOutput:
        feats = self.final_features(_select(out_conv, index), _select(relative, index))
        return HeadOutput(self.regressors[name](feats))


@register_head("da2_metric")
class DA2MetricHead(MetricHead):
    """Depth Anything V2 metric: ``sigmoid(conv1x1(out_conv)) * max_depth``.

    In the original the 1x1 conv is the last conv of ``output_conv2`` with the ReLU replaced by a
    sigmoid; here it is the head's own (``regressors.<domain>``), so the core keeps its relative
    output. Depth lies in (0, max_depth).
    """

    def __init__(self, domains, settings, features, out_channels) -> None:
        super().__init__(domains, settings, features, out_channels, needs_bottleneck=False)
        self.regressors = nn.ModuleDict({d.name: nn.Conv2d(out_channels, 1, 1) for d in self.domains})

    def forward_domain(self, name, shared, out_conv, relative, index=None, maps=True) -> HeadOutput:
        depth = torch.sigmoid(self.regressors[name](_select(out_conv, index)))
        return HeadOutput(depth * self.domain_by_name[name].max_depth)
