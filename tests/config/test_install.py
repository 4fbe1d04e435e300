"""Install anywhere: ``install_requires`` holds compatible ranges (no torch pin) and every package the
code imports; optional features name their extra in one line; the Makefile keeps the tested pins,
installs only what ``train`` needs, adds the dev extra for the tests, and offers CPU-only torch."""

from __future__ import annotations

import argparse
import ast
import configparser
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from zoe_lightning.errors import UserError

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("zoe_lightning", "data_modules", "callbacks", "experiments")


def _requirements():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    core = [r.strip() for r in cfg["options"]["install_requires"].strip().splitlines() if r.strip()]
    extras = {k: [r.strip() for r in v.strip().splitlines() if r.strip()]
              for k, v in cfg["options.extras_require"].items()}
    return core, extras


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules():
    """Top-level modules imported anywhere in the shipped packages (lazy imports included)."""
    found = set()
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"}


def test_install_requires_are_ranges_and_torch_is_not_pinned():
    core, _ = _requirements()
    assert core and not [r for r in core if "==" in r], core
    assert "torch>=2.4" in core
    makefile = (REPO / "Makefile").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in makefile  # the tested build lives in the Makefile


def test_every_imported_third_party_package_is_declared():
    core, extras = _requirements()
    declared = {_name(r) for r in core} | {_name(r) for reqs in extras.values() for r in reqs}
    by_module = metadata.packages_distributions()
    modules = _imported_modules()
    assert {"torch", "cv2", "timm", "lightning", "yaml", "PIL"} <= modules  # the scan sees the code
    undeclared = {}
    for module in sorted(modules):
        # a module that is not installed here (an optional one) must be declared under its own name
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [])} or {module.lower()}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not in setup.cfg: {undeclared}"
    assert "opencv-python-headless" in {_name(r) for r in core}  # cv2


def test_optional_packages_are_in_their_extra_and_the_extras_table_agrees():
    from zoe_lightning.extras import EXTRAS

    core, extras = _requirements()
    by_module = metadata.packages_distributions()
    for module, extra in EXTRAS.items():
        names = {_name(r) for r in extras[extra]}
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [])} or {module.lower()}
        assert dists & names, (module, extra)
        assert not dists & {_name(r) for r in core}, f"{module} is optional but in install_requires"


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    from zoe_lightning.extras import require

    monkeypatch.setitem(sys.modules, "onnx", None)  # what an environment without it looks like to importlib
    with pytest.raises(UserError) as info:
        require("export", "onnx")
    assert str(info.value) == "export needs the onnx extra: pip install 'zoe-lightning[onnx]'"
    require("export", "json")  # present: nothing happens


def test_cli_export_without_onnx_stops_in_one_line(monkeypatch, capsys, tmp_path):
    from zoe_lightning.evaluation import export

    monkeypatch.setitem(sys.modules, "onnx", None)
    args = argparse.Namespace(ckpt=str(tmp_path / "never_read.ckpt"), onnx=str(tmp_path / "m.onnx"), no_check=False)
    with pytest.raises(UserError, match=r"^export needs the onnx extra: pip install 'zoe-lightning\[onnx\]'$"):
        export.run(args)
    monkeypatch.setitem(sys.modules, "onnx", export)  # onnx present, onnxruntime missing
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"onnxruntime check needs the onnx extra.*--no-check"):
        export.run(args)
    assert not (tmp_path / "m.onnx").exists()


def _dry_run(*args, venv):
    if shutil.which("make") is None:
        pytest.skip("needs make")
    out = subprocess.run(["make", "-n", *args, f"VENV={venv}"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_train_installs_what_train_needs_and_test_adds_the_dev_extra(tmp_path):
    venv = tmp_path / "venv"
    train = _dry_run("train", venv=venv)
    assert "pip install -q torch==2.14.1 torchvision==0.29.1" in train and "pip install -q -e .\n" in train
    assert "[dev]" not in train and "download.pytorch.org" not in train
    test = _dry_run("test", venv=venv)
    assert "pip install -q -e '.[dev]'" in test and test.index("-e .\n") < test.index("'.[dev]'")
    assert "[dev]" in _dry_run("install-dev", venv=venv) and "[dev]" not in _dry_run("install", venv=venv)


def test_make_install_torch_cpu_uses_the_cpu_wheels_and_the_venv_remembers_it(tmp_path):
    venv = tmp_path / "venv"
    cpu = _dry_run("install", "TORCH=cpu", venv=venv)
    assert "torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu" in cpu
    (venv / "bin").mkdir(parents=True)
    (venv / ".torch-cpu").touch()
    (venv / ".installed").touch()  # newer than setup.cfg and the torch marker: up to date
    assert "pip" not in _dry_run("train", venv=venv)  # a CPU venv stays CPU without repeating TORCH=cpu
    switch = _dry_run("install", "TORCH=default", venv=venv)
    assert "uninstall -q -y torch torchvision" in switch and "download.pytorch.org" not in switch
    bad = subprocess.run(["make", "-n", "install", "TORCH=cuda", f"VENV={venv}"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "TORCH=cpu" in bad.stderr


def test_build_outputs_are_ignored():
    if shutil.which("git") is None:
        pytest.skip("needs git")
    for path in ("build/lib/x.py", "dist/zoe_lightning-1.0.tar.gz", "zoe_lightning.egg-info/PKG-INFO", ".venv/x"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, timeout=30).returncode == 0, path
