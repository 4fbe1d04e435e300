"""Lightning data modules: the training mixture and the evaluation sets named in ``cfg.data``.

One implementation, :class:`DepthDataModule`; :class:`MetricDataModule` (stage 2: NYU, KITTI or
both, plus any evaluation sets) and :class:`RelativeDataModule` (stage 1: a mixture of up to 12
sets) only change how ``data.source=synthetic`` replaces real entries. Every list accepts
synthetic, real and custom (``folder``) datasets side by side.

* Real (file) datasets get the albumentations transform of ``data_modules/transforms.py`` in the
  loader workers (train: the original's augmentation; eval: crops + resize policy); synthetic
  sets are rendered at ``data.image_size`` and augmented on the device by the module.
* ``data.batching``: ``mixed`` (samples of all datasets in one batch; needs one image size),
  ``per_dataset`` (every batch from one dataset, the original's single-domain NK batches) or
  ``auto`` (``mixed`` when the transforms force one training size, else ``per_dataset``).
* Training order: a pure function of (seed, epoch, rank), reshuffled every epoch via
  ``set_epoch``; ranks draw disjoint samples. The training loader's position (epoch, batches
  trained on) is saved in checkpoints and restored on resume (``data_modules/resumable.py``).
  Evaluation: each set sharded over the ranks without padding or duplication, batches never
  cross a dataset boundary.
* A ``domain_label`` (index of the sample's domain among the model's heads, -1 if none) and an
  ``augmented`` flag (True when the loader already applied flip + colour jitter) are added.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from zoe_lightning.errors import UserError

from .collate import collate_samples
from .datasets import READER_CLASSES, build_dataset
from .mixing import MixtureBatchSampler, ShardedEvalBatchSampler, WeightedMixtureSampler
from .resumable import ResumableLoader
from .transforms import build_transform

__all__ = ["DepthDataModule", "MetricDataModule", "RelativeDataModule", "synthetic_counterpart",
           "dataset_domain", "build_datamodule"]

TRANSFORM_KEYS = ("image_size", "resize", "augment", "random_crop", "rotate_degrees", "depth_interpolation")


def _is_synthetic(name: str) -> bool:
    return name.startswith("synthetic")


def dataset_domain(name: str, domain: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> str:
    """The domain ("nyu" indoor / "kitti" outdoor) of a dataset entry: the entry's ``domain``,
    else its ``options.domain``, else the domain its reader class declares (indoor if unknown)."""
    if domain:
        return str(domain)
    if options and options.get("domain"):
        return str(options["domain"])
    cls = READER_CLASSES.get(name)
    return str(getattr(cls, "domain", None) or "nyu")


def synthetic_counterpart(name: str, options: Dict[str, Any], domain: Optional[str], position: int,
                          relative: bool) -> Tuple[str, Dict[str, Any]]:
    """(name, options) of the synthetic dataset that replaces an entry under ``data.source=synthetic``.

    Metric stage: domain ``nyu`` -> ``synthetic_indoor``, ``kitti`` -> ``synthetic_outdoor``.
    Relative stage: the entry at ``position`` -> ``synthetic_style<position>`` (outdoor scenes
    for outdoor sets). Synthetic entries stay as they are; of the options only ``length`` and
    ``seed`` carry over (a real reader's ``root`` etc. mean nothing to the generator).
    """
    if _is_synthetic(name):
        return name, dict(options)
    kept = {k: options[k] for k in ("length", "seed") if k in options}
    dom = dataset_domain(name, domain, options)
    if relative:
        if dom == "kitti":
            kept["domain"] = "kitti"
        return f"synthetic_style{position}", kept
    return ("synthetic_outdoor" if dom == "kitti" else "synthetic_indoor"), kept


class _WithDomainLabel(Dataset):
    def __init__(self, dataset: Dataset, domains: Sequence[str], override: Optional[str],
                 augmented: bool = False) -> None:
        self.dataset, self.domains, self.override, self.augmented = dataset, list(domains), override, augmented

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        if self.override:
            sample["domain"] = self.override
        domain = sample.get("domain")
        sample["domain_label"] = self.domains.index(domain) if domain in self.domains else -1
        sample["augmented"] = self.augmented
        return sample


def _cfg(data_cfg: Any, key: str, default: Any) -> Any:
    value = data_cfg.get(key, default) if hasattr(data_cfg, "get") else getattr(data_cfg, key, default)
    return default if value is None and default is not None else value


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class DepthDataModule(L.LightningDataModule):
    """``data_cfg`` is the run's ``data`` section; ``domains`` are the model's head names."""

    relative = False  # how data.source=synthetic replaces real entries (see synthetic_counterpart)

    def __init__(self, data_cfg, domains: Sequence[str]) -> None:
        super().__init__()
        self.cfg, self.domains = data_cfg, list(domains)
        self.train_sets: List[Dataset] = []
        self.val_sets: List[Dataset] = []
        self.source = _cfg(data_cfg, "source", "real")  # validated with the config (zoe_lightning.config)
        self._train_loader: Optional[ResumableLoader] = None
        self._train_position: Optional[Dict[str, int]] = None  # from a checkpoint, for the next loader

    # ------------------------------------------------------------------ building
    def _transform_options(self) -> Dict[str, Any]:
        opts = {k: _plain(_cfg(self.cfg, k, None)) for k in TRANSFORM_KEYS}
        return {k: v for k, v in opts.items() if v is not None}

    def resolve_entry(self, entry, position: int) -> Tuple[str, Dict[str, Any]]:
        """(reader name, options) actually built for a config entry (after ``data.source``)."""
        name, options = str(entry.name), dict(_plain(entry.options) or {})
        if self.source == "synthetic":
            name, options = synthetic_counterpart(name, options, entry.domain, position, self.relative)
        return name, options

    def build_sets(self, entries, split: str) -> List[Dataset]:
        """The datasets of config ``entries`` for ``split``, with this module's transforms and
        domain labels (one per entry, in order)."""
        sets = []
        for position, entry in enumerate(entries):
            name, options = self.resolve_entry(entry, position)
            augmented = False
            if _is_synthetic(name):
                if _cfg(self.cfg, "image_size", None) is not None:
                    options.setdefault("image_size", list(_plain(self.cfg.image_size)))
                options.setdefault("seed", _cfg(self.cfg, "seed", 43))
                dataset = build_dataset(name, split, **options)
            else:
                dataset = build_dataset(name, split, **options)
                if hasattr(dataset, "transform") and hasattr(dataset, "load_raw"):
                    if "transform" not in options:  # an entry's own `transform:` option wins
                        kind = "train" if split == "train" else "eval"
                        dataset.transform = build_transform(kind, dataset, **self._transform_options())
                    augmented = bool(getattr(dataset.transform, "augment", False))
            sets.append(_WithDomainLabel(dataset, self.domains, entry.domain, augmented))
        return sets

    def setup(self, stage: Optional[str] = None) -> None:
        if not self.train_sets and stage in (None, "fit"):
            self.train_sets = self.build_sets(self.cfg.train, "train")
            self._report(self.train_sets, "train")
        if not self.val_sets:
            self.val_sets = self.build_sets(self.cfg.val, "val")
            self._report(self.val_sets, "val")

    @staticmethod
    def _report(sets: Sequence[Dataset], split: str) -> None:
        """Log once what the readers counted while indexing (skipped files, bad pixels, ...); a set
        with nothing to report stays quiet (training's data probe prints every set's size)."""
        for wrapped in sets:
            ds = getattr(wrapped, "dataset", wrapped)
            counters = getattr(ds, "stats", None) or getattr(ds, "counters", None)
            name = getattr(ds, "name", None) or getattr(ds, "dataset_name", type(ds).__name__)
            nonzero = {k: v for k, v in dict(counters or {}).items() if v}
            if nonzero:
                details = ", ".join(f"{k}={v}" for k, v in nonzero.items())
                rank_zero_info(f"data: {split} set {name}: {len(ds)} samples ({details})")

    # ------------------------------------------------------------------ loaders
    def _world(self) -> Tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _per_device(self, global_batch: int) -> int:
        world = self._world()[1]
        if global_batch % world:
            raise ValueError(f"data.batch_size={global_batch} is not divisible by the {world} devices")
        return global_batch // world

    def batching(self) -> str:
        """``mixed`` or ``per_dataset`` (``auto`` resolved, see the module docstring)."""
        mode = _cfg(self.cfg, "batching", "auto")
        if mode not in ("auto", "mixed", "per_dataset"):
            raise ValueError(f"data.batching must be auto, mixed or per_dataset, got {mode!r}")
        if mode != "auto":
            return mode
        uniform = _cfg(self.cfg, "image_size", None) is not None and _cfg(self.cfg, "resize", "squash") in (
            "squash", "pad")
        return "mixed" if uniform else "per_dataset"

    def _loader_kwargs(self) -> Dict[str, Any]:
        workers = int(_cfg(self.cfg, "num_workers", 0))
        return dict(num_workers=workers, persistent_workers=workers > 0, collate_fn=collate_samples)

    def _train_progress(self) -> Optional[Tuple[int, int]]:
        """(batches trained on in this epoch, batches per epoch) from the trainer's counters, or
        None outside a fit."""
        trainer = self.trainer
        if trainer is None or getattr(trainer, "fit_loop", None) is None:
            return None
        per_epoch = trainer.num_training_batches
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return int(done), (int(per_epoch) if per_epoch != float("inf") else done + 1)

    def _check_one_batch(self, enough: bool, lengths: Sequence[int], batch: int) -> None:
        """Training without a single full batch would end at once, silently: refuse it."""
        if not enough:
            raise UserError(f"data.batch_size={self.cfg.batch_size}: the training set ({sum(lengths)} samples, "
                            f"data.epoch_length={_cfg(self.cfg, 'epoch_length', None)}) gives no full batch of "
                            f"{batch} per device; lower data.batch_size or add samples")

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        batch = self._per_device(int(self.cfg.batch_size))
        lengths = [len(d) for d in self.train_sets]
        weights = [float(e.weight) for e in self.cfg.train]
        seed, epoch_length = int(_cfg(self.cfg, "seed", 43)), _cfg(self.cfg, "epoch_length", None)
        if self.batching() == "per_dataset":
            sampler = MixtureBatchSampler(lengths, weights, batch, epoch_length, seed=seed, rank=rank, world_size=world)
            self._check_one_batch(len(sampler) >= 1, lengths, batch)
            loader = ResumableLoader(ConcatDataset(self.train_sets), batch_sampler=sampler,
                                     progress=self._train_progress, **self._loader_kwargs())
        else:
            sampler = WeightedMixtureSampler(lengths, weights, epoch_length, seed=seed, rank=rank, world_size=world)
            self._check_one_batch(len(sampler) >= batch, lengths, batch)
            loader = ResumableLoader(ConcatDataset(self.train_sets), batch_size=batch, sampler=sampler,
                                     drop_last=True, progress=self._train_progress, **self._loader_kwargs())
        if self._train_position is not None:  # resuming: the first loader continues where the run stopped
            loader.load_state_dict(self._train_position)
            self._train_position = None
        self._train_loader = loader
        return loader

    # ------------------------------------------------------------------ checkpoint state
    # The training loader's position goes into checkpoints through the data module's own state:
    # Lightning restores it before the loader is built, whereas the loop state it keeps for
    # stateful loaders arrives after ``configure_optimizers`` (``estimated_stepping_batches``)
    # has already built and started the training loader, and is then never applied.
    def state_dict(self) -> Dict[str, Any]:
        if self._train_loader is None:
            return {}
        return {"train_loader": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        position = state_dict.get("train_loader")
        if not position:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(position)
        else:
            self._train_position = dict(position)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._world()
        sampler = ShardedEvalBatchSampler([len(d) for d in self.val_sets], int(self.cfg.val_batch_size), rank, world)
        return DataLoader(ConcatDataset(self.val_sets), batch_sampler=sampler, **self._loader_kwargs())

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # ------------------------------------------------------------------ device-side augmentation
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run the LightningModule's device-side augmentation (synthetic data, seeded by step)
        only on samples the loader did not augment already: samples with ``augmented`` True
        (file datasets through the albumentations pipeline) come out unchanged."""
        trainer = self.trainer
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        hook = getattr(module, "on_after_batch_transfer", None)
        if hook is None:
            return batch
        flags = batch.get("augmented") if isinstance(batch, dict) else None
        if flags is None or not bool(flags.any()):
            return hook(batch, dataloader_idx)
        if bool(flags.all()):
            return batch
        keys = [k for k in ("image", "depth", "valid") if k in batch]
        kept = {k: batch[k].clone() for k in keys}
        out = hook(batch, dataloader_idx)
        for k in keys:
            mask = flags.to(out[k].device).view(-1, *([1] * (out[k].dim() - 1)))
            out[k] = torch.where(mask, kept[k], out[k])
        return out


class MetricDataModule(DepthDataModule):
    """Stage 2: NYU, KITTI or both for training, any list of evaluation sets; under
    ``data.source=synthetic`` indoor entries become ``synthetic_indoor``, outdoor ones
    ``synthetic_outdoor``."""

    relative = False


class RelativeDataModule(DepthDataModule):
    """Stage 1: a weighted mixture of relative sets; under ``data.source=synthetic`` the entry at
    position k becomes ``synthetic_style<k>``."""

    relative = True


def build_datamodule(cfg) -> DepthDataModule:
    """The data module of a run config: relative for ``stage: relative``, metric otherwise."""
    cls = RelativeDataModule if cfg.stage == "relative" else MetricDataModule
    return cls(cfg.data, [b.name for b in cfg.model.bins])

