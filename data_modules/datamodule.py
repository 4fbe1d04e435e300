"""``DepthDataModule``: the training mixture and validation sets named in ``cfg.data``.

Every dataset returns the project's sample dict; a ``domain_label`` (index of the sample's domain
among the model's heads) is added here so the model and the router can use it.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import lightning as L
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from .datasets import build_dataset
from .mixing import WeightedMixtureSampler


class _WithDomainLabel(Dataset):
    def __init__(self, dataset: Dataset, domains: Sequence[str], override: Optional[str]) -> None:
        self.dataset, self.domains, self.override = dataset, list(domains), override

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        if self.override:
            sample["domain"] = self.override
        domain = sample.get("domain")
        sample["domain_label"] = self.domains.index(domain) if domain in self.domains else -1
        return sample


class DepthDataModule(L.LightningDataModule):
    def __init__(self, data_cfg, domains: Sequence[str]) -> None:
        super().__init__()
        self.cfg, self.domains = data_cfg, list(domains)
        self.train_sets: List[Dataset] = []
        self.val_sets: List[Dataset] = []

    def _build(self, entries, split: str) -> List[Dataset]:
        sets = []
        for entry in entries:
            options: Dict = dict(entry.options)
            if self.cfg.image_size is not None and entry.name.startswith("synthetic"):
                options.setdefault("image_size", list(self.cfg.image_size))
            if entry.name.startswith("synthetic"):
                options.setdefault("seed", self.cfg.seed)
            sets.append(_WithDomainLabel(build_dataset(entry.name, split, **options), self.domains, entry.domain))
        return sets

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.train_sets and stage in (None, "fit"):
            self.train_sets = self._build(self.cfg.train, "train")
        if not self.val_sets:
            self.val_sets = self._build(self.cfg.val, "val")

    def _per_device(self, global_batch: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if global_batch % world:
            raise ValueError(f"data.batch_size={global_batch} is not divisible by the {world} devices")
        return global_batch // world

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = WeightedMixtureSampler(
            [len(d) for d in self.train_sets], [e.weight for e in self.cfg.train], self.cfg.epoch_length,
            seed=self.cfg.seed, rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1,
        )
        return DataLoader(
            ConcatDataset(self.train_sets), batch_size=self._per_device(self.cfg.batch_size), sampler=sampler,
            num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0, drop_last=True,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ConcatDataset(self.val_sets), batch_size=self.cfg.val_batch_size, shuffle=False,
                          num_workers=self.cfg.num_workers, persistent_workers=self.cfg.num_workers > 0)
