"""Turn images into metric depth maps.

Per image: 16-bit PNG of depth x 256 (the KITTI / NYU-toolbox convention), ``.npy`` float32
metres, a colourised PNG and optionally a coloured ``.ply`` point cloud. Defaults follow the
original ZoeDepth's ``infer_pil`` (:func:`zoe_lightning.inference.predict_images`): reflect
padding, flip test-time augmentation and bicubic upsampling to the input size. Images of different
sizes can share a batch; unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from .evaluate import add_checkpoint_arguments

__all__ = [
    "add_arguments",
    "run",
    "IMAGE_EXTENSIONS",
    "collect_inputs",
    "output_names",
    "encode_png16",
    "write_outputs",
    "parse_range",
    "color_range",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
OUTPUT_KINDS = ("png16", "npy", "color", "ply")
PNG16_SCALE = 256.0


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def collect_inputs(inputs: Sequence[str], recursive: bool = False,
                   out_dir: Optional[Path] = None) -> List[Tuple[Path, str]]:
    """``[(file, output stem)]`` for files and folders (folders: image extensions, sorted).

    The stem is the file name without extension (with ``--recursive`` the sub-folder is kept).
    When it is taken -- by an earlier input, compared case-insensitively (``a.png`` and ``a.jpg``),
    or because one of its output files would be an input file (``--output`` equal to ``--input``)
    -- the full file name is used (``a.jpg`` -> ``a.jpg_depth.png``), then ``_2``, ``_3``, ...
    so that no two images share an output file and no input is written over."""
    items: List[Tuple[Path, str]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            items += [(f, str(f.relative_to(p).with_suffix(""))) for f in files]
        elif p.is_file():
            items.append((p, p.stem))
        else:
            raise FileNotFoundError(f"--input: no such file or folder: {raw}")
    read = {str(path.resolve()).casefold() for path, _ in items}
    seen: set = set()
    unique = []
    for path, stem in items:
        full = str(Path(stem).with_name(path.name))
        for k in range(2 * len(items) + 2):  # enough: each earlier stem or input blocks one name
            cand = stem if k == 0 else full if k == 1 else f"{full}_{k}"
            clash = out_dir is not None and any(str((out_dir / name).resolve()).casefold() in read
                                                for name in output_names(cand))
            if cand.casefold() not in seen and not clash:
                break
        seen.add(cand.casefold())
        unique.append((path, cand))
    return unique


def output_names(stem: str) -> List[str]:
    """Every file name an image with this output stem may get (whatever ``--save`` asks for)."""
    return [f"{stem}_depth.png", f"{stem}_depth.npy", f"{stem}_color.png", f"{stem}.ply"]


def read_image(path: Path):
    """``(3, H, W)`` float32 tensor in [0, 1] (RGB). 16-bit greyscale images are scaled by 65535
    (not clipped at 255). Raises on unreadable files."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode.startswith("I;16") or im.mode == "I":
            grey = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)
            return torch.from_numpy(np.ascontiguousarray(grey))[None].expand(3, -1, -1).contiguous()
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def encode_png16(depth) -> Any:
    """uint16 array of ``round(depth * 256)`` clipped to [0, 65535]; NaN / negative -> 0."""
    import numpy as np

    d = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=0.0, posinf=65535 / PNG16_SCALE, neginf=0.0)
    return np.clip(np.round(d * PNG16_SCALE), 0, 65535).astype(np.uint16)


def parse_range(text: str) -> Tuple[float, float]:
    """``"LO,HI"`` (metres) -> ``(LO, HI)`` with ``0 <= LO < HI``, finite; else a one-line UserError."""
    import math

    parts = [p.strip() for p in str(text).split(",")]
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise UserError(f"--range {text}: expected LO,HI in metres with 0 <= LO < HI (e.g. --range 0,10)")
    return lo, hi


