"""Shared machinery of the file-based dataset readers.

A reader subclasses :class:`FileDepthDataset` and implements :meth:`FileDepthDataset.list_records`
(which image goes with which depth file) and, when its depth is not a plain file read by
:func:`read_depth` with a divisor, :meth:`FileDepthDataset.read_depth_map`. The base class does the
rest: split-file parsing, the missing-file check at construction, image decoding with a clear
error for corrupt files, the size check between image and depth, the validity rules (non-finite
pixels masked and counted, the depth range, an optional invalid value), the optional transform
and the conversion to the project's sample dict.

``load_raw(i)`` returns the numpy sample (``image`` uint8 H×W×3 RGB, ``depth`` float32 H×W in the
dataset's unit with 0 where invalid, ``valid`` bool H×W, ``intrinsics`` float32 ``[fx, fy, cx, cy]``
(NaN where unknown) and the scalar keys); ``__getitem__`` applies the transform and returns
tensors (``image`` float32 3×H×W in [0, 1], ``depth`` float32 1×H×W, ``valid`` bool 1×H×W).

The module-level decoders (:func:`read_image`, :func:`read_depth`, :func:`read_depth_png`,
:func:`read_npy`, :func:`read_pfm`, :func:`read_hdf5`, :func:`read_exr`) are shared by every reader.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # read at the first EXR decode

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from zoe_lightning.errors import UserError  # noqa: E402

__all__ = [
    "DEPTH_KINDS",
    "DOMAINS",
    "EVAL_CROPS",
    "FileDepthDataset",
    "Record",
    "SplitRow",
    "parse_split_file",
    "read_image",
    "read_depth",
    "read_depth_png",
    "read_npy",
    "read_pfm",
    "write_pfm",
    "read_hdf5",
    "read_exr",
    "package_split",
    "resolve_under",
]

log = logging.getLogger(__name__)

DEPTH_KINDS = ("metric", "disparity", "relative")
DOMAINS = ("nyu", "kitti")
EVAL_CROPS = (None, "eigen", "garg", "eigen_kitti")
SPLIT_DIR = Path(__file__).resolve().parent.parent / "splits"
NAN4 = (float("nan"),) * 4
FORMATS_HINT = "pip install 'zoe-lightning[formats]'"


# ----------------------------------------------------------------------------- split files
@dataclass(frozen=True)
class SplitRow:
    """One non-blank, non-comment line of a split file: its 1-based line number and columns."""

    file: str
    line: int
    columns: Tuple[str, ...]

    def fail(self, why: str) -> UserError:
        return UserError(f"{self.file}:{self.line}: {why}")


def parse_split_file(path, min_columns: int = 1, max_columns: Optional[int] = None,
                     float_columns: Sequence[int] = ()) -> List[SplitRow]:
    """Whitespace-separated rows of ``path``; blank lines and lines starting with ``#`` are skipped.

    A row with fewer than ``min_columns`` or more than ``max_columns`` columns, or whose column
    ``k`` in ``float_columns`` (0-based) is not a number, raises UserError naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"split file {path} is not UTF-8 text ({exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        row = SplitRow(str(path), number, tuple(stripped.split()))
        n = len(row.columns)
        if n < min_columns or (max_columns is not None and n > max_columns):
            want = f"{min_columns}" if max_columns == min_columns else \
                f"{min_columns}..{max_columns if max_columns is not None else 'any'}"
            raise row.fail(f"malformed split line {stripped!r}: expected {want} whitespace-separated "
                           f"columns, found {n}")
        for k in float_columns:
            if k < n:
                try:
                    float(row.columns[k])
                except ValueError:
                    raise row.fail(f"malformed split line {stripped!r}: column {k + 1} "
                                   f"({row.columns[k]!r}) is not a number") from None
        rows.append(row)
    return rows


