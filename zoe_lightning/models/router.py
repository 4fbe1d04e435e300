"""Routers: which metric head serves which image (ZoeDepth-NK, paper Table 6).

* ``labeled``  the domain label picks the head, in training and inference (needs labels).
* ``trained``  patch transformer + MLP classifier on the bottleneck, trained with a domain
               cross-entropy; routes by prediction at inference (by label or prediction in
               training, ``train_route``).
* ``auto``     the same classifier, trained only through the depth loss: in training the heads'
               depths are mixed with softmax(logits / T) weights; inference routes by argmax.

Routing is per image; ``batch_vote=True`` reproduces the original's single decision per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

__all__ = ["ROUTERS", "register_router", "Route", "PatchTransformerEncoder"]


@dataclass
class Route:
    index: torch.Tensor  # (B,) long: head index per image
    logits: Optional[torch.Tensor] = None  # (B, n_domains)
    weights: Optional[torch.Tensor] = None  # (B, n_domains) soft mixture (auto router, training)


ROUTERS: Dict[str, Callable[..., nn.Module]] = {}


def register_router(name: str):
    def wrap(cls):
        ROUTERS[name] = cls
        return cls

    return wrap


def sinusoidal_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """(length, dim): sines of all frequencies, then cosines (the original's layout)."""
    position = torch.arange(length, device=device, dtype=dtype).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=dtype) * (-math.log(10000.0) / dim))
    angles = position * freq
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class PatchTransformerEncoder(nn.Module):
    """1x1 patch embedding, a zero class token, 1-D sinusoidal positions, transformer encoder."""

    def __init__(self, in_channels: int, dim: int = 128, n_layers: int = 4, n_heads: int = 4,
                 ffn_dim: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, n_heads, dim_feedforward=ffn_dim, dropout=dropout)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)
        self.embedding_convPxP = nn.Conv2d(in_channels, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embedding_convPxP(x).flatten(2)  # B, E, S
        tokens = nn.functional.pad(tokens, (1, 0)).permute(2, 0, 1)  # S+1, B, E (zero class token)
        tokens = tokens + sinusoidal_positions(tokens.shape[0], tokens.shape[2], x.device, x.dtype).unsqueeze(1)
        return self.transformer_encoder(tokens)


class _Router(nn.Module):
    needs_labels = False  # True: routing needs the domain labels, in inference too

    def __init__(self, n_domains: int, in_channels: int, cfg, batch_vote: bool = False) -> None:
        super().__init__()
        self.n_domains, self.batch_vote = n_domains, batch_vote
        self.cfg = cfg

    def _decide(self, logits: torch.Tensor) -> torch.Tensor:
        if self.batch_vote:
            vote = torch.softmax(logits.sum(dim=0), dim=-1).argmax()
            return vote.expand(logits.shape[0]).clone()
        return logits.argmax(dim=1)

    @staticmethod
    def _check_labels(labels: Optional[torch.Tensor], batch: int, n: int, who: str) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"router '{who}' needs domain labels (pass domain=... to the model)")
        labels = torch.as_tensor(labels).long().view(-1)
        if labels.numel() != batch or (labels.numel() and (labels.min() < 0 or labels.max() >= n)):
            raise ValueError(f"router '{who}': domain labels {labels.tolist()} must be {batch} values in [0, {n})")
        return labels


@register_router("labeled")
class LabeledRouter(_Router):
    needs_labels = True

    def forward(self, x0: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Route:
        return Route(self._check_labels(labels, x0.shape[0], self.n_domains, "labeled").to(x0.device))


class _ClassifierRouter(_Router):
    def __init__(self, n_domains: int, in_channels: int, cfg, batch_vote: bool = False) -> None:
        super().__init__(n_domains, in_channels, cfg, batch_vote)
        self.patch_transformer = PatchTransformerEncoder(
            in_channels, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.dropout
        )
        self.mlp_classifier = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.ReLU(True), nn.Linear(cfg.dim, n_domains))

    def logits(self, x0: torch.Tensor) -> torch.Tensor:
        return self.mlp_classifier(self.patch_transformer(x0)[0])


@register_router("trained")
class TrainedRouter(_ClassifierRouter):
    def forward(self, x0: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Route:
        logits = self.logits(x0)
        if self.training and self.cfg.train_route == "label" and labels is not None:
            index = self._check_labels(labels, x0.shape[0], self.n_domains, "trained").to(x0.device)
        else:
            index = self._decide(logits)
        return Route(index, logits)


@register_router("auto")
class AutoRouter(_ClassifierRouter):
    def forward(self, x0: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Route:
        logits = self.logits(x0)
        weights = torch.softmax(logits / self.cfg.auto_temperature, dim=1) if self.training else None
        return Route(self._decide(logits), logits, weights)
