"""Samplers over a ``ConcatDataset`` of datasets.

* :class:`WeightedMixtureSampler`: training samples, dataset d with probability ∝ weight_d
  (batches may mix datasets);
* :class:`MixtureBatchSampler`: training batches, each from ONE dataset;
* :class:`ShardedEvalSampler` / :class:`ShardedEvalBatchSampler`: evaluation under DDP, every
  sample exactly once over the ranks, no padding.

Training orders are pure functions of (seed, epoch, rank); ``set_epoch`` reshuffles, and
``resume_at(epoch, position)`` makes the next pass of that epoch start at ``position`` (an exact
mid-epoch resume, see ``data_modules/resumable.py``).
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Sampler


class _Resumable:
    """A one-shot start position: the next ``__iter__`` of epoch ``epoch`` skips ``position`` items."""

    epoch: int = 0
    _resume: Optional[Tuple[int, int]] = None

    def resume_at(self, epoch: int, position: int) -> None:
        """Set the epoch, and start its next pass at item ``position`` (a sample or a batch)."""
        self.set_epoch(epoch)
        self._resume = (int(epoch), max(0, int(position)))

    def _start(self) -> int:
        """The position the pass begins at (0 unless ``resume_at`` named this epoch); used once."""
        resume, self._resume = self._resume, None
        return resume[1] if resume is not None and resume[0] == self.epoch else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class WeightedMixtureSampler(_Resumable, Sampler[int]):
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
        return iter(shard[self._start():].tolist())


def _walk(lengths: Sequence[int], weights: Sequence[float], draws: int, chunk: int,
          g: torch.Generator) -> List[List[int]]:
    """``draws`` chunks of ``chunk`` ConcatDataset indices, each chunk from one dataset (picked
    with probability ∝ weight); inside a dataset, a fresh permutation is walked with wrap-around."""
    which = torch.multinomial(torch.tensor([float(w) for w in weights]), draws, replacement=True, generator=g)
    offsets = [0]
    for n in lengths[:-1]:
        offsets.append(offsets[-1] + n)
    chunks: List[List[int]] = [[] for _ in range(draws)]
    for d, n in enumerate(lengths):
        sel = (which == d).nonzero().view(-1).tolist()
        if not sel:
            continue
        need = len(sel) * chunk
        perm = torch.randperm(n, generator=g).repeat(need // n + 1)[:need] + offsets[d]
        for j, pos in enumerate(sel):
            chunks[pos] = perm[j * chunk:(j + 1) * chunk].tolist()
    return chunks


class _EpochHandle(Sampler[int]):
    """The ``sampler`` of a batch sampler: the flattened index stream, and ``set_epoch``
    forwarded to the owner."""

    def __init__(self, owner: "MixtureBatchSampler") -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.owner) * self.owner.batch_size

    def __iter__(self) -> Iterator[int]:
        return (i for batch in self.owner for i in batch)


class MixtureBatchSampler(_Resumable, Sampler[List[int]]):
    """Batches of a ``ConcatDataset`` mixture in which every batch comes from ONE dataset.

    Each global step draws a dataset with probability ∝ weight and ``batch_size * world_size``
    of its samples (a fresh permutation walked with wrap-around); rank r takes the r-th slice of
    ``batch_size``, so ranks see disjoint samples of the same dataset at each step (as the
    original's single-domain NK batches). ``epoch_length`` samples per epoch (None = sum of
    lengths) give ``epoch_length // (batch_size * world_size)`` batches per rank. The order is a
    pure function of (seed, epoch); call ``set_epoch`` to reshuffle (Lightning does).
    """

    def __init__(self, lengths: Sequence[int], weights: Sequence[float], batch_size: int,
                 epoch_length: Optional[int] = None, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        WeightedMixtureSampler(lengths, weights, epoch_length, seed, rank, world_size)  # same argument checks
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.lengths, self.weights = list(lengths), [float(w) for w in weights]
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.total = int(epoch_length or sum(lengths))
        self.seed, self.epoch = int(seed), 0
        # Lightning calls set_epoch on ``loader.sampler`` and ``loader.batch_sampler.sampler``,
        # never on the batch sampler itself: this handle forwards the call here.
        self.sampler = _EpochHandle(self)

    def __len__(self) -> int:
        return self.total // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[List[int]]:
        start = self._start()
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        step = self.batch_size * self.world_size
        for chunk in _walk(self.lengths, self.weights, len(self), step, g)[start:]:
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Contiguous block of ``range(n)`` for ``rank``: blocks differ in size by at most one, the
    first ``n % world_size`` ranks take the extra sample; nothing is padded or repeated."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


class ShardedEvalSampler(Sampler[int]):
    """Evaluation sampler for DDP: rank r gets its own contiguous block of the indices, in
    order, with no padding or duplication, so every sample is evaluated exactly once over all
    ranks (``DistributedSampler`` pads by repeating samples). Ranks may differ by one sample."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = shard_range(int(n), rank, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class ShardedEvalBatchSampler(Sampler[List[int]]):
    """Evaluation batches over a ``ConcatDataset`` of datasets with ``lengths``: each dataset is
    sharded over the ranks like :class:`ShardedEvalSampler` and cut into batches of at most
    ``batch_size`` that never cross a dataset boundary (so images of different sizes are never
    stacked). Every sample appears exactly once over all ranks; nothing is padded."""

    def __init__(self, lengths: Sequence[int], batch_size: int = 1, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batches: List[List[int]] = []
        offset = 0
        for n in lengths:
            part = [offset + i for i in shard_range(int(n), rank, world_size)]
            self.batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
            offset += int(n)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[List[int]]:
        return iter([list(b) for b in self.batches])
