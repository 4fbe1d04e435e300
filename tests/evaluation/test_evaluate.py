"""`zoe-lightning eval`: flip TTA, sharding, metrics of `Trainer.test` against hand-computed values, the CLI."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from ..conftest import tiny_config

# a smaller head and decoder than TINY alone: ~10x fewer operations per forward pass
SMALL = ["model.features=32", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
         "model.head.projector_mlp_dim=16"]
VAL_SET = "data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 3, image_size: [48, 64]}}]"


def make_checkpoint(path, *overrides, experiment="quickstart"):
    """A tiny model's checkpoint written the way training writes it (Lightning ``save_checkpoint``)."""
    import lightning as L

    from zoe_lightning.modules import MetricDepthModule

    torch.manual_seed(0)
    cfg = tiny_config("data.num_workers=0", "logger.wandb=false", *SMALL, *overrides, experiment=experiment)
    module = MetricDepthModule(cfg)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.ckpt")


class ConstantModel(nn.Module):
    """Predicts, for each image, ``scale * (mean of its first channel)`` everywhere at 4 x 6."""

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale
        self.domains = ["nyu"]
        self.calls = 0

    def forward(self, images, domain=None):
        self.calls += images.shape[0]
        value = self.scale * images[:, :1].mean(dim=(2, 3), keepdim=True)
        depth = value.expand(-1, 1, 4, 6).contiguous()
        return SimpleNamespace(metric_depth=depth, domain_index=torch.zeros(images.shape[0], dtype=torch.long))


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, samples, **attrs):
        self.samples = samples
        for k, v in attrs.items():
            setattr(self, k, v)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def _sample(gt, pred_value, scale=10.0):
    gt = torch.as_tensor(gt, dtype=torch.float32)[None]
    image = torch.full((3,) + tuple(gt.shape[-2:]), pred_value / scale)
    return {"image": image, "depth": gt, "valid": gt > 0, "domain": "nyu", "min_depth": 1e-3, "max_depth": 10.0}


# ----------------------------------------------------------------------------------------------


def test_flip_tta_is_flip_equivariant_and_averages():
    from zoe_lightning import build_model
    from zoe_lightning.evaluation.protocol import flip_tta

    torch.manual_seed(0)
    model = build_model(tiny_config(*SMALL)).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        f = lambda t: model(t).metric_depth  # noqa: E731
        raw, raw_flipped = f(x), f(x.flip(-1))
        tta, tta_flipped = flip_tta(f, x), flip_tta(f, x.flip(-1))
        no_tta = flip_tta(f, x, flip=False)  # same grad mode as ``raw``: the same kernels, bit for bit
    # the raw model is not flip-equivariant, the TTA prediction is (by construction)
    assert (raw_flipped.flip(-1) - raw).abs().max() > 1e-4
    torch.testing.assert_close(tta_flipped.flip(-1), tta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tta, 0.5 * (raw + raw_flipped.flip(-1)))
    assert no_tta.equal(raw)


def test_flip_tta_hand_example():
    from zoe_lightning.evaluation.protocol import flip_tta

    x = torch.tensor([[[[1.0, 2.0, 4.0]]]])
    ramp = torch.tensor([0.0, 1.0, 2.0])
    out = flip_tta(lambda t: t * ramp, x)  # pred(x) = x*[0,1,2]; flipped: [4,2,1]*[0,1,2] = [0,2,2] -> [2,2,0]
    assert out.flatten().tolist() == [1.0, 2.0, 4.0]  # ([0,2,8] + [2,2,0]) / 2


