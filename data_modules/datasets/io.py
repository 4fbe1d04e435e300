"""Decoders shared by every reader: images (:func:`read_image`) and depth files by extension
(:func:`read_depth`: PNG/TIFF, NPY/NPZ, PFM, HDF5, EXR), each failing with one clear line that
names the file and the sample index when a file is missing, corrupt or truncated."""

from __future__ import annotations

import os
from typing import Optional

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # read at the first EXR decode

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from zoe_lightning.errors import UserError  # noqa: E402

__all__ = [
    "DEPTH_EXTENSIONS",
    "read_image",
    "read_depth",
    "read_depth_png",
    "read_npy",
    "read_pfm",
    "write_pfm",
    "read_hdf5",
    "read_exr",
]

FORMATS_HINT = "pip install 'zoe-lightning[formats]'"


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
