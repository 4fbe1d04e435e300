"""File readers: the base class (bad input, counters, transforms), NYU, KITTI and the folder reader.

Every expectation is hand-set: values written into real files (16-bit PNG, JPEG, NPY, PFM, HDF5)
by tests/fixtures/ and the conversions stated by the datasets' documentation.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from data_modules.datasets import DATASETS, build_dataset
from data_modules.datasets.base import FileDepthDataset, Record
from data_modules.datasets.kitti import KittiDataset
from data_modules.datasets.layouts import parse_split_file
from data_modules.datasets.nyu import NYU_INTRINSICS, NYUDataset
from zoe_lightning.errors import UserError

from ..fixtures.common import coord_image, truncate, write_png16, write_rgb
from ..fixtures.folder import make_folder
from ..fixtures.kitti import KITTI_CALIB, make_kitti
from ..fixtures.nyu import make_nyu

SPLITS = Path(__file__).resolve().parents[2] / "data_modules" / "splits"


# ----------------------------------------------------------------------------- NYU
def test_nyu_decoded_values_mask_and_attributes(tmp_path):
    fake = make_nyu(tmp_path, "train", n=2, size=(48, 64))
    stored = fake.stored[0].copy()
    stored[0, 0], stored[0, 1], stored[0, 2], stored[0, 3] = 1234, 0, 10000, 9999  # 1.234 m, none, 10 m, 9.999 m
    write_png16(fake.depths[0], stored)
    ds = build_dataset("nyu", "train", root=str(tmp_path), split_file=str(fake.split_file))
    assert (ds.name, ds.depth_kind, ds.domain, ds.eval_crop, ds.sparse) == ("nyu", "metric", "nyu", "eigen", False)
    assert (ds.min_depth, ds.max_depth) == (1e-3, 10.0)
    assert len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (3, 48, 64) and s["image"].dtype == torch.float32
    assert s["depth"].shape == (1, 48, 64) and s["valid"].dtype == torch.bool
    d, v = s["depth"][0], s["valid"][0]
    assert d[0, 0].item() == pytest.approx(1.234, abs=1e-6) and v[0, 0]
    assert not v[0, 1] and d[0, 1] == 0  # 0 mm: invalid
    assert not v[0, 2] and d[0, 2] == 0  # exactly max_depth: invalid (strict inequality)
    assert v[0, 3] and d[0, 3].item() == pytest.approx(9.999, abs=1e-6)
    np.testing.assert_allclose(d[5, 7].item(), stored[5, 7] / 1000, rtol=1e-6)
    # flat-colour JPEG decodes within JPEG rounding of the written colour
    colour = torch.tensor(fake.rgb[0][0, 0], dtype=torch.float32) / 255
    assert torch.allclose(s["image"][:, 10, 10], colour, atol=3 / 255)
    assert s["depth_kind"] == "metric" and s["domain"] == "nyu" and s["dataset"] == "nyu"
    assert s["min_depth"] == 1e-3 and s["max_depth"] == 10.0
    assert s["path"] == str(fake.images[0])


def test_nyu_intrinsics_toolbox_camera_scaled_with_image(tmp_path):
    fake = make_nyu(tmp_path, "train", n=1, size=(48, 64))
    ds = NYUDataset("train", root=str(tmp_path), split_file=str(fake.split_file))
    fx, fy, cx, cy = ds[0]["intrinsics"].tolist()
    # 640x480 -> 64x48 is a factor 0.1; pixel centres: c' = (c + 0.5) * s - 0.5
    assert fx == pytest.approx(NYU_INTRINSICS[0] * 0.1, rel=1e-6)
    assert fy == pytest.approx(NYU_INTRINSICS[1] * 0.1, rel=1e-6)
    assert cx == pytest.approx((NYU_INTRINSICS[2] + 0.5) * 0.1 - 0.5, rel=1e-6)
    assert cy == pytest.approx((NYU_INTRINSICS[3] + 0.5) * 0.1 - 0.5, rel=1e-6)


def test_nyu_test_split_reads_official_test_folder_for_val_and_test(tmp_path):
    fake = make_nyu(tmp_path, "test", n=2)
    for split in ("val", "test"):
        ds = NYUDataset(split, root=str(tmp_path), split_file=str(fake.split_file))
        assert ds.records[1].image == str(fake.images[1]) and ds.records[1].depth == str(fake.depths[1])


def test_nyu_separate_image_and_depth_roots(tmp_path):
    fake = make_nyu(tmp_path / "rgb", "train", n=2)
    depth_root = tmp_path / "gt"
    for p, stored in zip(fake.depths, fake.stored):
        rel = p.relative_to(tmp_path / "rgb" / "sync")
        write_png16(depth_root / rel, stored + 1)
        p.unlink()
    ds = NYUDataset("train", image_root=str(tmp_path / "rgb" / "sync"), depth_root=str(depth_root),
                    split_file=str(fake.split_file))
    s = ds[1]
    assert s["depth"][0, 3, 4].item() == pytest.approx((int(fake.stored[1][3, 4]) + 1) / 1000, rel=1e-6)


def test_nyu_shipped_list_missing_files_error_then_skip(tmp_path, caplog):
    rows = parse_split_file(SPLITS / "nyudepthv2_test_files_with_gt.txt", 2, 3)
    part = tmp_path / "official_splits" / "test"
    for row in rows[:2]:  # only the first two listed frames exist
        write_rgb(part / row.columns[0], np.full((8, 8, 3), 128, np.uint8))
        write_png16(part / row.columns[1], np.full((8, 8), 2000))
    with pytest.raises(UserError) as err:
        NYUDataset("test", root=str(tmp_path))
    msg = str(err.value)
    assert "652 of 654 samples" in msg and "1304 file(s)" in msg
    assert str(part / rows[2].columns[0]) in msg and "skip_missing" in msg and "\n" not in msg
    with caplog.at_level(logging.WARNING):
        ds = NYUDataset("test", root=str(tmp_path), skip_missing=True)
    assert len(ds) == 2 and ds.stats["missing_skipped"] == 652
    assert any("skipped 652 of 654" in r.getMessage() for r in caplog.records)
    assert ds[1]["depth"][0, 0, 0].item() == pytest.approx(2.0)


def test_missing_root_is_one_clear_line(tmp_path):
    with pytest.raises(UserError, match=r"nyu: root '.*nowhere' is not a directory"):
        build_dataset("nyu", "train", root=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="option 'root' is required"):
        build_dataset("kitti", "train")


def test_unknown_option_and_relative_aliases(tmp_path):
    with pytest.raises(UserError, match="unknown option 'rooot'"):
        build_dataset("nyu", "train", rooot=str(tmp_path))
    fake = make_nyu(tmp_path, "train", n=1)
    ds = build_dataset("nyu_relative", "train", root=str(tmp_path), split_file=str(fake.split_file))
    assert ds.name == "nyu_relative" and ds[0]["dataset"] == "nyu_relative" and ds.depth_kind == "metric"
    assert "kitti_relative" in DATASETS


# ----------------------------------------------------------------------------- KITTI
def test_kitti_values_kb_crop_calib_and_none_rows(tmp_path):
    fake = make_kitti(tmp_path / "raw", depth_root=tmp_path / "gt", n=2, size=(356, 1222), none_rows=2)
    stored = fake.stored[1].copy()
    stored[4 + 10, 3 + 20] = int(256 * 17.5)  # lands at (10, 20) after the KB crop
    stored[4 + 10, 3 + 21] = 256 * 80  # 80 m: outside (1e-3, 80)
    write_png16(fake.depths[1], stored)
    ds = build_dataset("kitti", "test", root=str(tmp_path / "raw"), depth_root=str(tmp_path / "gt"),
                       split_file=str(fake.split_file))
    assert len(ds) == 2 and ds.stats["no_gt_skipped"] == 2
    assert (ds.domain, ds.eval_crop, ds.sparse, ds.max_depth) == ("kitti", "garg", True, 80.0)
    s = ds[1]
    assert s["image"].shape == (3, 352, 1216) and s["depth"].shape == (1, 352, 1216)
    # KB crop: top = 356 - 352 = 4, left = int((1222 - 1216) / 2) = 3; the coordinate image says where
    first = (s["image"][:, 0, 0] * 255).round().to(torch.int64).tolist()
    assert first == [4, 3, 1]
    last = (s["image"][:, 351, 1215] * 255).round().to(torch.int64).tolist()
    assert last == [355 % 256, (3 + 1215) % 256, 1]
    assert s["depth"][0, 10, 20].item() == 17.5 and s["valid"][0, 10, 20]
    assert not s["valid"][0, 10, 21] and s["depth"][0, 10, 21] == 0
    # sparse LiDAR: rows not divisible by 3 in the original frame are empty
    # cropped row r is original row r + 4; LiDAR rows are the original rows divisible by 3
    assert [bool(s["valid"][0, r].any()) for r in range(6)] == [False, False, True, False, False, True]
    p = KITTI_CALIB["P_rect_02"]
    np.testing.assert_allclose(s["intrinsics"].numpy(), [p[0], p[5], p[2] - 3, p[6] - 4], rtol=1e-6)


def test_kitti_without_kb_crop_and_without_calib(tmp_path):
    fake = make_kitti(tmp_path, n=1, size=(356, 1222), none_rows=0, calib=False)
    ds = KittiDataset("train", root=str(tmp_path), split_file=str(fake.split_file), kb_crop=False)
    s = ds[0]
    assert s["image"].shape == (3, 356, 1222)
    fx, fy, cx, cy = s["intrinsics"].tolist()
    assert fx == fy == pytest.approx(721.5377) and math.isnan(cx) and math.isnan(cy)
    np.testing.assert_allclose(s["depth"][0].numpy(), fake.stored[0] / 256.0, rtol=1e-6)


def test_kitti_image_smaller_than_kb_crop(tmp_path):
    fake = make_kitti(tmp_path, n=1, size=(300, 1222), none_rows=0)
    ds = KittiDataset("train", root=str(tmp_path), split_file=str(fake.split_file))
    with pytest.raises(UserError, match=r"300x1222, smaller than the KB crop 352x1216"):
        ds[0]


# ----------------------------------------------------------------------------- bad input in the base
class _Listed(FileDepthDataset):
    """A minimal reader over explicit (image, depth) pairs with metre NPY depth."""

    name = "listed"
    max_depth = 80.0

    def __init__(self, pairs, **options):
        self.pairs = pairs
        super().__init__(**options)

    def list_records(self):
        return [Record(str(a), None if b is None else str(b)) for a, b in self.pairs]


def test_depth_of_other_size_names_both_files_and_shapes(tmp_path):
    image = write_rgb(tmp_path / "a.png", coord_image(6, 8))
    np.save(tmp_path / "a.npy", np.ones((6, 9), np.float32))
    ds = _Listed([(image, tmp_path / "a.npy")])
    with pytest.raises(UserError) as err:
        ds[0]
    msg = str(err.value)
    assert str(tmp_path / "a.npy") in msg and str(image) in msg and "(6, 9)" in msg and "6x8" in msg


def test_nonfinite_depth_masked_and_counted(tmp_path):
    image = write_rgb(tmp_path / "a.png", coord_image(2, 3))
    np.save(tmp_path / "a.npy", np.array([[1.0, np.nan, np.inf], [-np.inf, 2.0, 3.0]], np.float32))
    ds = _Listed([(image, tmp_path / "a.npy")])
    s = ds[0]
    assert s["valid"][0].tolist() == [[True, False, False], [False, True, True]]
    assert s["depth"][0].tolist() == [[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]
    assert torch.isfinite(s["depth"]).all()
    assert ds.stats["nonfinite_pixels"] == 3
    ds[0]
    assert ds.stats["nonfinite_pixels"] == 6


def test_sample_without_valid_pixel_is_returned_empty_and_counted(tmp_path):
    image = write_rgb(tmp_path / "a.png", coord_image(2, 3))
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    ds = _Listed([(image, tmp_path / "a.npy")])
    s = ds[0]
    assert s["valid"].shape == (1, 2, 3) and not s["valid"].any() and ds.stats["empty_samples"] == 1


def test_corrupt_image_inside_dataset_names_file_and_index(tmp_path):
    good = write_rgb(tmp_path / "a.png", coord_image(4, 4))
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    bad = write_rgb(tmp_path / "b.jpg", coord_image(32, 32))
    truncate(bad, 0.5)
    ds = _Listed([(good, tmp_path / "a.npy"), (bad, tmp_path / "a.npy")])
    ds[0]
    with pytest.raises(UserError, match=re.escape(f"{bad} (sample 1)")):
        ds[1]


def test_missing_files_count_and_skip(tmp_path, caplog):
    image = write_rgb(tmp_path / "a.png", coord_image(4, 4))
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    pairs = [(image, tmp_path / "a.npy"), (tmp_path / "x.png", tmp_path / "x.npy"), (image, tmp_path / "y.npy")]
    with pytest.raises(UserError) as err:
        _Listed(pairs)
    assert "3 file(s)" in str(err.value) and "2 of 3 samples" in str(err.value)
    assert str(tmp_path / "x.png") in str(err.value)
    with caplog.at_level(logging.WARNING):
        ds = _Listed(pairs, skip_missing=True)
    assert len(ds) == 1 and ds.stats["missing_skipped"] == 2
    assert any("skipped 2 of 3" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match="no samples found"):
        _Listed(pairs[1:], skip_missing=True)


def test_samples_collate_and_transform_is_applied(tmp_path):
    image = write_rgb(tmp_path / "a.png", coord_image(4, 6))
    np.save(tmp_path / "a.npy", np.arange(24, dtype=np.float32).reshape(4, 6))

    def flip(sample):
        out = dict(sample)
        for key in ("image", "depth", "valid"):
            out[key] = np.ascontiguousarray(sample[key][:, ::-1])
        return out

    ds = _Listed([(image, tmp_path / "a.npy")] * 2, transform=flip)
    batch = default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 4, 6) and batch["intrinsics"].shape == (2, 4)
    assert torch.isnan(batch["intrinsics"]).all()
    assert batch["depth"][0, 0, 0].tolist() == [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
    assert batch["valid"][0, 0, 0].tolist() == [True] * 5 + [False]  # 0 is invalid
    # column 5 of the coordinate image lands at column 0
    assert (batch["image"][0, 1, 0, 0] * 255).round().item() == 5


def test_transform_built_from_a_mapping(tmp_path):
    pytest.importorskip("albumentations")
    fake = make_nyu(tmp_path, "test", n=1, size=(48, 64))
    ds = NYUDataset("test", root=str(tmp_path), split_file=str(fake.split_file),
                    transform={"kind": "eval", "image_size": [24, 32], "resize": "squash"})
    s = ds[0]
    assert s["image"].shape == (3, 24, 32) and s["depth"].shape == (1, 24, 32)
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0


# ----------------------------------------------------------------------------- folder
def test_folder_glob_pairing_with_suffixes_and_values(tmp_path):
    fake = make_folder(tmp_path, n=3, depth_format="npy")
    ds = build_dataset("folder", "test", root=str(tmp_path), image_glob="images/**/*.png",
                       depth_glob="depth/**/*.npy", image_suffix="_rgb", depth_suffix="_depth",
                       max_depth=40.0, dataset_name="my_set", domain="kitti", eval_crop="garg")
    assert len(ds) == 3 and (ds.name, ds.domain, ds.eval_crop) == ("my_set", "kitti", "garg")
    for k in range(3):
        i = [r.image for r in ds.records].index(str(fake.images[k]))
        s = ds[i]
        expected = np.where((fake.stored[k] > 1e-3) & (fake.stored[k] < 40.0), fake.stored[k], 0)
        np.testing.assert_array_equal(s["depth"][0].numpy(), expected)
        assert (s["image"][2, 0, 0] * 255).round().item() == 10 + k
        assert s["dataset"] == "my_set" and s["domain"] == "kitti"


def test_folder_image_without_depth_is_a_missing_file(tmp_path):
    fake = make_folder(tmp_path, n=3, depth_format="npy")
    fake.depths[2].unlink()
    opts = dict(root=str(tmp_path), image_glob="images/**/*.png", depth_glob="depth/**/*.npy",
                image_suffix="_rgb", depth_suffix="_depth")
    with pytest.raises(UserError, match=r"1 file\(s\) are missing"):
        build_dataset("folder", "train", **opts)
    assert len(build_dataset("folder", "train", skip_missing=True, **opts)) == 2


@pytest.mark.parametrize("fmt, divisor", [("png", 1000.0), ("pfm", 1.0), ("h5", 1.0)])
def test_folder_depth_replace_formats_and_divisor(tmp_path, fmt, divisor):
    if fmt == "h5":
        pytest.importorskip("h5py")
    fake = make_folder(tmp_path, n=2, depth_format=fmt, nested=False)
    ds = build_dataset("folder", "train", root=str(tmp_path), image_glob="images/*.png",
                       depth_replace=[["/images/", "/depth/"], ["_rgb.png", f"_depth.{fmt}"]],
                       depth_divisor=divisor, max_depth=100.0)
    s = ds[1]
    np.testing.assert_allclose(s["depth"][0].numpy(), fake.stored[1] / divisor, rtol=1e-6)


def test_invalid_value_is_the_stored_code_before_the_divisor(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", coord_image(1, 3))
    write_png16(tmp_path / "depth" / "a.png", np.array([[65535, 65534, 1500]]))
    ds = build_dataset("folder", "test", root=str(tmp_path), image_glob="images/*.png", depth_glob="depth/*.png",
                       depth_divisor=1000, invalid_value=65535, max_depth=80.0)
    s = ds[0]
    assert s["valid"][0].tolist() == [[False, True, True]]
    assert s["depth"][0, 0].tolist() == pytest.approx([0.0, 65.534, 1.5], rel=1e-6)


def test_folder_split_file_disparity_invalid_value_and_crop(tmp_path):
    fake = make_folder(tmp_path, n=2, depth_format="npy", nested=False)
    disp = np.array([[0.5, -1.0, 2.0, 7.0], [7.0, 3.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
    write_rgb(tmp_path / "images" / "x.png", coord_image(3, 4))
    np.save(tmp_path / "depth" / "x.npy", disp)
    split = tmp_path / "list.txt"
    split.write_text("images/x.png depth/x.npy\nimages/x.png None\n")
    ds = build_dataset("folder", "train", root=str(tmp_path), split_file=str(split), depth_kind="disparity",
                       invalid_value=7.0, crop=[1, 1, 2, 3], intrinsics=[100.0, 100.0, 2.0, 1.5])
    assert len(ds) == 1 and ds.stats["no_gt_skipped"] == 1
    s = ds[0]
    assert s["depth_kind"] == "disparity"
    # crop rows 1..2, cols 1..3 of disp; -1, 0 and the invalid code 7 are invalid
    assert s["valid"][0].tolist() == [[True, False, True], [True, True, True]]
    assert s["depth"][0].tolist() == [[3.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    assert s["intrinsics"].tolist() == [100.0, 100.0, 1.0, 0.5]
    assert (s["image"][0, 0, 0] * 255).round().item() == 1 and (s["image"][1, 0, 0] * 255).round().item() == 1


def test_folder_configuration_errors(tmp_path):
    make_folder(tmp_path, n=1)
    with pytest.raises(UserError, match="set split_file, or image_glob"):
        build_dataset("folder", "train", root=str(tmp_path))
    with pytest.raises(UserError, match="exactly one of depth_glob and depth_replace"):
        build_dataset("folder", "train", root=str(tmp_path), image_glob="images/**/*.png")
    with pytest.raises(UserError, match="matches no file"):
        build_dataset("folder", "train", root=str(tmp_path), image_glob="nope/*.png", depth_glob="d/*.npy")
    with pytest.raises(UserError, match="depth_kind 'metres'"):
        build_dataset("folder", "train", root=str(tmp_path), image_glob="images/**/*.png",
                      depth_glob="depth/**/*.npy", depth_kind="metres")


def test_folder_yaml_example_from_the_docs(tmp_path):
    """The folder example of docs/datasets.md builds and reads as documented."""
    from omegaconf import OmegaConf

    doc = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    block = re.search(r"```yaml\n(# folder example.*?)```", doc, re.S)
    assert block, "the folder YAML example is missing from docs/datasets.md"
    cfg = OmegaConf.to_container(OmegaConf.create(block.group(1)), resolve=True)
    entry = cfg["data"]["val"][0]
    assert entry["name"] == "folder"
    fake = make_folder(tmp_path / "my_scans", n=2, depth_format="png")
    options = dict(entry["options"], root=str(tmp_path / "my_scans"))
    ds = build_dataset("folder", "val", **options)
    s = ds[0]
    assert s["dataset"] == options["dataset_name"]
    np.testing.assert_allclose(s["depth"][0].numpy(), np.where(fake.stored[0] / 1000 < options["max_depth"],
                                                               fake.stored[0] / 1000, 0), rtol=1e-6)
