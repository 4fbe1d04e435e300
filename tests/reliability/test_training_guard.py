"""Training never fails silently: divergence stops the run, bad data stops it before the first
step, and a signal leaves a resumable checkpoint and an ``interrupted`` summary."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401  (its log handler binds sys.stderr at import: not a test's capsys)
import pytest
import torch

from tests.fixtures.folder import make_folder
from zoe_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY_RUN = [
    "model.backbone=test_vit", "model.img_size=[64,96]", "model.features=32", "data.image_size=[64,96]",
    "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=2", "logger.wandb=false",
    "callbacks.rich=false", "callbacks.depth_panels_every=0", "trainer.log_every_n_steps=1",
    "trainer.max_epochs=1", "trainer.limit_val_batches=1",
]


def _run(capsys, tmp_path, *overrides, experiment="quickstart"):
    code = main(["train", experiment, *TINY_RUN, f"output_dir={tmp_path / 'runs'}", *overrides])
    return code, capsys.readouterr().err


def _errors(err):
    return [line for line in err.splitlines() if line.startswith("zoe-lightning: error:")]


def _summary(tmp_path):
    found = list((tmp_path / "runs").glob("*/*/summary.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def _checkpoints(tmp_path):
    return sorted((tmp_path / "runs").glob("*/*/checkpoints/*.ckpt"))


def _all_finite(path):
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if torch.is_tensor(t) and t.is_floating_point())


def test_diverged_run_stops_with_status_diverged_and_no_nan_checkpoint(capsys, tmp_path):
    code, err = _run(capsys, tmp_path, "optim.lr=1e6", "trainer.gradient_clip_val=0", "trainer.max_bad_steps=2",
                     "trainer.limit_train_batches=12")
    assert code == 2
    assert "Traceback" not in err
    (line,) = _errors(err)
    assert "diverged at step" in line and "trainer.max_bad_steps=2" in line
    summary = _summary(tmp_path)
    assert summary["status"] == "diverged" and summary["stopped_at_step"] >= 2
    assert f"step {summary['stopped_at_step']}" in summary["reason"]
    for path in _checkpoints(tmp_path):  # whatever was written holds finite weights only
        assert _all_finite(path), path


def _invalid_folder(root, n=3):
    """A folder set whose depths (1..49 m) all lie beyond its max_depth: no valid pixel."""
    make_folder(root, n=n, depth_format="npy")
    return (f"{{name: folder, domain: nyu, options: {{root: '{root}', image_glob: 'images/**/*.png', "
            f"depth_glob: 'depth/**/*.npy', image_suffix: _rgb, depth_suffix: _depth, max_depth: 0.5}}}}")


def _valid_folder(root, n):
    make_folder(root, n=n, depth_format="npy")
    return (f"{{name: folder, domain: nyu, options: {{root: '{root}', image_glob: 'images/**/*.png', "
            f"depth_glob: 'depth/**/*.npy', image_suffix: _rgb, depth_suffix: _depth, max_depth: 60}}}}")


@pytest.mark.parametrize("split, key", [("train", "data.train.0"), ("val", "data.val.0")])
def test_set_without_valid_pixels_stops_before_the_first_step(capsys, tmp_path, split, key):
    entry = _invalid_folder(tmp_path / "bad")
    code, err = _run(capsys, tmp_path, f"data.{split}=[{entry}]")
    assert code == 2 and "Traceback" not in err
    (line,) = _errors(err)
    assert f"{key} (folder)" in line and "no valid depth pixel" in line
    assert not _checkpoints(tmp_path) and not list((tmp_path / "runs").glob("*/*/summary.json"))
    assert "Epoch 1" not in err  # no training step ran (the bar counts epochs from 1)


def test_training_set_smaller_than_one_batch_stops_up_front(capsys, tmp_path):
    entry = _valid_folder(tmp_path / "small", n=1)
    code, err = _run(capsys, tmp_path, f"data.train=[{entry}]")
    assert code == 2 and "Traceback" not in err
    (line,) = _errors(err)
    assert "data.train.0 (folder)" in line and "fewer than one batch" in line


def test_probe_reports_size_and_valid_share(capsys, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    code, _ = _run(capsys, tmp_path, "trainer.limit_train_batches=1")
    assert code == 0
    text = caplog.text + capsys.readouterr().err
    assert re.search(r"data: train set data\.train\.0 \(synthetic_indoor\): 1200 samples, 100\.0% valid", text)
    assert re.search(r"data: val set data\.val\.0 \(synthetic_indoor\): 100 samples", text)
    # once per set: the reader's own line appears only when it has counters to report
    assert len(re.findall(r"data: train set", caplog.text)) == 1, caplog.text
    assert _summary(tmp_path)["status"] == "finished"


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("SLURM_JOB_ID", None)
    env.pop("SLURM_NTASKS", None)
    return env


def _train_until_first_step(tmp_path, sig):
    """A real training process, sent ``sig`` once its progress bar shows a completed step."""
    cmd = [sys.executable, "-m", "zoe_lightning", "train", "quickstart", *TINY_RUN, f"output_dir={tmp_path / 'runs'}",
           "trainer.limit_train_batches=200", "trainer.val_check_interval=1.0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.set_blocking(proc.stdout.fileno(), False)
    seen, deadline = b"", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        seen += proc.stdout.read() or b""
        if re.search(rb"Epoch [^|\r\n]*\|[^|\r\n]*\| *[1-9]\d*/\d+ \[", seen):  # the training bar, not sanity checking
            break
        time.sleep(0.2)
    assert proc.poll() is None, seen.decode(errors="replace")[-2000:]
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=240)
    return proc.returncode, (seen + (rest or b"")).decode(errors="replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_last_checkpoint_and_interrupted_summary(tmp_path, sig, capsys):
    code, err = _train_until_first_step(tmp_path, sig)
    assert code == 128 + int(sig), err[-2000:]
    assert "Traceback" not in err
    summary = _summary(tmp_path)
    assert summary["status"] == "interrupted" and summary["stopped_at_step"] >= 1
    assert signal.Signals(sig).name in summary["reason"]
    last = Path(summary["checkpoints"]["last"])
    assert last.name == "last.ckpt" and last.is_file() and _all_finite(last)
    assert [line for line in err.splitlines() if "interrupted by" in line] == [
        f"zoe-lightning: interrupted by {summary['reason']}"]
    if sig != signal.SIGTERM:
        return
    stopped = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    code = main(["train", "quickstart", *TINY_RUN, f"output_dir={tmp_path / 'resumed'}",
                 f"trainer.limit_train_batches={stopped + 2}", "--resume", str(last)])
    assert code == 0
    (resumed,) = (tmp_path / "resumed").glob("*/*/summary.json")
    result = json.loads(resumed.read_text())
    assert result["status"] == "finished" and result["global_step"] == stopped + 2


def test_slurm_sigusr1_still_saves_hpc_checkpoint_and_requeues(tmp_path, monkeypatch, capsys):
    """Under SLURM, the guard's own SIGINT/SIGTERM handlers leave Lightning's SIGUSR1 auto-requeue
    alone: the signal writes ``hpc_ckpt_1.ckpt`` and calls ``scontrol requeue <job>``; training goes on."""
    import lightning as L

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in dict(SLURM_JOB_ID="4242", SLURM_JOB_NAME="zoe-quickstart", SLURM_NTASKS="1",
                           SLURM_NNODES="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
                           SLURM_NODELIST="localhost", SLURM_JOB_NODELIST="localhost").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)

    class SendUsr1(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1 and batch_idx == 1:
                os.kill(os.getpid(), signal.SIGUSR1)

    from zoe_lightning import load_config
    from zoe_lightning.train import train

    result = train(load_config("quickstart", TINY_RUN + [f"output_dir={tmp_path / 'runs'}", "trainer.limit_train_batches=3"]),
                   extra_callbacks=[SendUsr1()])
    (hpc,) = (tmp_path / "runs").glob("*/*/hpc_ckpt_1.ckpt")
    assert torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == 1
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert _summary(tmp_path)["status"] == "finished" and result["last"]
