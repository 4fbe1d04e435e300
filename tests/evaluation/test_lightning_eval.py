"""`eval` through Lightning: `Trainer.test` / `Trainer.predict` of MetricDepthModule over the
evaluation DataModule, checked against an independent numpy computation on NYU / KITTI layouts,
router labels, and (slow) a 2-process gloo run against the single-process numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ..conftest import NK_BINS, tiny_config
from ..fixtures.kitti import make_kitti
from ..fixtures.nyu import make_nyu
from ..training.test_ddp import _clean_env
from .test_evaluate import SMALL, ConstantModel, ListDataset, _sample, make_checkpoint, run_test
from .test_metrics import _reference_metrics

ROOT = Path(__file__).resolve().parents[2]
ROUTER = ["model.router.dim=16", "model.router.n_layers=1", "model.router.n_heads=2", "model.router.ffn_dim=32"]
CHECKPOINTS = {
    "single": [],
    "nk_trained": [NK_BINS, "model.router.type=trained", *ROUTER],
    "nk_labeled": [NK_BINS, "model.router.type=labeled", *ROUTER],
}
METRICS = ("a1", "a2", "a3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Two NYU test frames (480 x 640, Eigen crop, 10 m) and two KITTI frames (KB crop, Garg, 80 m)."""
    root = tmp_path_factory.mktemp("data")
    kitti = make_kitti(root / "kitti", n=2, none_rows=0)
    nyu = make_nyu(root / "nyu", split="test", n=2, size=(480, 640))
    return ("data.val=[{name: kitti, domain: kitti, options: {root: %s, split_file: %s}},"
            "{name: nyu, domain: nyu, options: {root: %s, split_file: %s}}]"
            % (root / "kitti", kitti.split_file, root / "nyu", nyu.split_file))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpts")
    return {name: make_checkpoint(folder / f"{name}.ckpt", *extra) for name, extra in CHECKPOINTS.items()}


def _numpy_reference(model, sets, flip):
    """Per set: the flip-averaged prediction of each sample computed here (one image at a time),
    bilinear to the GT size, then numpy metrics (clamp, range, crop, valid mask) averaged over images."""
    heads = list(model.domains)
    out = {}
    for s in sets:
        per_image = []
        label = heads.index(s.domain) if s.domain in heads else None
        for i in range(len(s.dataset)):
            sample = s.dataset[i]
            x = sample["image"][None]
            kwargs = {"domain": torch.tensor([label])} if getattr(model.router, "needs_labels", False) else {}
            with torch.no_grad():
                p = model(x, **kwargs).metric_depth
                if flip:
                    p = 0.5 * (p + model(x.flip(-1), **kwargs).metric_depth.flip(-1))
                p = F.interpolate(p, size=sample["depth"].shape[-2:], mode="bilinear", align_corners=True)
            per_image.append(_reference_metrics(sample["depth"][0].numpy(), p[0, 0].numpy(), s.min_depth,
                                                s.max_depth, s.crop, sample["valid"][0].numpy()))
        out[s.name] = {k: float(np.mean([m[k] for m in per_image])) for k in METRICS}
    return out


@pytest.mark.parametrize("name,flip", [("single", True), ("single", False), ("nk_trained", True),
                                       ("nk_labeled", True)])
def test_eval_equals_numpy_on_nyu_and_kitti_layouts(name, flip, checkpoints, layouts, tmp_path):
    from data_modules.evaluation import EvalDataModule, dataset_entries
    from zoe_lightning.cli import main
    from zoe_lightning.weights import load_model

    out = tmp_path / "eval"
    args = ["eval", "quickstart", "--ckpt", str(checkpoints[name]), "--output", str(out), "--no-wandb",
            "--batch-size", "2", layouts, "data.num_workers=0"]
    assert main(args + ([] if flip else ["--no-flip"])) == 0
    got = json.loads((out / "results.json").read_text())["datasets"]
    model = load_model(str(checkpoints[name]))
    cfg = tiny_config(layouts, experiment="quickstart")
    data = EvalDataModule(cfg=cfg, entries=dataset_entries(cfg, None), split="test", domains=model.domains)
    data.setup("test")
    assert [(s.name, s.crop, s.max_depth) for s in data.sets] == [("kitti", "garg", 80.0), ("nyu", "eigen", 10.0)]
    expected = _numpy_reference(model, data.sets, flip)
    for set_name, ref in expected.items():
        assert got[set_name]["n_images"] == 2 and got[set_name]["flip"] is flip
        for k in METRICS:
            assert got[set_name][k] == pytest.approx(ref[k], rel=2e-5, abs=1e-7), (set_name, k)
    if name == "nk_labeled":  # each set scored by its own domain's head
        assert got["kitti"]["routed"] == [0, 2] and got["nyu"]["routed"] == [2]


