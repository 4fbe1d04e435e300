"""What a run sends to W&B, read back from the offline run file (``run-<id>.wandb``): the config
once, one key per (domain, metric), one learning-rate curve, best-value summaries, job types, the
eval run's setting and its link to the training run."""

import csv
import json
import math

import pytest
import torch

from zoe_lightning import load_config

from ..conftest import NK_BINS, TINY
from ..wandb_file import read_run, run_file

ERRORS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog")
ACCURACIES = ("a1", "a2", "a3")
SMALL_RUN = TINY + [
    "model.features=16", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
    "model.head.projector_mlp_dim=16", "data.image_size=[64,96]", "data.num_workers=0", "data.batch_size=2",
    "data.val_batch_size=2", "callbacks.rich=false", "callbacks.depth_panels_every=0", "callbacks.bin_centers=false",
    "trainer.log_every_n_steps=1", "trainer.max_epochs=2", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1", "logger.mode=offline", "data.epoch_length=4", "data.val.0.options.length=2",
]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, every file of it under tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    yield tmp_path
    import wandb

    if wandb.run is not None:
        wandb.finish()


def _csv_validations(path, key):
    with open(path) as fh:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(fh) if r.get(key)]


@pytest.mark.slow  # a real (tiny) two-epoch run: ~40 s on a loaded 2-core machine
def test_training_run_file(offline_wandb, capfd):
    from zoe_lightning.train import train

    cfg = load_config("quickstart", SMALL_RUN + [f"output_dir={offline_wandb / 'runs'}", "optim.encoder_lr_factor=10",
                                                  "optim.pos_enc_lr_factor=10"])
    result = train(cfg)
    err = capfd.readouterr().err
    assert "anonymous" not in err, err[-2000:]
    run_dir = result["run_dir"]
    got = read_run(run_file(run_dir))

    assert got["run"].job_type == "train" and got["run"].run_group == "quickstart"
    # the config once: the initial config holds the run config top level, later updates add new keys only
    keys = [k for update in got["config_updates"] for k in update if k != "_wandb"]
    assert len(keys) == len(set(keys)), sorted(keys)
    assert {"model", "optim", "data", "trainer", "logger", "seed"} <= set(keys)
    assert not any(k == "cfg" or k.startswith("cfg.") or k.startswith("cfg/") for k in keys)
    assert got["config_updates"][0]["optim"]["encoder_lr_factor"] == 10

    # one domain: val/nyu/<metric> only, no val/<metric> mean beside it
    logged = got["history_keys"]
    assert {f"val/nyu/{m}" for m in ERRORS + ACCURACIES} <= logged
    assert not {f"val/{m}" for m in ERRORS + ACCURACIES} & logged, sorted(logged)
    # one learning-rate curve: optim.lr's schedule (div_factor 1: flat at the maximum at first),
    # although group 0 (the encoder) runs at a tenth of it
    lr_keys = sorted(k for k in logged if "lr" in k.split("/")[-1] or k.startswith("lr-"))
    assert lr_keys == ["train/lr"], lr_keys
    lrs = [row["train/lr"] for row in got["history"] if "train/lr" in row]
    assert lrs and lrs[0] == pytest.approx(cfg.optim.lr, rel=1e-6)

    # the summary keeps each metric's best value: min for errors, max for delta1-3
    metrics = got["metrics"]
    for m in ERRORS:
        assert metrics[f"val/nyu/{m}"].summary.min and not metrics[f"val/nyu/{m}"].summary.max, m
    for m in ACCURACIES:
        assert metrics[f"val/nyu/{m}"].summary.max and not metrics[f"val/nyu/{m}"].summary.min, m
    assert all(metrics[k].step_metric == "trainer/global_step" for k in metrics if k.startswith("val/"))

    # best step, baseline REL and improvement, checked against the CSV log
    points = _csv_validations(f"{run_dir}/csv/metrics.csv", "val/nyu/abs_rel")
    assert len(points) == 2
    best_step, best_rel = min(points, key=lambda p: p[1])
    summary = got["summary"]
    assert summary["val/nyu/abs_rel"] == {"min": pytest.approx(best_rel)}
    assert summary["best_step"] == best_step and summary["best/nyu/abs_rel"] == pytest.approx(best_rel)
    baseline = summary["baseline/nyu/abs_rel"]
    assert 0 < baseline < 10 and baseline == pytest.approx(result["baseline"]["nyu"])
    assert summary["improvement/nyu/abs_rel_pct"] == pytest.approx(100 * (1 - best_rel / baseline), abs=0.01)
    assert summary["monitor"] == "val/nyu/abs_rel" and summary["status"] == "finished"

    # summary.json agrees, and the checkpoint records the W&B run that wrote it
    saved = json.loads((offline_wandb / "runs" / "quickstart" / run_dir.rsplit("/", 1)[1] / "summary.json").read_text())
    assert saved["monitor"] == "val/nyu/abs_rel" and saved["job_type"] == "train"
    assert saved["wandb_run_id"] == got["run"].run_id and saved["best_step"] == best_step
    ckpt = torch.load(result["best"], map_location="cpu", weights_only=True)
    assert ckpt["wandb"]["run_id"] == got["run"].run_id and ckpt["wandb"]["group"] == "quickstart"


