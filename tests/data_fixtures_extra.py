"""Tiny fake datasets in the on-disk layouts of the zero-shot and relative-pretraining sets.

Every generator writes the real file formats of its dataset (JPEG/PNG RGB, 16-bit and 8-bit PNG,
NPY, HDF5, PFM, EXR) under ``root`` and returns a small dict describing what it wrote (the raw
values and the paths), so the tests can state the decoded values they expect by hand. The
writers here are independent of the readers under test (own PFM and EXR writers).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

H, W = 8, 12  # default tiny frame


# ----------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------
def rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A deterministic, smooth uint8 RGB image (so JPEG keeps it close) with distinct channels:
    red grows along columns, green along rows, blue is a per-seed constant."""
    cols = np.linspace(30, 220, w)[None, :].repeat(h, 0)
    rows = np.linspace(200, 60, h)[:, None].repeat(w, 1)
    blue = np.full((h, w), 20 + (seed * 37) % 200)
    return np.stack([cols, rows, blue], axis=2).round().astype(np.uint8)


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(image).save(path, quality=95)
    else:
        Image.fromarray(image).save(path)
    return path


def write_png16(path: Path, values: np.ndarray) -> Path:
    """A single-channel 16-bit PNG holding ``values`` (uint16) exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(values)
    assert values.dtype == np.uint16
    Image.fromarray(values).save(path)  # PIL picks mode I;16 for uint16
    back = np.asarray(Image.open(path))
    assert back.dtype == np.uint16 and np.array_equal(back, values), "16-bit PNG round trip failed"
    return path


def write_png8(path: Path, values: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint8)).save(path)
    return path


def write_npy(path: Path, values: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, values)
    return path


def write_hdf5(path: Path, values: np.ndarray, key: str = "dataset") -> Path:
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=values)
    return path


def write_pfm_file(path: Path, values: np.ndarray, little_endian: bool = True) -> Path:
    """Portable float map: ``Pf`` header, size, negative scale = little endian, rows bottom-up."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.asarray(values, np.float32)
    h, w = values.shape
    dtype = "<f4" if little_endian else ">f4"
    with open(path, "wb") as f:
        f.write(b"Pf\n")
        f.write(f"{w} {h}\n".encode())
        f.write(b"-1.0\n" if little_endian else b"1.0\n")
        f.write(np.flipud(values).astype(dtype).tobytes())
    return path


