"""The one place that reads weight files: safely, and with one clear line per failure.

``read_checkpoint(path)`` returns a :class:`Checkpoint`: what the file holds (``payload``), the
``config.json`` of an HF model folder (``hf_config``) and the path as text (``source``).

* ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin``: ``torch.load(..., weights_only=True)``, always. torch
  lets the environment variable ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` switch to full unpickling only
  where the caller did not pass ``weights_only``; we always pass it, and also hide the variable
  for the duration of the call, so that no torch version nor environment can make a weights file
  run code.
* ``.safetensors``: ``safetensors.torch.load_file`` (no code can run).
* a folder: an HF transformers model folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``); such a weights file named directly is read with its ``config.json``.

Every failure (a missing, empty, truncated or text file, a payload that needs pickled code) is a
:class:`~zoe_lightning.errors.UserError` whose message is one line naming the file and the reason.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import torch

from ..errors import UserError

__all__ = ["Checkpoint", "read_checkpoint", "read_json", "load_state_file", "write_checkpoint"]

PathLike = Union[str, Path]
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
UNSAFE_LOAD_VARIABLE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_ENV_LOCK = threading.Lock()
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6
_PICKLE_PROTO = b"\x80"  # the PROTO opcode that starts a legacy torch.save (pickle protocol >= 2)


@dataclass
class Checkpoint:
    """A file's content: ``payload`` (what torch / safetensors returned), ``hf_config`` (the
    ``config.json`` dict of an HF model folder, else None) and ``source`` (the path, for messages)."""

    payload: Any
    hf_config: Optional[dict] = None
    source: str = "checkpoint"


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


@contextmanager
def unsafe_load_variable_hidden() -> Iterator[None]:
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` removed from the environment while torch.load runs."""
    if UNSAFE_LOAD_VARIABLE not in os.environ:
        yield
        return
    with _ENV_LOCK:
        saved = os.environ.pop(UNSAFE_LOAD_VARIABLE)
        try:
            yield
        finally:
            os.environ[UNSAFE_LOAD_VARIABLE] = saved


def _torch_load(path: Path, map_location: Any = "cpu") -> Any:
    try:
        with unsafe_load_variable_hidden():
            return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise UserError(f"{path}: cannot read as a PyTorch checkpoint: {_first_line(exc)}") from None
        reason = _first_line(exc, 160)
        raise UserError(
            f"{path}: refused: the file needs pickled Python code to load, and checkpoints are only read "
            f"with torch.load(weights_only=True) ({reason}). Re-save its state_dict (tensors only) and "
            "load that."
        ) from None
    except Exception as exc:  # truncated archives, foreign formats: torch raises many types
        raise UserError(f"{path}: cannot read as a PyTorch checkpoint: {_first_line(exc)}") from None


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(512)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {_first_line(exc)}") from None


def _refuse_empty_or_text(head: bytes, path: Path) -> None:
    """Empty files and text files (a Git LFS pointer, an HTML error page) fail here, by name."""
    if not head:
        raise UserError(f"{path}: cannot read: the file is empty")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    if all(c.isprintable() or c in "\t\r\n" for c in text):
        what = " (a Git LFS pointer: fetch the real file with `git lfs pull`)" if text.startswith(
            "version https://git-lfs") else ""
        raise UserError(f"{path}: cannot read: a text file, not a weights file{what}")


def _safetensors_load(path: Path) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors ships with transformers
        raise UserError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # a corrupt header, a truncated file, ...
        raise UserError(f"{path}: cannot read as safetensors: {_first_line(exc)}") from None


def read_json(path: PathLike) -> dict:
    """A JSON object file (an HF ``config.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read JSON: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _hf_weights_file(folder: Path) -> Optional[Path]:
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_checkpoint(path: PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read ``path`` safely (see the module docstring)."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    hf_config = None
    if path.is_dir():
        weights = _hf_weights_file(path)
        if not (path / "config.json").is_file() or weights is None:
            raise UserError(
                f"{path}: a folder must be an HF transformers model folder with config.json and "
                "model.safetensors or pytorch_model.bin"
            )
        hf_config = read_json(path / "config.json")
        path = weights
    elif path.name in HF_WEIGHT_FILES and (path.parent / "config.json").is_file():
        hf_config = read_json(path.parent / "config.json")
    head = _head(path)
    _refuse_empty_or_text(head, path)
    if path.suffix == ".safetensors":
        return Checkpoint(_safetensors_load(path), hf_config, source)
    if not head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):
        raise UserError(f"{path}: cannot read as a PyTorch checkpoint: neither a zip archive (torch.save) "
                        "nor a pickle (legacy torch.save)")
    return Checkpoint(_torch_load(path, map_location), hf_config, source)


def load_state_file(path: PathLike, map_location: Any = "cpu"):
    """``(payload, hf_config)`` of :func:`read_checkpoint`."""
    ckpt = read_checkpoint(path, map_location)
    return ckpt.payload, ckpt.hf_config


def write_checkpoint(obj: Any, path: PathLike) -> Path:
    """``torch.save`` ``obj`` (tensors and plain containers only) to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, str(path))
    return path