def _epoch_end_logs(domains_cfg, per_domain):
    """Keys and values that ``on_validation_epoch_end`` logs after the given (pred factor, gt) per domain."""
    from zoe_lightning.modules import MetricDepthModule

    module = MetricDepthModule(load_config("base", TINY + domains_cfg))
    for name, (factor, depth) in per_domain.items():
        gt = torch.full((2, 1, 8, 8), depth)
        module.val_metrics[name].update(gt * factor, gt)
    logged = {}
    module.log = lambda key, value, **kw: logged.__setitem__(key, (float(value), kw.get("prog_bar", False)))
    module.on_validation_epoch_end()
    return logged


def test_validation_keys_one_and_several_domains():
    # one domain (nyu): prediction 2x the truth -> REL 1, delta1 0; its own keys only, in the progress bar
    one = _epoch_end_logs([], {"nyu": (2.0, 2.0)})
    assert set(one) == {f"val/nyu/{m}" for m in ERRORS + ACCURACIES}
    assert one["val/nyu/abs_rel"] == (pytest.approx(1.0), True) and one["val/nyu/a1"] == (0.0, True)
    # two domains: per-domain keys plus the mean over the domains, the mean in the progress bar
    two = _epoch_end_logs([NK_BINS], {"nyu": (2.0, 2.0), "kitti": (1.1, 20.0)})
    assert set(two) == {f"val/{d}{m}" for d in ("nyu/", "kitti/", "") for m in ERRORS + ACCURACIES}
    assert two["val/kitti/abs_rel"][0] == pytest.approx(0.1) and two["val/kitti/a1"][0] == 1.0
    assert two["val/abs_rel"] == (pytest.approx(0.55), True) and two["val/a1"] == (0.5, True)
    assert two["val/nyu/abs_rel"][1] is False


def test_monitor_and_goals():
    from zoe_lightning.metric_keys import goal, monitor_for, validation_keys

    assert monitor_for(load_config("quickstart")) == "val/nyu/abs_rel"
    assert monitor_for(load_config("quickstart_nk")) == "val/abs_rel"
    assert monitor_for(load_config("base", ["stage=relative"])) == "val/rel"
    assert [goal(k) for k in ("val/a1", "val/kitti/a3", "val/nyu/rmse", "val/rel", "val/silog_loss")] == \
        ["max", "max", "min", "min", "min"]
    assert validation_keys("relative", []) == {"val/rel": False, "val/a1": True}
    several = validation_keys("metric", ["nyu", "kitti"])
    assert several["val/router_accuracy"] and several["val/a1"] and not several["val/kitti/rmse"]
    assert "val/router_accuracy" not in validation_keys("metric", ["nyu"])


@pytest.mark.parametrize("mode, log_model, uploads", [("online", True, True), ("offline", True, False),
                                                      ("online", False, False)])
