"""Resume: exact from a mid-epoch checkpoint, and every bad checkpoint refused in one line."""

import os
import pickle
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from zoe_lightning import load_config
from zoe_lightning.cli import main
from zoe_lightning.train import train

TINY = [
    "model.backbone=test_vit", "model.img_size=[64,96]", "model.features=32", "data.image_size=[64,96]",
    "data.batch_size=2", "data.val_batch_size=2", "logger.wandb=false", "callbacks.rich=false",
    "callbacks.depth_panels_every=0", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1",
    "trainer.deterministic=true", "data.train.0.options.length=16", "data.val.0.options.length=2",
]
MID_EPOCH = TINY + ["trainer.limit_train_batches=4", "trainer.val_check_interval=0.5", "trainer.max_epochs=2"]


class _Interrupted(Exception):
    pass


class _DieAfterStep(L.Callback):
    """The job dies (as under kill -9: nothing more is written) when step ``step`` would begin."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise _Interrupted()


class _Batches(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((trainer.current_epoch, batch_idx, float(batch["image"].sum()), float(outputs["loss"])))


def _cfg(tmp_path, name, *extra):
    return load_config("quickstart", MID_EPOCH + [f"output_dir={tmp_path / name}", *extra])


def _interrupted_last(tmp_path, step, *extra):
    with pytest.raises(_Interrupted):
        train(_cfg(tmp_path, "b", *extra), extra_callbacks=[_DieAfterStep(step)])
    (last,) = (tmp_path / "b").glob("*/*/checkpoints/last.ckpt")
    return last


def _loader(batched):
    from data_modules.mixing import MixtureBatchSampler, WeightedMixtureSampler
    from data_modules.resumable import ResumableLoader

    data = list(range(40))
    if batched:
        return ResumableLoader(data, batch_sampler=MixtureBatchSampler([30, 10], [1, 1], 4, seed=3))
    return ResumableLoader(data, batch_size=4, drop_last=True, sampler=WeightedMixtureSampler([30, 10], [1, 1], seed=3))


@pytest.mark.parametrize("batched", [False, True])
def test_loader_position_round_trip(batched):
    first = _loader(batched)
    first.sampler.set_epoch(1) if not batched else first.batch_sampler.set_epoch(1)
    full = [b.tolist() for b in first]
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 3}
    second = _loader(batched)
    second.load_state_dict(state)
    assert [b.tolist() for b in second] == full[3:]  # the rest of epoch 1, nothing repeated
    for _ in it:
        pass
    assert first.state_dict() == {"epoch": 2, "batches": 0}  # an epoch's end: the next one starts afresh


@pytest.mark.slow  # three short trainings: over a minute on a shared CPU
@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_is_exact(tmp_path, workers):
    extra = [f"data.num_workers={workers}"]
    full = _Batches()
    a = train(_cfg(tmp_path, "a", *extra), extra_callbacks=[full])
    last = _interrupted_last(tmp_path, 2, *extra)  # after the mid-epoch validation of epoch 0
    assert torch.load(last, weights_only=True)["global_step"] == 2
    resumed = _Batches()
    c = train(_cfg(tmp_path, "c", *extra), resume=str(last), extra_callbacks=[resumed])
    assert resumed.seen == full.seen[2:]  # the same batches, losses bit for bit
    assert c["metrics"] == a["metrics"]
    (summary_a,) = (tmp_path / "a").glob("*/*/summary.json")
    (summary_c,) = (tmp_path / "c").glob("*/*/summary.json")
    import json

    assert json.loads(summary_c.read_text())["global_step"] == json.loads(summary_a.read_text())["global_step"] == 8


def _cli_resume(tmp_path, ckpt, capsys, *extra):
    code = main(["train", "quickstart", *MID_EPOCH, f"output_dir={tmp_path / 'r'}", *extra, "--resume", str(ckpt)])
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(code, err, culprit):
    assert code == 2
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.startswith("zoe-lightning: error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) <= 3, err
    assert culprit in lines[0], err
    return lines[0]


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def good_last(tmp_path_factory):
    """A real last.ckpt of a short run (one epoch of two batches)."""
    out = tmp_path_factory.mktemp("good")
    cfg = load_config("quickstart", TINY + [f"output_dir={out}", "trainer.limit_train_batches=2",
                                            "trainer.max_epochs=1"])
    return Path(train(cfg)["last"])


def test_malicious_checkpoint_does_not_run_even_with_the_unsafe_variable(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    bad = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}, "evil": payload}, bad)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    code, err = _cli_resume(tmp_path, bad, capsys)
    line = _assert_one_line(code, err, str(bad))
    assert "refused" in line and not marker.exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # restored after the read


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_unreadable_checkpoints_are_one_line(tmp_path, capsys, good_last, kind):
    bad = tmp_path / "last.ckpt"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("<html>not found</html>\n")
    else:
        data = good_last.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    before = bad.read_bytes()
    code, err = _cli_resume(tmp_path, bad, capsys)
    _assert_one_line(code, err, str(bad))
    assert bad.read_bytes() == before  # never rewritten
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*/*/checkpoints/*.ckpt"))


def test_other_architecture_is_one_line(tmp_path, capsys, good_last):
    code, err = _cli_resume(tmp_path, good_last, capsys, "model.features=16")
    line = _assert_one_line(code, err, str(good_last))
    assert "does not fit the model" in line and "shape mismatch" in line


def test_weights_file_is_not_a_training_checkpoint(tmp_path, capsys):
    bad = tmp_path / "weights.pt"
    torch.save({"model.core.x": torch.zeros(2)}, bad)
    code, err = _cli_resume(tmp_path, bad, capsys)
    assert "not a training checkpoint" in _assert_one_line(code, err, str(bad))


def test_resume_with_larger_max_epochs_is_one_clear_line(tmp_path, capsys, good_last):
    code, err = _cli_resume(tmp_path, good_last, capsys, "trainer.limit_train_batches=2", "trainer.max_epochs=3")
    line = _assert_one_line(code, err, "trainer.max_epochs=3")
    assert "max_epochs=1" in line and str(good_last) in line


_KILL_AT_STEP = """
import os, signal, sys
import lightning as L
from zoe_lightning import load_config
from zoe_lightning.train import train

