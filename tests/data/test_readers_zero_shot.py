"""Zero-shot evaluation readers: decoded units, masks, ranges, crops and split handling.

Expected values are hand-computed from the raw values the fixtures write (e.g. a 16-bit 1234 in
SUN RGB-D is 1.234 m; iBims 6000 is 6000 * 50 / 65535 m) and from the datasets' documented rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_modules.datasets import build_dataset
from zoe_lightning.errors import UserError

from ..fixtures.common import H, W, rgb
from ..fixtures.zero_shot import make_ddad, make_diml_indoor, make_diml_outdoor, make_diode, make_hypersim, make_ibims, make_sunrgbd, make_vkitti2

SAMPLE_KEYS = {"image", "depth", "valid", "depth_kind", "domain", "dataset", "intrinsics", "min_depth", "max_depth"}


def check_contract(sample, h, w, kind, domain, name):
    assert SAMPLE_KEYS <= set(sample)
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, h, w)
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, h, w)
    assert sample["valid"].dtype == torch.bool and sample["valid"].shape == (1, h, w)
    assert torch.all(sample["depth"][~sample["valid"]] == 0), "invalid pixels must hold depth 0"
    assert sample["intrinsics"].dtype == torch.float32 and sample["intrinsics"].shape == (4,)
    assert (sample["depth_kind"], sample["domain"], sample["dataset"]) == (kind, domain, name)


def test_sunrgbd_mm_png_and_8m_cap(tmp_path):
    info = make_sunrgbd(tmp_path)
    ds = build_dataset("sunrgbd", "test", root=str(tmp_path))
    assert len(ds) == 3 and (ds.min_depth, ds.max_depth, ds.eval_crop) == (0.0, 8.0, "eigen")
    s = ds[0]
    check_contract(s, H, W, "metric", "nyu", "sunrgbd")
    d, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    assert d[2, 2] == pytest.approx(1.234, abs=1e-6)
    assert not v[0, :3].any()  # stored 0
    assert not v[1, 0] and d[1, 0] == 0  # 9 m > 8 m cap
    assert not v[1, 1]  # exactly 8 m: outside 0 < d < 8
    raw = info["raw"][0].astype(np.float64)
    keep = (raw > 0) & (raw < 8000)
    assert np.array_equal(v, keep)
    np.testing.assert_allclose(d[keep], raw[keep] / 1000.0, rtol=1e-6)
    assert torch.isnan(s["intrinsics"]).all()
    # JPEG: close to what was written, not exact
    written = rgb(0).astype(np.float32) / 255
    assert np.abs(s["image"].permute(1, 2, 0).numpy() - written).max() < 0.06  # RGB order kept
    # the Depth-Anything copy stores depth x 10000
    ds10 = build_dataset("sunrgbd", "test", root=str(tmp_path), depth_divisor=10000)
    assert ds10[0]["depth"][0, 2, 2].item() == pytest.approx(0.1234, abs=1e-6)


def test_ibims_scale_and_both_masks(tmp_path):
    info = make_ibims(tmp_path)
    ds = build_dataset("ibims", "test", root=str(tmp_path))
    assert len(ds) == 2 and ds.eval_crop == "eigen" and (ds.min_depth, ds.max_depth) == (0.0, 10.0)
    s = ds[1]
    check_contract(s, H, W, "metric", "nyu", "ibims")
    d, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    assert d[2, 2] == pytest.approx(4.5777066, abs=1e-6)
    assert not v[2, 3] and not v[4, 5]  # mask_invalid, mask_transp
    assert not v[2, 4]  # exactly 10 m
    assert not v[0, :3].any()
    raw = info["raw"][1].astype(np.float64)
    metres = raw * 50 / 65535
    expected = (raw > 0) & (metres < 10)
    expected[2, 3] = expected[4, 5] = False
    assert np.array_equal(v, expected)
    np.testing.assert_allclose(d[v], metres[v], rtol=1e-6)
    # PNG RGB: exact
    assert torch.equal((s["image"] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(rgb(101)))


def test_ibims_missing_mask_fails_or_is_skipped(tmp_path):
    make_ibims(tmp_path)
    (tmp_path / "mask_transp" / "scene_00.png").unlink()
    with pytest.raises(UserError, match=r"1 mask file\(s\) are missing.*mask_transp/scene_00.png"):
        build_dataset("ibims", "test", root=str(tmp_path))
    ds = build_dataset("ibims", "test", root=str(tmp_path), skip_missing=True)
    assert len(ds) == 1 and ds.stats["missing_skipped"] == 1


@pytest.mark.parametrize("name,domain,crop,max_depth", [("diode_indoor", "nyu", "eigen", 10.0),
                                                        ("diode_outdoor", "kitti", "garg", 80.0)])
def test_diode_npy_hw1_and_mask(tmp_path, name, domain, crop, max_depth):
    info = make_diode(tmp_path)
    ds = build_dataset(name, "test", root=str(tmp_path))
    assert len(ds) == 4 and ds.eval_crop == crop and ds.max_depth == max_depth
    s = ds[0]
    check_contract(s, H, W, "metric", domain, name)
    item = info["items"][0]
    assert s["path"] == str(item["image"])
    d, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    assert not v[3, 4] and not v[0, 0]  # mask 0 / no return
    depth = item["depth"][..., 0]
    keep = (depth > 1e-3) & (depth < max_depth) & (item["mask"] > 0)
    assert np.array_equal(v, keep)
    assert np.array_equal(d[keep], depth[keep])  # float32 stored, float32 returned: exact
    # the original drops the mask: use_mask=false keeps the masked pixel
    raw = build_dataset(name, "test", root=str(tmp_path), use_mask=False)[0]
    assert raw["valid"][0, 3, 4] and raw["depth"][0, 3, 4].item() == pytest.approx(float(depth[3, 4]))


def test_hypersim_distance_to_planar_depth(tmp_path):
    info = make_hypersim(tmp_path)
    ds = build_dataset("hypersim", "test", root=str(tmp_path))
    assert len(ds) == 4 and ds.eval_crop == "eigen" and (ds.min_depth, ds.max_depth) == (1e-3, 80.0)
    s = ds[0]
    check_contract(s, H, W, "metric", "nyu", "hypersim")
    dist = info["items"][0]["distance"]
    d = s["depth"][0].numpy()
    f = 886.81
    # pixel (row 0, col 0) of a 8x12 frame is 5.5 px left of and 3.5 px above the centre
    assert d[0, 0] == pytest.approx(dist[0, 0] * f / math.sqrt(5.5 ** 2 + 3.5 ** 2 + f ** 2), rel=1e-6)
    # pixel (row 4, col 6): 0.5 px right, 0.5 px below
    assert d[4, 6] == pytest.approx(dist[4, 6] * f / math.sqrt(0.5 ** 2 + 0.5 ** 2 + f ** 2), rel=1e-6)
    # planar depth never exceeds the distance; the corner is the most foreshortened
    assert np.all(d[s["valid"][0].numpy()] <= dist[s["valid"][0].numpy()])
    # NaN distance (no geometry): invalid and counted
    assert not s["valid"][0, -1, -1] and d[-1, -1] == 0
    assert ds.stats["nonfinite_pixels"] == 1
    assert s["intrinsics"].tolist() == pytest.approx([f, f, 5.5, 3.5])


def test_hypersim_conversion_at_full_size_matches_geometry():
    from data_modules.datasets.zero_shot import hypersim_distance_to_depth

    # a fronto-parallel wall at z = 3 m seen by the 1024x768, f = 886.81 camera: the distance
    # along pixel (u, v)'s ray is 3 * |(x, y, f)| / f, so the planar depth must be 3 everywhere
    f, h, w = 886.81, 768, 1024
    x = np.arange(w) - 511.5
    y = np.arange(h) - 383.5
    distance = 3.0 * np.sqrt(x[None] ** 2 + y[:, None] ** 2 + f ** 2) / f
    depth = hypersim_distance_to_depth(distance.astype(np.float32))
    np.testing.assert_allclose(depth, 3.0, rtol=2e-6)


def test_vkitti2_cm_png_kb_crop_and_cap(tmp_path):
    info = make_vkitti2(tmp_path)
    ds = build_dataset("vkitti2", "test", root=str(tmp_path))
    assert ds.eval_crop == "garg" and ds.max_depth == 80.0
    s = ds[0]
    check_contract(s, 352, 1216, "metric", "kitti", "vkitti2")
    d, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    # KB crop of 375x1242: top = 23, left = 13; original (374, 13) -> crop (351, 0)
    assert d[351, 0] == pytest.approx(12.34, abs=1e-5)
    assert d[0, 600] == pytest.approx(17.5)  # crop row 0 is original row 23, not row 22 (43.21 m)
    assert not np.isclose(d, 43.21).any()
    assert not v[-1, -1] and d[-1, -1] == 0  # sky, 655.35 m
    assert not v[350, 587]  # 81 m > 80 m cap
    assert s["intrinsics"].tolist() == pytest.approx([725.0087, 725.0087, 620.5 - 13, 187.0 - 23])
    full = build_dataset("vkitti2", "test", root=str(tmp_path), kb_crop=False)[0]
    assert full["depth"].shape == (1, 375, 1242) and full["depth"][0, 22, 621].item() == pytest.approx(43.21)
    assert full["intrinsics"].tolist() == pytest.approx([725.0087, 725.0087, 620.5, 187.0])
    assert len(info["raw"]) == 6


def test_vkitti2_deterministic_per_sequence_split(tmp_path):
    make_vkitti2(tmp_path, frames=3, h=352, w=1216)
    train = [r.image for r in build_dataset("vkitti2", "train", root=str(tmp_path)).records]
    test = [r.image for r in build_dataset("vkitti2", "test", root=str(tmp_path)).records]
    val = [r.image for r in build_dataset("vkitti2", "val", root=str(tmp_path)).records]
    # 3 frames per sequence: int(3 * 0.92) = 2 train, 1 test; two sequences
    assert len(train) == 4 and len(test) == 2 and val == test
    assert not set(train) & set(test)
    assert {p.split("/")[-6] for p in test} == {"Scene01", "Scene02"}  # one test frame per sequence
    again = [r.image for r in build_dataset("vkitti2", "test", root=str(tmp_path)).records]
    assert again == test
    seeds = {tuple(r.image for r in build_dataset("vkitti2", "test", root=str(tmp_path), split_seed=k).records)
             for k in range(6)}
    assert len(seeds) > 1  # the seed picks the frames


def test_ddad_sparse_npy(tmp_path):
    info = make_ddad(tmp_path)
    ds = build_dataset("ddad", "test", root=str(tmp_path))
    assert len(ds) == 2 and ds.sparse and ds.eval_crop == "garg"
    s = ds[0]
    check_contract(s, H, W, "metric", "kitti", "ddad")
    d, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    assert d[0, 0] == pytest.approx(12.5) and not v[0, 2]
    depth = info["depth"][0]
    assert np.array_equal(v, (depth > 1e-3) & (depth < 80))
    assert not v[1].any()  # rows without LiDAR returns


@pytest.mark.parametrize("level", ["LR", "HR"])
def test_diml_indoor_filled_depth(tmp_path, level):
    info = make_diml_indoor(tmp_path, level=level)
    ds = build_dataset("diml_indoor", "test", root=str(tmp_path), level=level)
    assert len(ds) == 2 and ds.eval_crop == "eigen" and (ds.min_depth, ds.max_depth) == (0.0, 10.0)
    s = ds[0]
    check_contract(s, H, W, "metric", "nyu", "diml_indoor")
    assert s["depth"][0, 2, 2].item() == pytest.approx(2.5)
    raw = info["raw"]["bedroom_1"].astype(np.float64)
    np.testing.assert_allclose(s["depth"][0].numpy(), np.where(raw > 0, raw / 1000, 0), rtol=1e-6)


@pytest.mark.parametrize("with_scene", [True, False])
def test_diml_outdoor_range_2_to_80(tmp_path, with_scene):
    info = make_diml_outdoor(tmp_path, with_scene=with_scene)
    ds = build_dataset("diml_outdoor", "test", root=str(tmp_path))
    assert len(ds) == len(info["raw"]) and ds.eval_crop == "garg" and (ds.min_depth, ds.max_depth) == (2.0, 80.0)
    s = ds[0]
    check_contract(s, H, W, "metric", "kitti", "diml_outdoor")
    d, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    assert d[2, 2] == pytest.approx(45.678, abs=1e-5)
    assert not v[1, 1]  # 1.5 m < 2 m
    raw = info["raw"]["scene_a"].astype(np.float64) / 1000
    assert np.array_equal(v, (raw > 2) & (raw < 80))


def test_split_file_selects_and_reports_bad_lines(tmp_path):
    make_ddad(tmp_path / "ddad")
    split = tmp_path / "subset.txt"
    split.write_text("# one frame\n000001_rgb.png\n")
    ds = build_dataset("ddad", "test", root=str(tmp_path / "ddad"), split_file=str(split))
    assert len(ds) == 1 and ds.records[0].image.endswith("000001_rgb.png")
    split.write_text("000001_rgb.png 000001_depth.npy\n")  # explicit depth column
    assert build_dataset("ddad", "test", root=str(tmp_path / "ddad"), split_file=str(split)).records[0].depth \
        .endswith("000001_depth.npy")
    split.write_text("000000_rgb.png\na b c d\n")
    with pytest.raises(UserError, match=r"subset.txt:2: malformed split line"):
        build_dataset("ddad", "test", root=str(tmp_path / "ddad"), split_file=str(split))


def test_missing_root_depth_and_empty_layout_fail_clearly(tmp_path):
    with pytest.raises(UserError, match="root"):
        build_dataset("sunrgbd", "test", root=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no images matching rgb/rgb/\*\.jpg"):
        build_dataset("sunrgbd", "test", root=str(tmp_path / "empty"))
    make_sunrgbd(tmp_path / "sun")
    (tmp_path / "sun" / "gt" / "gt" / "img-000001.png").unlink()
    with pytest.raises(UserError, match=r"1 file\(s\).*missing.*img-000001.png"):
        build_dataset("sunrgbd", "test", root=str(tmp_path / "sun"))
    ds = build_dataset("sunrgbd", "test", root=str(tmp_path / "sun"), skip_missing=True)
    assert len(ds) == 2 and ds.stats["missing_skipped"] == 1
    with pytest.raises(UserError, match="unknown option"):
        build_dataset("sunrgbd", "test", root=str(tmp_path / "sun"), not_an_option=1)


def test_depth_of_another_size_is_an_error(tmp_path):
    make_ddad(tmp_path)
    np.save(tmp_path / "000000_depth.npy", np.ones((H + 1, W), np.float32))
    ds = build_dataset("ddad", "test", root=str(tmp_path))
    with pytest.raises(UserError, match=r"000000_depth.npy has shape \(9, 12\)"):
        ds[0]


def test_diode_release_layout_with_split_folders(tmp_path):
    make_diode(tmp_path / "val" / "indoors", n_scenes=2)
    make_diode(tmp_path / "train" / "indoors", n_scenes=1)
    make_diode(tmp_path / "val" / "outdoor", n_scenes=1, per_scan=1)
    assert len(build_dataset("diode_indoor", "test", root=str(tmp_path))) == 4
    assert len(build_dataset("diode_indoor", "train", root=str(tmp_path))) == 2
    outdoor = build_dataset("diode_outdoor", "val", root=str(tmp_path))
    assert len(outdoor) == 1 and "/val/outdoor/" in outdoor.records[0].image


def test_vkitti2_release_folder_names(tmp_path):
    make_vkitti2(tmp_path, frames=3, h=352, w=1216, rgb_dir="vkitti_2.0.3_rgb", depth_dir="vkitti_2.0.3_depth")
    ds = build_dataset("vkitti2", "test", root=str(tmp_path), rgb_dir="vkitti_2.0.3_rgb",
                       depth_dir="vkitti_2.0.3_depth")
    assert len(ds) == 2 and "/vkitti_2.0.3_depth/Scene0" in ds.records[0].depth
    assert ds.records[0].depth.endswith("/frames/depth/Camera_0/" + ds.records[0].image.split("/")[-1]
                                        .replace("rgb_", "depth_").replace(".jpg", ".png"))
    assert ds[0]["depth"][0, 0, 0].item() == pytest.approx(17.5)


def test_truncated_image_names_file_and_index(tmp_path):
    make_sunrgbd(tmp_path)
    path = tmp_path / "rgb" / "rgb" / "img-000002.jpg"
    path.write_bytes(path.read_bytes()[:200])
    ds = build_dataset("sunrgbd", "test", root=str(tmp_path))
    with pytest.raises(UserError, match=r"img-000002.jpg \(sample 2\)"):
        ds[2]