def test_log_model_only_when_asked_and_online(tmp_path, mode, log_model, uploads):
    from lightning.pytorch.loggers import WandbLogger

    from zoe_lightning.train import build_trainer

    cfg = load_config("quickstart", SMALL_RUN + [f"logger.mode={mode}", f"logger.log_model={str(log_model).lower()}"])
    trainer = build_trainer(cfg, tmp_path)  # the W&B run itself starts only with fit
    (logger,) = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    assert logger._log_model is uploads
    assert "anonymous" not in logger._wandb_init and logger._wandb_init["job_type"] == "train"
    assert load_config("quickstart").logger.log_model is False  # off by default


def test_training_run_link_from_checkpoint_and_run_folder(tmp_path):
    from zoe_lightning.evaluation.evaluate import training_run

    payload = {"hyper_parameters": {"cfg": {"name": "exp", "group": None, "logger": {"project": "p"}}},
               "wandb": {"run_id": "abc123", "project": "p2", "entity": "", "group": "g2"}}
    info = training_run(str(tmp_path / "loose.ckpt"), payload)
    assert info == {"train_experiment": "exp", "train_group": "g2", "train_project": "p2", "train_run_id": "abc123",
                    "train_run_dir": None}
    # an older checkpoint inside its run folder: the id from the wandb/ folder name
    run = tmp_path / "exp" / "20260101-000000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: exp\n")
    (run / "wandb" / "offline-run-20260101_000001-zz9yy8xx").mkdir(parents=True)
    info = training_run(str(run / "checkpoints" / "best.ckpt"), {"hyper_parameters": {"cfg": {"name": "exp"}}})
    assert info["train_run_id"] == "zz9yy8xx" and info["train_group"] == "exp"
    assert info["train_run_dir"] == str(run.resolve())
    # a finished run: summary.json names its W&B run
    (run / "summary.json").write_text(json.dumps({"wandb_run_id": "sum111", "group": "gs", "project": "ps"}))
    info = training_run(str(run / "checkpoints" / "best.ckpt"), None)
    assert (info["train_run_id"], info["train_group"], info["train_project"]) == ("sum111", "gs", "ps")


def test_eval_run_file(offline_wandb):
    from zoe_lightning.cli import main

    from ..evaluation.test_evaluate import SMALL, VAL_SET, make_checkpoint

    run = offline_wandb / "runs" / "quickstart" / "20260101-000000"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = make_checkpoint(run / "checkpoints" / "best.ckpt", *SMALL)
    (run / "summary.json").write_text(json.dumps({"wandb_run_id": "trn42abc", "group": "train-group",
                                                  "experiment": "quickstart", "project": "zoe-lightning"}))
    out = offline_wandb / "eval"
    assert main(["eval", "quickstart", "--ckpt", str(ckpt), "--output", str(out), "--split", "val", "--no-flip",
                 "--crop", "none", "--device", "cpu", VAL_SET, "data.num_workers=0",
                 "logger.mode=offline"]) == 0
    got = read_run(run_file(out))
    assert got["run"].job_type == "eval" and got["run"].run_group == "train-group"
    config = got["config_updates"][0]
    assert config["split"] == "val" and config["flip_tta"] is False and config["crop"] == "none"
    assert config["datasets"] == ["synthetic_indoor"] and config["ckpt"] == str(ckpt.resolve())
    assert config["train_run_id"] == "trn42abc" and config["train_group"] == "train-group"
    assert config["train_run_dir"] == str(run.resolve()) and config["model"]["backbone"] == "test_vit"
    keys = [k for update in got["config_updates"] for k in update if k != "_wandb"]
    assert len(keys) == len(set(keys)) and "cfg" not in keys
    results = json.loads((out / "results.json").read_text())["datasets"]["synthetic_indoor"]
    assert got["summary"]["eval/synthetic_indoor/abs_rel"] == pytest.approx(results["abs_rel"])
    assert math.isfinite(results["abs_rel"])