def package_split(filename: str) -> Path:
    """A split list shipped with the package (``data_modules/splits/<filename>``)."""
    return SPLIT_DIR / filename


def resolve_under(root, relative: str) -> str:
    """``relative`` joined to ``root`` with one leading '/' stripped (the original's rule)."""
    rel = relative[1:] if relative.startswith("/") else relative
    return os.path.join(str(root), rel)


# ----------------------------------------------------------------------------- decoders
def _where(path, index) -> str:
    return f"{path}" + (f" (sample {index})" if index is not None else "")


def _truncated(data: np.ndarray, path: str) -> Optional[str]:
    """Why a JPEG/PNG byte string is visibly incomplete, or None."""
    head = bytes(data[:8])
    if head[:3] == b"\xff\xd8\xff":  # JPEG: must end with the EOI marker (allow trailing padding)
        tail = bytes(data[-64:]).rstrip(b"\x00\r\n ")
        if not tail.endswith(b"\xff\xd9"):
            return "JPEG end-of-image marker missing"
    elif head == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in bytes(data[-16:]):
            return "PNG IEND chunk missing"
    return None


def _read_bytes(path, index) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {_where(path, index)}") from None
    except OSError as exc:
        raise UserError(f"cannot read {_where(path, index)}: {exc}") from None
    if data.size == 0:
        raise UserError(f"corrupt or truncated file {_where(path, index)}: it is empty")
    return data


def read_image(path, index: Optional[int] = None) -> np.ndarray:
    """RGB uint8 H×W×3 of an image file; grey images are repeated, alpha is dropped.

    A corrupt or truncated file raises UserError naming the file and the sample index.
    """
    data = _read_bytes(path, index)
    why = _truncated(data, str(path))
    # A file without its end marker is decoded strictly by PIL (which fails on truncated data and
    # accepts a complete image followed by trailing bytes); OpenCV would fill the gap silently.
    image = None if why else cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        image = _pil_decode(path, index, mode="RGB", why=why)
    else:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif image.dtype != np.uint8:
            raise UserError(f"image {_where(path, index)} has unsupported pixel type {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        else:
            raise UserError(f"image {_where(path, index)} has {image.shape[2]} channels; expected 1, 3 or 4")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise UserError(f"corrupt image {_where(path, index)}: zero size {image.shape}")
    return np.ascontiguousarray(image)


def _pil_decode(path, index, mode: Optional[str], why: Optional[str] = None, what: str = "image") -> np.ndarray:
    from PIL import Image, ImageFile, UnidentifiedImageError

    try:
        with Image.open(str(path)) as img:
            if why and ImageFile.LOAD_TRUNCATED_IMAGES:
                raise OSError("PIL is set to accept truncated images")
            img.load()
            if mode is not None:
                img = img.convert(mode)
            return np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = f"{why}; {exc}" if why else str(exc)
        raise UserError(f"corrupt or truncated {what} {_where(path, index)}: {reason}") from None


def read_depth_png(path, divisor: float = 1.0, index: Optional[int] = None) -> np.ndarray:
    """Single-channel (typically 16-bit) PNG/TIFF as float32 ``stored / divisor``."""
    data = _read_bytes(path, index)
    why = _truncated(data, str(path))
    raw = None if why else cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raw = _pil_decode(path, index, mode=None, why=why, what="depth image")
    if raw.ndim == 3:
        if raw.shape[2] == 1 or np.ptp(raw[..., :3].astype(np.int64), axis=2).max(initial=0) == 0:
            raw = raw[..., 0]  # grey saved as RGB(A): channels equal
        else:
            raise UserError(f"depth image {_where(path, index)} has {raw.shape[2]} different channels; "
                            "expected a single-channel (16-bit) image")
    return raw.astype(np.float32) / np.float32(divisor)


def read_npy(path, key: Optional[str] = None, index: Optional[int] = None) -> np.ndarray:
    """An array from ``.npy`` (or ``.npz`` with ``key``, default: its only array), squeezed to 2-D."""
    try:
        loaded = np.load(str(path), allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {_where(path, index)}") from None
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"corrupt or truncated array file {_where(path, index)}: {exc}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None and len(names) != 1:
                raise UserError(f"{_where(path, index)} holds arrays {names}; set depth_key to pick one")
            name = key if key is not None else names[0]
            if name not in names:
                raise UserError(f"{_where(path, index)} has no array {name!r} (has {names})")
            loaded = loaded[name]
    return _as_2d(np.asarray(loaded), path, index)


def _as_2d(array: np.ndarray, path, index) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise UserError(f"depth {_where(path, index)} has shape {array.shape}; expected H×W (or H×W×1)")
    return array.astype(np.float32, copy=False)


def read_pfm(path, index: Optional[int] = None) -> np.ndarray:
    """A PFM file as float32 H×W (``Pf``) or H×W×3 (``PF``), top row first."""
    try:
        with open(str(path), "rb") as fh:
            header = fh.readline().strip()
            if header not in (b"PF", b"Pf"):
                raise ValueError(f"bad magic {header[:8]!r}")
            dims = fh.readline().split()
            while dims and dims[0].startswith(b"#"):
                dims = fh.readline().split()
            width, height = int(dims[0]), int(dims[1])
            scale = float(fh.readline().strip())
            channels = 3 if header == b"PF" else 1
            dtype = "<f4" if scale < 0 else ">f4"
            count = width * height * channels
            body = fh.read(count * 4)
            data = np.frombuffer(body[: len(body) // 4 * 4], dtype=dtype)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {_where(path, index)}") from None
    except (ValueError, IndexError, OSError) as exc:
        raise UserError(f"corrupt PFM file {_where(path, index)}: {exc}") from None
    if data.size != count:
        raise UserError(f"corrupt or truncated PFM file {_where(path, index)}: "
                        f"{data.size} of {count} values present")
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.flipud(data.reshape(shape)).astype(np.float32)


def write_pfm(path, array: np.ndarray, little_endian: bool = True) -> None:
    """Write float32 H×W or H×W×3 ``array`` as PFM (rows stored bottom first, as the format says)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        magic = b"Pf"
    elif array.ndim == 3 and array.shape[2] == 3:
        magic = b"PF"
    else:
        raise ValueError(f"write_pfm: expected H×W or H×W×3, got {array.shape}")
    height, width = array.shape[:2]
    body = np.flipud(array).astype("<f4" if little_endian else ">f4")
    with open(str(path), "wb") as fh:
        fh.write(magic + b"\n" + f"{width} {height}\n".encode() + (b"-1.0\n" if little_endian else b"1.0\n"))
        fh.write(body.tobytes())


def read_hdf5(path, key: str = "dataset", index: Optional[int] = None) -> np.ndarray:
    """Dataset ``key`` of an HDF5 file as float32 (needs h5py, the ``formats`` extra)."""
    try:
        import h5py
    except ImportError:
        raise UserError(f"reading HDF5 depth ({path}) needs h5py: {FORMATS_HINT}") from None
    if not os.path.exists(str(path)):
        raise FileNotFoundError(f"file not found: {_where(path, index)}")
    try:
        with h5py.File(str(path), "r") as fh:
            if key not in fh:
                raise UserError(f"HDF5 file {_where(path, index)} has no dataset {key!r} (has {sorted(fh.keys())})")
            return np.asarray(fh[key][()], dtype=np.float32)
    except UserError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"corrupt HDF5 file {_where(path, index)}: {exc}") from None


def read_exr(path, channel: int = 0, index: Optional[int] = None) -> np.ndarray:
    """Channel ``channel`` of an OpenEXR image as float32 H×W: OpenCV when its build has OpenEXR,
    else the package's pure-numpy decoder (``exr.py``; the ``OpenEXR`` package for exotic
    compressions)."""
    data = _read_bytes(path, index)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None:
        from .exr import ExrError
        from .exr import read_exr as read_exr_numpy

        try:
            return np.asarray(read_exr_numpy(path), dtype=np.float32)
        except ExrError as exc:
            raise UserError(f"cannot decode EXR {_where(path, index)}: {exc}") from None
    if image.ndim == 3:
        image = image[..., channel]
    return image.astype(np.float32, copy=False)


DEPTH_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".npz", ".pfm", ".h5", ".hdf5", ".exr")


def read_depth(path, divisor: float = 1.0, key: Optional[str] = None, index: Optional[int] = None) -> np.ndarray:
    """A depth/disparity map as float32 H×W, decoded by file extension and divided by ``divisor``.

    ``.png``/``.tif``: single-channel image (16-bit typically); ``.npy``/``.npz``; ``.pfm``;
    ``.h5``/``.hdf5`` (dataset ``key``, default ``"dataset"``); ``.exr`` (first channel).
    """
    ext = os.path.splitext(str(path))[1].lower()
    if ext in (".png", ".tif", ".tiff"):
        return read_depth_png(path, divisor, index)
    if ext in (".npy", ".npz"):
        depth = read_npy(path, key, index)
    elif ext == ".pfm":
        depth = read_pfm(path, index)
        if depth.ndim == 3:
            depth = depth[..., 0]
    elif ext in (".h5", ".hdf5"):
        depth = _as_2d(read_hdf5(path, key or "dataset", index), path, index)
    elif ext == ".exr":
        depth = read_exr(path, 0, index)
    else:
        raise UserError(f"unsupported depth file type {ext!r} for {path}; "
                        f"expected one of {', '.join(DEPTH_EXTENSIONS)}")
    if divisor != 1.0:
        depth = depth / np.float32(divisor)
    return depth.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- dataset
@dataclass
class Record:
    """One sample on disk: the image, its depth file (None = no ground truth) and extras
    (``focal``, per-reader fields)."""

    image: str
    depth: Optional[str]
    extra: Dict[str, Any] = field(default_factory=dict)


class FileDepthDataset(Dataset):
    """Base of every file reader; see the module docstring.

    Subclasses set the class attributes and implement :meth:`list_records`. Common options:
    ``root`` (dataset folder), ``split``, ``transform`` (callable on the numpy sample),
    ``skip_missing`` (drop listed samples whose files are missing, with a logged count, instead
    of failing), ``split_file`` (a list replacing the default), ``min_depth``/``max_depth``
    (validity and evaluation range), ``depth_kind``/``domain``/``dataset_name`` overrides and
    ``check_files`` (the existence check at construction, default on).

    ``stats`` counts, in this process: ``missing_skipped``, ``no_gt_skipped``, ``nonfinite_pixels``
    (NaN/inf depth pixels masked), ``empty_samples`` (samples returned with no valid pixel). Each
    DataLoader worker holds its own copy.
    """

    name = "file"
    depth_kind = "metric"
    domain = "nyu"
    min_depth = 1e-3
    max_depth = 10.0
    eval_crop: Optional[str] = None
    sparse = False
    kb_crop = False
    default_split_map: Dict[str, str] = {"train": "train", "val": "test", "test": "test"}

    def __init__(self, split: str = "train", root: Optional[str] = None, transform: Optional[Callable] = None,
                 skip_missing: bool = False, split_file: Optional[str] = None, min_depth: Optional[float] = None,
                 max_depth: Optional[float] = None, depth_kind: Optional[str] = None, domain: Optional[str] = None,
                 dataset_name: Optional[str] = None, eval_crop: Any = "default", check_files: bool = True,
                 invalid_value: Optional[float] = None) -> None:
        if split not in self.default_split_map:
            raise UserError(f"{self.name}: unknown split {split!r}; expected one of {sorted(self.default_split_map)}")
        self.split = split
        self.root = None if root is None else os.path.expanduser(str(root))
        self.skip_missing = bool(skip_missing)
        self.split_file = None if split_file is None else os.path.expanduser(str(split_file))
        if dataset_name is not None:
            self.name = str(dataset_name)
        if depth_kind is not None:
            if depth_kind not in DEPTH_KINDS:
                raise UserError(f"{self.name}: depth_kind {depth_kind!r} is not one of {list(DEPTH_KINDS)}")
            self.depth_kind = depth_kind
        if domain is not None:
            self.domain = str(domain)
        if min_depth is not None:
            self.min_depth = float(min_depth)
        if max_depth is not None:
            self.max_depth = float(max_depth)
        if not self.min_depth < self.max_depth:
            raise UserError(f"{self.name}: min_depth {self.min_depth} must be below max_depth {self.max_depth}")
        if eval_crop != "default":
            if eval_crop not in EVAL_CROPS:
                raise UserError(f"{self.name}: eval_crop {eval_crop!r} is not one of {list(EVAL_CROPS)}")
            self.eval_crop = eval_crop
        self.invalid_value = None if invalid_value is None else float(invalid_value)
        self.stats: Dict[str, int] = {"missing_skipped": 0, "no_gt_skipped": 0, "nonfinite_pixels": 0,
                                      "empty_samples": 0}
        self.transform = self._make_transform(transform)
        records = self.list_records()
        self.records: List[Record] = self._check_files(records) if check_files else list(records)

    # -------------------------------------------------------------- for subclasses
    def list_records(self) -> List[Record]:
        """The samples of ``self.split`` in order (files need not exist yet)."""
        raise NotImplementedError

    def read_depth_map(self, record: Record, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Depth in the dataset's unit (float32 H×W) and an optional extra validity mask."""
        return read_depth(record.depth, index=index), None

    def adjust(self, sample: Dict[str, Any], record: Record) -> Dict[str, Any]:
        """Hook after decoding and masking (e.g. a crop); default: unchanged."""
        return sample

    def intrinsics_of(self, record: Record, height: int, width: int) -> Sequence[float]:
        """``[fx, fy, cx, cy]`` of the decoded image (NaN where unknown)."""
        return NAN4

    # -------------------------------------------------------------- helpers
    def require_root(self, root: Optional[str], option: str = "root") -> str:
        if root is None:
            raise UserError(f"{self.name}: option '{option}' is required (the dataset folder)")
        if not os.path.isdir(root):
            raise UserError(f"{self.name}: {option} {root!r} is not a directory")
        return root

    def _make_transform(self, transform):
        if transform is None or callable(transform):
            return transform
        if isinstance(transform, str):
            kind, opts = transform, {}
        elif isinstance(transform, dict) or hasattr(transform, "items"):
            opts = dict(transform)
            kind = opts.pop("kind", "train" if self.split == "train" else "eval")
        else:
            raise UserError(f"{self.name}: transform must be a callable, a kind name or a mapping, "
                            f"got {type(transform).__name__}")
        from ..transforms import build_transform

        return build_transform(kind, self, **opts)

    def _check_files(self, records: List[Record]) -> List[Record]:
        missing, kept = [], []
        for record in records:
            absent = [p for p in (record.image, record.depth) if p is not None and not os.path.exists(p)]
            if absent:
                missing.extend(absent)
            else:
                kept.append(record)
        if missing:
            dropped = len(records) - len(kept)
            where = f" listed in {self.split_file_used}" if getattr(self, "split_file_used", None) else ""
            if not self.skip_missing:
                first = ", ".join(missing[:3])
                raise UserError(f"{self.name} ({self.split}): {len(missing)} file(s){where} are missing "
                                f"({dropped} of {len(records)} samples), first: {first}; "
                                "fix the root/split or set skip_missing: true")
            self.stats["missing_skipped"] += dropped
            log.warning("%s (%s): skipped %d of %d samples with missing files (%d files)%s, first: %s",
                        self.name, self.split, dropped, len(records), len(missing), where, missing[0])
        if not kept:
            raise UserError(f"{self.name} ({self.split}): no samples found"
                            + (f" (root {self.root})" if self.root else ""))
        return kept

    # -------------------------------------------------------------- sample
    def __len__(self) -> int:
        return len(self.records)

    def valid_mask(self, depth: np.ndarray) -> np.ndarray:
        """The dataset's validity rule on finite depth: metric ``min < d < max`` (strict, as the
        original); disparity/relative ``d > 0``; never the stored ``invalid_value`` (compared before
        the reader's ``depth_divisor``, bit-exactly as the decoders divide)."""
        if self.depth_kind == "metric":
            valid = (depth > self.min_depth) & (depth < self.max_depth)
        else:
            valid = depth > 0
        if self.invalid_value is not None:
            divisor = np.float32(getattr(self, "depth_divisor", 1.0) or 1.0)
            code = np.float32(self.invalid_value) if divisor == 1 else np.float32(self.invalid_value) / divisor
            valid &= depth != code
        return valid

    def load_raw(self, index: int) -> Dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples of {self.name}")
        index %= len(self)
        record = self.records[index]
        image = read_image(record.image, index)
        depth, extra_valid = self.read_depth_map(record, index)
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != image.shape[:2]:
            raise UserError(f"{self.name}: depth {record.depth} has shape {tuple(depth.shape)} but image "
                            f"{record.image} is {image.shape[0]}x{image.shape[1]} (sample {index})")
        finite = np.isfinite(depth)
        bad = int(finite.size - np.count_nonzero(finite))
        if bad:
            if self.stats["nonfinite_pixels"] == 0:
                log.warning("%s: %d NaN/inf depth pixels in %s (sample %d) masked as invalid; counted in "
                            "stats['nonfinite_pixels']", self.name, bad, record.depth, index)
            self.stats["nonfinite_pixels"] += bad
            depth = np.where(finite, depth, np.float32(0))
        valid = self.valid_mask(depth) & finite
        if extra_valid is not None:
            valid &= np.asarray(extra_valid, dtype=bool)
        depth = np.where(valid, depth, np.float32(0)).astype(np.float32, copy=False)
        sample = {
            "image": image,
            "depth": depth,
            "valid": valid,
            "depth_kind": self.depth_kind,
            "domain": self.domain,
            "dataset": self.name,
            "intrinsics": np.asarray(self.intrinsics_of(record, *image.shape[:2]), dtype=np.float32),
            "min_depth": float(self.min_depth),
            "max_depth": float(self.max_depth),
            "path": record.image,
        }
        return self.adjust(sample, record)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = self.load_raw(index)
        if self.transform is not None:
            sample = self.transform(sample)
        sample = to_tensors(sample)
        if not bool(sample["valid"].any()):
            self.stats["empty_samples"] += 1
            log.debug("%s: sample %d has no valid depth pixel", self.name, index)
        return sample


def to_tensors(sample: Dict[str, Any]) -> Dict[str, Any]:
    """numpy sample (HWC image uint8 or float in [0, 1]) -> the project's tensor sample dict."""
    out = dict(sample)
    image = np.asarray(sample["image"])
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / np.float32(255)
    out["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    out["depth"] = torch.from_numpy(np.ascontiguousarray(sample["depth"], dtype=np.float32)[None])
    out["valid"] = torch.from_numpy(np.ascontiguousarray(sample["valid"], dtype=bool)[None])
    k = sample.get("intrinsics")
    out["intrinsics"] = torch.as_tensor(np.asarray(NAN4 if k is None else k, dtype=np.float32))
    out["min_depth"], out["max_depth"] = float(sample["min_depth"]), float(sample["max_depth"])
    return out
