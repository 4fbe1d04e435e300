"""Fetch the wheels a GPU image without network lacks for zoe-lightning into .whl/ (git-ignored).

Run on a machine that reaches PyPI, with the project's tested .venv:

    .venv/bin/python benchmarks/gpu_wheels.py [--python-version 3.12]

It walks the installed requirements of the packages such an image lacks (``MISSING``), skips
every package the image already holds (``IN_IMAGE``, from the image's package list), and downloads
the rest at the versions tested here; ``benchmarks/gpu_check.sh`` installs them on the GPU machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MISSING = ["albumentations", "omegaconf", "wandb"]
IN_IMAGE = set("""torch torchvision lightning pytorch-lightning lightning-utilities timm torchmetrics numpy scipy
opencv-python-headless pyyaml requests protobuf packaging typing-extensions click pillow matplotlib rich
safetensors huggingface-hub transformers onnx onnxruntime h5py pytest filelock fsspec jinja2 networkx sympy
tqdm urllib3 idna certifi charset-normalizer six python-dateutil psutil setuptools wheel pip xxhash anyio h11
httpcore httpx
""".split())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots):
    """name -> installed version for ``roots`` and everything they require here, minus the image's."""
    todo, seen = list(roots), {}
    while todo:
        name = _norm(todo.pop())
        if name in seen or name in IN_IMAGE:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement not installed here: not needed
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return seen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python-version", default="3.12", help="the GPU image's python3 version")
    p.add_argument("--dest", default=str(ROOT / ".whl"))
    args = p.parse_args(argv)
    wanted = closure(MISSING)
    Path(args.dest).mkdir(exist_ok=True)
    for name, version in sorted(wanted.items()):
        spec = f"{name}=={version}"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", args.python_version, "--implementation", "cp", "--platform", "any",
               *[a for plat in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", plat)], "-d", args.dest, spec]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            # a pure-Python source distribution builds into a wheel anywhere
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", args.dest, spec], check=True)
        print(f"gpu_wheels: {spec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
