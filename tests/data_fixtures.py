"""Generators of tiny fake datasets in the real on-disk layouts and file formats (never real data).

Each ``make_*`` writes a layout under ``root`` and returns a :class:`FakeSet` with the paths it
wrote and the exact arrays (RGB uint8, stored depth values) so tests can compare decoded samples
against what was put on disk. Image content is a smooth gradient unique per pixel position, so a
crop can be located from its first pixel; JPEG files use flat colours (JPEG is lossy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "FakeSet",
    "coord_image",
    "write_rgb",
    "write_png16",
    "write_pfm_bytes",
    "truncate",
    "make_nyu",
    "make_kitti",
    "make_folder",
    "KITTI_CALIB",
]


@dataclass
class FakeSet:
    root: Path
    split_file: Optional[Path] = None
    images: List[Path] = field(default_factory=list)
    depths: List[Optional[Path]] = field(default_factory=list)
    rgb: List[np.ndarray] = field(default_factory=list)  # what was written (for JPEG: the intended colour)
    stored: List[Optional[np.ndarray]] = field(default_factory=list)  # raw stored depth values
    extra: Dict[str, object] = field(default_factory=dict)


def coord_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 H×W×3 whose (R, G) encode (row, column) modulo 256 and B the seed."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows % 256, cols % 256, np.full_like(rows, seed % 256)], axis=2).astype(np.uint8)


def write_rgb(path, rgb: np.ndarray, quality: int = 95) -> Path:
    """RGB uint8 H×W×3 to PNG or JPEG (by extension) with OpenCV (which stores BGR)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), params), path
    return path


def write_png16(path, values: np.ndarray) -> Path:
    """A single-channel 16-bit PNG holding ``values`` exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(values)
    assert values.min() >= 0 and values.max() <= 65535
    assert cv2.imwrite(str(path), values.astype(np.uint16)), path
    return path


def write_pfm_bytes(path, rows_top_first: Sequence[Sequence[float]], little_endian: bool = True) -> Path:
    """A grey PFM written byte by byte from the format description (bottom row stored first),
    independent of the package's own writer."""
    array = np.asarray(rows_top_first, dtype=np.float32)
    height, width = array.shape
    dtype = "<f4" if little_endian else ">f4"
    header = f"Pf\n{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode()
    body = b"".join(array[r].astype(dtype).tobytes() for r in range(height - 1, -1, -1))
    Path(path).write_bytes(header + body)
    return Path(path)


def truncate(path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (a truncated download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return Path(path)


def _depth_mm(height: int, width: int, k: int) -> np.ndarray:
    """Distinct millimetre values in 500..9499 with a few special codes."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return (500 + (rows * width + cols + 37 * k) % 9000).astype(np.uint16)


def make_nyu(root, split: str = "train", n: int = 3, size: Tuple[int, int] = (48, 64),
             colours: Optional[Sequence[Tuple[int, int, int]]] = None) -> FakeSet:
    """NYU BTS layout: ``sync/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (train) or
    ``official_splits/test/<category>/...`` (test), and a split file in the shipped format
    (train lines start with '/', as the shipped train list does)."""
    root = Path(root)
    part = root / ("sync" if split == "train" else "official_splits/test")
    fake = FakeSet(root)
    lines = []
    h, w = size
    for k in range(n):
        scene = f"kitchen_{k:04d}" if split == "train" else "bathroom"
        colour = colours[k] if colours else (40 * k + 20, 100, 200 - 30 * k)
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[:] = colour
        depth = _depth_mm(h, w, k)
        image = write_rgb(part / scene / f"rgb_{k:05d}.jpg", rgb)
        dpath = write_png16(part / scene / f"sync_depth_{k:05d}.png", depth)
        lead = "/" if split == "train" else ""
        lines.append(f"{lead}{scene}/rgb_{k:05d}.jpg {lead}{scene}/sync_depth_{k:05d}.png 518.8579")
        fake.images.append(image)
        fake.depths.append(dpath)
        fake.rgb.append(rgb)
        fake.stored.append(depth)
    fake.split_file = root / f"nyu_{split}.txt"
    fake.split_file.write_text("\n".join(lines) + "\n")
    return fake


KITTI_CALIB = {"P_rect_02": (721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791,
                             0.0, 0.0, 1.0, 0.002745884)}


def make_kitti(root, depth_root=None, n: int = 2, size: Tuple[int, int] = (356, 1222), none_rows: int = 1,
               calib: bool = True, date: str = "2011_09_26") -> FakeSet:
    """KITTI raw + annotated layout with ``n`` frames (PNG RGB, 16-bit PNG depth = metres × 256,
    0 = no LiDAR return) and ``none_rows`` extra split rows whose ground truth is ``None``."""
    root = Path(root)
    depth_root = Path(depth_root) if depth_root is not None else root
    drive = f"{date}_drive_0001_sync"
    fake = FakeSet(root, extra={"depth_root": depth_root, "drive": drive})
    lines = []
    h, w = size
    for k in range(n):
        rel_img = f"{date}/{drive}/image_02/data/{k:010d}.png"
        rel_depth = f"{drive}/proj_depth/groundtruth/image_02/{k:010d}.png"
        rgb = coord_image(h, w, seed=k)
        stored = np.zeros((h, w), np.uint16)
        stored[::3, ::2] = (256 * (1.0 + ((np.arange(0, h, 3)[:, None] + np.arange(0, w, 2)[None]) % 300) * 0.25)
                            ).astype(np.uint16)  # sparse LiDAR-like rows, 1 .. 75.75 m
        fake.images.append(write_rgb(root / rel_img, rgb))
        fake.depths.append(write_png16(depth_root / rel_depth, stored))
        fake.rgb.append(rgb)
        fake.stored.append(stored)
        lines.append(f"{rel_img} {rel_depth} 721.5377")
    for k in range(none_rows):
        lines.append(f"{date}/{drive}/image_02/data/{n + k:010d}.png None 721.5377")
    if calib:
        text = "calib_time: 09-Jan-2012 13:57:47\n" + "".join(
            f"{key}: {' '.join(f'{v:.6e}' for v in values)}\n" for key, values in KITTI_CALIB.items())
        (root / date).mkdir(parents=True, exist_ok=True)
        (root / date / "calib_cam_to_cam.txt").write_text(text)
    fake.split_file = root / "kitti_split.txt"
    fake.split_file.write_text("\n".join(lines) + "\n")
    return fake


def make_folder(root, n: int = 3, size: Tuple[int, int] = (20, 30), depth_format: str = "npy",
                image_suffix: str = "_rgb", depth_suffix: str = "_depth", nested: bool = True) -> FakeSet:
    """A custom layout: ``images/<scene>/<name>_rgb.png`` and ``depth/<scene>/<name>_depth.<fmt>``
    with depth in metres (``npy``, ``pfm``, ``h5``) or millimetres (``png``)."""
    root = Path(root)
    fake = FakeSet(root)
    h, w = size
    for k in range(n):
        sub = f"scene{k % 2}/" if nested else ""
        rgb = coord_image(h, w, seed=10 + k)
        metres = (1.0 + (0.125 * np.arange(h * w, dtype=np.float32).reshape(h, w)) % 48 + k).astype(np.float32)
        image = write_rgb(root / "images" / f"{sub}f{k:03d}{image_suffix}.png", rgb)
        dpath = root / "depth" / f"{sub}f{k:03d}{depth_suffix}.{depth_format}"
        dpath.parent.mkdir(parents=True, exist_ok=True)
        if depth_format == "npy":
            np.save(dpath, metres)
            stored = metres
        elif depth_format == "pfm":
            write_pfm_bytes(dpath, metres)
            stored = metres
        elif depth_format == "h5":
            import h5py

            with h5py.File(dpath, "w") as fh:
                fh.create_dataset("dataset", data=metres)
            stored = metres
        elif depth_format == "png":
            stored = np.round(metres * 1000)
            assert stored.max() <= 65535, "millimetre depth must fit 16 bits"
            write_png16(dpath, stored)
        else:
            raise ValueError(depth_format)
        fake.images.append(image)
        fake.depths.append(dpath)
        fake.rgb.append(rgb)
        fake.stored.append(stored)
    return fake


def relative_lines(paths: Sequence[Tuple[os.PathLike, os.PathLike]], root) -> List[str]:
    return [f"{os.path.relpath(a, root)} {os.path.relpath(b, root)}" for a, b in paths]
