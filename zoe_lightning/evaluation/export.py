"""Export a checkpoint to ONNX and check it with onnxruntime against PyTorch.

The graph takes ``image`` (B x 3 x H x W, RGB in [0, 1], H x W fixed at export, B dynamic) and
returns ``metric_depth`` (B x 1 x h x w, metres, network resolution). Multi-domain (NK) models
run every head and pick each image's head by the router's decision (also returned as
``domain_index``): the model's own forward, traced; a labeled-router model takes an extra int64
input ``domain`` (B,).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..errors import UserError
from .evaluate import add_checkpoint_arguments

__all__ = ["add_arguments", "run", "OnnxDepthModel", "export_onnx", "check_onnx"]


class OnnxDepthModel(nn.Module):
    """The model's own forward with plain tensor inputs and outputs, for the tracer. Under tracing
    :class:`~zoe_lightning.models.ZoeDepth` routes without data-dependent control flow (every head
    runs, each image's depth is gathered from its routed head)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "head", None) is None or getattr(model, "core", None) is None:
            raise UserError("export needs a metric ZoeDepth model (core + head); this checkpoint is not one")
        self.model = model
        router = getattr(model, "router", None)
        self.labeled = bool(getattr(router, "needs_labels", False))
        self.multi = router is not None
        self.eval()

    def forward(self, image: torch.Tensor, domain: Optional[torch.Tensor] = None):
        out = self.model(image, domain=domain.long() if self.labeled else None)
        if not self.multi:
            return out.metric_depth
        return out.metric_depth, out.domain_index


def _input_names(wrapper) -> Tuple[List[str], List[str]]:
    inputs = ["image"] + (["domain"] if wrapper.labeled else [])
    outputs = ["metric_depth"] + (["domain_index"] if wrapper.multi else [])
    return inputs, outputs


def _example(wrapper, batch: int, size: Sequence[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, int(size[0]), int(size[1]), generator=g)
    args = [image]
    if wrapper.labeled:
        args.append(torch.arange(batch) % len(wrapper.model.domains))
    return tuple(args)


@contextlib.contextmanager
def _constant_position_embeddings():
    """timm ViTs with ``dynamic_img_size`` resample their position embeddings (bicubic with
    antialias, which ONNX lacks) on every call. The result depends only on the weights and the
    export size, so while exporting it is computed once (by timm's own function, in a warm-up
    call) and then fed to the tracer as a constant."""
    try:
        from timm.models import vision_transformer as vt
    except ImportError:  # pragma: no cover - timm is a dependency
        yield
        return
    original = vt.resample_abs_pos_embed
    cache: Dict[tuple, torch.Tensor] = {}

    def cached(posemb, new_size, *args, **kwargs):
        key = (id(posemb), tuple(int(s) for s in new_size))
        if key not in cache:
            cache[key] = original(posemb, new_size, *args, **kwargs).detach().clone()
        return cache[key]

    vt.resample_abs_pos_embed = cached
    try:
        yield
    finally:
        vt.resample_abs_pos_embed = original


def export_onnx(model, path, size: Sequence[int], opset: int = 17) -> Path:
    """Trace ``model`` at input size ``size`` = (H, W) with a dynamic batch axis and write ``path``."""
    import warnings

    wrapper = OnnxDepthModel(model)
    inputs, outputs = _input_names(wrapper)
    dynamic = {name: {0: "batch"} for name in inputs + outputs}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = _example(wrapper, 2, size)
    with torch.no_grad(), warnings.catch_warnings(), _constant_position_embeddings():
        warnings.simplefilter("ignore")  # tracer warnings about python values in the timm backbones
        wrapper(*example)  # warm-up: fills the position-embedding cache outside the trace
        torch.onnx.export(
            wrapper, example, str(path), input_names=inputs, output_names=outputs,
            dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return path


def check_onnx(model, path, size: Sequence[int], batch: int = 3, tol: float = 1e-4,
               seed: int = 1, inputs: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and the PyTorch model on the same random batch
    (a batch size different from the export's; or the given ``inputs``). Returns max abs /
    relative errors and ``ok``: every element within ``tol`` absolutely or relatively
    (``|a - b| <= tol * max(1, |b|)``)."""
    import numpy as np
    import onnxruntime as ort

    wrapper = OnnxDepthModel(model)
    args = tuple(inputs) if inputs is not None else _example(wrapper, batch, size, seed)
    batch = int(args[0].shape[0])
    with torch.no_grad():
        kwargs = {"domain": args[1]} if wrapper.labeled else {}
        out = model(args[0], **kwargs)
        ref = out.metric_depth.numpy().astype(np.float64)
        ref_index = None if out.domain_index is None else out.domain_index.numpy()
    names, _ = _input_names(wrapper)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {name: a.numpy() for name, a in zip(names, args)}
    got = session.run(None, feeds)
    depth = got[0].astype(np.float64)
    if depth.shape != ref.shape:
        raise UserError(f"ONNX output shape {depth.shape} != PyTorch {ref.shape} for batch {batch}")
    err = np.abs(depth - ref)
    result = {
        "max_abs_err": float(err.max()),
        "max_rel_err": float((err / np.maximum(np.abs(ref), 1e-12)).max()),
        "batch": batch,
        "ok": bool((err <= tol * np.maximum(1.0, np.abs(ref))).all()),
    }
    if ref_index is not None and len(got) > 1:
        result["routing_agrees"] = bool((got[1].reshape(-1) == ref_index.reshape(-1)).all())
        result["ok"] = result["ok"] and result["routing_agrees"]
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument("--height", type=int, default=None, help="input height baked into the graph "
                        "(default: the model's network height; other sizes are resized inside the graph)")
    parser.add_argument("--width", type=int, default=None, help="input width (default: network width)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--tol", type=float, default=1e-4, help="allowed onnxruntime vs PyTorch error (default 1e-4)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")


def check_target(onnx: str, ckpt: str) -> Path:
    """The ``--onnx`` path, refused (one line) when writing it could destroy something: a folder,
    the checkpoint itself (or a file inside a checkpoint folder), or an existing file that is not
    ``.onnx``. An existing ``.onnx`` file is replaced."""
    path, source = Path(onnx), Path(ckpt)
    if path.is_dir():
        raise UserError(f"--onnx {onnx}: is a folder; give the path of the .onnx file to write")
    if path.exists() and source.exists():
        if source.is_dir() and source.resolve() in path.resolve().parents:
            raise UserError(f"--onnx {onnx}: lies inside the checkpoint folder {ckpt}; write it elsewhere")
        if path.resolve() == source.resolve() or (source.is_file() and path.samefile(source)):
            raise UserError(f"--onnx {onnx}: is the checkpoint being exported; it would be overwritten")
    if path.exists() and path.suffix.lower() != ".onnx":
        raise UserError(f"--onnx {onnx}: exists and is not an .onnx file; refusing to overwrite it")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"--onnx {onnx}: {path.parent} is not a folder")
    return path


def run(args: argparse.Namespace) -> int:
    from ..extras import require
    from .evaluate import load_checkpoint_model

    require("export", "onnx")
    if not args.no_check:
        require("export's onnxruntime check", "onnxruntime", hint=" (or pass --no-check)")
    check_target(args.onnx, args.ckpt)
    model, _ = load_checkpoint_model(args.ckpt, args.preset, args.overrides)
    model = model.cpu().float().eval()
    prep = getattr(model, "prep", None)
    net = list(getattr(prep, "img_size", [384, 512]))
    size = (args.height or net[0], args.width or net[1])
    path = export_onnx(model, args.onnx, size, args.opset)
    heads = list(getattr(model, "domains", []) or [])
    print(f"exported {Path(args.ckpt).resolve()} -> {path.resolve()} (input image B x 3 x {size[0]} x {size[1]} "
          f"in [0,1], dynamic batch; heads: {', '.join(heads) or '-'})")
    if args.no_check:
        return 0
    res = check_onnx(model, path, size, tol=args.tol)
    print(f"onnxruntime vs PyTorch (batch {res['batch']}): max abs error {res['max_abs_err']:.3g} m, "
          f"max relative error {res['max_rel_err']:.3g}" +
          (f", routing agrees: {res['routing_agrees']}" if "routing_agrees" in res else ""))
    if not res["ok"]:
        raise UserError(f"{path}: onnxruntime output differs from PyTorch by more than {args.tol:g}")
    return 0
