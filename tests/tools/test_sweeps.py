"""Sweep files, the offline launcher (grid, commands, state/resume with a fake runner, devices,
SLURM array script) and the `sweep-run` entry point."""

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from zoe_lightning.errors import UserError
from zoe_lightning.tools.sweeps.grid import build_command, expand_grid, format_args, keyed_grid, load_sweep
from zoe_lightning.tools.sweeps.local import slurm_array_script
from zoe_lightning.tools.sweeps.runner import SweepState, find_resume_checkpoint, launch
from zoe_lightning.tools.sweeps.sweep_run import sweep_run_overrides, tag_run

from ..conftest import TINY

REPO = Path(__file__).resolve().parents[2]
SWEEPS = REPO / "experiments" / "sweeps"

SWEEP_YAML = """
name: demo
method: grid
parameters:
  experiment:
    values: [alpha, beta]
  seed:
    values: [1, 2, 3]
  optim.lr: {value: 0.001}
  model.img_size: {value: [64, 96]}
command: ["${env}", "${interpreter}", -m, zoe_lightning, sweep-run, "${args_no_hyphens}"]
"""


def write(tmp_path, text=SWEEP_YAML, name="demo.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expansion_and_keys(tmp_path):
    sweep = load_sweep(write(tmp_path))
    assert sweep.name == "demo" and sweep.varied == ["experiment", "seed"]
    grid = expand_grid(sweep)
    expected = [(e, s) for e in ("alpha", "beta") for s in (1, 2, 3)]
    assert [(g["experiment"], g["seed"]) for g in grid] == expected
    assert all(g["optim.lr"] == 0.001 and g["model.img_size"] == [64, 96] for g in grid)
    assert [k for k, _ in keyed_grid(sweep)] == [f"{e}-seed{s}" for e, s in expected]


def test_command_line_matches_wandb_agent_formatting(tmp_path):
    sweep = load_sweep(write(tmp_path))
    params = {"experiment": "alpha", "seed": 2, "optim.lr": 0.001, "model.img_size": [64, 96]}
    argv = build_command(sweep, params, python="/py", extra=["output_dir=o"])
    assert argv == ["/py", "-m", "zoe_lightning", "sweep-run", "experiment=alpha", "seed=2", "optim.lr=0.001",
                    "model.img_size=[64, 96]", "output_dir=o"]
    # peer implementation: the W&B agent's own macro expansion
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    mine = format_args(params)
    for macro in ("args", "args_no_hyphens", "args_no_boolean_flags"):
        assert mine[macro] == theirs[macro], macro


def test_default_command_and_program(tmp_path):
    sweep = load_sweep(write(tmp_path, "program: train.py\nparameters:\n  a: {values: [1]}\n", "p.yaml"))
    assert build_command(sweep, {"a": 1}, python="py") == ["py", "train.py", "--a=1"]


@pytest.mark.parametrize("text, fragment", [
    ("parameters:\n  lr: {min: 0.1, max: 1.0}\n", "distribution"),
    ("parameters:\n  lr: {values: []}\n", "non-empty list"),
    ("parameters: {}\n", "non-empty mapping"),
    ("method: hyperband\nparameters:\n  a: {value: 1}\n", "unknown method"),
    ("parameters:\n  a: {value: 1}\ncommand: [python, '${args_json}']\n", "not supported offline"),
    ("parameters:\n  a: {value: 1}\ncommand: [python, '${program}']\n", "no 'program'"),
])
def test_bad_sweep_files_fail_with_one_clear_line(tmp_path, text, fragment):
    with pytest.raises(UserError, match=fragment) as info:
        load_sweep(write(tmp_path, text, "bad.yaml"))
    assert "\n" not in str(info.value) and "bad.yaml" in str(info.value)


def test_random_method_falls_back_to_the_grid(tmp_path):
    sweep = load_sweep(write(tmp_path, SWEEP_YAML.replace("method: grid", "method: random")))
    assert len(expand_grid(sweep)) == 6 and "full grid" in sweep.notices[0]


class FakeRunner:
    """Pretends to train: writes last.ckpt (and summary.json when it 'finishes') under output_dir."""

    def __init__(self, interrupt=(), fail=()):
        self.calls = []
        self.interrupt, self.fail = set(interrupt), set(fail)

    def __call__(self, argv, env, log_path):
        key = log_path.stem
        out = Path(next(a for a in argv if a.startswith("output_dir=")).partition("=")[2])
        resume = argv[argv.index("--resume") + 1] if "--resume" in argv else None
        self.calls.append((key, resume, env.get("CUDA_VISIBLE_DEVICES")))
        ckpt = out / "exp" / f"t{len(self.calls)}" / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("ckpt")
        if key in self.interrupt:
            self.interrupt.discard(key)
            raise KeyboardInterrupt
        if key in self.fail:
            self.fail.discard(key)
            return 1
        (ckpt.parent.parent / "summary.json").write_text("{}")
        return 0


def test_state_and_resume_after_interrupt_and_failure(tmp_path):
    sweep = load_sweep(write(tmp_path, SWEEP_YAML.replace("[1, 2, 3]", "[1, 2]")))
    root = tmp_path / "runs"
    runner = FakeRunner(interrupt={"beta-seed1"}, fail={"alpha-seed2"})
    with pytest.raises(KeyboardInterrupt):
        launch(sweep, root, runner=runner, python="py")
    assert [c[0] for c in runner.calls] == ["alpha-seed1", "alpha-seed2", "beta-seed1"]
    state = SweepState(root / "sweeps" / "demo")
    assert [state.get(k)["status"] for k, _ in keyed_grid(sweep)] == ["finished", "failed", "interrupted", "pending"]
    assert state.get("alpha-seed1")["run_dir"].endswith("t1")
    interrupted_ckpt = root / "sweeps" / "demo" / "beta-seed1" / "exp" / "t3" / "checkpoints" / "last.ckpt"

    # second launch, failed runs skipped: only the interrupted (resumed) and the pending one
    runner2 = FakeRunner()
    result = launch(sweep, root, runner=runner2, python="py", retry_failed=False)
    assert runner2.calls == [("beta-seed1", str(interrupted_ckpt), None), ("beta-seed2", None, None)]
    assert result == {"alpha-seed1": "finished", "alpha-seed2": "failed", "beta-seed1": "finished",
                      "beta-seed2": "finished"}
    assert state.get("beta-seed1")["attempts"] == 2 and state.get("beta-seed1")["resumed_from"] == str(interrupted_ckpt)

    # third launch retries the failed run from its last.ckpt; nothing else runs again
    runner3 = FakeRunner()
    result = launch(sweep, root, runner=runner3, python="py")
    assert [c[0] for c in runner3.calls] == ["alpha-seed2"] and runner3.calls[0][1].endswith("last.ckpt")
    assert set(result.values()) == {"finished"}
    assert launch(sweep, root, runner=FakeRunner(), python="py") == result


def test_a_run_left_running_by_a_killed_launcher_is_resumed(tmp_path):
    sweep = load_sweep(write(tmp_path, SWEEP_YAML.replace("[alpha, beta]", "[alpha]").replace("[1, 2, 3]", "[1]")))
    root = tmp_path / "runs"
    state = SweepState(root / "sweeps" / "demo")
    state.update("alpha-seed1", status="running", attempts=1)  # nothing varies: experiment and seed still name it
    ckpt = root / "sweeps" / "demo" / "alpha-seed1" / "x" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("c")
    runner = FakeRunner()
    launch(sweep, root, runner=runner, python="py")
    assert runner.calls == [("alpha-seed1", str(ckpt), None)]


def test_find_resume_checkpoint_picks_the_newest(tmp_path):
    assert find_resume_checkpoint(tmp_path / "missing") is None
    old, new = tmp_path / "a" / "last.ckpt", tmp_path / "b" / "hpc_ckpt_3.ckpt"
    for i, p in enumerate((old, new)):
        p.parent.mkdir(parents=True)
        p.write_text("x")
        t = time.time() - 100 + 50 * i
        import os

        os.utime(p, (t, t))
    assert find_resume_checkpoint(tmp_path) == new


def test_parallel_runs_are_pinned_to_distinct_devices(tmp_path):
    sweep = load_sweep(write(tmp_path))
    active, seen, lock = set(), [], threading.Lock()
    inner = FakeRunner()

    def runner(argv, env, log_path):
        dev = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert dev not in active, "two concurrent runs on one device"
            active.add(dev)
            seen.append(dev)
        time.sleep(0.05)
        with lock:
            active.discard(dev)
        return inner(argv, env, log_path)

    result = launch(sweep, tmp_path / "runs", parallel=2, devices=["0", "1"], runner=runner, python="py")
    assert set(result.values()) == {"finished"} and len(seen) == 6 and set(seen) == {"0", "1"}


def test_slurm_array_script(tmp_path):
    path = write(tmp_path)
    sweep = load_sweep(path)
    script = slurm_array_script(sweep, path, Path("runs"), gpus_per_run=2, max_concurrent=3, partition="gpu",
                                time_limit="12:00:00", account="proj", workdir=Path("/work dir"))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--array=0-5%3", "--ntasks-per-node=2", "--gres=gpu:2", "--signal=SIGUSR1@90", "--requeue",
                      "--partition=gpu", "--time=12:00:00", "--account=proj", "--job-name=sweep-demo",
                      "--output=runs/sweeps/demo/slurm/%A_%a.out"):
        assert f"#SBATCH {directive}" in lines, directive
    assert "cd '/work dir'" in lines
    last = [ln for ln in lines if "sweep-local" in ln][0]
    assert last.endswith(f'--index "${{SLURM_ARRAY_TASK_ID}}" --override trainer.devices=2')
    assert str(path) in last and "--name demo" in last and last.startswith("srun ")
    assert "export ZOE_RUN_ID=sweep-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" in lines