def color_range(depth, vrange: Optional[Tuple[float, float]] = None) -> Tuple[float, float, str]:
    """``(lo, hi, how)``: the fixed ``vrange`` when given, else this depth map's finite min and max
    (per-image normalisation, the default)."""
    import numpy as np

    if vrange is not None:
        return float(vrange[0]), float(vrange[1]), "fixed, --range"
    d = np.asarray(depth, dtype=np.float64)
    finite = d[np.isfinite(d)]
    if not finite.size:
        return 0.0, 1.0, "no finite depth"
    return float(finite.min()), float(finite.max()), "this image's min-max"


def write_outputs(
    depth,
    image,
    out_dir: Path,
    stem: str,
    kinds: Sequence[str],
    *,
    intrinsics: Optional[Sequence[float]] = None,
    fov: float = 55.0,
    cmap: str = "magma_r",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    ply_stride: int = 1,
    colorbar: bool = False,
) -> List[Path]:
    """Write the requested files for one image; returns their paths.

    The colour PNG spans ``[vmin, vmax]`` (values outside are clamped to the ends of ``cmap``);
    a bound left ``None`` is the image's own min / max.  ``colorbar`` appends a scale in metres."""
    import numpy as np
    from PIL import Image

    from .pointcloud import backproject, default_intrinsics, write_ply
    from .viz import colorize, image_to_uint8, save_png, with_colorbar

    d = np.asarray(depth.numpy() if hasattr(depth, "numpy") else depth, dtype=np.float32)
    base = out_dir / stem
    base.parent.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    if "png16" in kinds:
        path = base.with_name(base.name + "_depth.png")
        Image.fromarray(encode_png16(d)).save(path, format="PNG")
        written.append(path)
    if "npy" in kinds:
        path = base.with_name(base.name + "_depth.npy")
        np.save(path, d)
        written.append(path)
    if "color" in kinds:
        auto_lo, auto_hi, _ = color_range(d)
        lo = auto_lo if vmin is None else float(vmin)
        hi = auto_hi if vmax is None else float(vmax)
        rgb = colorize(d, lo, hi, cmap=cmap)
        if colorbar:
            rgb = with_colorbar(rgb, lo, hi, cmap=cmap)
        written.append(save_png(rgb, base.with_name(base.name + "_color.png")))
    if "ply" in kinds:
        k = intrinsics if intrinsics is not None else default_intrinsics(d.shape[0], d.shape[1], fov)
        rgb = np.moveaxis(np.asarray(image), 0, -1) if np.asarray(image).ndim == 3 else image  # (3,H,W) -> HWC
        points, colors = backproject(d, k, image_to_uint8(rgb), stride=ply_stride)
        written.append(write_ply(base.with_name(base.name + ".ply"), points, colors))
    return written


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_arguments(parser)
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--recursive", action="store_true", help="look into sub-folders of input folders")
    parser.add_argument("--save", default="png16,color",
                        help=f"comma-separated outputs among {', '.join(OUTPUT_KINDS)} (default: png16,color)")
    parser.add_argument("--no-flip", action="store_true", help="turn off flip test-time augmentation")
    parser.add_argument("--no-pad", action="store_true", help="turn off the original's reflect padding")
    aspect = parser.add_mutually_exclusive_group()
    aspect.add_argument("--keep-aspect", action="store_true",
                        help="resize to the network size keeping the aspect ratio (MiDaS rule)")
    aspect.add_argument("--squash", action="store_true", help="resize to exactly the network size")
    parser.add_argument("--upsample", default="bicubic", choices=("bicubic", "bilinear", "nearest"),
                        help="upsampling of the prediction to the input size (original: bicubic)")
    parser.add_argument("--domain", default=None, help="head name for models with a labeled router")
    parser.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY",
                        help="camera intrinsics in pixels of the input image, for the point cloud")
    parser.add_argument("--fov", type=float, default=55.0,
                        help="horizontal field of view (degrees) used without --intrinsics (default 55)")
    parser.add_argument("--ply-stride", type=int, default=1, help="keep every n-th row/column in the point cloud")
    parser.add_argument("--cmap", default="magma_r", help="matplotlib colour map of the colourised PNG")
    parser.add_argument("--range", default=None, metavar="LO,HI", dest="color_range",
                        help="fixed colour range in metres of the colourised PNG, e.g. 0,10 (values outside are "
                             "clamped); default: each image's own min-max, so colours do not compare across images")
    parser.add_argument("--colorbar", action="store_true",
                        help="append a colour bar with the range in metres below each colourised PNG")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..inference import predict_images
    from .evaluate import load_checkpoint_model
    from .pointcloud import parse_intrinsics

    kinds = [k.strip() for k in args.save.split(",") if k.strip()]
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise UserError(f"--save: unknown output(s) {bad or kinds}; choose among {', '.join(OUTPUT_KINDS)}")
    intrinsics = None
    if args.intrinsics:
        try:
            intrinsics = parse_intrinsics(args.intrinsics)
        except ValueError as exc:
            raise UserError(f"--intrinsics: {exc}") from None
    vrange = parse_range(args.color_range) if args.color_range is not None else None
    if args.batch_size < 1 or args.ply_stride < 1:
        raise UserError("--batch-size and --ply-stride must be >= 1")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output {args.output}: is an existing file; give a folder for the outputs")
    items = collect_inputs(args.input, args.recursive, out_dir)
    if not items:
        raise UserError(f"--input: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {' '.join(args.input)}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_checkpoint_model(args.ckpt, args.preset, args.overrides)
    model = model.to(device)
    prep = getattr(model, "prep", None)
    if prep is not None and (args.keep_aspect or args.squash):
        prep.keep_aspect = bool(args.keep_aspect)
    heads = list(getattr(model, "domains", []) or [])
    label = None
    if args.domain is not None:
        if args.domain not in heads:
            raise UserError(f"--domain {args.domain!r} is not a head of this model (heads: {', '.join(heads)})")
        label = heads.index(args.domain)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--output {args.output}: cannot create the folder ({exc.strerror or exc})") from None

    from rich.progress import Progress

    skipped: List[Tuple[Path, str]] = []
    written = 0
    with Progress(disable=len(items) < 2, transient=False) as bar:
        task = bar.add_task("predict", total=len(items))
        for start in range(0, len(items), args.batch_size):
            chunk = items[start: start + args.batch_size]
            images, ok = [], []
            for path, stem in chunk:
                try:
                    images.append(read_image(path))
                    ok.append((path, stem))
                except Exception as exc:  # unreadable / not an image: report, skip, go on
                    skipped.append((path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
                    bar.console.print(f"[yellow]skipped[/] {path}: {skipped[-1][1]}")
            if images:
                depths = predict_images(model, images, flip=not args.no_flip, pad=not args.no_pad,
                                        upsample=args.upsample, domain=label, device=device)
                for (path, stem), image, depth in zip(ok, images, depths):
                    lo, hi, how = color_range(depth.numpy(), vrange)
                    try:
                        write_outputs(depth, image, out_dir, stem, kinds, intrinsics=intrinsics, fov=args.fov,
                                      cmap=args.cmap, vmin=lo, vmax=hi, ply_stride=args.ply_stride,
                                      colorbar=args.colorbar)
                    except OSError as exc:  # a full disk, a read-only folder: reported, not counted
                        skipped.append((path, f"cannot write its outputs: {exc.strerror or exc}"))
                        bar.console.print(f"[yellow]skipped[/] {path}: {skipped[-1][1]}")
                        continue
                    written += 1
                    if "color" in kinds:
                        bar.console.print(f"{path}: colour range {lo:.3g}-{hi:.3g} m ({how})",
                                          highlight=False, markup=False, soft_wrap=True)
            bar.advance(task, len(chunk))
    print(f"{written} image(s) written -> {out_dir.resolve()} ({', '.join(kinds)})"
          + (f"; {len(skipped)} skipped" if skipped else ""))
    for path, why in skipped:
        print(f"  skipped {path}: {why}", file=sys.stderr)
    if written == 0:
        raise UserError(f"none of the {len(items)} input file(s) could be read and written")
    return 0
