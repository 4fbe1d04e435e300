"""A small OpenEXR reader for single-part scanline float maps (disparity/depth), pure numpy.

OpenCV wheels often ship without OpenEXR (the project's pinned ``opencv-python-headless`` 5.x
does), so EXR depth/disparity maps are decoded here for the common cases: one or more HALF /
FLOAT / UINT channels, compression NONE, ZIPS or ZIP. Other compressions (PIZ, PXR24, B44, DWA…)
are read with the ``OpenEXR`` package when it is installed (``pip install OpenEXR``) and
otherwise raise a one-line error naming the file and the compression.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["read_exr", "ExrError"]

_MAGIC = 20000630
_COMPRESSIONS = {0: "NONE", 1: "RLE", 2: "ZIPS", 3: "ZIP", 4: "PIZ", 5: "PXR24", 6: "B44", 7: "B44A",
                 8: "DWAA", 9: "DWAB"}
_LINES_PER_BLOCK = {0: 1, 2: 1, 3: 16}
_PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


class ExrError(ValueError):
    """An EXR file this reader cannot decode (with the reason and the file name)."""


def _cstring(data: bytes, pos: int) -> Tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("latin-1"), end + 1


def _header(data: bytes, path: Path) -> Tuple[Dict[str, bytes], int]:
    if len(data) < 8 or struct.unpack_from("<i", data, 0)[0] != _MAGIC:
        raise ExrError(f"{path}: not an OpenEXR file (bad magic number)")
    version = struct.unpack_from("<i", data, 4)[0]
    if version & 0x200:
        raise ExrError(f"{path}: tiled OpenEXR files are not supported")
    if version & 0x1000:
        raise ExrError(f"{path}: multi-part OpenEXR files are not supported")
    pos, attrs = 8, {}
    try:
        while data[pos] != 0:
            name, pos = _cstring(data, pos)
            _, pos = _cstring(data, pos)
            size = struct.unpack_from("<i", data, pos)[0]
            attrs[name] = data[pos + 4:pos + 4 + size]
            pos += 4 + size
    except (IndexError, ValueError, struct.error) as err:
        raise ExrError(f"{path}: truncated OpenEXR header ({err})") from None
    return attrs, pos + 1


def _channels(raw: bytes) -> List[Tuple[str, int]]:
    out, pos = [], 0
    while raw[pos] != 0:
        name, pos = _cstring(raw, pos)
        ptype, _, xs, ys = struct.unpack_from("<iB3xii", raw, pos)
        if xs != 1 or ys != 1:
            raise ExrError(f"sub-sampled channel {name!r} is not supported")
        out.append((name, ptype))
        pos += 16
    return sorted(out)  # EXR stores channels in alphabetical order


def _unzip(block: bytes, expected: int) -> bytes:
    """zlib, then undo the EXR predictor (running byte sum) and the even/odd byte split."""
    data = np.frombuffer(zlib.decompress(block), np.uint8).copy()
    if data.size != expected:
        raise ExrError(f"ZIP block holds {data.size} bytes, expected {expected}")
    data[1:] -= np.uint8(128)  # uint8 arithmetic wraps modulo 256, as the predictor does
    data = np.cumsum(data, dtype=np.uint8)
    half = (data.size + 1) // 2
    out = np.empty_like(data)
    out[0::2], out[1::2] = data[:half], data[half:]
    return out.tobytes()


def _read_with_openexr(path: Path, channel: Optional[str]) -> np.ndarray:
    try:
        import OpenEXR  # type: ignore
    except ImportError:
        return None  # type: ignore[return-value]
    with OpenEXR.File(str(path)) as f:  # OpenEXR >= 3.3 API
        channels = f.channels()
        name = channel or ("Y" if "Y" in channels else sorted(channels)[0])
        return np.asarray(channels[name].pixels, np.float32)


def read_exr(path, channel: Optional[str] = None) -> np.ndarray:
    """The float32 (H, W) map of ``channel`` (default: ``Y``, else ``R``, else the first channel)."""
    path = Path(path)
    data = path.read_bytes()
    attrs, pos = _header(data, path)
    try:
        channels = _channels(attrs["channels"])
        compression = attrs["compression"][0]
        x0, y0, x1, y1 = struct.unpack("<iiii", attrs["dataWindow"])
    except KeyError as err:
        raise ExrError(f"{path}: OpenEXR header lacks the required attribute {err}") from None
    names = [c for c, _ in channels]
    if channel is None:
        channel = next((c for c in ("Y", "R", "Z", "D") if c in names), names[0] if names else None)
    if channel not in names:
        raise ExrError(f"{path}: no channel {channel!r} (channels: {names})")
    if compression not in _LINES_PER_BLOCK:
        fallback = _read_with_openexr(path, channel)
        if fallback is not None:
            return fallback
        raise ExrError(
            f"{path}: OpenEXR compression {_COMPRESSIONS.get(compression, compression)} needs the OpenEXR "
            "package: pip install OpenEXR"
        )
    width, height = x1 - x0 + 1, y1 - y0 + 1
    per_block = _LINES_PER_BLOCK[compression]
    n_blocks = (height + per_block - 1) // per_block
    offsets = struct.unpack_from(f"<{n_blocks}Q", data, pos)
    row_bytes = [width * _PIXEL_TYPES[t].itemsize for _, t in channels]
    out = np.empty((height, width), np.float32)
    which = names.index(channel)
    try:
        for offset in offsets:
            y, size = struct.unpack_from("<ii", data, offset)
            lines = min(per_block, y1 - y + 1)
            block = data[offset + 8:offset + 8 + size]
            expected = lines * sum(row_bytes)
            if compression != 0 and size < expected:
                block = _unzip(block, expected)
            if len(block) != expected:
                raise ExrError(f"block at row {y} holds {len(block)} bytes, expected {expected}")
            rows = y - y0
            start = 0
            for line in range(lines):  # each scanline stores its channels one after another
                for k, (_, ptype) in enumerate(channels):
                    if k == which:
                        values = np.frombuffer(block, _PIXEL_TYPES[ptype], width, start)
                        out[rows + line] = values.astype(np.float32)
                    start += row_bytes[k]
    except (struct.error, zlib.error, ExrError) as err:
        raise ExrError(f"{path}: corrupt or truncated OpenEXR data ({err})") from None
    return out