def test_cli_dry_runs(tmp_path, capsys):
    from zoe_lightning.cli import main

    path = write(tmp_path)
    assert main(["sweep-local", str(path), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and out[0].startswith("[start] alpha-seed1: ")
    assert "experiment=alpha seed=1" in out[0] and "group=demo" in out[0]
    assert f"output_dir={tmp_path / 'runs' / 'sweeps' / 'demo' / 'alpha-seed1'}" in out[0]
    assert main(["sweep-local", str(path), "--slurm", "--dry-run"]) == 0
    assert "#SBATCH --array=0-5" in capsys.readouterr().out
    assert main(["sweep-local", str(path), "--index", "9"]) == 2
    assert "--index 9" in capsys.readouterr().err
    assert main(["sweep-local", str(tmp_path / "nope.yaml")]) == 2


def test_sweep_run_overrides_and_tags():
    exp, rest = sweep_run_overrides(["seed=3", "experiment=naive_head", "optim.lr=1"], sweep="s")
    assert exp == "naive_head" and rest == ["seed=3", "optim.lr=1", "group=s"]
    assert sweep_run_overrides(["experiment=a", "group=g"], sweep="s")[1] == ["group=g"]
    with pytest.raises(UserError, match="experiment=NAME"):
        sweep_run_overrides(["seed=1"])
    from zoe_lightning import load_config

    cfg = load_config("base", TINY + ["seed=7", "tags=[x, base]"])
    tag_run(cfg, ["sweep:g"])
    assert list(cfg.tags) == ["x", "base", "seed7", "sweep:g"]


def test_sweep_runs_are_of_job_type_sweep(monkeypatch):
    import zoe_lightning.train
    from zoe_lightning.tools.sweeps.sweep_run import sweep_run_main

    seen = []
    monkeypatch.setattr(zoe_lightning.train, "train", lambda cfg, resume=None: seen.append(cfg))
    monkeypatch.setenv("ZOE_SWEEP", "s1")
    assert sweep_run_main(["experiment=quickstart", "seed=2"]) == 0
    assert seen[0].logger.job_type == "sweep" and seen[0].group == "s1"
    from zoe_lightning import load_config

    assert load_config("quickstart").logger.job_type == "train"  # a plain `train` run


@pytest.mark.parametrize("name, size", [("head_variants", 21), ("routers", 9), ("head_variants_synthetic", 14),
                                        ("routers_synthetic", 6), ("heads_on_dinov2", 9),
                                        ("heads_on_dinov2_synthetic", 6)])
def test_repository_sweep_files_resolve_to_valid_configs(name, size):
    """Every grid point of the shipped files loads as a config (catches typos in keys and names)."""
    from zoe_lightning import load_config

    import yaml

    from zoe_lightning.metric_keys import monitor_for

    sweep = load_sweep(SWEEPS / f"{name}.yaml")
    metric = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())["metric"]
    assert sweep.name == name and sweep.method == "grid"
    assert sweep.parameters["group"] == {"value": name}
    assert sweep.command[-2:] == ["sweep-run", "${args_no_hyphens}"]
    grid = expand_grid(sweep)
    assert len(grid) == size
    seen = set()
    for params in grid:
        items = format_args(params)["args_no_hyphens"]
        exp, overrides = sweep_run_overrides(items)
        if exp in seen:
            continue
        seen.add(exp)
        cfg = load_config(exp, overrides)
        assert cfg.group == name and cfg.name == exp
        # W&B's sweep metric is a key every run logs: the run's checkpoint monitor
        assert metric == {"name": monitor_for(cfg), "goal": "minimize"}
        if name.endswith("synthetic"):
            assert cfg.data.source == "synthetic" and cfg.trainer.accelerator == "cpu"
    table = {"head_variants": 7, "routers": 3, "heads_on_dinov2": 3}[name.replace("_synthetic", "")]
    assert len(seen) == table


@pytest.mark.slow
def test_end_to_end_tiny_sweep_then_compare(tmp_path, monkeypatch):
    """A real 2-run sweep (tiny model, 2 steps each) through subprocesses, then `compare`."""
    text = f"""
name: e2e
parameters:
  experiment: {{values: [quickstart]}}
  seed: {{values: [1, 2]}}
  model.backbone: {{value: test_vit}}
  model.img_size: {{value: [64, 96]}}
  data.image_size: {{value: [64, 96]}}
  data.num_workers: {{value: 0}}
  data.epoch_length: {{value: 16}}
  data.val.0.options.length: {{value: 8}}
  trainer.max_epochs: {{value: 1}}
  logger.wandb: {{value: false}}
  callbacks.rich: {{value: false}}
  callbacks.depth_panels_every: {{value: 0}}
command: ["${{env}}", "${{interpreter}}", -m, zoe_lightning, sweep-run, "${{args_no_hyphens}}"]
"""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    sweep = load_sweep(write(tmp_path, text, "e2e.yaml"))
    sweep.parameters["group"] = {"value": "e2e"}
    result = launch(sweep, tmp_path / "runs", python=sys.executable)
    assert result == {"quickstart-seed1": "finished", "quickstart-seed2": "finished"}
    summaries = sorted((tmp_path / "runs" / "sweeps" / "e2e").rglob("summary.json"))
    assert len(summaries) == 2
    s = json.loads(summaries[0].read_text())
    assert s["group"] == "e2e" and "seed1" in s["tags"] and "quickstart" in s["tags"]
    assert s["job_type"] == "sweep" and s["monitor"] == "val/nyu/abs_rel" and "val/nyu/abs_rel" in s["best"]
    from zoe_lightning.tools.compare.report import compare

    out = compare(group="e2e", root=tmp_path / "runs", output=tmp_path / "cmp", log_wandb=False)
    assert out["table"]["rows"][0]["n"] == 2


def test_runs_finished_meanwhile_by_another_launcher_are_not_repeated(tmp_path):
    sweep = load_sweep(write(tmp_path, SWEEP_YAML.replace("[alpha, beta]", "[alpha]").replace("[1, 2, 3]", "[1, 2]")))
    root = tmp_path / "runs"
    state = SweepState(root / "sweeps" / "demo")
    inner = FakeRunner()

    def runner(argv, env, log_path):
        state.update("alpha-seed2", status="finished")  # e.g. a SLURM task or a second launcher
        return inner(argv, env, log_path)

    assert launch(sweep, root, runner=runner, python="py") == {"alpha-seed1": "finished", "alpha-seed2": "finished"}
    assert [c[0] for c in inner.calls] == ["alpha-seed1"]


def test_subprocess_runner_logs_output_and_stops_on_sigterm(tmp_path):
    """SIGTERM to the launcher is forwarded to the run, then the launcher stops (state: interrupted)."""
    import os
    import signal

    from zoe_lightning.tools.sweeps.runner import subprocess_runner

    log = tmp_path / "logs" / "k.log"
    assert subprocess_runner([sys.executable, "-c", "print('hello')"], dict(os.environ), log) == 0
    assert "hello" in log.read_text()
    child = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(3)); "
             "print('ready', flush=True); time.sleep(60)")
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.time()
    with pytest.raises(KeyboardInterrupt):
        subprocess_runner([sys.executable, "-c", child], dict(os.environ), log)
    timer.cancel()
    assert time.time() - started < 30
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored
