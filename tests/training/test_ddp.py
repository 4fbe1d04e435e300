"""Multi-process training: strategy resolution, and a real 2-process CPU DDP run (gloo).

The DDP run trains the two-head quickstart with a *labeled* router and one image per process, so
every step leaves one head of each process without images: it only works because unused-parameter
detection is switched on automatically. Its validation metrics, gathered over both processes,
must equal a single-process validation of the same checkpoint on the same data.
"""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zoe_lightning import load_config
from zoe_lightning.train import heads_can_skip_batches, resolve_strategy

from ..conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
NK = "model.bins=[{name: nyu, n_bins: 16, max_depth: 10},{name: kitti, n_bins: 16, max_depth: 80}]"


@pytest.mark.parametrize("router,devices,nodes,strategy,expected", [
    ("labeled", 2, 1, "auto", "ddp_find_unused_parameters_true"),
    ("trained", 1, 2, "ddp", "ddp_find_unused_parameters_true"),  # 2 nodes x 1 device
    ("trained", "0,1", 1, "auto", "ddp_find_unused_parameters_true"),
    ("auto", 2, 1, "auto", "auto"),  # the auto router runs every head on every image in training
    ("labeled", 1, 1, "auto", "auto"),  # one process: no DDP at all
    ("labeled", 2, 1, "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_false"),  # explicit wins
    ("labeled", 4, 1, "fsdp", "fsdp"),
])
def test_unused_parameter_detection_for_heads_that_skip_batches(router, devices, nodes, strategy, expected):
    cfg = load_config("base", TINY + [NK, f"model.router.type={router}", f"trainer.devices={devices}",
                                      f"trainer.num_nodes={nodes}", f"trainer.strategy={strategy}",
                                      "trainer.accelerator=cpu"])
    assert resolve_strategy(cfg) == expected


def test_single_head_models_keep_the_configured_strategy():
    cfg = load_config("base", TINY + ["trainer.devices=2", "trainer.accelerator=cpu"])
    assert not heads_can_skip_batches(cfg) and resolve_strategy(cfg) == "auto"
    rel = load_config("base", TINY + [NK, "stage=relative", "trainer.devices=2"])
    assert not heads_can_skip_batches(rel)  # stage 1 has no metric heads


def _last_validation(csv_path: Path):
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/abs_rel")]
    assert rows, f"no validation row in {csv_path}"
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v not in ("", None)}


DDP_RUN = [
    "model.backbone=test_vit", "model.img_size=[64,64]", "model.features=16", NK, "model.router.type=labeled",
    "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16", "model.head.projector_mlp_dim=16",
    "data.image_size=[64,64]", "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=1",
    "data.epoch_length=4", "data.augment=false",
    "data.train=[{name: synthetic_indoor, domain: nyu, options: {length: 4}},"
    "{name: synthetic_outdoor, domain: kitti, options: {length: 4}}]",
    "data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 3}},"
    "{name: synthetic_outdoor, domain: kitti, options: {length: 1}}]",  # rank 1 gets no kitti image
    "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=auto", "trainer.max_epochs=1",
    "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.deterministic=true",
    "trainer.extra={num_sanity_val_steps: 0}", "logger.wandb=false", "callbacks.rich=false",
    "callbacks.depth_panels_every=0", "callbacks.bin_centers=false", "callbacks.router_stats=false",
]


def _clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "ZOE_RUN_ID", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_"))}
    env.update(PYTHONPATH=str(ROOT), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.mark.slow
def test_two_process_cpu_ddp_matches_single_process_validation(tmp_path):
    import lightning as L

    from data_modules.datamodule import build_datamodule
    from zoe_lightning.modules import MetricDepthModule

    overrides = DDP_RUN + [f"output_dir={tmp_path}"]
    proc = subprocess.run([sys.executable, "-m", "zoe_lightning", "train", "quickstart_nk", *overrides],
                          cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=420)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "ddp_find_unused_parameters_true" in log or "distributed_backend=gloo" in log, log[-2000:]
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log, log[-2000:]
    # rank 0 alone owns the run directory and prints the report
    runs = list((tmp_path / "quickstart_nk").iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert log.count("finished in") == 1, log[-3000:]
    ddp = _last_validation(run / "csv" / "metrics.csv")

    # the same checkpoint validated by one process on the same data
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.trainer.devices = 1
    module = MetricDepthModule.load_from_checkpoint(str(run / "checkpoints" / "last.ckpt"), weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    validated = trainer.validate(module, datamodule=build_datamodule(cfg), verbose=False)[0]
    single = {k: float(v) for k, v in validated.items()}
    for key in ("val/nyu/abs_rel", "val/nyu/rmse", "val/nyu/a1", "val/kitti/abs_rel", "val/kitti/rmse",
                "val/kitti/log_10", "val/abs_rel", "val/rmse"):
        assert key in ddp and key in single, (key, sorted(ddp), sorted(single))
        assert math.isfinite(single[key])
        assert ddp[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key
