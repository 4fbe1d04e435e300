"""Issue #17, files and inputs: nothing is overwritten or lost (export, predict, sweep locks), model
input checks, and one-line errors for predict / eval / export inputs."""

import os
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ..evaluation.test_evaluate import SMALL, VAL_SET, make_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.ckpt")


@pytest.fixture(scope="module")
def nan_ckpt(ckpt, tmp_path_factory):
    """The tiny checkpoint with one NaN in a decoder weight."""
    state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    state["state_dict"][name] = state["state_dict"][name].clone()
    state["state_dict"][name].view(-1)[0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "nan.ckpt"
    torch.save(state, str(path))
    return path, name.partition(".")[2]  # the module's "model." prefix is not part of the model's keys


def snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file below ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def user_error(capsys, rc, *culprits):
    """Exit status 2, one short message (<= 3 lines) naming every culprit, no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, err
    for culprit in culprits:
        assert str(culprit) in err, (culprit, err)
    return err


def image(path, h, w, seed=0):
    Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("target", ["ckpt", "txt", "folder"])
def test_export_never_overwrites_the_checkpoint_or_other_files(ckpt, tmp_path, capsys, target):
    from zoe_lightning.cli import main

    work = tmp_path / "w"
    work.mkdir()
    source = work / "model.ckpt"
    source.write_bytes(ckpt.read_bytes())
    (work / "notes.txt").write_text("keep me")
    (work / "out").mkdir()
    before = snapshot(work)
    onnx = {"ckpt": source, "txt": work / "notes.txt", "folder": work / "out"}[target]
    rc = main(["export", "--ckpt", str(source), "--onnx", str(onnx), "--no-check"])
    user_error(capsys, rc, onnx)
    assert snapshot(work) == before


# ---------------------------------------------------------------- predict


def test_predict_same_stems_get_distinct_outputs_and_a_true_count(ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(("a.png", "a.jpg", "a_1.png", "A.bmp")):
        image(src / name, 12, 16, i)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(src), "--output", str(out), "--save", "npy"]) == 0
    assert "4 image(s) written" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    # sorted inputs: A.bmp, a.jpg, a.png, a_1.png; names compare case-insensitively
    assert names == ["A_depth.npy", "a.jpg_depth.npy", "a.png_depth.npy", "a_1_depth.npy"]


def test_predict_into_its_input_folder_never_writes_over_an_input(ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main

    src = tmp_path / "in"
    src.mkdir()
    image(src / "x.png", 10, 14, 0)
    image(src / "x_depth.png", 10, 14, 1)  # an input that x.png's default output name would hit
    before = snapshot(src)
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(src), "--output", str(src)]) == 0
    assert "2 image(s) written" in capsys.readouterr().out
    after = snapshot(src)
    for name, data in before.items():
        assert after[name] == data, f"{name} was overwritten"
    assert {"x.png_depth.png", "x.png_color.png", "x_depth_depth.png", "x_depth_color.png"} <= set(after)


def test_predict_output_that_is_a_file_is_one_line(ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main

    src = image(tmp_path / "a.png", 10, 14)
    target = tmp_path / "result.png"
    target.write_bytes(b"precious")
    before = snapshot(tmp_path)
    rc = main(["predict", "--ckpt", str(ckpt), "--input", str(src), "--output", str(target)])
    user_error(capsys, rc, "--output", target)
    assert snapshot(tmp_path) == before


def test_predict_reads_16_bit_greyscale_without_saturating(tmp_path):
    from zoe_lightning.evaluation.predict import read_image

    grey = (np.arange(6 * 8).reshape(6, 8) * 1000).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode.startswith("I")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (3, 6, 8)
    np.testing.assert_allclose(img[1].numpy(), grey / 65535.0, rtol=1e-6)
    assert 0 < float(img.mean()) < 0.5  # not all white


@pytest.mark.parametrize("width", [1, 3])
def test_predict_point_cloud_of_narrow_images(ckpt, tmp_path, capsys, width):
    from zoe_lightning.cli import main
    from zoe_lightning.evaluation.pointcloud import read_ply

    src = image(tmp_path / "narrow.png", 9, width)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(src), "--output", str(out),
                 "--save", "png16,ply"]) == 0
    _, verts = read_ply(out / "narrow.ply")
    assert len(verts) == 9 * width


# ---------------------------------------------------------------- eval / predict / export arguments and weights


def test_eval_batch_size_zero_is_one_line(ckpt, capsys):
    from zoe_lightning.cli import main

    rc = main(["eval", "quickstart", "--ckpt", str(ckpt), "--batch-size", "0", "--no-wandb", VAL_SET])
    user_error(capsys, rc, "--batch-size")


@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_non_finite_weights_are_refused(nan_ckpt, tmp_path, capsys, command):
    from zoe_lightning.cli import main

    path, name = nan_ckpt
    src = image(tmp_path / "a.png", 8, 8)
    argv = {"eval": ["eval", "quickstart", "--ckpt", str(path), "--no-wandb", VAL_SET],
            "predict": ["predict", "--ckpt", str(path), "--input", str(src), "--output", str(tmp_path / "o")],
            "export": ["export", "--ckpt", str(path), "--onnx", str(tmp_path / "m.onnx"), "--no-check"]}[command]
    user_error(capsys, main(argv), path, name, "NaN")
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- model inputs


@pytest.fixture(scope="module")
def model():
    from zoe_lightning import build_model

    from ..conftest import tiny_config

    torch.manual_seed(0)
    return build_model(tiny_config(*SMALL)).eval()


def test_uint8_images_are_converted_with_one_warning(model):
    from zoe_lightning.models import zoedepth

    x = torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8)
    zoedepth._UINT8_WARNED.clear()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = model(x).metric_depth
        model(x)
    assert sum("uint8" in str(w.message) for w in caught) == 1
    with torch.no_grad():
        ref = model(x.float() / 255).metric_depth
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("bad", ["nan", "inf", "empty", "int64"])
def test_bad_model_inputs_raise_naming_the_tensor(model, bad):
    x = torch.rand(2, 3, 32, 48)
    if bad == "nan":
        x[1, 0, 5, 5] = float("nan")
    elif bad == "inf":
        x[0, 2, 0, 0] = float("inf")
    elif bad == "empty":
        x = x[:0]
    else:
        x = (x * 255).long()
    with torch.no_grad(), pytest.raises(ValueError, match="image"):
        model(x)


def test_input_checks_stay_out_of_the_traced_graph(model):
    from zoe_lightning.evaluation.export import OnnxDepthModel

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(OnnxDepthModel(model), torch.rand(1, 3, 32, 48), check_trace=False)
    assert "isfinite" not in str(traced.graph)


# ---------------------------------------------------------------- sweep launchers

SWEEP = """
name: locks
method: grid
parameters:
  experiment: {value: quickstart}
  seed: {values: [1, 2, 3]}
command: ["${interpreter}", -m, zoe_lightning, sweep-run, "${args_no_hyphens}"]
"""


def _sweep(tmp_path):
    from zoe_lightning.tools.sweeps.grid import load_sweep

    path = tmp_path / "locks.yaml"
    path.write_text(SWEEP)
    return load_sweep(path)


class SlowRunner:
    def __init__(self):
        self.calls, self.guard = [], threading.Lock()

    def __call__(self, argv, env, log_path):
        with self.guard:
            self.calls.append(log_path.stem)
        time.sleep(0.3)
        out = next(a for a in argv if a.startswith("output_dir=")).partition("=")[2]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "summary.json"), "w") as fh:
            fh.write("{}")
        return 0


def test_two_launchers_never_run_the_same_grid_point(tmp_path):
    from zoe_lightning.tools.sweeps.runner import launch

    sweep, root, runner = _sweep(tmp_path), tmp_path / "runs", SlowRunner()
    threads = [threading.Thread(target=launch, args=(sweep, root), kwargs={"runner": runner, "python": "py"})
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # each point exactly once
    assert sorted(runner.calls) == ["quickstart-seed1", "quickstart-seed2", "quickstart-seed3"]
    assert not list((root / "sweeps" / "locks" / "locks").glob("*.lock"))  # released


def test_a_live_lock_is_respected_and_a_dead_one_taken_over(tmp_path, capsys):
    import json

    from zoe_lightning.tools.sweeps.runner import launch

    sweep, root, runner = _sweep(tmp_path), tmp_path / "runs", SlowRunner()
    locks = root / "sweeps" / "locks" / "locks"
    locks.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    (locks / "quickstart-seed1.lock").write_text(json.dumps({"pid": os.getppid(), "host": host}))  # alive
    (locks / "quickstart-seed2.lock").write_text(json.dumps({"pid": dead.pid, "host": host}))  # stale
    result = launch(sweep, root, runner=runner, python="py")
    assert sorted(runner.calls) == ["quickstart-seed2", "quickstart-seed3"]
    assert result == {"quickstart-seed1": "pending", "quickstart-seed2": "finished", "quickstart-seed3": "finished"}
    assert "quickstart-seed1 is being run by pid" in capsys.readouterr().out
    assert (locks / "quickstart-seed1.lock").exists() and not (locks / "quickstart-seed2.lock").exists()


def test_a_requeued_slurm_task_takes_its_own_lock_back(tmp_path, monkeypatch):
    import json

    from zoe_lightning.tools.sweeps.lock import PointLock

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    path = tmp_path / "p.lock"
    path.write_text(json.dumps({"pid": 1, "host": "other-node", "slurm_task": "77_4"}))
    with PointLock(path) as lock:
        assert lock.acquired
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "other-node", "slurm_task": "77_5"}))
    with PointLock(path) as lock:
        assert not lock.acquired
    assert path.exists()


def test_a_point_another_launcher_ran_meanwhile_is_not_rerun(tmp_path, capsys):
    """Launcher B planned every point; launcher A then ran (and failed) one of them: B leaves it."""
    from zoe_lightning.tools.sweeps.runner import SweepState, launch

    sweep, root, inner = _sweep(tmp_path), tmp_path / "runs", SlowRunner()
    state = SweepState(root / "sweeps" / "locks")

    def runner(argv, env, log_path):
        if log_path.stem == "quickstart-seed1":  # meanwhile, another launcher tries seed2, which fails
            state.update("quickstart-seed2", status="failed", attempts=1, returncode=1)
        return inner(argv, env, log_path)

    result = launch(sweep, root, runner=runner, python="py")
    assert sorted(inner.calls) == ["quickstart-seed1", "quickstart-seed3"]
    assert result["quickstart-seed2"] == "failed"
    assert "quickstart-seed2 is failed (another launcher), skipped" in capsys.readouterr().out
