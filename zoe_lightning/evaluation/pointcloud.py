"""Pinhole back-projection of a depth map and a coloured point cloud writer (binary PLY).

Convention: pixel ``(u, v)`` = (column, row) has its centre at integer coordinates; the camera
frame is x right, y down, z forward (OpenCV), so a pixel with planar depth ``z`` maps to
``((u - cx) * z / fx, (v - cy) * z / fy, z)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

__all__ = ["DEFAULT_FOV_DEG", "default_intrinsics", "parse_intrinsics", "backproject", "write_ply", "read_ply"]

# The original ZoeDepth demo's point-cloud default: a 55 degree horizontal field of view with the
# principal point at the image centre (W/2, H/2) and square pixels.
DEFAULT_FOV_DEG = 55.0


def default_intrinsics(height: int, width: int, fov_deg: float = DEFAULT_FOV_DEG) -> Tuple[float, float, float, float]:
    """``(fx, fy, cx, cy)`` of a camera with horizontal field of view ``fov_deg`` and square pixels."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    f = 0.5 * width / math.tan(0.5 * math.radians(fov_deg))
    return f, f, 0.5 * width, 0.5 * height


def parse_intrinsics(text: str) -> Tuple[float, float, float, float]:
    """``"fx,fy,cx,cy"`` -> four floats (ValueError naming the problem otherwise)."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"intrinsics must be four numbers fx,fy,cx,cy, got {text!r}") from None
    if len(values) != 4 or values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"intrinsics must be four numbers fx,fy,cx,cy with fx, fy > 0, got {text!r}")
    return values  # type: ignore[return-value]


def backproject(
    depth: np.ndarray,
    intrinsics: Sequence[float],
    colors: Optional[np.ndarray] = None,
    stride: int = 1,
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Points ``(N, 3)`` float32 of the pixels with finite depth > 0 (every ``stride``-th row and
    column), and their ``(N, 3)`` uint8 colours when ``colors`` (H, W, 3) is given."""
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {d.shape}")
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    v, u = np.mgrid[0: d.shape[0]: stride, 0: d.shape[1]: stride]
    z = d[::stride, ::stride]
    ok = np.isfinite(z) & (z > 0)
    z, u, v = z[ok], u[ok], v[ok]
    points = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=1).astype(np.float32)
    rgb = None
    if colors is not None:
        c = np.asarray(colors)
        if c.shape[:2] != d.shape:
            raise ValueError(f"colours {c.shape} do not match depth {d.shape}")
        rgb = c[::stride, ::stride][ok].astype(np.uint8)
    return points, rgb


def write_ply(path, points: np.ndarray, colors: Optional[np.ndarray] = None) -> Path:
    """Binary little-endian PLY: float x, y, z (+ uchar red, green, blue)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = np.asarray(points, dtype="<f4").reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    data = np.empty(len(pts), dtype=fields)
    data["x"], data["y"], data["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(pts)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        col = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
        data["red"], data["green"], data["blue"] = col[:, 0], col[:, 1], col[:, 2]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(data.tobytes())
    return path


def read_ply(path) -> Tuple[list, np.ndarray]:
    """Read a file written by :func:`write_ply`: (header lines, structured vertex array)."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    n = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    kinds = {"float": "<f4", "uchar": "u1"}
    fields = [(line.split()[2], kinds[line.split()[1]]) for line in header if line.startswith("property")]
    return header, np.frombuffer(raw[end:], dtype=fields, count=n)
