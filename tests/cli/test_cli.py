"""The command line: lazy imports, --version, help text, option names, one-line errors, make targets,
and the console of a training run (progress bar, model summary, tips, final report)."""

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from zoe_lightning.cli import BUILTIN, COMMANDS, _parser, _subparser, _take_overrides, main, plain_text

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
RST = re.compile(r"``|:(class|func|meth|mod|attr|data|obj):`")


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_cli_and_its_help_load_neither_torch_nor_lightning():
    heavy = "['torch', 'lightning', 'timm', 'wandb']"
    code = (f"import sys\nimport zoe_lightning.cli as c\nprint([m for m in {heavy} if m in sys.modules])\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {heavy} if m in sys.modules])")
    lines = _python(code).splitlines()
    assert lines[0] == "[]"  # after the import
    assert lines[-1] == "[]"  # after printing the help of every command


def test_the_cli_leaves_the_offline_switches_to_the_caller():
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "NO_ALBUMENTATIONS_UPDATE")}
    code = ("import os, zoe_lightning.cli\n"
            "print(os.environ.get('HF_HUB_OFFLINE'), os.environ.get('NO_ALBUMENTATIONS_UPDATE'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "None None"


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"zoe-lightning {version('zoe-lightning')}"


@pytest.mark.parametrize("command", list(BUILTIN) + list(COMMANDS))
def test_every_option_of_every_command_has_plain_help(command):
    parser = _subparser(_parser(command), command)
    for action in parser._actions:
        if isinstance(action, argparse_help_types()):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command}: {name} has no help text"
    text = parser.format_help()
    assert not RST.search(text), f"{command} --help shows reStructuredText markup"


def argparse_help_types():
    import argparse

    return (argparse._HelpAction, argparse._VersionAction)


def test_plain_text_drops_rst_roles_and_literals():
    assert plain_text("over :class:`~data_modules.evaluation.EvalDataModule` with ``--devices N``") == \
        "over EvalDataModule with --devices N"
    assert plain_text("see :func:`zoe_lightning.inference.predict_images`.") == \
        "see zoe_lightning.inference.predict_images."


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in list(BUILTIN) + list(COMMANDS):
        assert command in out


def test_checkpoint_option_is_ckpt_everywhere():
    for command in ("eval", "predict", "export"):
        options = {o for a in _subparser(_parser(command), command)._actions for o in a.option_strings}
        assert "--ckpt" in options, command
        assert not options & {"--set", "--model-set"}, command


