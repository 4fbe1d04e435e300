"""Deterministic procedural RGB-D scenes: the project's embedded default dataset.

Scenes are axis-aligned planes and boxes in a world frame with X right, Y up and Z forward,
rendered by analytic ray casting from a pinhole camera. Pixel ``(u, v)`` is the (column, row)
index and its centre sits at integer coordinates, so its camera-frame ray (x right, y down,
z forward) is ``((u - cx) / fx, (v - cy) / fy, 1)``. That ray has unit z-component, so the ray
parameter at a hit *is* the planar depth (z in the camera frame) in metres, exact up to float32
rounding (rays and depths are float32 for speed).

Domains: ``"nyu"`` (a closed room, every pixel valid, depth < 10 m) and ``"kitti"`` (a street
with buildings; sky and anything at or beyond 80 m is invalid). Sample ``i`` of a split is a
pure function of (seed, split, i, domain, style, depth_kind, image size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["Camera", "camera_rotation", "raycast", "render_plane_depth", "SyntheticDepthDataset"]

SPLITS = {"train": 0, "val": 1, "test": 2}
DOMAINS = {"nyu": 0, "kitti": 1}
DEPTH_KINDS = ("metric", "disparity", "relative")
DEPTH_RANGE = {"nyu": (1e-3, 10.0), "kitti": (1e-3, 80.0)}
DEFAULT_LENGTH = {"train": 2000, "val": 100, "test": 100}
CHECKER, STRIPES, NOISE, FLAT = range(4)


def camera_rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (radians): yaw > 0 turns right, pitch > 0 looks up, roll about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    turn = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    c, s = np.cos(pitch), np.sin(pitch)
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    c, s = np.cos(roll), np.sin(roll)
    spin = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return turn @ np.diag([1.0, -1.0, 1.0]) @ tilt @ spin


@dataclass
class Camera:
    """Pinhole camera: intrinsics in pixels, camera-to-world ``rotation``, ``position`` in metres."""

    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray = field(default_factory=camera_rotation)
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def rays(self, height: int, width: int) -> np.ndarray:
        """World-frame ray directions (H, W, 3) whose camera-frame z-component is 1."""
        rot = np.asarray(self.rotation, np.float64)
        x = (np.arange(width) - self.cx) / self.fx  # camera-frame ray = (x[u], y[v], 1)
        y = (np.arange(height) - self.cy) / self.fy
        dirs = x[None, :, None] * rot[:, 0] + y[:, None, None] * rot[:, 1] + rot[:, 2]
        return dirs.astype(np.float32)

    def footprints(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """Pixel windows (B, 4) = row0, row1, col0, col1 that can see each box (B, 2, 3).

        A box with a corner behind the camera gets the whole image; one wholly behind, none.
        """
        corner = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        points = boxes[:, corner, np.arange(3)] - np.asarray(self.position)  # (B, 8, 3)
        cam = points @ np.asarray(self.rotation)
        z = np.maximum(cam[..., 2], 1e-6)
        u, v = self.fx * cam[..., 0] / z + self.cx, self.fy * cam[..., 1] / z + self.cy
        box = np.stack([v.min(1), v.max(1) + 2, u.min(1), u.max(1) + 2], 1)
        box = np.clip(np.floor(box), 0, [height, height, width, width]).astype(np.int64)
        box[(cam[..., 2] <= 1e-6).any(1)] = [0, height, 0, width]
        box[(cam[..., 2] <= 0).all(1)] = 0
        return box


def _cast(camera: Camera, dirs: np.ndarray, planes, boxes):
    """Nearest forward hit per ray of ``dirs`` (H, W, 3): maps (t, surface or -1, hit axis).

    Surfaces are numbered planes first, then boxes. Boxes are slab-tested only inside their
    projected screen rectangle, so the cost follows their image area.
    """
    h, w = dirs.shape[:2]
    origin = np.asarray(camera.position, np.float64)
    best = np.full((h, w), np.inf, np.float32)
    surf, axis = np.full((h, w), -1), np.zeros((h, w), np.int64)
    inv = (1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs).transpose(2, 0, 1)).astype(np.float32)
    for k, (a, offset) in enumerate(planes):
        t = np.float32(offset - origin[a]) * inv[a]
        hit = (t > 0) & (t < best)
        best[hit], surf[hit], axis[hit] = t[hit], k, a
    boxes = np.asarray(boxes, np.float64).reshape(-1, 2, 3)
    for k, ((lo, hi), (r0, r1, c0, c1)) in enumerate(zip(boxes, camera.footprints(boxes, h, w))):
        if r0 >= r1 or c0 >= c1:
            continue
        window = (slice(r0, r1), slice(c0, c1))
        for a in range(3):
            t1 = np.float32(lo[a] - origin[a]) * inv[a][window]
            t2 = np.float32(hi[a] - origin[a]) * inv[a][window]
            t_in, t_out = np.minimum(t1, t2), np.maximum(t1, t2)
            if a == 0:
                near, far, side = t_in, t_out, np.zeros(t_in.shape, np.int64)
            else:
                later = t_in > near
                near, side, far = np.where(later, t_in, near), np.where(later, a, side), np.minimum(far, t_out)
        hit = (near > 0) & (near <= far) & (near < best[window])
        np.copyto(best[window], near, where=hit)
        np.copyto(surf[window], len(planes) + k, where=hit)
        np.copyto(axis[window], side, where=hit)
    return best, surf, axis


def raycast(camera: Camera, image_size: Tuple[int, int], planes: Sequence = (), boxes=()):
    """Ray-cast planes ``(axis, offset)`` (world plane ``X[axis] = offset``) and boxes.

    ``boxes`` is ``(B, 2, 3)``: lower and upper world corners. Returns ``(depth, surface, axis)``
    maps of shape (H, W): planar depth (inf where nothing is hit), index of the surface hit
    (planes first, then boxes; -1 = none) and the world axis of the hit surface's normal.
    """
    return _cast(camera, camera.rays(*image_size), planes, boxes)


def render_plane_depth(camera: Camera, image_size: Tuple[int, int], axis: int, offset: float):
    """Planar depth (H, W) of the single world plane ``X[axis] = offset`` (inf where missed)."""
    return raycast(camera, image_size, planes=[(axis, offset)])[0]


_PALETTE = {  # per domain: named colour families (RGB in [0, 1])
    "nyu": {
        "wall": [(0.86, 0.80, 0.70), (0.80, 0.74, 0.62), (0.90, 0.84, 0.76), (0.74, 0.70, 0.60)],
        "floor": [(0.55, 0.37, 0.22), (0.62, 0.48, 0.32), (0.48, 0.40, 0.34), (0.78, 0.72, 0.62)],
        "ceiling": [(0.93, 0.91, 0.86)],
        "object": [(0.45, 0.27, 0.15), (0.66, 0.30, 0.20), (0.70, 0.58, 0.40), (0.35, 0.30, 0.28)],
    },
    "kitti": {
        "road": [(0.33, 0.34, 0.37), (0.40, 0.40, 0.42)],
        "verge": [(0.30, 0.45, 0.22), (0.55, 0.56, 0.58), (0.38, 0.48, 0.30)],
        "building": [(0.62, 0.64, 0.68), (0.45, 0.52, 0.62), (0.72, 0.72, 0.74), (0.55, 0.50, 0.50)],
        "object": [(0.15, 0.25, 0.55), (0.80, 0.82, 0.85), (0.20, 0.22, 0.25), (0.25, 0.35, 0.30)],
        "sky": [(0.78, 0.86, 0.96), (0.35, 0.55, 0.90)],  # horizon, zenith
    },
}


class _Materials:
    """Per-surface colour, texture kind, texture scale (metres) and contrast, built in order."""

    def __init__(self, rng: np.random.Generator, palette: dict):
        self.rng, self.palette, self.rows = rng, palette, []

    def add(self, family: str, kinds=(CHECKER, STRIPES, NOISE, FLAT), scale=(0.2, 1.0), contrast=(0.2, 0.6)):
        """Append one surface whose material is drawn from a colour family."""
        rng = self.rng
        colours = self.palette[family]
        colour = np.asarray(colours[rng.integers(len(colours))]) * rng.uniform(0.85, 1.15, 3)
        self.rows.append((colour, kinds[rng.integers(len(kinds))], rng.uniform(*scale), rng.uniform(*contrast)))

    def arrays(self):
        colour, kind, scale, contrast = (np.array(x, np.float32) for x in zip(*self.rows))
        return np.clip(colour, 0, 1), kind.astype(np.int64), scale, contrast


def _intrinsics(rng, h, w, hfov_deg):
    fx = (w / 2) / np.tan(np.radians(rng.uniform(*hfov_deg)) / 2)
    fy = fx * rng.uniform(0.97, 1.03)
    return fx, fy, (w - 1) / 2 + rng.uniform(-0.02, 0.02) * w, (h - 1) / 2 + rng.uniform(-0.02, 0.02) * h


def _indoor_scene(rng, h, w, mats):
    """A closed room (back wall 2-9.2 m away) with furniture and pictures.

    Planar depth <= back wall + (lateral + vertical reach) * sin(6 deg) <= 9.2 + 7.1 * 0.105 < 10.
    """
    depth, width, height = rng.uniform(2.0, 9.2), rng.uniform(3.0, 5.5), rng.uniform(2.4, 3.2)
    position = np.array([rng.uniform(-1, 1) * (width / 2 - 0.6), rng.uniform(1.0, 1.7), 0.0])
    angles = np.radians(rng.uniform(-1, 1, 3) * [6.0, 6.0, 3.0])  # |yaw|, |pitch| <= 6 deg
    camera = Camera(*_intrinsics(rng, h, w, (55, 70)), camera_rotation(*angles), position)
    planes = [(1, 0.0), (1, height), (0, -width / 2), (0, width / 2), (2, depth), (2, -0.5)]
    mats.add("floor", scale=(0.25, 0.8))
    mats.add("ceiling", kinds=(FLAT, NOISE), contrast=(0.0, 0.15))
    mats.add("wall", scale=(0.1, 0.6))  # left wall; right and front walls share it
    mats.rows.append(mats.rows[-1])
    mats.add("wall" if rng.random() < 0.6 else "object", scale=(0.1, 0.6))  # back wall
    mats.rows.append(mats.rows[2])
    boxes = []
    for _ in range(rng.integers(2, 6)):  # furniture, at least 1 m in front of the camera
        bw, bh, bd = rng.uniform(0.4, 1.6), rng.uniform(0.4, min(2.0, height - 0.2)), rng.uniform(0.3, 1.2)
        bd = min(bd, depth - 1.0)
        x0, z0 = rng.uniform(-width / 2, width / 2 - bw), rng.uniform(1.0, depth - bd)
        boxes.append([(x0, 0.0, z0), (x0 + bw, bh, z0 + bd)])
        mats.add("object", scale=(0.05, 0.4))
    for _ in range(rng.integers(0, 3)):  # pictures on the back wall
        pw, ph = rng.uniform(0.4, 1.2), rng.uniform(0.3, 0.9)
        x0, y0 = rng.uniform(-width / 2, width / 2 - pw), rng.uniform(0.9, height - ph - 0.1)
        boxes.append([(x0, y0, depth - 0.04), (x0 + pw, y0 + ph, depth)])
        mats.rows.append((rng.uniform(0.1, 0.9, 3), NOISE, rng.uniform(0.03, 0.15), 0.8))
    sun = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.6, 1.0), rng.uniform(-0.8, 0.2)])
    return camera, planes, np.array(boxes), sun, rng.uniform(0.35, 0.55)


def _outdoor_scene(rng, h, w, mats):
    """A straight road along Z lined with buildings, plus cars and poles; open sky above."""
    road = rng.uniform(3.0, 6.0)  # half width
    position = np.array([rng.uniform(-0.4, 0.4) * road, rng.uniform(1.4, 1.9), 0.0])
    angles = np.radians(rng.uniform(-1, 1, 3) * [4.0, 3.0, 2.0])
    camera = Camera(*_intrinsics(rng, h, w, (60, 80)), camera_rotation(*angles), position)
    mats.add("road", kinds=(NOISE,), scale=(0.2, 0.6), contrast=(0.1, 0.3))
    boxes = []
    for side in (-1.0, 1.0):
        z = rng.uniform(-8.0, 4.0)
        while z < 120.0:
            length, inset, extent = rng.uniform(6, 20), road + rng.uniform(1, 5), rng.uniform(6, 15)
            xs = sorted([side * inset, side * (inset + extent)])
            boxes.append([(xs[0], 0.0, z), (xs[1], rng.uniform(4, 18), z + length)])
            mats.add("building", kinds=(CHECKER, STRIPES, NOISE), scale=(0.8, 3.0))
            z += length + rng.uniform(0, 6)
    for _ in range(rng.integers(0, 5)):  # cars
        x, z = rng.choice([-0.5, 0.5]) * road + rng.uniform(-0.4, 0.4), rng.uniform(6, 60)
        boxes.append([(x - 0.9, 0.0, z), (x + 0.9, rng.uniform(1.4, 1.6), z + rng.uniform(3.8, 4.6))])
        mats.add("object", kinds=(FLAT, NOISE), scale=(0.5, 1.0), contrast=(0.0, 0.2))
    for _ in range(rng.integers(0, 7)):  # poles and trunks on the verge
        x, z = rng.choice([-1.0, 1.0]) * (road + rng.uniform(0.3, 1.0)), rng.uniform(3, 70)
        boxes.append([(x - 0.12, 0.0, z), (x + 0.12, rng.uniform(3, 6), z + 0.24)])
        mats.add("object", kinds=(FLAT,))
    mats.add("verge", kinds=(CHECKER, NOISE), scale=(0.4, 1.2))
    el, az = np.radians(rng.uniform(25, 65)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    return camera, [(1, 0.0)], np.array(boxes), sun, rng.uniform(0.35, 0.5), road


_LATTICE = np.random.default_rng(20240611).random(256 * 256).astype(np.float32)  # fixed table


def _value_noise(u, v):
    """Smooth value noise in [0, 1] with unit lattice spacing (a fixed 256 x 256 random table)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    c0, r0 = iu.astype(np.int64) & 255, (iv.astype(np.int64) & 255) << 8
    c1, r1 = (c0 + 1) & 255, (r0 + 256) & 0xFF00
    top = _LATTICE[r0 | c0] + (_LATTICE[r0 | c1] - _LATTICE[r0 | c0]) * fu
    bottom = _LATTICE[r1 | c0] + (_LATTICE[r1 | c1] - _LATTICE[r1 | c0]) * fu
    return top + (bottom - top) * fv


