"""Relative-pretraining (MiDaS 3.1, 12 sets) readers: decoded values, masks, kinds, splits, EXR.

Expected values come from the raw arrays the fixtures write; the ground-truth kinds are checked
against the stage-1 loss (a prediction equal to the true inverse depth must cost nothing).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_modules.datasets import DATASETS, build_dataset
from zoe_lightning.errors import UserError

from ..fixtures.common import H, W, write_exr_file
from ..fixtures.relative import make_apolloscape, make_blendedmvs, make_hrwsi, make_irs, make_megadepth, make_redweb, make_stereo_frames, make_tartanair
from ..fixtures.zero_shot import make_diml_indoor
from .test_readers_zero_shot import check_contract

M12 = ["hrwsi", "blendedmvs", "redweb", "diml_indoor_relative", "movies_3d", "megadepth", "wsvd", "tartanair",
       "apolloscape", "irs", "kitti_relative", "nyu_relative"]
KINDS = {"hrwsi": "disparity", "redweb": "disparity", "movies_3d": "disparity", "wsvd": "disparity",
         "irs": "disparity", "blendedmvs": "relative", "megadepth": "relative", "tartanair": "metric",
         "apolloscape": "metric", "diml_indoor_relative": "metric"}


def test_all_twelve_are_registered():
    assert set(M12) <= set(DATASETS)


def test_hrwsi_disparity_mask_and_splits(tmp_path):
    info = make_hrwsi(tmp_path)
    train = build_dataset("hrwsi", "train", root=str(tmp_path))
    val = build_dataset("hrwsi", "val", root=str(tmp_path))
    test = build_dataset("hrwsi", "test", root=str(tmp_path))
    assert (len(train), len(val)) == (3, 1) and [r.image for r in test.records] == [r.image for r in val.records]
    assert all("/train/imgs/" in r.image for r in train.records)
    s = train[2]
    check_contract(s, H, W, "disparity", "kitti", "hrwsi")
    disp, v = s["depth"][0].numpy(), s["valid"][0].numpy()
    item = info["train"][2]
    assert not v[5, 6]  # valid_masks
    expected = (item["disp"] > 0) & (item["mask"] > 0)
    assert np.array_equal(v, expected)
    assert np.array_equal(disp[v], item["disp"][v].astype(np.float32))  # raw 8-bit disparity


def test_redweb_zero_is_invalid(tmp_path):
    info = make_redweb(tmp_path)
    ds = build_dataset("redweb", "train", root=str(tmp_path))
    assert len(ds) == 3
    s = ds[1]
    check_contract(s, H, W, "disparity", "kitti", "redweb")
    raw = info["items"][1]["disp"]
    assert (raw == 0).any()
    assert np.array_equal(s["valid"][0].numpy(), raw > 0)
    assert np.array_equal(s["depth"][0].numpy(), raw.astype(np.float32))


def test_blendedmvs_lists_pfm_and_cams(tmp_path):
    info = make_blendedmvs(tmp_path)
    train = build_dataset("blendedmvs", "train", root=str(tmp_path))
    val = build_dataset("blendedmvs", "val", root=str(tmp_path))
    assert len(train) == 4 and len(val) == 2  # *_masked.jpg ignored
    assert not any("_masked" in r.image for r in train.records + val.records)
    pids = info["pids"]
    assert {r.image.split("/")[-3] for r in val.records} == {pids[2]}
    for ds, k in ((train, 0), (train, 3), (val, 1)):  # both PFM byte orders
        s = ds[k]
        check_contract(s, H, W, "relative", "kitti", "blendedmvs")
        pid, i = s["path"].split("/")[-3], int(s["path"].split("/")[-1][:8])
        depth = info["depth"][(pid, i)]
        assert not s["valid"][0, 2, 2]
        assert np.array_equal(s["depth"][0].numpy(), np.where(depth > 0, depth, 0))
        assert s["intrinsics"].tolist() == pytest.approx([604.5, 605.5, 301.25, 238.75])


def test_megadepth_hdf5_depth_key(tmp_path):
    info = make_megadepth(tmp_path)
    ds = build_dataset("megadepth", "train", root=str(tmp_path))
    assert len(ds) == 2
    s = ds[1]
    check_contract(s, H, W, "relative", "kitti", "megadepth")
    depth = info["depth"]["0015"]
    assert not s["valid"][0, 1, 1]
    assert np.array_equal(s["depth"][0].numpy(), np.where(depth > 0, depth, 0))


def test_diml_indoor_relative_uses_hr_metric(tmp_path):
    info = make_diml_indoor(tmp_path, level="HR")
    ds = build_dataset("diml_indoor_relative", "train", root=str(tmp_path))
    s = ds[1]
    check_contract(s, H, W, "metric", "nyu", "diml_indoor_relative")
    raw = info["raw"]["office_2"].astype(np.float64)
    np.testing.assert_allclose(s["depth"][0].numpy(), np.where(raw > 0, raw / 1000, 0), rtol=1e-6)


@pytest.mark.parametrize("name", ["movies_3d", "wsvd"])
@pytest.mark.parametrize("fmt", ["png", "npy", "pfm"])
def test_stereo_frame_layout(tmp_path, name, fmt):
    info = make_stereo_frames(tmp_path, fmt=fmt)
    ds = build_dataset(name, "train", root=str(tmp_path))
    assert len(ds) == 2 and ds.records[0].depth.endswith("." + fmt)
    s = ds[0]
    check_contract(s, H, W, "disparity", "kitti", name)
    item = info["items"][0]
    expected = (item["disp"] > 0) & (item["mask"] > 0)
    assert not s["valid"][0, 0, 0] and not s["valid"][0, 6, 7]
    assert np.array_equal(s["valid"][0].numpy(), expected)
    # values chosen on the 1/256 grid: PNG (x256), NPY and PFM all decode exactly
    assert np.array_equal(s["depth"][0].numpy()[expected], item["disp"][expected])


def test_stereo_frame_split_folders(tmp_path):
    make_stereo_frames(tmp_path / "train")
    make_stereo_frames(tmp_path / "val")
    (tmp_path / "val" / "clip_b" / "frames" / "000010.jpg").unlink()
    assert len(build_dataset("wsvd", "train", root=str(tmp_path))) == 2
    assert len(build_dataset("wsvd", "val", root=str(tmp_path))) == 1


def test_tartanair_sky_masked_and_intrinsics(tmp_path):
    info = make_tartanair(tmp_path)
    ds = build_dataset("tartanair", "train", root=str(tmp_path))
    assert len(ds) == 2
    s = ds[0]
    check_contract(s, H, W, "metric", "kitti", "tartanair")
    depth = info["items"][0]["depth"]
    assert not s["valid"][0, 0].any()  # sky sphere at 10 km
    assert s["valid"][0, 1:].all()
    assert np.array_equal(s["depth"][0, 1:].numpy(), depth[1:])
    assert s["intrinsics"].tolist() == [320.0, 320.0, 320.0, 240.0]
    keep_sky = build_dataset("tartanair", "train", root=str(tmp_path), max_depth=2e4)[0]
    assert keep_sky["valid"][0, 0].all()


def test_apolloscape_png_over_200(tmp_path):
    info = make_apolloscape(tmp_path)
    ds = build_dataset("apolloscape", "train", root=str(tmp_path))
    assert len(ds) == 2 and "Camera 5" in ds.records[0].image
    s = ds[0]
    check_contract(s, H, W, "metric", "kitti", "apolloscape")
    assert s["depth"][0, 2, 2].item() == pytest.approx(10.0)
    raw = info["items"][0]["raw"].astype(np.float64)
    assert np.array_equal(s["valid"][0].numpy(), raw > 0)
    np.testing.assert_allclose(s["depth"][0].numpy(), raw / 200, rtol=1e-6)


@pytest.mark.parametrize("compression", ["zip", "none"])
def test_irs_exr_disparity(tmp_path, compression):
    info = make_irs(tmp_path, compression=compression)
    ds = build_dataset("irs", "train", root=str(tmp_path))
    assert len(ds) == 4 and all("/l_" in r.image and r.depth.endswith(".exr") for r in ds.records)
    s = ds[3]
    check_contract(s, H, W, "disparity", "nyu", "irs")
    disp = info["items"][3]["disp"]
    assert not s["valid"][0, 3, 3]
    assert np.array_equal(s["depth"][0].numpy(), disp)  # FLOAT channel: bit exact


def test_irs_list_file_and_unsupported_exr(tmp_path):
    make_irs(tmp_path)
    listing = tmp_path / "IRS_train.list"
    listing.write_text("Home/ArchVizInterior03Data/l_2.png Home/ArchVizInterior03Data/r_2.png "
                       "Home/ArchVizInterior03Data/d_2.exr\n")
    ds = build_dataset("irs", "train", root=str(tmp_path), split_file=str(listing))
    assert len(ds) == 1 and ds.records[0].depth.endswith("d_2.exr")
    # a compression this reader does not decode itself (PIZ = 4) without the OpenEXR package
    path = tmp_path / "Home" / "ArchVizInterior03Data" / "d_2.exr"
    write_exr_file(path, np.ones((H, W), np.float32), compression="none")
    data = bytearray(path.read_bytes())
    at = data.index(b"compression\0compression\0") + len(b"compression\0compression\0") + 4
    data[at] = 4
    path.write_bytes(bytes(data))
    try:
        import OpenEXR  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"d_2.exr: OpenEXR compression PIZ needs the OpenEXR package"):
            ds[0]
    # a truncated EXR names the file
    path.write_bytes(bytes(data[:40]))
    with pytest.raises(UserError, match="d_2.exr"):
        ds[0]


@pytest.mark.parametrize("kind", ["disparity", "relative", "metric"])
def test_declared_kinds_match_the_stage1_loss(kind):
    """A prediction equal to the true inverse depth (up to scale and shift) costs ~0 for each
    kind as the readers declare it, and the wrong reading of the same data does not."""
    from zoe_lightning.losses import RelativeDepthLoss

    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 9.0 * torch.rand(2, 1, 16, 16, generator=g)  # metres
    inverse = 1.0 / depth
    target = {"disparity": 3.0 * inverse + 0.5, "relative": 7.0 * depth, "metric": depth}[kind]
    mask = torch.ones_like(depth, dtype=torch.bool)
    loss = RelativeDepthLoss()
    right = loss(2.0 * inverse + 1.0, target, mask, [kind, kind])["loss"].item()
    wrong_kind = "metric" if kind == "disparity" else "disparity"
    wrong = loss(2.0 * inverse + 1.0, target, mask, [wrong_kind, wrong_kind])["loss"].item()
    assert right < 1e-4 and wrong > 50 * max(right, 1e-6)


def test_reader_kinds_are_the_documented_ones():
    from data_modules.datasets import KittiDataset, NYUDataset
    from data_modules.datasets.relative_sets import RELATIVE_READERS

    for name, kind in KINDS.items():
        assert RELATIVE_READERS[name].depth_kind == kind, name
    assert KittiDataset.depth_kind == NYUDataset.depth_kind == "metric"


@pytest.mark.parametrize("compression", ["none", "zip"])
def test_exr_reader_channels_half_and_float(tmp_path, compression):
    from data_modules.datasets.exr import ExrError, read_exr

    g = np.random.default_rng(3)
    full = g.uniform(-5, 500, (21, 5)).astype(np.float32)  # 21 rows: two ZIP blocks, the last partial
    half = g.uniform(0, 60, (21, 5)).astype(np.float16)
    path = write_exr_file(tmp_path / "m.exr", {"R": half, "Y": full, "Z": full * 2}, compression=compression)
    assert np.array_equal(read_exr(path), full)  # Y preferred
    assert np.array_equal(read_exr(path, "Z"), full * 2)
    assert np.array_equal(read_exr(path, "R"), half.astype(np.float32))
    only_r = write_exr_file(tmp_path / "r.exr", {"R": half}, compression=compression)
    assert np.array_equal(read_exr(only_r), half.astype(np.float32))  # no Y: R
    with pytest.raises(ExrError, match=r"no channel 'Q'"):
        read_exr(path, "Q")
    (tmp_path / "bad.exr").write_bytes(b"not an exr at all")
    with pytest.raises(ExrError, match="bad.exr: not an OpenEXR file"):
        read_exr(tmp_path / "bad.exr")
