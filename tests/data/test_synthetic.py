"""Tests of the procedural RGB-D generator: determinism, exact geometry, domains, depth kinds."""

import math

import numpy as np
import pytest
import torch

from data_modules.datasets import DATASETS, build_dataset
from data_modules.datasets.synthetic import (
    Camera,
    SyntheticDepthDataset,
    camera_rotation,
    raycast,
    render_plane_depth,
)

SIZE = (96, 128)


def make(domain="nyu", split="train", **options):
    options.setdefault("length", 16)
    options.setdefault("image_size", SIZE)
    return SyntheticDepthDataset(domain=domain, split=split, **options)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ---------------------------------------------------------------------------------------------
# Determinism and splits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["nyu", "kitti"])
def test_same_index_same_sample(domain):
    ds = make(domain)
    assert_same(ds[3], ds[3])
    assert_same(ds[5], make(domain)[5])  # a second object with the same seed
    assert_same(ds[-1], ds[len(ds) - 1])


def test_seeds_splits_and_indices_differ():
    base = make()[0]["image"]
    assert not torch.equal(base, make(seed=44)[0]["image"])
    assert not torch.equal(base, make()[1]["image"])
    for index in range(3):
        images = [make(split=s)[index]["image"] for s in ("train", "val", "test")]
        for i in range(3):
            for j in range(i + 1, 3):
                assert (images[i] - images[j]).abs().mean() > 1e-2


def test_length_and_index_errors():
    assert len(make(length=7)) == 7
    assert len(SyntheticDepthDataset("nyu", "val")) == 100
    with pytest.raises(IndexError):
        make(length=4)[4]
    with pytest.raises(ValueError, match="split"):
        make(split="training")
    with pytest.raises(ValueError, match="depth_kind"):
        make(depth_kind="inverse")


# ---------------------------------------------------------------------------------------------
# Geometry: exact planar depth
# ---------------------------------------------------------------------------------------------


def test_fronto_parallel_plane_has_constant_depth():
    h, w = 60, 80
    level = Camera(fx=70.0, fy=72.0, cx=39.3, cy=29.6)
    for z in (0.5, 3.0, 47.25):
        depth = render_plane_depth(level, (h, w), axis=2, offset=z)
        np.testing.assert_allclose(depth, np.full((h, w), z), rtol=1e-4)
    moved = Camera(70.0, 72.0, 39.3, 29.6, position=np.array([0.7, -1.2, 2.0]))
    np.testing.assert_allclose(render_plane_depth(moved, (h, w), 2, 9.0), 7.0, rtol=1e-4)


def test_ground_plane_depth_for_level_camera():
    h, w, height, fy, cy = 48, 64, 1.65, 55.0, 20.4
    cam = Camera(fx=50.0, fy=fy, cx=31.5, cy=cy, position=np.array([0.3, height, 0.0]))
    depth = render_plane_depth(cam, (h, w), axis=1, offset=0.0)
    for v in range(h):
        if v > cy:  # below the horizon: Z = h * fy / (v - cy) for every column
            np.testing.assert_allclose(depth[v], height * fy / (v - cy), rtol=1e-4)
        else:  # at or above the horizon the ray never reaches the ground
            assert np.isinf(depth[v]).all()


def test_ground_plane_depth_for_pitched_camera():
    h, w, height, fy, cy, pitch = 48, 64, 1.5, 55.0, 23.7, math.radians(-7.0)  # looking down
    cam = Camera(50.0, fy, 31.5, cy, rotation=camera_rotation(pitch=pitch), position=np.array([0.0, height, 0.0]))
    depth = render_plane_depth(cam, (h, w), axis=1, offset=0.0)
    y = (np.arange(h) - cy) / fy  # camera-frame ray (x, y, 1); its world up-component is
    down = y * math.cos(pitch) - math.sin(pitch)  # sin(pitch) - y cos(pitch)
    for v in range(h):
        if down[v] > 1e-9:
            np.testing.assert_allclose(depth[v], height / down[v], rtol=1e-4)
        else:
            assert np.isinf(depth[v]).all()


def test_box_front_face_depth_and_labels():
    h, w, fx, fy, cx, cy = 40, 50, 30.0, 30.0, 24.5, 19.5
    cam = Camera(fx, fy, cx, cy)
    box = np.array([[[-1.0, -0.8, 3.0], [1.0, 0.8, 4.5]]])
    depth, surf, axis = raycast(cam, (h, w), planes=[], boxes=box)
    v, u = np.mgrid[0:h, 0:w]
    x_at, y_at = (u - cx) / fx * 3.0, (v - cy) / fy * 3.0  # where each ray crosses z = 3
    inside = (np.abs(x_at) < 1.0) & (np.abs(y_at) < 0.8)
    assert inside.sum() > 100
    np.testing.assert_allclose(depth[inside], 3.0, rtol=1e-4)
    assert (surf[inside] == 0).all() and (axis[inside] == 2).all()
    outside = (np.abs(x_at) > 1.05) | (np.abs(y_at) > 0.85)
    assert np.isinf(depth[outside]).all() and (surf[outside] == -1).all()