def write_exr_file(path: Path, values, channel: str = "Y", compression: str = "zip") -> Path:
    """A single-part scanline OpenEXR file.

    ``values``: one H×W array (written as FLOAT channel ``channel``) or a dict ``{name: array}``;
    float16 arrays become HALF channels, others FLOAT. ``compression``: ``"none"`` (one scanline
    per block) or ``"zip"`` (16 scanlines per block, zlib after the EXR predictor + byte
    interleave), the two most common for float maps. (Checked once against the OpenEXR 3.5
    Python bindings: they read these files back bit-exactly.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    planes = dict(values) if isinstance(values, dict) else {channel: np.asarray(values, np.float32)}
    planes = {k: (np.asarray(v) if np.asarray(v).dtype == np.float16 else np.asarray(v, np.float32))
              for k, v in sorted(planes.items())}
    h, w = next(iter(planes.values())).shape
    code, per_block = {"none": (0, 1), "zip": (3, 16)}[compression]

    def attr(name: str, kind: str, payload: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(payload)) + payload

    channels = b"".join(name.encode() + b"\0" + struct.pack("<iB3xii", 1 if v.dtype == np.float16 else 2, 0, 1, 1)
                        for name, v in planes.items()) + b"\0"  # HALF = 1, FLOAT = 2
    box = struct.pack("<iiii", 0, 0, w - 1, h - 1)
    header = b"".join([
        attr("channels", "chlist", channels),
        attr("compression", "compression", bytes([code])),
        attr("dataWindow", "box2i", box),
        attr("displayWindow", "box2i", box),
        attr("lineOrder", "lineOrder", bytes([0])),
        attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        attr("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0)),
        attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
    ]) + b"\0"
    blocks: List[bytes] = []
    for y0 in range(0, h, per_block):
        raw = b"".join(v[y].astype("<f2" if v.dtype == np.float16 else "<f4").tobytes()
                       for y in range(y0, min(y0 + per_block, h)) for v in planes.values())
        if code == 3:
            data = np.frombuffer(raw, np.uint8)
            interleaved = np.concatenate([data[0::2], data[1::2]])  # even bytes, then odd bytes
            diff = np.empty_like(interleaved)
            diff[0] = interleaved[0]
            diff[1:] = (interleaved[1:].astype(np.int16) - interleaved[:-1].astype(np.int16) + 128) & 0xFF
            packed = zlib.compress(diff.tobytes())
            raw = packed if len(packed) < len(raw) else raw
        blocks.append(struct.pack("<ii", y0, len(raw)) + raw)
    magic = struct.pack("<ii", 20000630, 2)
    start = len(magic) + len(header) + 8 * len(blocks)
    offsets, pos = [], start
    for block in blocks:
        offsets.append(pos)
        pos += len(block)
    with open(path, "wb") as f:
        f.write(magic + header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(blocks))
    return path


# ----------------------------------------------------------------------------------------------
# raw depth patterns
# ----------------------------------------------------------------------------------------------
def raw_u16(seed: int, low: int, high: int, h: int = H, w: int = W, zeros: int = 3) -> np.ndarray:
    """uint16 values in [low, high) with ``zeros`` pixels set to 0 (rows 0, cols 0..zeros-1)."""
    values = np.random.default_rng(seed).integers(low, high, (h, w)).astype(np.uint16)
    values[0, :zeros] = 0
    return values


# ----------------------------------------------------------------------------------------------
# zero-shot layouts
# ----------------------------------------------------------------------------------------------
def make_sunrgbd(root: Path, n: int = 3) -> Dict:
    """``rgb/rgb/<name>.jpg`` + ``gt/gt/<name>.png`` (uint16 mm)."""
    root, names, raws = Path(root), [], []
    for i in range(n):
        name = f"img-{i:06d}"
        raw = raw_u16(10 + i, 500, 7000)
        raw[1, 0] = 9000  # 9 m: beyond SUN's 8 m cap -> invalid
        raw[1, 1] = 8000  # exactly 8 m: outside the strict 0 < d < 8 evaluation range
        raw[2, 2] = 1234  # 1.234 m
        write_rgb(root / "rgb" / "rgb" / f"{name}.jpg", rgb(i))
        write_png16(root / "gt" / "gt" / f"{name}.png", raw)
        names.append(name)
        raws.append(raw)
    return {"names": names, "raw": raws}


def make_ibims(root: Path, n: int = 2) -> Dict:
    """``imagelist.txt``, ``rgb/``, ``depth/`` (uint16 * 50/65535 m), ``mask_invalid/``, ``mask_transp/``."""
    root, names, raws, invalid, transp = Path(root), [], [], [], []
    for i in range(n):
        name = f"scene_{i:02d}"
        raw = raw_u16(20 + i, 1000, 13000)
        raw[2, 2] = 6000  # 6000 * 50 / 65535 = 4.5777066 m
        raw[2, 4] = 13107  # exactly 10 m: outside the strict 0 < d < 10 range
        m_invalid = np.full((H, W), 255, np.uint8)
        m_invalid[2, 3] = 0  # invalid measurement
        m_transp = np.full((H, W), 255, np.uint8)
        m_transp[4, 5] = 0  # transparent surface
        write_rgb(root / "rgb" / f"{name}.png", rgb(100 + i))
        write_png16(root / "depth" / f"{name}.png", raw)
        write_png8(root / "mask_invalid" / f"{name}.png", m_invalid)
        write_png8(root / "mask_transp" / f"{name}.png", m_transp)
        names.append(name)
        raws.append(raw)
        invalid.append(m_invalid)
        transp.append(m_transp)
    (root / "imagelist.txt").write_text("\n".join(names) + "\n")
    return {"names": names, "raw": raws, "mask_invalid": invalid, "mask_transp": transp}


def make_diode(root: Path, n_scenes: int = 2, per_scan: int = 2) -> Dict:
    """``<scene>/<scan>/<name>.png`` + ``<name>_depth.npy`` (H, W, 1) m + ``<name>_depth_mask.npy``."""
    root, items = Path(root), []
    for s in range(n_scenes):
        for k in range(per_scan):
            name = f"{s:05d}_{k:05d}_indoors_000_{k:03d}"
            base = root / f"scene_{s:05d}" / f"scan_{s:05d}"
            depth = np.random.default_rng(30 + s * 10 + k).uniform(0.7, 9.0, (H, W, 1)).astype(np.float32)
            mask = np.ones((H, W), np.float32)
            mask[3, 4] = 0
            depth[0, 0, 0] = 0.0  # no return
            write_rgb(base / f"{name}.png", rgb(200 + s * 10 + k))
            write_npy(base / f"{name}_depth.npy", depth)
            write_npy(base / f"{name}_depth_mask.npy", mask)
            items.append({"image": base / f"{name}.png", "depth": depth, "mask": mask})
    return {"items": items}


def make_hypersim(root: Path, h: int = H, w: int = W) -> Dict:
    """``<scene>/images/scene_cam_00_final_preview/frame.XXXX.tonemap.jpg`` and the matching
    ``scene_cam_00_geometry_hdf5/frame.XXXX.depth_meters.hdf5`` (distance along the ray, key
    ``dataset``), with one NaN pixel as HyperSim has for missing geometry."""
    root, items = Path(root), []
    for scene in ("ai_001_001", "ai_002_001"):
        for frame in range(2):
            stem = f"frame.{frame:04d}"
            base = root / scene / "images"
            distance = np.random.default_rng(len(items) + 40).uniform(1.0, 20.0, (h, w)).astype(np.float16)
            distance[h - 1, w - 1] = np.nan
            write_rgb(base / "scene_cam_00_final_preview" / f"{stem}.tonemap.jpg", rgb(300 + len(items), h, w))
            write_hdf5(base / "scene_cam_00_geometry_hdf5" / f"{stem}.depth_meters.hdf5", distance)
            items.append({"scene": scene, "distance": distance.astype(np.float32)})
    return {"items": items}


def make_vkitti2(root: Path, frames: int = 3, h: int = 375, w: int = 1242, rgb_dir: str = "rgb",
                 depth_dir: str = "depth") -> Dict:
    """``rgb/<Scene>/<variant>/frames/rgb/Camera_0/rgb_XXXXX.jpg`` and ``depth/…/depth/Camera_0/
    depth_XXXXX.png`` (uint16 cm, 65535 = sky), ``frames`` per scene, two scenes."""
    root, raws = Path(root), {}
    for scene in ("Scene01", "Scene02"):
        for i in range(frames):
            raw = np.full((h, w), 1750, np.uint16)  # 17.5 m
            raw[-1, (w - 1216) // 2] = 1234          # inside the KB crop: bottom-left corner pixel
            raw[h - 352 - 1, w // 2] = 4321          # the row just above the KB crop
            raw[-1, (w - 1216) // 2 + 1215] = 65535  # sky, at the bottom-right corner of the KB crop
            raw[-2, 600] = 8100                      # 81 m: beyond the 80 m cap
            rel = Path(scene) / "clone" / "frames"
            write_rgb(root / rgb_dir / rel / "rgb" / "Camera_0" / f"rgb_{i:05d}.jpg",
                      np.full((h, w, 3), 40 + 10 * i, np.uint8))
            write_png16(root / depth_dir / rel / "depth" / "Camera_0" / f"depth_{i:05d}.png", raw)
            raws[(scene, i)] = raw
    return {"raw": raws, "frames": frames}


def make_ddad(root: Path, n: int = 2) -> Dict:
    """``<root>/<id>_rgb.png`` + ``<id>_depth.npy`` (m, 0 = no LiDAR return)."""
    root, depths = Path(root), []
    for i in range(n):
        depth = np.zeros((H, W), np.float32)
        depth[::3, ::2] = np.random.default_rng(50 + i).uniform(3.0, 150.0, depth[::3, ::2].shape)
        depth[0, 0], depth[0, 2] = 12.5, 80.0  # 80 m is outside the strict 1e-3 < d < 80 range
        write_rgb(root / f"{i:06d}_rgb.png", rgb(400 + i))
        write_npy(root / f"{i:06d}_depth.npy", depth)
        depths.append(depth)
    return {"depth": depths}


def make_diml_indoor(root: Path, level: str = "LR") -> Dict:
    """``<level>/<scene>/color/<name>_c.png`` + ``depth_filled/<name>_depth_filled.png`` (uint16 mm)."""
    root, raws = Path(root), {}
    for scene in ("bedroom_1", "office_2"):
        name = f"{scene}_0001"
        raw = raw_u16(60 + len(raws), 300, 9000)
        raw[2, 2] = 2500  # 2.5 m
        write_rgb(root / level / scene / "color" / f"{name}_c.png", rgb(500 + len(raws)))
        write_png16(root / level / scene / "depth_filled" / f"{name}_depth_filled.png", raw)
        raws[scene] = raw
    return {"raw": raws}


def make_diml_outdoor(root: Path, with_scene: bool = True) -> Dict:
    """``<scene>/outleft/<name>.png`` + ``<scene>/depthmap/<name>.png`` (uint16 mm)."""
    root, raws = Path(root), {}
    for scene in ("scene_a", "scene_b"):
        base = root / scene if with_scene else root
        name = f"{scene}_0001.png"
        raw = raw_u16(70 + len(raws), 1000, 60000)
        raw[1, 1] = 1500  # 1.5 m: inside the file, outside the 2-80 m evaluation range
        raw[2, 2] = 45678  # 45.678 m
        write_rgb(base / "outleft" / name, rgb(600 + len(raws)))
        write_png16(base / "depthmap" / name, raw)
        raws[scene] = raw
        if not with_scene:
            break
    return {"raw": raws}


# ----------------------------------------------------------------------------------------------
# relative-pretraining layouts
# ----------------------------------------------------------------------------------------------
def make_hrwsi(root: Path, n_train: int = 3, n_val: int = 1) -> Dict:
    """``{train,val}/imgs/<id>.jpg``, ``gts/<id>.png`` (uint8 disparity), ``valid_masks/<id>.png``."""
    root, out = Path(root), {"train": [], "val": []}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            name = f"{split}{i:05d}"
            seed = 80 + i + (100 if split == "val" else 0)
            disp = np.random.default_rng(seed).integers(1, 256, (H, W)).astype(np.uint8)
            mask = np.full((H, W), 255, np.uint8)
            mask[5, 6] = 0
            write_rgb(root / split / "imgs" / f"{name}.jpg", rgb(700 + i))
            write_png8(root / split / "gts" / f"{name}.png", disp)
            write_png8(root / split / "valid_masks" / f"{name}.png", mask)
            out[split].append({"name": name, "disp": disp, "mask": mask})
    return out


def make_redweb(root: Path, n: int = 3) -> Dict:
    """``Imgs/<id>.jpg`` + ``RDs/<id>.png`` (uint8 relative disparity)."""
    root, out = Path(root), []
    for i in range(n):
        name = f"{1000 + i}"
        disp = np.random.default_rng(90 + i).integers(1, 256, (H, W)).astype(np.uint8)
        disp[0, :2] = 0  # zero disparity: treated as invalid
        write_rgb(root / "Imgs" / f"{name}.jpg", rgb(800 + i))
        write_png8(root / "RDs" / f"{name}.png", disp)
        out.append({"name": name, "disp": disp})
    return {"items": out}


def make_blendedmvs(root: Path) -> Dict:
    """``<pid>/blended_images/<8 digits>.jpg`` (+ ``_masked.jpg`` decoys), ``rendered_depth_maps/
    <8 digits>.pfm``, ``cams/<8 digits>_cam.txt``; ``BlendedMVS_training.txt`` /
    ``validation_list.txt`` list project ids."""
    root, out = Path(root), {}
    pids = ["5a3ca9cb270f0e3f14d0eddb", "5a3cb4e4270f0e3f14d12f43", "5a48ba95c7dab83a7d7b44ed"]
    for p, pid in enumerate(pids):
        for i in range(2):
            stem = f"{i:08d}"
            depth = np.random.default_rng(110 + 2 * p + i).uniform(200.0, 900.0, (H, W)).astype(np.float32)
            depth[2, 2] = 0.0
            write_rgb(root / pid / "blended_images" / f"{stem}.jpg", rgb(900 + p * 2 + i))
            write_rgb(root / pid / "blended_images" / f"{stem}_masked.jpg", rgb(950 + p * 2 + i))
            write_pfm_file(root / pid / "rendered_depth_maps" / f"{stem}.pfm", depth, little_endian=(p % 2 == 0))
            cam = root / pid / "cams" / f"{stem}_cam.txt"
            cam.parent.mkdir(parents=True, exist_ok=True)
            cam.write_text(
                "extrinsic\n1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n\n"
                "intrinsic\n604.5 0 301.25\n0 605.5 238.75\n0 0 1\n\n425.0 2.5 192 900.0\n"
            )
            out[(pid, i)] = depth
    (root / "BlendedMVS_training.txt").write_text("\n".join(pids[:2]) + "\n")
    (root / "validation_list.txt").write_text(pids[2] + "\n")
    return {"depth": out, "pids": pids}


def make_megadepth(root: Path) -> Dict:
    """``<scene>/dense0/imgs/<name>.jpg`` + ``<scene>/dense0/depths/<name>.h5`` (key ``depth``)."""
    root, out = Path(root), {}
    for scene in ("0001", "0015"):
        name = f"img_{scene}"
        depth = np.random.default_rng(int(scene)).uniform(1.0, 50.0, (H, W)).astype(np.float32)
        depth[1, 1] = 0.0
        write_rgb(root / scene / "dense0" / "imgs" / f"{name}.jpg", rgb(1000 + int(scene)))
        write_hdf5(root / scene / "dense0" / "depths" / f"{name}.h5", depth, key="depth")
        out[scene] = depth
    return {"depth": out}


def make_tartanair(root: Path) -> Dict:
    """``<env>/Easy/P000/image_left/<6>_left.png`` + ``depth_left/<6>_left_depth.npy`` (m; sky ~1e4)."""
    root, out = Path(root), []
    for env in ("abandonedfactory", "office"):
        base = root / env / "Easy" / "P000"
        depth = np.random.default_rng(len(out) + 120).uniform(0.5, 60.0, (H, W)).astype(np.float32)
        depth[0, :] = 10000.0  # sky sphere
        write_rgb(base / "image_left" / "000000_left.png", rgb(1100 + len(out)))
        write_npy(base / "depth_left" / "000000_left_depth.npy", depth)
        out.append({"env": env, "depth": depth})
    return {"items": out}


def make_apolloscape(root: Path) -> Dict:
    """``<road>/ColorImage/Record001/Camera 5/<name>.jpg`` + ``Depth/…/<name>.png`` (uint16 / 200 m)."""
    root, out = Path(root), []
    for road in ("road01_ins", "road02_ins"):
        name = f"170927_063811892_Camera_5"
        raw = raw_u16(130 + len(out), 400, 40000)
        raw[2, 2] = 2000  # 2000 / 200 = 10 m
        write_rgb(root / road / "ColorImage" / "Record001" / "Camera 5" / f"{name}.jpg", rgb(1200 + len(out)))
        write_png16(root / road / "Depth" / "Record001" / "Camera 5" / f"{name}.png", raw)
        out.append({"road": road, "raw": raw})
    return {"items": out}


def make_irs(root: Path, compression: str = "zip") -> Dict:
    """``<category>/<scene>/l_<n>.png`` + ``d_<n>.exr`` (disparity in pixels, FLOAT)."""
    root, out = Path(root), []
    for category, scene in (("Home", "ArchVizInterior03Data"), ("Office", "CorporateOffice")):
        for n in (1, 2):
            disp = np.random.default_rng(140 + len(out)).uniform(2.0, 120.0, (H, W)).astype(np.float32)
            disp[3, 3] = 0.0
            write_rgb(root / category / scene / f"l_{n}.png", rgb(1300 + len(out)))
            write_rgb(root / category / scene / f"r_{n}.png", rgb(1350 + len(out)))
            write_exr_file(root / category / scene / f"d_{n}.exr", disp, compression=compression)
            out.append({"category": category, "scene": scene, "n": n, "disp": disp})
    return {"items": out}


def make_stereo_frames(root: Path, fmt: str = "png") -> Dict:
    """The project's documented layout for 3D Movies / WSVD: ``<clip>/frames/<name>.jpg`` +
    ``<clip>/disparity/<name>.{png,npy,pfm}`` (+ optional ``<clip>/mask/<name>.png``)."""
    root, out = Path(root), []
    for clip in ("clip_a", "clip_b"):
        name = "000010"
        disp = np.random.default_rng(150 + len(out)).uniform(0.5, 60.0, (H, W)).astype(np.float32)
        disp = np.round(disp * 256) / 256  # representable exactly in a x256 16-bit PNG
        disp[0, 0] = 0.0
        write_rgb(root / clip / "frames" / f"{name}.jpg", rgb(1400 + len(out)))
        if fmt == "png":
            write_png16(root / clip / "disparity" / f"{name}.png", np.round(disp * 256).astype(np.uint16))
        elif fmt == "npy":
            write_npy(root / clip / "disparity" / f"{name}.npy", disp)
        else:
            write_pfm_file(root / clip / "disparity" / f"{name}.pfm", disp)
        mask = np.full((H, W), 255, np.uint8)
        mask[6, 7] = 0
        write_png8(root / clip / "mask" / f"{name}.png", mask)
        out.append({"clip": clip, "disp": disp, "mask": mask})
    return {"items": out}