def _texture(points, axis, kind, scale):
    """Procedural texture in [0, 1] from world coordinates on the hit face."""
    rows = np.arange(len(points))
    u = (points[rows, (axis + 1) % 3] / scale).astype(np.float32)
    v = (points[rows, (axis + 2) % 3] / scale).astype(np.float32)
    tex = np.full(len(points), 0.5, np.float32)  # FLAT
    m = kind == CHECKER
    tex[m] = (np.floor(u[m]) + np.floor(v[m])) % 2
    m = kind == STRIPES
    tex[m] = 0.5 + 0.5 * np.sin(2 * np.pi * u[m])
    m = kind == NOISE
    tex[m] = 0.65 * _value_noise(u[m], v[m]) + 0.35 * _value_noise(2.7 * u[m] + 5.1, 2.7 * v[m])
    return tex


def _style(style: int):
    """Colour matrix and texture-scale factor of a style (0 = the domain's own palette)."""
    if style == 0:
        return np.eye(3), 1.0
    rng = np.random.default_rng(np.random.SeedSequence([int(style), 0x57E1E]))
    k = np.full(3, 1 / np.sqrt(3))
    theta, saturation = rng.uniform(np.pi / 3, 5 * np.pi / 3), rng.uniform(0.5, 1.6)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    hue = np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    sat = np.outer(k, k) + saturation * (np.eye(3) - np.outer(k, k))
    return sat @ hue, 2.0 ** rng.uniform(-1.5, 1.5)


