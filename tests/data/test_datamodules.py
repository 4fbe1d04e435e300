"""Samplers, collation and the data modules (synthetic swap, real readers with transforms)."""

from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from data_modules.collate import collate_samples
from data_modules.datamodule import (
    DepthDataModule,
    MetricDataModule,
    RelativeDataModule,
    build_datamodule,
    synthetic_counterpart,
)
from data_modules.datasets import DATASETS
from data_modules.mixing import (
    MixtureBatchSampler,
    ShardedEvalBatchSampler,
    ShardedEvalSampler,
    WeightedMixtureSampler,
    shard_range,
)
from zoe_lightning import load_config


# ---------------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 10])
def test_sharded_eval_sampler_counts_every_sample_once(world, n):
    shards = [list(ShardedEvalSampler(n, r, world)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # no padding, no duplicate, nothing lost
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    assert all(len(ShardedEvalSampler(n, r, world)) == sizes[r] for r in range(world))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sharded_eval_batches_stay_inside_one_dataset(world):
    lengths, batch = [7, 1, 5, 4], 2
    bounds = np.cumsum([0] + lengths)
    seen = Counter()
    for r in range(world):
        for b in ShardedEvalBatchSampler(lengths, batch, r, world):
            assert 1 <= len(b) <= batch
            owners = {int(np.searchsorted(bounds, i, side="right")) - 1 for i in b}
            assert len(owners) == 1  # never two datasets (two image sizes) in one batch
            seen.update(b)
    assert sorted(seen) == list(range(sum(lengths))) and set(seen.values()) == {1}


def test_shard_range_rejects_bad_rank():
    with pytest.raises(ValueError):
        shard_range(5, 3, 3)


# ---------------------------------------------------------------------------------- training
def _owner(i, lengths):
    return int(np.searchsorted(np.cumsum(lengths), i, side="right"))


def test_mixture_batch_sampler_one_dataset_per_batch_and_disjoint_ranks():
    lengths, weights = [10, 3, 6], [1.0, 1.0, 2.0]
    per_rank = [list(MixtureBatchSampler(lengths, weights, 2, epoch_length=48, seed=5, rank=r, world_size=3))
                for r in range(3)]
    assert all(len(p) == 48 // 6 == len(MixtureBatchSampler(lengths, weights, 2, 48, 5, r, 3))
               for r, p in enumerate(per_rank))
    for step in zip(*per_rank):
        owners = {_owner(i, lengths) for b in step for i in b}
        assert len(owners) == 1  # all ranks draw the same dataset at one step
        flat = [i for b in step for i in b]
        if lengths[owners.pop()] >= 6:
            assert len(set(flat)) == len(flat)  # disjoint samples across ranks


def test_mixture_batch_sampler_is_seeded_reshuffled_and_weighted():
    lengths = [50, 50]
    a = list(MixtureBatchSampler(lengths, [1, 3], 4, epoch_length=4000, seed=1))
    b = list(MixtureBatchSampler(lengths, [1, 3], 4, epoch_length=4000, seed=1))
    assert a == b
    s = MixtureBatchSampler(lengths, [1, 3], 4, epoch_length=4000, seed=1)
    s.set_epoch(1)
    assert list(s) != a
    share = np.mean([_owner(batch[0], lengths) for batch in a])
    assert abs(share - 0.75) < 0.06  # weight 3 of 4
    zero = MixtureBatchSampler(lengths, [0, 1], 4, epoch_length=400, seed=2)
    assert all(i >= 50 for batch in zero for i in batch)


def test_mixture_samplers_validate_arguments():
    with pytest.raises(ValueError, match="empty"):
        MixtureBatchSampler([3, 0], [1, 1], 2)
    with pytest.raises(ValueError, match="weights"):
        WeightedMixtureSampler([3, 3], [0, 0])
    with pytest.raises(ValueError, match="batch_size"):
        MixtureBatchSampler([3], [1], 0)


# ---------------------------------------------------------------------------------- collation
def _sample(h, w, dataset="a", path=True):
    s = {"image": torch.zeros(3, h, w), "depth": torch.ones(1, h, w), "valid": torch.ones(1, h, w, dtype=torch.bool),
         "dataset": dataset, "min_depth": 0.001, "max_depth": 10.0}
    if path:
        s["path"] = f"/{dataset}.jpg"
    return s


def test_collate_names_datasets_and_sizes_on_mismatch():
    with pytest.raises(ValueError, match=r"\[3, 4, 5\] from \['a'\].*\[3, 6, 5\] from \['b'\]"):
        collate_samples([_sample(4, 5, "a"), _sample(6, 5, "b")])
    batch = collate_samples([_sample(4, 5, "a"), _sample(4, 5, "b", path=False)])
    assert batch["image"].shape == (2, 3, 4, 5) and "path" not in batch and batch["dataset"] == ["a", "b"]


# ---------------------------------------------------------------------------------- synthetic swap
def test_synthetic_counterparts_of_real_entries():
    assert synthetic_counterpart("nyu", {"root": "/x", "length": 8}, "nyu", 0, False) == (
        "synthetic_indoor", {"length": 8})
    assert synthetic_counterpart("kitti", {"root": "/x"}, None, 1, False) == ("synthetic_outdoor", {})
    assert synthetic_counterpart("folder", {"domain": "kitti"}, None, 0, False)[0] == "synthetic_outdoor"
    assert synthetic_counterpart("irs", {}, None, 6, True) == ("synthetic_style6", {})  # indoor stereo
    assert synthetic_counterpart("apolloscape", {}, None, 7, True) == ("synthetic_style7", {"domain": "kitti"})
    assert synthetic_counterpart("ibims", {}, None, 0, False)[0] == "synthetic_indoor"
    assert synthetic_counterpart("ddad", {}, None, 0, False)[0] == "synthetic_outdoor"
    assert synthetic_counterpart("kitti", {}, "nyu", 0, False)[0] == "synthetic_indoor"  # entry domain wins
    assert synthetic_counterpart("synthetic_style0", {"length": 3}, None, 4, True) == (
        "synthetic_style0", {"length": 3})


def test_paper_nk_config_runs_on_synthetic_data_with_one_override():
    cfg = load_config("base", [
        "model.backbone=test_vit", "data.source=synthetic", "data.image_size=[16,24]", "data.batch_size=4",
        "data.num_workers=0",
        "data.train=[{name: nyu, domain: nyu, options: {root: /nowhere, length: 6}},"
        "{name: kitti, domain: kitti, options: {root: /nowhere, length: 6}}]",
        "data.val=[{name: nyu, domain: nyu, options: {root: /nowhere, length: 3}}]",
        "model.bins=[{name: nyu, n_bins: 16, max_depth: 10},{name: kitti, n_bins: 16, max_depth: 80}]",
    ])
    dm = build_datamodule(cfg)
    assert isinstance(dm, MetricDataModule)
    dm.setup("fit")
    assert [d.dataset.dataset_name for d in dm.train_sets] == ["synthetic_indoor", "synthetic_outdoor"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 24)
    assert set(batch["domain_label"].tolist()) <= {0, 1} and not batch["augmented"].any()
    val = list(dm.val_dataloader())
    assert sum(len(b["dataset"]) for b in val) == 3


def test_relative_module_maps_positions_to_styles():
    cfg = load_config("base", [
        "stage=relative", "data.source=synthetic", "data.image_size=[16,16]", "data.num_workers=0",
        "data.train=[{name: redweb, options: {length: 4}},{name: kitti, options: {length: 4}}]",
        "data.val=[{name: nyu, options: {length: 2}}]",
    ])
    dm = build_datamodule(cfg)
    assert isinstance(dm, RelativeDataModule)
    dm.setup("fit")
    names = [d.dataset.dataset_name for d in dm.train_sets]
    assert names == ["synthetic_style0", "synthetic_style1"]
    assert dm.train_sets[1].dataset.domain == "kitti" and dm.train_sets[0][0]["depth_kind"] == "disparity"


def test_config_rejects_unknown_source():
    from zoe_lightning.config import ConfigError

    with pytest.raises(ConfigError, match="data.source"):
        load_config("base", ["data.source=fake"])


# ---------------------------------------------------------------------------------- real readers
def _write_nyu(root, n, h, w, seed=0):
    """A tiny NYU-layout folder (JPEG + 16-bit PNG in mm) and its split file."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        (root / "scene").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "scene" / f"rgb_{i:05d}.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mm = rng.integers(500, 9000, (h, w)).astype(np.uint16)
        mm[: h // 4] = 0  # invalid band
        cv2.imwrite(str(root / "scene" / f"sync_depth_{i:05d}.png"), mm)
        lines.append(f"/scene/rgb_{i:05d}.jpg /scene/sync_depth_{i:05d}.png 518.8579")
    split = root / "split.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


@pytest.fixture
def toy_nyu(monkeypatch):
    from data_modules.datasets.nyu import NYUDataset

    monkeypatch.setitem(DATASETS, "toy_nyu", lambda split, **o: NYUDataset(split, **o))
    return "toy_nyu"


def test_real_reader_gets_the_loader_transform_and_mixes_with_synthetic(tmp_path, toy_nyu):
    small, big = tmp_path / "small", tmp_path / "big"
    s1, s2 = _write_nyu(small, 4, 24, 64), _write_nyu(big, 3, 48, 48, seed=1)
    cfg = load_config("base", [
        "model.backbone=test_vit", "data.image_size=[32,32]", "data.batch_size=2", "data.num_workers=0",
        f"data.train=[{{name: {toy_nyu}, domain: nyu, options: {{root: {small}, split_file: {s1}}}}},"
        f"{{name: {toy_nyu}, domain: nyu, options: {{root: {big}, split_file: {s2}}}}},"
        "{name: synthetic_indoor, domain: nyu, options: {length: 4}}]",
        f"data.val=[{{name: {toy_nyu}, domain: nyu, options: {{root: {small}, split_file: {s1}}}}}]",
        "data.resize=keep_aspect", "data.epoch_length=30",
    ])
    dm = DepthDataModule(cfg.data, ["nyu"])
    dm.setup("fit")
    reader = dm.train_sets[0].dataset
    assert reader.transform is not None and reader.transform.train and reader.transform.augment
    assert not dm.val_sets[0].dataset.transform.train
    assert dm.batching() == "per_dataset"  # keep_aspect: sizes differ per dataset
    from lightning.fabric.utilities.data import _set_sampler_epoch

    loader = dm.train_dataloader()
    first = list(loader.batch_sampler)
    _set_sampler_epoch(loader, 1)  # what Lightning's fit loop calls every epoch
    assert list(loader.batch_sampler) != first
    _set_sampler_epoch(loader, 0)
    assert list(loader.batch_sampler) == first
    shapes = set()
    for batch in dm.train_dataloader():
        assert batch["image"].dtype == torch.float32 and 0 <= batch["image"].min() and batch["image"].max() <= 1
        assert len(set(batch["dataset"])) == 1
        shapes.add(tuple(batch["image"].shape[-2:]))
        if batch["dataset"][0] == "nyu":
            assert batch["augmented"].all()
            assert not batch["valid"][:, :, 0].any()  # the invalid top band stays invalid
    # keep_aspect to [32, 32], multiple of 32: 24x64 -> scale 4/3 -> 32x96; 48x48 -> 32x32;
    # the synthetic set renders at image_size
    assert shapes == {(32, 96), (32, 32)}
    val = next(iter(dm.val_dataloader()))
    assert val["depth"].shape[-2:] == (32, 96) and not val["augmented"].any()


def test_mixed_batching_with_squash_gives_one_size(tmp_path, toy_nyu):
    small, big = tmp_path / "small", tmp_path / "big"
    s1, s2 = _write_nyu(small, 3, 24, 32), _write_nyu(big, 3, 30, 50, seed=1)
    cfg = load_config("base", [
        "data.image_size=[16,24]", "data.batch_size=6", "data.num_workers=0", "data.augment=false",
        f"data.train=[{{name: {toy_nyu}, options: {{root: {small}, split_file: {s1}}}}},"
        f"{{name: {toy_nyu}, options: {{root: {big}, split_file: {s2}}}}}]",
    ])
    dm = DepthDataModule(cfg.data, ["nyu"])
    dm.setup("fit")
    assert dm.batching() == "mixed"
    from lightning.fabric.utilities.data import _set_sampler_epoch

    loader = dm.train_dataloader()
    first = list(loader.sampler)
    _set_sampler_epoch(loader, 3)
    assert list(loader.sampler) != first
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 3, 16, 24) and not batch["augmented"].any()
    # masked resize of millimetre depth: every valid value stays in the written range
    d = batch["depth"][batch["valid"]]
    assert d.min() >= 0.5 - 1e-6 and d.max() <= 9.0


def test_device_augmentation_skips_samples_the_loader_augmented():
    from types import SimpleNamespace

    calls = []

    def module_hook(batch, idx):  # stands for the module's flip + colour jitter
        calls.append(idx)
        batch["image"] = batch["image"] + 1
        batch["depth"] = batch["depth"].flip(-1)
        return batch

    cfg = load_config("base", [])
    dm = DepthDataModule(cfg.data, ["nyu"])
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(on_after_batch_transfer=module_hook))
    depth = torch.arange(2 * 3, dtype=torch.float32).view(2, 1, 1, 3)
    batch = {"image": torch.zeros(2, 3, 1, 3), "depth": depth.clone(),
             "valid": torch.ones(2, 1, 1, 3, dtype=torch.bool), "augmented": torch.tensor([True, False])}
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["image"][0].eq(0).all() and out["image"][1].eq(1).all()
    assert torch.equal(out["depth"][0], depth[0]) and torch.equal(out["depth"][1], depth[1].flip(-1))
    all_aug = {**batch, "image": torch.zeros(2, 3, 1, 3), "augmented": torch.tensor([True, True])}
    assert dm.on_after_batch_transfer(all_aug, 0)["image"].eq(0).all() and len(calls) == 1
    none_aug = {**batch, "image": torch.zeros(2, 3, 1, 3), "augmented": torch.tensor([False, False])}
    assert dm.on_after_batch_transfer(none_aug, 0)["image"].eq(1).all() and len(calls) == 2


def test_reader_counters_are_logged_once_at_setup(tmp_path, toy_nyu, caplog):
    import logging

    split = _write_nyu(tmp_path, 3, 24, 32)
    (tmp_path / "scene" / "rgb_00001.jpg").unlink()
    cfg = load_config("base", [
        "data.num_workers=0",
        f"data.train=[{{name: {toy_nyu}, options: {{root: {tmp_path}, split_file: {split}, skip_missing: true}}}}]",
        f"data.val=[{{name: {toy_nyu}, options: {{root: {tmp_path}, split_file: {split}, skip_missing: true}}}}]",
    ])
    dm = DepthDataModule(cfg.data, ["nyu"])
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
        dm.setup("fit")  # built once, logged once
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data: ")]
    assert lines == ["data: train set nyu: 2 samples (missing_skipped=1)",
                     "data: val set nyu: 2 samples (missing_skipped=1)"]


@pytest.mark.slow
def test_training_on_real_files_and_synthetic_end_to_end(tmp_path, toy_nyu):
    from zoe_lightning.train import train

    split = _write_nyu(tmp_path / "nyu", 4, 48, 64)
    cfg = load_config("base", [
        "model.backbone=test_vit", "model.img_size=[32,32]", "model.features=32", "logger.wandb=false",
        "callbacks.rich=false", f"output_dir={tmp_path / 'runs'}", "data.num_workers=1", "data.batch_size=2",
        "data.val_batch_size=2", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
        f"data.train=[{{name: {toy_nyu}, domain: nyu, options: {{root: {tmp_path / 'nyu'}, split_file: {split}}}}},"
        "{name: synthetic_indoor, domain: nyu, options: {length: 4}}]",
        f"data.val=[{{name: {toy_nyu}, domain: nyu, options: {{root: {tmp_path / 'nyu'}, split_file: {split}}}}}]",
    ])
    result = train(cfg)
    assert np.isfinite(result["metrics"]["val/nyu/abs_rel"]) and result["last"]  # one domain: its own keys


@pytest.mark.slow
def test_bench_data_quick_rows():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_data

    rows = bench_data.run(quick=True)
    assert len(rows) == 4 and {r["unit"] for r in rows} == {"samples/s"}
    assert all(r["value"] > 0 for r in rows)
    ours = [r for r in rows if r["impl"].startswith("zoe")]
    assert all(r["ratio"] == pytest.approx(r["value"] / b["value"], rel=0.02)
               for r, b in zip(ours, [r for r in rows if r["impl"].startswith("PIL")]))
