"""The evaluation DataModule: one test loader per dataset, sharded over the processes.

Each dataset is scored with its own protocol (:class:`EvalSet`: evaluation range, crop, domain);
``MetricDepthModule.test_step`` reads these from ``trainer.datamodule.sets`` (its
``dataloader_idx`` is the position in that list). Sharding is a strided split without padding
(:class:`ShardSampler`): under DDP every sample is scored exactly once, so the synced metrics equal
a single process's. File datasets get the evaluation transform without any resize: the paper's
protocol scores the ground truth at its native resolution, after the dataset's own crop (KITTI's
KB crop). Batches group samples of one size, so datasets with mixed sizes work at any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from zoe_lightning.errors import UserError

__all__ = ["EvalSet", "eval_set", "shard_indices", "ShardSampler", "collate_groups", "dataset_entries",
           "EvalDataModule"]

BATCH_KEYS = ("image", "depth", "valid", "index")


@dataclass
class EvalSet:
    """A dataset and the protocol it is scored with (``name`` is unique among the sets)."""

    name: str
    dataset: Dataset
    min_depth: float
    max_depth: float
    crop: Optional[str]
    domain: Optional[str]


def _unwrap(ds) -> Any:
    """The innermost dataset (through ``.dataset`` wrappers such as the domain-label one)."""
    seen = 0
    while hasattr(ds, "dataset") and seen < 8:
        ds = ds.dataset
        seen += 1
    return ds


def _attr(ds, name: str, default=None):
    for candidate in (ds, _unwrap(ds)):
        if hasattr(candidate, name):
            return getattr(candidate, name)
    return default


def eval_set(name: str, dataset: Dataset, crop: str = "auto", domain: Optional[str] = None) -> EvalSet:
    """The :class:`EvalSet` of ``dataset``: range and protocol crop from the dataset's attributes
    (``min_depth``, ``max_depth``, ``eval_crop``, ``domain``; else its first sample); ``crop`` is
    ``auto`` (the dataset's own), ``none`` or a crop name; ``domain`` overrides the dataset's."""
    from zoe_lightning.evaluation.protocol import resolve_crop

    if len(dataset) == 0:
        raise UserError(f"dataset '{name}' has no samples (check its root, split and split_file)")
    lo, hi = _attr(dataset, "min_depth", None), _attr(dataset, "max_depth", None)
    if lo is None or hi is None:
        sample = dataset[0]
        lo, hi = float(sample["min_depth"]), float(sample["max_depth"])
    if not domain:
        domain = _attr(dataset, "domain", None)
        if domain is None:
            domain = dataset[0].get("domain")
    return EvalSet(name, dataset, float(lo), float(hi), resolve_crop(crop, _attr(dataset, "eval_crop", None)),
                   None if domain is None else str(domain))


def shard_indices(n: int, rank: int, world: int) -> List[int]:
    """Indices of rank ``rank`` among ``world``: a strided split, every index exactly once, no padding."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad rank {rank} of world {world}")
    return list(range(rank, n, world))