class SyntheticDepthDataset(Dataset):
    """Procedural indoor (``"nyu"``) or outdoor (``"kitti"``) RGB-D samples as project sample dicts.

    ``depth_kind``: ``"metric"`` (metres), ``"disparity"`` (``s / depth + t``, random ``s > 0``,
    ``t >= 0`` per sample) or ``"relative"`` (depth times a random scale). The scene itself does
    not depend on ``depth_kind`` or ``image_size`` (intrinsics scale with the image).
    ``length=None`` picks 2000 for train and 100 for val/test.
    """

    def __init__(self, domain: str = "nyu", split: str = "train", length: Optional[int] = None,
                 image_size: Sequence[int] = (192, 256), seed: int = 43, depth_kind: str = "metric",
                 style: int = 0, domain_name: Optional[str] = None, dataset_name: Optional[str] = None):
        for value, allowed, what in ((domain, DOMAINS, "domain"), (split, SPLITS, "split"),
                                     (depth_kind, DEPTH_KINDS, "depth_kind")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(allowed)}")
        if int(seed) < 0 or int(style) < 0:
            raise ValueError(f"seed and style must be non-negative, got {seed} and {style}")
        self.domain, self.split, self.seed, self.style = domain, split, int(seed), int(style)
        self.length = DEFAULT_LENGTH[split] if length is None else int(length)
        self.image_size, self.depth_kind = (int(image_size[0]), int(image_size[1])), depth_kind
        self.domain_name = domain_name or domain
        base = {"nyu": "synthetic_indoor", "kitti": "synthetic_outdoor"}[domain]
        self.dataset_name = dataset_name or (base + (f"_style{self.style}" if self.style else ""))
        self.min_depth, self.max_depth = DEPTH_RANGE[domain]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        index %= self.length
        entropy = [self.seed, SPLITS[self.split], int(index), DOMAINS[self.domain], self.style]
        scene_ss, kind_ss, noise_ss = np.random.SeedSequence(entropy).spawn(3)
        image, depth, camera = self._render(np.random.default_rng(scene_ss))
        valid = np.isfinite(depth) & (depth > self.min_depth) & (depth < self.max_depth)
        depth = np.where(valid, depth, 0.0)
        kind_rng = np.random.default_rng(kind_ss)
        if self.depth_kind == "disparity":
            s = np.exp(kind_rng.uniform(np.log(0.2), np.log(5.0)))
            t = kind_rng.uniform(0.0, 0.2) * s
            depth = np.where(valid, s / np.where(valid, depth, 1.0) + t, 0.0)
        elif self.depth_kind == "relative":
            depth = depth * np.exp(kind_rng.uniform(np.log(0.1), np.log(10.0)))
        noise_rng = np.random.default_rng(noise_ss)
        sigma = noise_rng.uniform(0.005, 0.02)
        image = np.clip(image + np.float32(sigma) * noise_rng.standard_normal(image.shape, np.float32), 0, 1)
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)),
            "depth": torch.from_numpy(depth[None].astype(np.float32)),
            "valid": torch.from_numpy(valid[None]),
            "depth_kind": self.depth_kind,
            "domain": self.domain_name,
            "dataset": self.dataset_name,
            "intrinsics": torch.tensor([camera.fx, camera.fy, camera.cx, camera.cy], dtype=torch.float32),
            "min_depth": float(self.min_depth),
            "max_depth": float(self.max_depth),
        }

    def _render(self, rng: np.random.Generator):
        """Image (H, W, 3) in [0, 1], planar depth (H, W) with inf for sky, and the camera."""
        h, w = self.image_size
        palette = _PALETTE[self.domain]
        mats = _Materials(rng, palette)
        if self.domain == "nyu":
            camera, planes, boxes, sun, ambient = _indoor_scene(rng, h, w, mats)
        else:
            camera, planes, boxes, sun, ambient, road = _outdoor_scene(rng, h, w, mats)
        colour, kind, scale, contrast = mats.arrays()
        matrix, scale_factor = _style(self.style)
        colour = np.clip(colour @ matrix.T.astype(np.float32), 0.0, 1.0)
        dirs = camera.rays(h, w)
        t, surf, axis = (x.reshape(-1) for x in _cast(camera, dirs, planes, boxes))
        dirs = dirs.reshape(-1, 3)
        hit = surf >= 0
        points = np.asarray(camera.position, np.float32) + np.where(hit, t, 0.0)[:, None] * dirs
        if self.domain == "kitti":  # ground outside the road belongs to the verge material
            surf = np.where((surf == 0) & (np.abs(points[:, 0]) > road), len(colour) - 1, surf)
        s = np.maximum(surf, 0)  # misses borrow surface 0 and are painted over with sky below
        tex = _texture(points, axis, kind[s], scale[s] * np.float32(scale_factor))
        sun, ambient = (sun / np.linalg.norm(sun)).astype(np.float32), np.float32(ambient)
        facing = -np.sign(dirs[np.arange(len(s)), axis]) * sun[axis]  # normal = +-e_axis, to camera
        fade = np.exp(-t / np.float32(rng.uniform(15, 30) if self.domain == "nyu" else rng.uniform(120, 300)))
        grey = (1 + contrast[s] * (2 * tex - 1)) * (ambient + (1 - ambient) * np.maximum(facing, 0))
        image = colour[s] * (grey * fade)[:, None]
        if self.domain == "kitti":  # haze towards the horizon colour, sky gradient for misses
            horizon, zenith = np.clip(np.asarray(palette["sky"]) @ matrix.T, 0.0, 1.0).astype(np.float32)
            image += horizon * (1 - fade)[:, None]
            up = np.clip(dirs[:, 1] / np.linalg.norm(dirs, axis=1), 0.0, 1.0)
            sky = horizon + (zenith - horizon) * np.sqrt(up)[:, None]
            image = np.where(hit[:, None], image, sky)
        return np.clip(image, 0.0, 1.0).reshape(h, w, 3), t.reshape(h, w), camera
