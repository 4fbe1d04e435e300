"""Train on your own folder in one command: ``train folder_quickstart data.root=DIR``.

The folder holds the documented layout (``train|val/rgb/<name>.<png|jpg>`` with 16-bit millimetre
``train|val/depth/<name>[_depth].png``). Every depth map is constant, so the best constant
predictor's REL (printed and stored beside the model's) is known by hand: training medians 1.5,
2.0, 2.5 m -> constant 2.0 m; validation at 2.5 m -> REL = 0.5 / 2.5 = 0.2. Reading the wrong files
or the wrong unit gives another number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.common import coord_image, write_png16, write_rgb
from zoe_lightning import cli

# CPU-light: the experiment's recipe and data, a tiny backbone and small images
FAST = ["data.num_workers=0", "data.batch_size=4", "data.val_batch_size=2", "trainer.extra={fast_dev_run: 2}",
        "logger.wandb=false", "callbacks.rich=false", "callbacks.depth_panels_every=0",
        "model.backbone=test_vit", "model.features=16", "model.img_size=[48,64]", "data.image_size=[48,64]",
        "trainer.log_every_n_steps=1"]


def _my_rgbd(root: Path) -> Path:
    h, w = 48, 64
    train_metres = [1.5, 2.0, 2.5, 2.0, 1.5, 2.5, 2.0, 2.0]
    for k, metres in enumerate(train_metres):
        ext = "jpg" if k % 3 == 0 else "png"  # jpg and png images, with and without the _depth suffix
        write_rgb(root / "train" / "rgb" / f"room{k:02d}.{ext}", coord_image(h, w, seed=k))
        suffix = "_depth" if k % 2 else ""
        write_png16(root / "train" / "depth" / f"room{k:02d}{suffix}.png", np.full((h, w), metres * 1000))
    for k in range(4):
        write_rgb(root / "val" / "rgb" / f"hall{k}.png", coord_image(h, w, seed=50 + k))
        write_png16(root / "val" / "depth" / f"hall{k}.png", np.full((h, w), 2500))
    return root


def test_train_on_a_folder_in_one_command(tmp_path, capsys):
    root = _my_rgbd(tmp_path / "my_rgbd")
    runs = tmp_path / "runs"
    rc = cli.main(["train", "folder_quickstart", f"data.root={root}", f"output_dir={runs}", *FAST])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    (summary_path,) = runs.glob("folder_quickstart/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "finished" and summary["group"] == "folder_quickstart"
    assert "synthetic" not in summary["tags"]
    assert summary["global_step"] == 2  # 8 training pairs, batches of 4, one epoch
    assert summary["baseline_rel"] == {"nyu": pytest.approx(0.2, abs=1e-4)}
    assert np.isfinite(summary["final"]["val/nyu/abs_rel"])


def test_without_the_folder_it_stops_in_one_line_before_writing(tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = cli.main(["train", "folder_quickstart", f"output_dir={runs}", *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "data.root=" in err and "folder_quickstart" in err
    assert not runs.exists()