@pytest.mark.parametrize("n", [0, 1, 5, 7, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_sample_exactly_once(n, world):
    from data_modules.evaluation import shard_indices

    shards = [shard_indices(n, r, world) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # every index once: no padding, no duplicates
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def run_test(model, sets, batch_size=1, flip=True, rank_world=None):
    """``Trainer.test`` of a :class:`MetricDepthModule` wrapping ``model`` over ``sets``
    (``rank_world``: score only that rank's shard, without a process group)."""
    import lightning as L

    from data_modules.evaluation import EvalDataModule
    from zoe_lightning.modules import MetricDepthModule

    class Shard(EvalDataModule):
        def _world(self):
            return rank_world or super()._world()

    module = MetricDepthModule(tiny_config(*SMALL), model=model)
    module.flip_tta = flip
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    trainer.test(module, datamodule=Shard(sets, batch_size=batch_size), verbose=False)
    return module.test_results


def test_test_step_hand_computed_metrics():
    from data_modules.evaluation import eval_set

    gt1 = np.full((8, 8), 2.0)
    gt1[0, 0] = 0.0  # invalid
    gt1[0, 1] = 12.0  # beyond max_depth: excluded
    gt2 = np.full((8, 8), 1.0)
    gt2[:, 4:] = 4.0
    gt3 = np.full((6, 10), 5.0)  # another size in the same loader batch
    ds = ListDataset([_sample(gt1, 2.4), _sample(gt2, 2.0), _sample(gt3, 9.9 * 1.3)])  # 3rd: pred clamped to 10
    model = ConstantModel()
    res = run_test(model, [eval_set("set", ds)], batch_size=3)["set"]
    assert model.calls == 6  # 3 images, each also flipped
    # image 1: pred 2.4 vs 2 -> rel 0.2, rmse 0.4, ratio 1.2 < 1.25, silog 0
    # image 2: pred 2 vs {1, 4} half/half -> rel (1 + 0.5)/2, rmse sqrt((1 + 4)/2), ratios 2 -> 0 for a1..a3
    # image 3: pred clamp(12.87) = 10 vs 5 -> rel 1, rmse 5, ratio 2
    rel = (0.2 + 0.75 + 1.0) / 3
    rmse = (0.4 + math.sqrt(2.5) + 5.0) / 3
    log10 = (abs(math.log10(2 / 2.4)) + (math.log10(2) + math.log10(2)) / 2 + math.log10(2)) / 3
    silog2 = 100 * math.sqrt(math.log(2) ** 2 - 0.0)  # errors +ln2 / -ln2: mean 0, mean square ln2^2
    assert res["abs_rel"] == pytest.approx(rel, rel=1e-6)
    assert res["rmse"] == pytest.approx(rmse, rel=1e-6)
    assert res["log_10"] == pytest.approx(log10, rel=1e-6)
    assert res["silog"] == pytest.approx(silog2 / 3, rel=1e-5)
    assert res["a1"] == pytest.approx(1 / 3)
    assert res["a3"] == pytest.approx(1 / 3)
    assert res["n_images"] == 3 and res["n_empty"] == 0
    assert (res["crop"], res["min_depth"], res["max_depth"], res["domain"]) == (None, 1e-3, 10.0, "nyu")


def test_test_step_uses_the_crop():
    from data_modules.evaluation import eval_set

    gt = np.full((480, 640), 5.0)
    gt[45:471, 41:601] = 2.0  # the Eigen NYU box: prediction 2.0 is exact there, wrong outside
    ds = ListDataset([_sample(gt, 2.0)], eval_crop="eigen", min_depth=1e-3, max_depth=10.0, domain="nyu")
    auto = run_test(ConstantModel(), [eval_set("nyu_like", ds)])["nyu_like"]
    assert auto["crop"] == "eigen" and auto["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    none = run_test(ConstantModel(), [eval_set("nyu_like", ds, crop="none")])["nyu_like"]
    outside = 480 * 640 - 426 * 560
    assert none["abs_rel"] == pytest.approx(0.6 * outside / (480 * 640), rel=1e-6)


def test_shards_merge_to_the_full_result():
    """Two ranks' shards (no process group: each rank's own) add up to the single-process result."""
    from data_modules.evaluation import eval_set

    rng = np.random.default_rng(0)
    ds = ListDataset([_sample(rng.uniform(1, 9, (6, 6)), float(v)) for v in rng.uniform(1, 9, 5)])
    full = run_test(ConstantModel(), [eval_set("s", ds)])["s"]
    parts = [run_test(ConstantModel(), [eval_set("s", ds)], batch_size=2, rank_world=(r, 2))["s"] for r in range(2)]
    assert [p["n_images"] for p in parts] == [3, 2]
    for key in ("abs_rel", "rmse", "a1", "silog"):
        merged = sum(p[key] * p["n_images"] for p in parts) / 5
        assert merged == pytest.approx(full[key], rel=1e-9)


def test_relative_improvement_attached_from_reference(tmp_path):
    from zoe_lightning.evaluation.report import attach_relative_improvement, read_reference

    results = {"a": {"abs_rel": 0.1, "rmse": 0.5, "log_10": 0.04, "a1": 0.9, "a2": 0.95, "a3": 1.0},
               "b": {"abs_rel": 0.1, "rmse": 0.5, "log_10": 0.04, "a1": 0.9, "a2": 0.95, "a3": 1.0}}
    ref = {"abs_rel": 0.2, "rmse": 0.4, "log_10": 0.05, "a1": 0.8, "a2": 0.95, "a3": 0.8}
    path = tmp_path / "ref.json"
    path.write_text(json.dumps({"meta": {}, "datasets": {"a": ref}}))
    attach_relative_improvement(results, read_reference(str(path)))
    # mRID = mean(0.1/0.2, -0.1/0.4, 0.01/0.05) = mean(0.5, -0.25, 0.2) = 15 %
    # mRItheta = mean(0.1/0.8, 0, 0.2/0.8) = 12.5 %
    assert results["a"]["mRID"] == pytest.approx(15.0)
    assert results["a"]["mRItheta"] == pytest.approx(12.5)
    assert "mRID" not in results["b"]  # no reference for b
    attach_relative_improvement(results, ref)  # a flat reference applies to every dataset
    assert results["b"]["mRID"] == pytest.approx(15.0)


def test_eval_cli_end_to_end(tiny_ckpt, tmp_path, capsys):
    from data_modules.datasets import build_dataset
    from zoe_lightning.cli import main
    from zoe_lightning.weights import load_model

    out = tmp_path / "eval"
    rc = main(["eval", "quickstart", "--ckpt", str(tiny_ckpt), "--output", str(out), "--panels", "2",
               "--no-wandb", "--split", "val", VAL_SET, "data.num_workers=0"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())["datasets"]["synthetic_indoor"]
    assert res["n_images"] == 3 and res["crop"] is None and res["max_depth"] == 10.0
    assert "| synthetic_indoor |" in (out / "results.md").read_text()
    assert sorted(p.name for p in (out / "panels" / "synthetic_indoor").iterdir()) == ["00000.png", "00001.png"]
    printed = capsys.readouterr().out
    assert "synthetic_indoor" in printed
    # the split and the datasets are said before scoring; paths are absolute
    assert f"eval: {tiny_ckpt.resolve()} on the val split of: synthetic_indoor" in printed
    assert f"results: {out.resolve() / 'results.md'}" in printed

    # independent computation: flip-averaged prediction, bilinear to GT size, clamp, per-image numpy metrics
    model = load_model(str(tiny_ckpt))
    ds = build_dataset("synthetic_indoor", "val", length=3, image_size=[48, 64], seed=43)
    rels, rmses, a1s = [], [], []
    for i in range(3):
        s = ds[i]
        with torch.no_grad():
            x = s["image"][None]
            p = 0.5 * (model(x).metric_depth + model(x.flip(-1)).metric_depth.flip(-1))
            p = torch.nn.functional.interpolate(p, size=s["depth"].shape[-2:], mode="bilinear", align_corners=True)
        p = np.clip(p[0, 0].double().numpy(), 1e-3, 10.0)
        g = s["depth"][0].double().numpy()
        m = (g > 1e-3) & (g < 10.0)
        rels.append(np.mean(np.abs(g[m] - p[m]) / g[m]))
        rmses.append(np.sqrt(np.mean((g[m] - p[m]) ** 2)))
        a1s.append(np.mean(np.maximum(g[m] / p[m], p[m] / g[m]) < 1.25))
    assert res["abs_rel"] == pytest.approx(np.mean(rels), rel=1e-5)
    assert res["rmse"] == pytest.approx(np.mean(rmses), rel=1e-5)
    assert res["a1"] == pytest.approx(np.mean(a1s), abs=1e-9)


def test_eval_cli_user_errors(tiny_ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main

    assert main(["eval", "quickstart", "--ckpt", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    rc = main(["eval", "quickstart", "--ckpt", str(tiny_ckpt), "--datasets", "no_such_set", "--no-wandb",
               "--output", str(tmp_path / "o")])
    assert rc == 2
    assert "no_such_set" in capsys.readouterr().err


def test_eval_real_readers_use_their_protocol(tiny_ckpt, tmp_path):
    """File readers: KITTI is scored on its KB-cropped 352x1216 frame with the Garg crop and 80 m,
    NYU with the Eigen box and 10 m (the readers' own eval_crop / range), GT at native size."""
    from zoe_lightning.cli import main

    from ..fixtures.kitti import make_kitti
    from ..fixtures.nyu import make_nyu

    kitti = make_kitti(tmp_path / "kitti", n=1, none_rows=0)
    nyu = make_nyu(tmp_path / "nyu", split="test", n=1, size=(480, 640))
    val = ("data.val=[{name: kitti, domain: kitti, options: {root: %s, split_file: %s}},"
           "{name: nyu, domain: nyu, options: {root: %s, split_file: %s}}]"
           % (tmp_path / "kitti", kitti.split_file, tmp_path / "nyu", nyu.split_file))
    out = tmp_path / "eval"
    assert main(["eval", "quickstart", "--ckpt", str(tiny_ckpt), "--output", str(out), "--no-wandb", "--panels", "1",
                 "--no-flip", val, "data.num_workers=0", "data.image_size=[48,64]"]) == 0
    res = json.loads((out / "results.json").read_text())["datasets"]
    assert (res["kitti"]["crop"], res["kitti"]["max_depth"], res["kitti"]["n_images"]) == ("garg", 80.0, 1)
    assert (res["nyu"]["crop"], res["nyu"]["max_depth"], res["nyu"]["n_images"]) == ("eigen", 10.0, 1)
    from PIL import Image

    # panels are image | GT | prediction | error at GT resolution (native size despite data.image_size),
    # with titles above and colour bars below
    for name, (w, h) in (("kitti", (1216, 352)), ("nyu", (640, 480))):
        width, height = Image.open(out / "panels" / name / "00000.png").size
        assert width == 4 * w and h + 40 < height < h + 200


def test_dataset_entries_from_names_and_data_root():
    from data_modules.evaluation import dataset_entries

    cfg = tiny_config("data.val=[{name: nyu, domain: nyu, options: {root: /data/my_nyu}}]")
    assert [e.name for e in dataset_entries(cfg, None)] == ["nyu"]
    entries = dataset_entries(cfg, ["nyu", "ibims", "synthetic_indoor"], data_root="/d")
    assert [e.name for e in entries] == ["nyu", "ibims", "synthetic_indoor"]
    assert entries[0].options.root == "/data/my_nyu"  # the config's own option wins
    assert entries[1].options.root == "/d/ibims"
    assert "root" not in entries[2].options  # generated data has no root
