"""A non-editable install ships the experiments: ``pip install .`` then run the CLI from elsewhere."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked and not ignored), so the build leaves the checkout clean."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


@pytest.mark.slow
def test_non_editable_install_runs_experiments_and_config_from_another_folder(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("needs git to list the repository's files")
    src, target, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _source_copy(src)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, timeout=600)
    assert sorted(p.name for p in (target / "experiments").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "experiments").glob("*.yaml"))
    assert (target / "experiments" / "sweeps" / "routers.yaml").is_file()
    env = {k: v for k, v in os.environ.items() if k != "ZOE_EXPERIMENTS"}
    env["PYTHONPATH"] = str(target)  # the install, not the repository
    script = [sys.executable, str(target / "bin" / "zoe-lightning")]

    def run(*args, **extra):
        return subprocess.run(script + list(args), cwd=elsewhere, env={**env, **extra}, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([sys.executable, "-c", "import zoe_lightning.config as c; print(c.experiments_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert Path(where.stdout.strip()) == target / "experiments", where.stderr
    listed = run("experiments")
    assert listed.returncode == 0, listed.stderr
    assert "quickstart" in listed.stdout.split() and "zoed_m12_n" in listed.stdout.split()
    shown = run("config", "quickstart")
    assert shown.returncode == 0, shown.stderr
    assert "name: quickstart" in shown.stdout and "backbone: resnet18" in shown.stdout
    empty = run("experiments", ZOE_EXPERIMENTS=str(elsewhere))  # the override wins, and nothing is an error
    assert empty.returncode == 2 and str(elsewhere) in empty.stderr and empty.stderr.strip().count("\n") == 0