class ShardSampler(DistributedSampler):
    """This rank's :func:`shard_indices` in order (a ``DistributedSampler``, so Lightning keeps it)."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.indices = shard_indices(len(dataset), rank, num_replicas)
        self.num_samples = len(self.indices)
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Indexed(Dataset):
    """Adds ``index`` (the sample's position in its dataset) to every sample."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return dict(self.dataset[i], index=i)


def collate_groups(samples: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A batch as a list of collated groups, one per (image size, depth size): samples of one
    size are stacked and run together."""
    groups: Dict[tuple, List[int]] = {}
    for j, s in enumerate(samples):
        groups.setdefault((tuple(s["image"].shape), tuple(s["depth"].shape)), []).append(j)
    return [default_collate([{k: samples[j][k] for k in BATCH_KEYS if k in samples[j]} for j in members])
            for members in groups.values()]


def dataset_entries(cfg, names: Optional[Sequence[str]], data_root: Optional[str] = None) -> List[Any]:
    """``data.val`` entries, or the named registry datasets (options from same-named config
    entries). ``data_root``: file datasets without a ``root`` option get ``<data_root>/<name>``."""
    if names:
        known = {e.name: e for e in list(cfg.data.val) + list(cfg.data.train)}
        entries = [known[n] if n in known else
                   OmegaConf.create({"name": n, "weight": 1.0, "domain": None, "options": {}}) for n in names]
    else:
        entries = list(cfg.data.val)
    out = []
    for e in entries:
        e = OmegaConf.create(OmegaConf.to_container(e, resolve=True))
        if data_root and not str(e.name).startswith("synthetic") and "root" not in e.options:
            e.options["root"] = str(Path(data_root) / str(e.name))
        out.append(e)
    return out


class EvalDataModule(L.LightningDataModule):
    """Test (and predict) loaders over evaluation sets.

    Either ``sets`` (ready :class:`EvalSet` objects), or ``cfg`` + ``entries``: the datasets of
    config entries (see :func:`dataset_entries`), built in :meth:`setup` by
    :meth:`~data_modules.datamodule.DepthDataModule.build_sets` for ``split`` (an entry's own
    ``split`` option wins). ``domains``: the model's heads; ``domain`` overrides every set's
    domain; ``crop``: ``auto`` (each dataset's protocol crop), ``none`` or a crop name.
    """

    def __init__(self, sets: Optional[Sequence[EvalSet]] = None, *, cfg=None, entries: Sequence[Any] = (),
                 split: str = "test", domains: Sequence[str] = (), domain: Optional[str] = None,
                 crop: str = "auto", batch_size: int = 1, num_workers: int = 0) -> None:
        super().__init__()
        if sets is None and cfg is None:
            raise ValueError("EvalDataModule needs sets or a config")
        self.sets: List[EvalSet] = list(sets or [])
        self.cfg, self.entries, self.split = cfg, list(entries), split
        self.domains, self.domain, self.crop = list(domains), domain, crop
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        # a rank may hold no sample of a small set: evaluation has no per-batch collectives
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.sets:
            self.sets = self._build()
        if not self.sets:
            raise UserError("no dataset to evaluate: data.val is empty and --datasets was not given")
        world = self._world()[1]
        if max(len(s.dataset) for s in self.sets) < world:
            raise UserError(f"every dataset has fewer samples than the {world} processes: evaluate with fewer")

    def _build(self) -> List[EvalSet]:
        from .datamodule import DepthDataModule
        from .transforms import build_transform

        dm = DepthDataModule(self.cfg.data, self.domains)
        out: List[EvalSet] = []
        for entry in self.entries:
            options = dict(OmegaConf.to_container(entry.options, resolve=True)) if entry.options is not None else {}
            entry_split = str(options.pop("split", self.split))
            clean = OmegaConf.create({"name": entry.name, "weight": float(entry.weight), "domain": entry.domain,
                                      "options": options})
            try:
                ds = dm.build_sets([clean], entry_split)[0]
            except (ValueError, TypeError, KeyError) as exc:
                raise UserError(f"dataset '{entry.name}' (split {entry_split}): {exc}") from None
            inner = _unwrap(ds)
            if hasattr(inner, "load_raw") and getattr(inner, "transform", None) is not None:
                inner.transform = build_transform("eval", inner, resize="none")
            name = str(_attr(ds, "name", None) or entry.name)
            key, k = name, 2
            while key in {s.name for s in out}:
                key, k = f"{name}#{k}", k + 1
            out.append(eval_set(key, ds, self.crop, self.domain or (str(entry.domain) if entry.domain else None)))
        return out

    def _world(self):
        trainer = self.trainer
        return (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))

    def test_dataloader(self) -> List[DataLoader]:
        rank, world = self._world()
        return [DataLoader(_Indexed(s.dataset), batch_size=self.batch_size,
                           sampler=ShardSampler(s.dataset, world, rank), num_workers=self.num_workers,
                           collate_fn=collate_groups) for s in self.sets]

    def predict_dataloader(self) -> List[DataLoader]:
        return self.test_dataloader()