def test_predict_step_gives_clamped_flip_averaged_depth_at_gt_size():
    import lightning as L

    from data_modules.evaluation import EvalDataModule, eval_set
    from zoe_lightning.modules import MetricDepthModule

    gts = [np.full((5, 7), 2.0), np.full((5, 7), 3.0), np.full((4, 6), 1.0)]
    values = [2.5, 13.0, 0.5]  # the second is clamped to 10 m
    ds = ListDataset([_sample(g, v) for g, v in zip(gts, values)])
    module = MetricDepthModule(tiny_config(*SMALL), model=ConstantModel())
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    batches = trainer.predict(module, datamodule=EvalDataModule([eval_set("s", ds)], batch_size=2))
    items = sorted((item for batch in batches for item in batch), key=lambda d: d["index"])
    assert [d["index"] for d in items] == [0, 1, 2]
    for item, gt, value in zip(items, gts, values):
        assert item["depth"].shape == gt.shape
        torch.testing.assert_close(item["depth"], torch.full(gt.shape, min(value, 10.0)), rtol=1e-6, atol=1e-6)


def test_routers_declare_whether_they_need_labels():
    from zoe_lightning.models.router import ROUTERS

    assert {name: cls.needs_labels for name, cls in ROUTERS.items()} == {
        "labeled": True, "trained": False, "auto": False}


def test_labeled_router_without_a_head_for_the_domain_is_a_user_error():
    from data_modules.evaluation import eval_set
    from zoe_lightning import build_model
    from zoe_lightning.errors import UserError

    torch.manual_seed(0)
    model = build_model(tiny_config(NK_BINS, "model.router.type=labeled", *ROUTER, *SMALL)).eval()
    sample = dict(_sample(np.full((8, 8), 2.0), 2.0), image=torch.rand(3, 64, 96), domain="ibims")
    with pytest.raises(UserError, match="pass --domain"):
        run_test(model, [eval_set("ibims", ListDataset([sample]))])
    res = run_test(model, [eval_set("ibims", ListDataset([sample]), domain="kitti")])["ibims"]
    assert res["routed"] == [0, 1] and res["n_images"] == 1


@pytest.mark.slow
def test_two_process_gloo_eval_equals_single_process(checkpoints, tmp_path):
    """3 + 1 samples over 2 processes (rank 1 has no sample of the second set): every sample is
    scored once and the synced metrics equal one process's."""
    val = ("data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 3, image_size: [48, 64]}},"
           "{name: synthetic_outdoor, domain: kitti, options: {length: 1, image_size: [48, 64]}}]")
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        cmd = [sys.executable, "-m", "zoe_lightning", "eval", "quickstart", "--ckpt", str(checkpoints["nk_trained"]),
               "--output", str(out), "--no-wandb", "--split", "val", "--device", "cpu", "--devices", str(devices),
               "--panels", "4", val, "data.num_workers=0"]
        proc = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        if devices == 2:
            assert "distributed_backend=gloo" in proc.stdout + proc.stderr
        results[devices] = json.loads((out / "results.json").read_text())
        assert sorted(p.name for p in (out / "panels" / "synthetic_indoor").iterdir()) == [
            "00000.png", "00001.png", "00002.png"]  # both ranks' panels in rank 0's folder
    one, two = results[1]["datasets"], results[2]["datasets"]
    assert results[2]["meta"]["world_size"] == 2
    for name in ("synthetic_indoor", "synthetic_outdoor"):
        assert two[name]["n_images"] == one[name]["n_images"] == (3 if name == "synthetic_indoor" else 1)
        assert two[name]["routed"] == one[name]["routed"]
        for k in METRICS:
            assert two[name][k] == pytest.approx(one[name][k], rel=1e-9), (name, k)
