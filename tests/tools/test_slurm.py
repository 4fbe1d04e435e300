"""`zoe-lightning slurm`: the sbatch script (dry run), submission, and `--resume auto`."""

import os
import shlex
import stat
from pathlib import Path

import torch

from zoe_lightning.cli import _parser, main
from zoe_lightning.config import load_config
from zoe_lightning.train import _run_dir, find_last_checkpoint

OVERRIDE = "data.train=[{name: nyu, domain: nyu, options: {root: '/data/my nyu'}}]"


def _script(capsys, tmp_path, *extra):
    rc = main(["slurm", "inverse_attractor_16841", "--nodes", "2", "--gpus", "4", "--partition", "gpu",
               "--time", "24:00:00", "--account", "proj", "--dry-run", OVERRIDE, "seed=7",
               f"output_dir={tmp_path}", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out, out.err


def _directives(text):
    return [line[len("#SBATCH "):] for line in text.splitlines() if line.startswith("#SBATCH ")]


def test_dry_run_script_directives(capsys, tmp_path):
    text, err = _script(capsys, tmp_path)
    d = _directives(text)
    for expected in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--partition=gpu", "--time=24:00:00",
                     "--account=proj", "--signal=SIGUSR1@90", "--requeue", "--job-name=zoe-inverse_attractor_16841"):
        assert expected in d, (expected, d)
    assert text.startswith("#!/bin/bash\n")
    assert "export ZOE_RUN_ID=slurm-${SLURM_JOB_ID}" in text
    # the same text is written under <output_dir>/slurm/
    written = list((tmp_path / "slurm").glob("inverse_attractor_16841-*.sbatch"))
    assert len(written) == 1 and written[0].read_text() == text and "not submitted" in err



def test_script_changes_into_the_repository_root_by_default():
    from zoe_lightning.tools.slurm import render_script

    repo = Path(__file__).resolve().parents[2]
    text = render_script("inverse_attractor_16841", [], nodes=1, gpus=1)
    assert f"cd {shlex.quote(str(repo))}" in text.splitlines()

def test_srun_line_runs_train_with_the_overrides_verbatim(capsys, tmp_path):
    text, _ = _script(capsys, tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("srun ")]
    assert len(lines) == 1
    argv = shlex.split(lines[0])  # what bash hands to srun
    assert argv[0] == "srun" and argv[2:6] == ["-m", "zoe_lightning", "train", "inverse_attractor_16841"]
    assert OVERRIDE in argv and "seed=7" in argv  # spaces, braces and quotes survive the shell
    for expected in ("trainer.accelerator=gpu", "trainer.devices=4", "trainer.num_nodes=2"):
        assert expected in argv
    # and the train command line parses as intended
    args = _parser().parse_args(argv[4:])
    assert args.command == "train" and args.resume == "auto" and args.experiment == "inverse_attractor_16841"
    assert args.overrides[:3] == [OVERRIDE, "seed=7", f"output_dir={tmp_path}"]
    cfg = load_config(args.experiment, args.overrides)
    assert cfg.trainer.devices == 4 and cfg.trainer.num_nodes == 2 and cfg.seed == 7
    assert cfg.data.train[0].options.root == "/data/my nyu"


def test_options_after_the_overrides_and_cpu_jobs(capsys, tmp_path):
    rc = main(["slurm", "quickstart", f"output_dir={tmp_path}", "--gpus", "0", "--dry-run", "--sbatch=--qos=low",
               "--setup", "module load python"])
    text = capsys.readouterr().out
    assert rc == 0
    d = _directives(text)
    assert "--ntasks-per-node=1" in d and not any(x.startswith("--gres") for x in d) and "--qos=low" in d
    assert "module load python" in text and "trainer.accelerator=cpu" in text and "trainer.devices=1" in text


def test_bad_override_fails_before_writing(capsys, tmp_path):
    rc = main(["slurm", "quickstart", "trainer.devicez=2", f"output_dir={tmp_path}", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "trainer.devicez" in err and "devices" in err
    assert not (tmp_path / "slurm").exists()


def test_missing_sbatch_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rc = main(["slurm", "quickstart", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "sbatch not found" in err and "--dry-run" in err
    assert err.count("\n") == 1  # one line


def test_submission_calls_sbatch(capsys, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/sbatch_args\necho '4242;cluster'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    rc = main(["slurm", "quickstart", f"output_dir={tmp_path}", "--nodes", "1", "--gpus", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    args = (tmp_path / "sbatch_args").read_text().split()
    script = list((tmp_path / "slurm").glob("quickstart-*.sbatch"))
    assert args == ["--parsable", str(script[0])]
    assert "submitted job 4242" in out and str(Path(str(tmp_path)) / "quickstart" / "slurm-4242") in out


# ------------------------------------------------------------------ --resume auto

def _fake_run(root: Path, name: str, run: str, mtime: float, file: str = "checkpoints/last.ckpt") -> Path:
    path = root / name / run / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_resume_auto_picks_the_newest_last_ckpt(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOE_RUN_ID", raising=False)
    cfg = load_config("quickstart", [f"output_dir={tmp_path}"])
    assert find_last_checkpoint(cfg) is None
    _fake_run(tmp_path, "quickstart", "20260101-000000", 1_000)
    newest = _fake_run(tmp_path, "quickstart", "20250101-000000", 3_000)  # older name, newer file
    _fake_run(tmp_path, "quickstart", "20270101-000000", 2_000)
    _fake_run(tmp_path, "other_experiment", "20280101-000000", 9_000)
    (tmp_path / "quickstart" / "20290101-000000" / "checkpoints").mkdir(parents=True)  # no last.ckpt yet
    assert find_last_checkpoint(cfg) == newest


def test_resume_auto_inside_a_slurm_job_uses_the_job_directory(tmp_path, monkeypatch):
    cfg = load_config("quickstart", [f"output_dir={tmp_path}"])
    _fake_run(tmp_path, "quickstart", "20990101-000000", 9_000)  # another, newer run: ignored
    monkeypatch.setenv("ZOE_RUN_ID", "slurm-77")
    assert _run_dir(cfg) == tmp_path / "quickstart" / "slurm-77"
    assert find_last_checkpoint(cfg) is None  # first start of the job
    last = _fake_run(tmp_path, "quickstart", "slurm-77", 1_000)
    assert find_last_checkpoint(cfg) == last
    hpc = _fake_run(tmp_path, "quickstart", "slurm-77", 2_000, file="hpc_ckpt_1.ckpt")  # written at SIGUSR1
    assert find_last_checkpoint(cfg) == hpc
    os.utime(last, (3_000, 3_000))  # a later epoch's last.ckpt wins again
    assert find_last_checkpoint(cfg) == last


def test_train_resume_auto_continues_the_previous_run(tmp_path, monkeypatch):
    from zoe_lightning.train import train

    monkeypatch.delenv("ZOE_RUN_ID", raising=False)
    tiny = ["model.backbone=test_vit", "model.img_size=[64,64]", "model.features=16", "data.image_size=[64,64]",
            "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16", "model.head.projector_mlp_dim=16",
            "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=2", "data.epoch_length=2",
            "data.train=[{name: synthetic_indoor, domain: nyu, options: {length: 2}}]",
            "data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 2}}]",
            "logger.wandb=false", "callbacks.rich=false", "callbacks.depth_panels_every=0",
            "callbacks.bin_centers=false", "trainer.extra={num_sanity_val_steps: 0, enable_model_summary: false}",
            f"output_dir={tmp_path}"]
    import lightning as L

    class StopAfterFirstEpoch(L.Callback):  # stands in for a job killed at its time limit
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    cfg = load_config("quickstart", tiny + ["trainer.max_epochs=2"])
    first = train(cfg, extra_callbacks=[StopAfterFirstEpoch()])
    assert torch.load(first["last"], weights_only=True)["global_step"] == 1
    second = train(cfg, resume="auto")
    assert second["run_dir"] == first["run_dir"]  # same directory, continued
    assert torch.load(second["last"], weights_only=True)["global_step"] == 2
    assert len(list((tmp_path / "quickstart").iterdir())) == 1
    assert "ZOE_RUN_ID" not in os.environ  # restored after fit
