"""Readers for the 12 relative-pretraining sets of MiDaS 3.1 ("M12").

Each declares the kind of its ground truth so stage 1's loss (``losses.RelativeDepthLoss``) treats
it correctly: ``"disparity"`` targets are used as they are (affine-invariant disparity),
``"metric"`` (metres) and ``"relative"`` (depth known up to scale) are converted to disparity with
``1/depth`` first. Validity: disparity and relative maps need ``value > 0``; metric maps need
``min_depth < d < max_depth``.

==================  =============================================================  ==========
name                layout under ``root``                                           kind
==================  =============================================================  ==========
``hrwsi``           ``{train,val}/imgs/<n>.jpg``, ``gts/<n>.png``, ``valid_masks/``  disparity
``redweb``          ``Imgs/<n>.jpg`` + ``RDs/<n>.png``                              disparity
``blendedmvs``      ``<pid>/blended_images/<k>.jpg`` + ``rendered_depth_maps/<k>.pfm``  relative
``megadepth``       ``<scene>/dense*/imgs/<n>.jpg`` + ``depths/<n>.h5`` (``depth``)   relative
``diml_indoor_relative``  DIML indoor (``HR``/``LR``) as in zero_shot.DIMLIndoor      metric
``movies_3d``       ``<clip>/frames/<n>.jpg`` + ``<clip>/disparity/<n>.{png,npy,pfm}``  disparity
``wsvd``            same layout as ``movies_3d``                                     disparity
``tartanair``       ``**/image_left/<k>_left.png`` + ``depth_left/<k>_left_depth.npy``  metric
``apolloscape``     ``**/ColorImage/**/<n>.jpg`` + ``Depth/**/<n>.png`` (uint16/200)  metric
``irs``             ``<cat>/<scene>/l_<k>.png`` + ``d_<k>.exr``                      disparity
``kitti_relative``  the ``kitti`` reader (Eigen train split)                        metric
``nyu_relative``    the ``nyu`` reader (BTS train split)                            metric
==================  =============================================================  ==========

3D Movies and WSVD are not distributed as frames + disparity (they are lists of videos whose
disparity the MiDaS authors computed themselves); this project defines the layout above for
them. The ``domain`` of each set is nominal (stage 1 does not use it): ``nyu`` for indoor sets,
``kitti`` for outdoor and mixed ones; override it with the ``domain`` option.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np

from zoe_lightning.errors import UserError

from .base import NAN4
from .exr import ExrError, read_exr
from .io import read_depth
from .layouts import LayoutReader, parse_split_file, replace_dir, swap_ext
from .zero_shot import DIMLIndoor

__all__ = [
    "HRWSI",
    "ReDWeb",
    "BlendedMVS",
    "MegaDepth",
    "DIMLIndoorRelative",
    "Movies3D",
    "WSVD",
    "TartanAir",
    "ApolloScape",
    "IRS",
    "RELATIVE_READERS",
    "read_blendedmvs_intrinsics",
]

log = logging.getLogger(__name__)

TRAIN_VAL = {"train": "train", "val": "val", "test": "val"}


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


# -------------------------------------------------------------------------------------- HRWSI
class HRWSI(LayoutReader):
    """HR-WSI: ``<split>/imgs/<n>.jpg``, disparity ``<split>/gts/<n>.png`` (8-bit, larger = nearer)
    and ``<split>/valid_masks/<n>.png`` (0 = invalid); splits ``train`` and ``val`` (``test`` = ``val``)."""

    name, depth_kind, domain = "hrwsi", "disparity", "kitti"
    min_depth, max_depth = 0.0, 1e4
    default_split_map = TRAIN_VAL

    def __init__(self, split: str = "train", **options):
        part = TRAIN_VAL.get(split, split)
        self.image_patterns = (f"{part}/imgs/*.jpg", f"{part}/imgs/*.png")
        super().__init__(split=split, **options)

    def depth_path(self, image):
        return os.path.join(os.path.dirname(replace_dir(image, "imgs", "gts")), _stem(image) + ".png")

    def mask_paths(self, image):
        return [os.path.join(os.path.dirname(replace_dir(image, "imgs", "valid_masks")), _stem(image) + ".png")]


# -------------------------------------------------------------------------------------- ReDWeb
class ReDWeb(LayoutReader):
    """ReDWeb V1: ``Imgs/<n>.jpg`` + relative disparity ``RDs/<n>.png`` (8-bit, larger = nearer;
    0 is treated as invalid). No official split: every split name gives all images unless a
    ``split_file`` is given."""

    name, depth_kind, domain = "redweb", "disparity", "kitti"
    min_depth, max_depth = 0.0, 1e4
    image_patterns = ("Imgs/*.jpg", "Imgs/*.png")

    def depth_path(self, image):
        return os.path.join(os.path.dirname(replace_dir(image, "Imgs", "RDs")), _stem(image) + ".png")


# -------------------------------------------------------------------------------------- BlendedMVS
def read_blendedmvs_intrinsics(path: str) -> Optional[Sequence[float]]:
    """``[fx, fy, cx, cy]`` from a BlendedMVS/MVSNet ``<k>_cam.txt`` (the 3×3 after ``intrinsic``)."""
    try:
        lines = [line.strip() for line in open(path, encoding="utf-8")]
    except OSError:
        return None
    try:
        start = lines.index("intrinsic") + 1
        k = np.array([[float(v) for v in lines[start + r].split()] for r in range(3)])
    except (ValueError, IndexError):
        raise UserError(f"malformed BlendedMVS camera file {path}: expected a 3x3 block after 'intrinsic'") from None
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


class BlendedMVS(LayoutReader):
    """BlendedMVS (low-res set): ``<pid>/blended_images/<k>.jpg`` (``*_masked.jpg`` ignored), depth
    ``<pid>/rendered_depth_maps/<k>.pfm`` (MVS depth without a metric scale: kind ``relative``;
    0 = invalid), intrinsics from ``<pid>/cams/<k>_cam.txt`` when present. Projects of ``train``
    come from ``BlendedMVS_training.txt``, of ``val``/``test`` from ``validation_list.txt`` (both
    in ``root``, one project id per line); without the list every project is used."""

    name, depth_kind, domain = "blendedmvs", "relative", "kitti"
    min_depth, max_depth = 0.0, 1e6
    default_split_map = TRAIN_VAL
    lists = {"train": "BlendedMVS_training.txt", "val": "validation_list.txt"}

    def find_images(self, root):
        listing = os.path.join(root, self.lists[self.default_split_map[self.split]])
        if os.path.isfile(listing):
            projects = [row.columns[0] for row in parse_split_file(listing, 1, 1)]
        else:
            projects = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "blended_images")))
            log.warning("%s: %s not found; using all %d projects for %s", self.name, listing, len(projects), self.split)
        images = []
        for pid in projects:
            folder = os.path.join(root, pid, "blended_images")
            if not os.path.isdir(folder):
                raise UserError(f"{self.name}: project {pid} listed in {listing} has no folder {folder}")
            images.extend(os.path.join(folder, f) for f in sorted(os.listdir(folder))
                          if f.lower().endswith((".jpg", ".png")) and not _stem(f).endswith("_masked"))
        if not images:
            raise UserError(f"{self.name}: no images under {root}/<project>/blended_images")
        return images

    def depth_path(self, image):
        return os.path.join(os.path.dirname(replace_dir(image, "blended_images", "rendered_depth_maps")),
                            _stem(image) + ".pfm")

    def intrinsics_of(self, record, height, width):
        cam = os.path.join(os.path.dirname(replace_dir(record.image, "blended_images", "cams")),
                           _stem(record.image) + "_cam.txt")
        return read_blendedmvs_intrinsics(cam) or NAN4


# -------------------------------------------------------------------------------------- MegaDepth
class MegaDepth(LayoutReader):
    """MegaDepth v1: ``<scene>/dense<k>/imgs/<n>.jpg`` + ``<scene>/dense<k>/depths/<n>.h5`` (HDF5
    dataset ``depth``; SfM/MVS depth without scale: kind ``relative``; 0 = invalid). No official
    split: every split name gives all images unless a ``split_file`` is given."""

    name, depth_kind, domain = "megadepth", "relative", "kitti"
    min_depth, max_depth = 0.0, 1e6
    image_patterns = ("*/dense*/imgs/*.jpg", "*/dense*/imgs/*.JPG", "*/dense*/imgs/*.png")
    depth_key = "depth"

    def depth_path(self, image):
        return os.path.join(os.path.dirname(replace_dir(image, "imgs", "depths")), _stem(image) + ".h5")


# -------------------------------------------------------------------------------------- DIML indoor
class DIMLIndoorRelative(DIMLIndoor):
    """DIML indoor as a relative-pretraining set (metric Kinect depth, filled): the layout of
    ``diml_indoor`` with ``level`` ``HR`` by default."""

    name = "diml_indoor_relative"

    def __init__(self, split: str = "train", level: str = "HR", **options):
        super().__init__(split=split, level=level, **options)


# -------------------------------------------------------------------------------------- 3D Movies / WSVD
class StereoFrames(LayoutReader):
    """The project's layout for stereo-video sets distributed without frames + disparity:

    ``<root>[/<split>]/<clip>/frames/<n>.{jpg,png}``, disparity ``<clip>/disparity/<n>.png``
    (16-bit, disparity × 256, 0 = invalid; ``depth_divisor`` changes the 256), ``.npy`` or ``.pfm``
    (float disparity), and an optional ``<clip>/mask/<n>.png`` (0 = invalid) used when present.
    When ``root/<split>`` exists (``train``, ``val``, ``test``) it holds the split's clips,
    otherwise every split reads all clips.
    """

    depth_kind, domain = "disparity", "kitti"
    min_depth, max_depth = 0.0, 1e6
    DISPARITY_EXTENSIONS = (".png", ".npy", ".pfm")
    default_split_map = {"train": "train", "val": "val", "test": "test"}

    def __init__(self, split: str = "train", **options):
        root = options.get("root")
        part = "" if root is None or not os.path.isdir(os.path.join(os.path.expanduser(str(root)), split)) else split
        self.image_patterns = tuple(os.path.join(part, "*", "frames", ext) for ext in ("*.jpg", "*.png"))
        super().__init__(split=split, **options)

    def depth_path(self, image):
        base = os.path.join(os.path.dirname(replace_dir(image, "frames", "disparity")), _stem(image))
        for ext in self.DISPARITY_EXTENSIONS:
            if os.path.exists(base + ext):
                return base + ext
        return base + self.DISPARITY_EXTENSIONS[0]  # reported as missing by the file check

    def mask_paths(self, image):
        mask = os.path.join(os.path.dirname(replace_dir(image, "frames", "mask")), _stem(image) + ".png")
        return [mask] if os.path.exists(mask) else []

    def decode_depth(self, path, index):
        divisor = self.depth_divisor if path.endswith(".png") else 1.0
        return read_depth(path, divisor, None, index)


class Movies3D(StereoFrames):
    __doc__ = "3D Movies (MiDaS): " + (StereoFrames.__doc__ or "")
    name = "movies_3d"
    depth_divisor = 256.0


class WSVD(StereoFrames):
    __doc__ = "WSVD (web stereo video): " + (StereoFrames.__doc__ or "")
    name = "wsvd"
    depth_divisor = 256.0


# -------------------------------------------------------------------------------------- TartanAir
class TartanAir(LayoutReader):
    """TartanAir: ``**/image_left/<k>_left.png`` + ``**/depth_left/<k>_left_depth.npy`` (float32 m).
    The sky sphere sits at ~10 000 m: depth at or beyond ``max_depth`` (default 1000 m) is invalid.
    Intrinsics: fx = fy = 320, cx = 320, cy = 240 (640×480, all environments)."""

    name, depth_kind, domain = "tartanair", "metric", "kitti"
    min_depth, max_depth = 1e-3, 1000.0
    image_patterns = ("**/image_left/*_left.png",)
    intrinsics = (320.0, 320.0, 320.0, 240.0)

    def depth_path(self, image):
        return os.path.join(os.path.dirname(replace_dir(image, "image_left", "depth_left")),
                            _stem(image) + "_depth.npy")


# -------------------------------------------------------------------------------------- ApolloScape
class ApolloScape(LayoutReader):
    """ApolloScape scene parsing: ``**/ColorImage/**/<n>.jpg`` + the same path under ``Depth`` with
    ``.png`` (uint16, depth × 200 m, 0 = invalid; ``depth_divisor`` changes the 200)."""

    name, depth_kind, domain, sparse = "apolloscape", "metric", "kitti", False
    min_depth, max_depth = 1e-3, 330.0
    image_patterns = ("**/ColorImage/**/*.jpg",)
    depth_divisor = 200.0

    def depth_path(self, image):
        return swap_ext(replace_dir(image, "ColorImage", "Depth"), ".jpg", ".png")


# -------------------------------------------------------------------------------------- IRS
class IRS(LayoutReader):
    """IRS: ``<category>/<scene>/l_<k>.png`` (left image) + ``d_<k>.exr`` (left disparity in pixels,
    OpenEXR float). IRS's own list files (``<left> <right> <disparity>`` per line) work as
    ``split_file`` (first column = image, last = disparity)."""

    name, depth_kind, domain = "irs", "disparity", "nyu"
    min_depth, max_depth = 0.0, 1e6
    image_patterns = ("*/*/l_*.png",)

    def depth_path(self, image):
        folder, base = os.path.split(image)
        return os.path.join(folder, "d_" + swap_ext(base[2:], ".png", ".exr"))

    def decode_depth(self, path, index):
        if not path.lower().endswith(".exr"):
            return super().decode_depth(path, index)
        if not os.path.exists(path):
            raise FileNotFoundError(f"file not found: {path} (sample {index})")
        try:
            return read_exr(path)
        except ExrError as err:
            raise UserError(f"{self.name}: {err} (sample {index})") from None


# ``kitti_relative`` and ``nyu_relative`` are the KITTI / NYU readers under another name
# (registered in ``datasets/__init__.py`` next to ``kitti`` and ``nyu``).
RELATIVE_READERS = {
    "hrwsi": HRWSI,
    "redweb": ReDWeb,
    "blendedmvs": BlendedMVS,
    "megadepth": MegaDepth,
    "diml_indoor_relative": DIMLIndoorRelative,
    "movies_3d": Movies3D,
    "wsvd": WSVD,
    "tartanair": TartanAir,
    "apolloscape": ApolloScape,
    "irs": IRS,
}