def test_nearest_surface_wins():
    cam = Camera(30.0, 30.0, 9.5, 9.5)
    box = np.array([[[-5.0, -5.0, 2.0], [5.0, 5.0, 2.5]]])  # covers the view, in front of the wall
    depth, surf, _ = raycast(cam, (20, 20), planes=[(2, 6.0)], boxes=box)
    np.testing.assert_allclose(depth, 2.0, rtol=1e-4)
    assert (surf == 1).all()  # planes are numbered first, then boxes


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["nyu", "kitti"])
def test_sample_dict_contract(domain):
    sample = make(domain, domain_name="my_domain")[2]
    expected = {"image", "depth", "valid", "depth_kind", "domain", "dataset", "intrinsics", "min_depth", "max_depth"}
    assert set(sample) == expected
    h, w = SIZE
    assert sample["image"].shape == (3, h, w) and sample["image"].dtype == torch.float32
    assert sample["depth"].shape == (1, h, w) and sample["depth"].dtype == torch.float32
    assert sample["valid"].shape == (1, h, w) and sample["valid"].dtype == torch.bool
    assert sample["intrinsics"].shape == (4,) and sample["intrinsics"].dtype == torch.float32
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["image"].std() > 0.02  # textured, not blank
    assert sample["domain"] == "my_domain" and sample["depth_kind"] == "metric"
    assert sample["dataset"] == {"nyu": "synthetic_indoor", "kitti": "synthetic_outdoor"}[domain]
    assert isinstance(sample["min_depth"], float) and isinstance(sample["max_depth"], float)
    assert (sample["min_depth"], sample["max_depth"]) == {"nyu": (1e-3, 10.0), "kitti": (1e-3, 80.0)}[domain]
    fx, fy, cx, cy = sample["intrinsics"].tolist()
    assert fx > 0 and fy > 0 and 0 < cx < w and 0 < cy < h
    depth, valid = sample["depth"], sample["valid"]
    assert torch.isfinite(depth).all() and (depth[~valid] == 0).all()
    assert (depth[valid] > sample["min_depth"]).all() and (depth[valid] < sample["max_depth"]).all()


def test_indoor_every_pixel_valid_within_ten_metres():
    ds = make("nyu", length=6)
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["valid"].all()
        assert sample["depth"].max() <= 10.0 and sample["depth"].min() > 0.1


def test_outdoor_has_sky_and_depth_within_eighty_metres():
    ds = make("kitti", length=6)
    for i in range(len(ds)):
        sample = ds[i]
        depth, valid = sample["depth"][0], sample["valid"][0]
        top = valid[:5]
        assert (~top).sum() > 0.1 * top.numel()  # sky in the top rows
        assert (depth[:5][~top] == 0).all()
        assert valid[-10:].all()  # the ground just below the camera
        assert depth[valid].max() < 80.0 and valid.float().mean() > 0.4


def test_disparity_is_affine_in_inverse_depth():
    metric, disparity = make("nyu"), make("nyu", depth_kind="disparity")
    scales = []
    for i in range(3):
        m, d = metric[i], disparity[i]
        assert d["depth_kind"] == "disparity" and torch.equal(m["valid"], d["valid"])
        assert torch.equal(m["image"], d["image"])  # same scene, only the target differs
        valid = m["valid"]
        inv, disp = 1.0 / m["depth"][valid].double(), d["depth"][valid].double()
        design = torch.stack([inv, torch.ones_like(inv)], 1)
        s, t = torch.linalg.lstsq(design, disp[:, None]).solution[:, 0]
        residual = disp - design @ torch.stack([s, t])
        assert residual.abs().max() < 1e-5 * disp.abs().max()
        assert s > 0 and t >= -1e-6
        scales.append(float(s))
    assert len({round(s, 6) for s in scales}) == 3  # an unknown scale per sample


def test_relative_depth_is_a_scaled_metric_depth():
    metric, relative = make("kitti"), make("kitti", depth_kind="relative")
    for i in range(2):
        m, r = metric[i], relative[i]
        valid = m["valid"]
        ratio = r["depth"][valid] / m["depth"][valid]
        assert ratio.min() > 0 and (ratio.max() - ratio.min()) < 1e-5 * ratio.mean()


def test_domains_and_styles_have_different_colours():
    def mean_colour(ds):
        return torch.stack([ds[i]["image"].mean((1, 2)) for i in range(4)]).mean(0)

    indoor, outdoor = mean_colour(make("nyu", "val")), mean_colour(make("kitti", "val"))
    # warm rooms against a cool street and blue sky: red minus blue separates the domains
    assert (indoor[0] - indoor[2]) - (outdoor[0] - outdoor[2]) > 0.1
    style0, style1 = mean_colour(make("nyu", "val")), mean_colour(make("nyu", "val", style=1))
    assert (style0 - style1).abs().max() > 0.05


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_builds_named_datasets():
    assert {"synthetic_indoor", "synthetic_outdoor", "synthetic_relative"} <= set(DATASETS)
    indoor = build_dataset("synthetic_indoor", "val", length=2, image_size=SIZE)
    outdoor = build_dataset("synthetic_outdoor", "test", length=2, image_size=SIZE)
    relative = build_dataset("synthetic_relative", "train", length=2, image_size=SIZE, style=2)
    styled = build_dataset("synthetic_style3", "train", length=2, image_size=SIZE)
    assert indoor[0]["domain"] == "nyu" and indoor[0]["dataset"] == "synthetic_indoor"
    assert outdoor[0]["domain"] == "kitti" and outdoor[0]["dataset"] == "synthetic_outdoor"
    assert relative[0]["depth_kind"] == "disparity" and relative.style == 2
    assert styled.style == 3 and styled[0]["dataset"] == "synthetic_style3"


def test_registry_errors_name_the_closest_dataset():
    with pytest.raises(ValueError, match="synthetic_indoor"):
        build_dataset("synthetic_indor", "train")
    with pytest.raises(ValueError, match="fixed"):
        build_dataset("synthetic_indoor", "train", domain="kitti")