class KillAt(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)

train(load_config("quickstart", sys.argv[2:]), extra_callbacks=[KillAt()])
"""


def _subprocess(args, tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow  # three short trainings in fresh processes
def test_kill_9_after_a_mid_epoch_checkpoint_then_resume_is_exact(tmp_path):
    """A real process killed with SIGKILL right after its mid-epoch checkpoint (step 2 of 4 per epoch),
    resumed from the command line: the same final metrics and step count as an uninterrupted run."""
    import json
    import signal

    args = MID_EPOCH + ["data.num_workers=2"]
    full = _subprocess(["-m", "zoe_lightning", "train", "quickstart", *args, f"output_dir={tmp_path / 'a'}"], tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _subprocess(["-c", _KILL_AT_STEP, "2", *args, f"output_dir={tmp_path / 'b'}"], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (last,) = (tmp_path / "b").glob("*/*/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and state["epoch"] == 0  # written mid-epoch, by the validation at 0.5
    assert not list((tmp_path / "b").glob("*/*/summary.json"))  # nothing was written after the kill
    resumed = _subprocess(["-m", "zoe_lightning", "train", "quickstart", *args, f"output_dir={tmp_path / 'c'}",
                           "--resume", str(last)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (sa,) = (tmp_path / "a").glob("*/*/summary.json")
    (sc,) = (tmp_path / "c").glob("*/*/summary.json")
    a, c = json.loads(sa.read_text()), json.loads(sc.read_text())
    assert a["global_step"] == c["global_step"] == 8
    assert a["final"] == c["final"] and len(a["final"]) >= 6
