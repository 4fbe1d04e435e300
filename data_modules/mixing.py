"""Weighted sampling over a concatenation of datasets, deterministic per (seed, epoch)."""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence

import torch
from torch.utils.data import Sampler


class WeightedMixtureSampler(Sampler[int]):
    """Draw ``epoch_length`` indices of a ``ConcatDataset``: dataset d with probability ∝ weight_d,
    uniformly inside it. The order is a pure function of (seed, epoch, rank) — resumable, and every
    epoch is reshuffled (``set_epoch``, called by Lightning) — and DDP ranks get disjoint shards.
    """

    def __init__(self, lengths: Sequence[int], weights: Sequence[float], epoch_length: Optional[int] = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if len(lengths) != len(weights) or not lengths:
            raise ValueError("need one weight per dataset")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"dataset weights must be >= 0 with a positive sum, got {list(weights)}")
        if any(n == 0 for n in lengths):
            raise ValueError(f"a dataset of the mixture is empty (lengths {list(lengths)})")
        self.lengths, self.weights = list(lengths), [float(w) for w in weights]
        self.total = int(epoch_length or sum(lengths))
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.offsets: List[int] = [0]
        for n in self.lengths[:-1]:
            self.offsets.append(self.offsets[-1] + n)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.total // self.world_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        which = torch.multinomial(torch.tensor(self.weights), self.total, replacement=True, generator=g)
        index = torch.empty(self.total, dtype=torch.long)
        for d, n in enumerate(self.lengths):
            sel = (which == d).nonzero().view(-1)
            if len(sel):
                # walk a fresh permutation of dataset d (with wrap-around) rather than i.i.d. draws
                perm = torch.randperm(n, generator=g).repeat(len(sel) // n + 1)[: len(sel)]
                index[sel] = perm + self.offsets[d]
        shard = index[self.rank: len(self) * self.world_size: self.world_size]
        return iter(shard.tolist())