@pytest.mark.parametrize("argv, expected", [
    (["export", "{ckpt}", "--onnx", "m.onnx"], "give the checkpoint with --ckpt: zoe-lightning export --ckpt {ckpt}"),
    (["predict", "{ckpt}", "--input", "a.png", "--output", "o"], "give the checkpoint with --ckpt"),
    (["eval", "quickstart", "--ckpt", "{ckpt}", "--set", "a=1"], "--set is gone"),
    (["export", "--ckpt", "{ckpt}", "--onnx", "m.onnx", "--model-set", "model.x=1"], "--model-set is gone"),
    (["export", "--ckpt", "{ckpt}", "--onnx", "m.onnx", "typo"], "'typo' is not a key=value override"),
])
def test_option_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    ckpt = str(tmp_path / "best.ckpt")
    rc = main([a.format(ckpt=ckpt) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("zoe-lightning: error: ") and expected.format(ckpt=ckpt) in err


def test_overrides_are_taken_from_anywhere_on_the_line():
    sub = _subparser(_parser("predict"), "predict")
    tokens = ["--ckpt", "c.ckpt", "--input", "a.png", "b.png", "model.keep_aspect_ratio=true", "--output", "x=y",
              "model.bins.0.max_depth=80"]
    rest, overrides = _take_overrides(sub, tokens)
    assert overrides == ["model.keep_aspect_ratio=true", "model.bins.0.max_depth=80"]
    assert rest == ["--ckpt", "c.ckpt", "--input", "a.png", "b.png", "--output", "x=y"]  # x=y: --output's value


def test_eval_sends_model_overrides_to_the_checkpoint():
    from zoe_lightning.evaluation.evaluate import split_overrides

    exp, model = split_overrides(["data.num_workers=0", "model.keep_aspect_ratio=true", "logger.wandb=false"])
    assert exp == ["data.num_workers=0", "logger.wandb=false"] and model == ["model.keep_aspect_ratio=true"]


# ---------------------------------------------------------------------------------------------- make


def _make(tmp_path, target, *variables):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    fake = venv / "bin" / "zoe-lightning"
    fake.write_text("#!/bin/sh\necho \"zoe-lightning $*\"\n")
    fake.chmod(0o755)
    (venv / ".installed").touch()
    cmd = ["make", "-s", "-C", str(REPO), "-o", f"{venv}/.installed", target, f"VENV={venv}",
           f"RUNS_ROOT={tmp_path / 'runs'}", *variables]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_eval_and_predict_default_to_the_newest_best_checkpoint(tmp_path):
    out = _make(tmp_path, "eval", "EXP=quickstart")
    assert out.returncode != 0
    assert out.stderr.splitlines()[0].startswith("make eval: no CKPT given and no ") and "train first" in out.stderr
    old, new = (tmp_path / "runs" / "quickstart" / run / "checkpoints" / "best.ckpt" for run in ("b_old", "a_new"))
    for path, mtime in ((old, 1_000_000), (new, 2_000_000)):
        path.parent.mkdir(parents=True)
        path.touch()
        os.utime(path, (mtime, mtime))
    out = _make(tmp_path, "eval", "EXP=quickstart")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"make eval: CKPT not given: using the newest best checkpoint of quickstart, {new}"
    assert lines[1] == f"zoe-lightning eval quickstart --ckpt {new}"
    out = _make(tmp_path, "eval", "EXP=quickstart", "CKPT=given.ckpt")
    assert out.stdout.strip() == "zoe-lightning eval quickstart --ckpt given.ckpt"

    out = _make(tmp_path, "predict", "EXP=quickstart")
    assert out.returncode != 0 and out.stderr.splitlines()[0].startswith("make predict: give INPUT=")
    out = _make(tmp_path, "predict", "EXP=quickstart", "INPUT=photos", "OUTPUT=depth")
    assert out.stdout.splitlines()[-1] == f"zoe-lightning predict --ckpt {new} --input photos --output depth"
    out = _make(tmp_path, "export", "EXP=quickstart", "ONNX=m.onnx")
    assert out.stdout.splitlines()[-1] == f"zoe-lightning export --ckpt {new} --onnx m.onnx"


# -------------------------------------------------------------------------------------- training console


def test_baseline_wording():
    from zoe_lightning.run_summary import baseline_text

    assert baseline_text(0.5, 0.4) == "worse by 25.0%"  # 0.5 / 0.4 = 1.25
    assert baseline_text(0.3, 0.4) == "better by 25.0%"  # 1 - 0.3 / 0.4
    assert baseline_text(0.4, 0.4) == "the same"


def test_epoch_text_of_both_progress_bars():
    from callbacks.console import EpochProgressBar, RichEpochProgressBar, epoch_text

    assert epoch_text(0, 3) == "Epoch 1/3" and epoch_text(2, 3) == "Epoch 3/3"
    assert epoch_text(4, -1) == "Epoch 5" and epoch_text(0, None) == "Epoch 1"
    rich = RichEpochProgressBar()
    rich._trainer = SimpleNamespace(max_epochs=3)
    assert rich._get_train_description(0).strip() == "Epoch 1/3"
    assert issubclass(EpochProgressBar, __import__("lightning").pytorch.callbacks.TQDMProgressBar)


TINY_RUN = [
    "model.backbone=test_vit", "model.img_size=[64,96]", "model.features=32", "data.image_size=[64,96]",
    "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=2", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1", "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "output_dir=runs",
    "callbacks.depth_panels_every=1", "callbacks.bin_centers=false",
    "data.train=[{name: synthetic_indoor, domain: nyu, options: {length: 8}}]",
    "data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 4}}]",
]


def test_plain_training_console_and_report(tmp_path, monkeypatch, capfd):
    from zoe_lightning import load_config
    from zoe_lightning.train import train

    monkeypatch.chdir(tmp_path)  # output_dir=runs is relative: the report must print absolute paths
    cfg = load_config("quickstart", TINY_RUN + ["callbacks.rich=false", "logger.wandb=false"])
    result = train(cfg)
    out, err = capfd.readouterr()
    text = out + err
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert not re.search(r"Epoch 0\b", text) and "v_num" not in text
    for noise in ("litlogger", "litmodels", "already configured with model summary", "FLOPs",
                  "validation will run at the end of the training epoch", "stepping batches", "Seed set"):
        assert noise not in text, noise
    report = out[out.index("=" * 72):]
    run_dir = (tmp_path / result["run_dir"]).resolve()
    assert f"finished in {run_dir} after 4 steps (2 epochs)" in report
    assert re.search(r"constant-depth predictor: [\d.]+ vs [\d.]+, (better|worse) by \d+\.\d%", report)
    assert "% lower" not in report
    assert f"best={run_dir / 'checkpoints' / 'best.ckpt'}" in report
    assert f"CSV log:     {run_dir / 'csv' / 'metrics.csv'}" in report
    # one step count: 2 batches x 2 epochs; validations after steps 2 and 4 in the CSV, the media
    # file names and the report
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        val_steps = [int(float(r["step"])) for r in csv.DictReader(fh) if r.get("val/nyu/abs_rel")]
    assert val_steps == [2, 4]
    media = sorted(p.name for p in (run_dir / "csv" / "media").glob("val_depth_panels_*step*.png"))
    assert media == ["val_depth_panels_nyu_step2.png", "val_depth_panels_nyu_step4.png"]
    assert "last validation metrics at step 4:" in report
    assert re.search(r"best validation REL: [\d.]+ at step [24]\n", report)


@pytest.mark.slow
def test_rich_training_with_wandb_prints_the_report_last(tmp_path):
    argv = [sys.executable, "-m", "zoe_lightning", "train", "quickstart", *TINY_RUN, "callbacks.depth_panels_every=0",
            "callbacks.rich=true", "logger.wandb=true", "logger.mode=offline"]
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, timeout=600,
                         env=dict(ENV, WANDB_MODE="offline", COLUMNS="160", PYTHONUNBUFFERED="1"))
    text = out.stdout
    assert out.returncode == 0, text[-2000:]
    assert "Epoch 1/2" in text and "Epoch 2/2" in text and "v_num" not in text
    for noise in ("litlogger", "already configured with model summary", "FLOPs", "anonymous setting"):
        assert noise not in text, noise
    # W&B's closing block comes first, the report last
    report_start = text.index("=" * 72)
    assert text.index("wandb: Find logs at") < report_start
    assert text.rstrip().endswith("=" * 72) and "wandb:" not in text[report_start:]
    assert f"in {tmp_path.resolve() / 'runs' / 'quickstart'}" in text[report_start:]
