"""Data pipeline speed: samples/s of one loader worker through the full training transform.

Two sample kinds are written to a temporary folder in their datasets' real layouts and formats:

* NYU size: 480×640 RGB JPEG + 16-bit PNG depth in millimetres (dense), NYU reader;
* KITTI size: 375×1242 raw RGB PNG + sparse 16-bit PNG depth (metres × 256, ~5 % of pixels),
  KITTI reader (KB crop to 352×1216).

Each is read by the project's reader + training transform (``build_transform("train", ...)``:
rotation ±1°, flip, colour jitter, resize to the network size) and, in the same run, by a plain
PIL + numpy pipeline written here that does the same decode and augmentation the way the
original loader does (PIL decode, PIL rotate, numpy float maths, PIL resize). Both end in the
project's tensor sample (image 3×H×W float32 in [0, 1], depth 1×H×W, valid 1×H×W).

One process, ``num_workers=0``, OpenCV limited to one thread (a loader worker's share of one
core). ``ratio`` = project samples/s ÷ baseline samples/s (> 1: the project is faster).

    python benchmarks/bench_data.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

NYU_NET, KITTI_NET = (384, 512), (384, 768)  # network sizes of ZoeD-N and ZoeD-K


# ------------------------------------------------------------------------------ fixtures
def _scene(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A textured RGB image (smooth gradients + noise) that compresses like a photo."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(xx / 37 + c) * np.cos(yy / 23 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def write_nyu(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        folder = root / "sync" / "bench_scene"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_scene(480, 640, rng)).save(folder / f"rgb_{i:05d}.jpg", quality=95)
        mm = rng.integers(400, 9500, (480, 640)).astype(np.uint16)
        mm[:, :8] = 0
        Image.fromarray(mm).save(folder / f"sync_depth_{i:05d}.png")
        lines.append(f"/bench_scene/rgb_{i:05d}.jpg /bench_scene/sync_depth_{i:05d}.png 518.8579")
    split = root / "nyu_train.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def write_kitti(root: Path, n: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    drive = "2011_09_26_drive_0001_sync"
    for i in range(n):
        img_dir = root / "raw" / "2011_09_26" / drive / "image_02" / "data"
        gt_dir = root / "gt" / drive / "proj_depth" / "groundtruth" / "image_02"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_scene(375, 1242, rng)).save(img_dir / f"{i:010d}.png")
        depth = np.zeros((375, 1242), np.uint16)
        hit = rng.random((375, 1242)) < 0.05
        hit[:120] = False  # no LiDAR returns in the sky
        depth[hit] = (rng.uniform(2, 79, hit.sum()) * 256).astype(np.uint16)
        Image.fromarray(depth).save(gt_dir / f"{i:010d}.png")
        lines.append(f"2011_09_26/{drive}/image_02/data/{i:010d}.png "
                     f"{drive}/proj_depth/groundtruth/image_02/{i:010d}.png 721.5377")
    split = root / "kitti_train.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


# ------------------------------------------------------------------------------ baseline
class PilNumpyPipeline:
    """The original loader's recipe (facts §4.6) with PIL + numpy, then the resize the original
    did in the network, done here with PIL so both pipelines deliver the same sample."""

    def __init__(self, items: List[tuple], divisor: float, kb_crop: bool, brightness: tuple,
                 net: tuple, max_depth: float, seed: int = 0) -> None:
        self.items, self.divisor, self.kb_crop, self.brightness = items, divisor, kb_crop, brightness
        self.net, self.max_depth = net, max_depth
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        rgb_path, depth_path = self.items[i]
        image = Image.open(rgb_path).convert("RGB")
        depth = Image.open(depth_path)
        depth.load()
        if self.kb_crop:
            w, h = image.size
            top, left = h - 352, int((w - 1216) / 2)
            image = image.crop((left, top, left + 1216, top + 352))
            depth = depth.crop((left, top, left + 1216, top + 352))
        angle = self.rng.uniform(-1.0, 1.0)
        image = image.rotate(angle, resample=Image.BILINEAR)
        depth = depth.rotate(angle, resample=Image.NEAREST)
        image = image.resize(self.net[::-1], Image.BILINEAR)
        depth = depth.resize(self.net[::-1], Image.NEAREST)
        img = np.asarray(image, dtype=np.float32) / 255.0
        d = np.asarray(depth, dtype=np.float32) / self.divisor
        if self.rng.random() < 0.5:
            img, d = img[:, ::-1], d[:, ::-1]
        if self.rng.random() < 0.5:
            gamma = self.rng.uniform(0.9, 1.1)
            bright = self.rng.uniform(*self.brightness)
            gains = self.rng.uniform(0.9, 1.1, 3).astype(np.float32)
            img = np.clip(img ** gamma * bright * gains, 0, 1)
        valid = (d > 1e-3) & (d < self.max_depth)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "depth": torch.from_numpy(np.ascontiguousarray(np.where(valid, d, 0))[None]),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)[None]),
        }


# ------------------------------------------------------------------------------ timing
def _rate(dataset, n: int, repeats: int) -> float:
    """Best samples/s over ``repeats`` passes of ``n`` samples (one warm-up sample first)."""
    dataset[0]
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            sample = dataset[i % len(dataset)]
        best = max(best, n / (time.perf_counter() - t0))
    assert sample["image"].dtype == torch.float32
    return best


def run(quick: bool = False) -> List[Dict]:
    """Rows ``{row, impl, value, unit, ratio, note}``: samples/s per worker, project vs baseline."""
    import cv2

    from data_modules.datasets.kitti import KittiDataset
    from data_modules.datasets.nyu import NYUDataset
    from data_modules.transforms import build_transform

    cv2.setNumThreads(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    n_files, n, repeats = (4, 8, 1) if quick else (8, 48, 3)
    rows: List[Dict] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            nyu_split, kitti_split = write_nyu(tmp / "nyu", n_files), write_kitti(tmp / "kitti", n_files)
            nyu = NYUDataset("train", root=str(tmp / "nyu"), split_file=str(nyu_split))
            nyu.transform = build_transform("train", nyu, image_size=list(NYU_NET), seed=0)
            kitti = KittiDataset("train", root=str(tmp / "kitti" / "raw"), depth_root=str(tmp / "kitti" / "gt"),
                                 split_file=str(kitti_split))
            kitti.transform = build_transform("train", kitti, image_size=list(KITTI_NET), seed=0)
            cases = [
                ("NYU 480x640 (JPEG + 16-bit PNG) -> 384x512", nyu,
                 PilNumpyPipeline([(r.image, r.depth) for r in nyu.records], 1000.0, False, (0.75, 1.25),
                                  NYU_NET, 10.0)),
                ("KITTI 375x1242 (PNG + sparse 16-bit PNG), KB crop -> 384x768", kitti,
                 PilNumpyPipeline([(r.image, r.depth) for r in kitti.records], 256.0, True, (0.9, 1.1),
                                  KITTI_NET, 80.0)),
            ]
            for label, ours, baseline in cases:
                ref = _rate(baseline, n, repeats)
                mine = _rate(ours, n, repeats)
                note = "1 process, num_workers=0, 1 thread"
                rows.append({"row": label, "impl": "PIL + numpy (original recipe)", "value": round(ref, 1),
                             "unit": "samples/s", "ratio": 1.0, "note": note})
                rows.append({"row": label, "impl": "zoe-lightning (reader + albumentations)",
                             "value": round(mine, 1), "unit": "samples/s", "ratio": round(mine / ref, 2),
                             "note": note})
    finally:
        torch.set_num_threads(threads)
    return rows


def markdown(rows: List[Dict]) -> str:
    lines = ["| data | pipeline | samples/s per worker | ratio vs PIL+numpy |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['impl']} | {r['value']:.1f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    args = parser.parse_args(argv)
    import platform

    rows = run(quick=args.quick)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(markdown(rows))


if __name__ == "__main__":
    main()
