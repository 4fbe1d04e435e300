"""Loader transforms: every property on small arrays with hand-computed expectations."""

import numpy as np
import pytest

from data_modules.transforms import DepthTransform, build_transform, kb_crop_box, keep_aspect_size

NO_AUG = dict(rotate_degrees=0.0, flip_p=0.0, color_p=0.0)


def make_sample(h=24, w=32, depth=None, valid=None, seed=0, k=(20.0, 22.0, 15.5, 11.5)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if depth is None:
        depth = rng.uniform(1.0, 9.0, (h, w)).astype(np.float32)
    if valid is None:
        valid = depth > 0
    depth = np.where(valid, depth, 0).astype(np.float32)
    return {"image": image, "depth": depth, "valid": valid, "intrinsics": np.array(k, np.float32),
            "domain": "nyu", "dataset": "toy", "min_depth": 1e-3, "max_depth": 10.0}


def hole_sample(h=24, w=32):
    """Constant 5 m depth with an irregular invalid hole and an invalid border column."""
    yy, xx = np.mgrid[:h, :w]
    valid = ((yy - 10) ** 2 + (xx - 13) ** 2 > 30) & (xx != w - 1) & ~((yy > 18) & (xx < 5))
    return make_sample(h, w, depth=np.full((h, w), 5.0, np.float32), valid=valid)


@pytest.mark.parametrize("size", [(12, 16), (17, 23), (48, 64), (30, 20)])
def test_masked_resize_never_mixes_valid_depth_with_holes(size):
    s = hole_sample()
    t = DepthTransform(False, image_size=size, resize="squash", depth_interpolation="masked")
    out = t(s)
    assert out["depth"].shape == size and out["valid"].shape == size and out["image"].shape == (*size, 3)
    assert out["valid"].any() and not out["valid"].all()
    # a constant surface stays exactly constant: no valid pixel is pulled towards the hole's 0
    np.testing.assert_allclose(out["depth"][out["valid"]], 5.0, rtol=1e-6)
    assert (out["depth"][~out["valid"]] == 0).all()


def test_masked_resize_stays_within_the_valid_neighbours():
    # left half 2 m, right half 8 m, a hole in the middle: every output lies in [2, 8]
    depth = np.where(np.arange(32)[None, :] < 16, 2.0, 8.0).repeat(24, 0).astype(np.float32)
    valid = np.ones((24, 32), bool)
    valid[8:16, 10:22] = False
    t = DepthTransform(False, image_size=(11, 13), depth_interpolation="masked")
    out = t(make_sample(depth=depth, valid=valid))
    d = out["depth"][out["valid"]]
    assert d.min() >= 2.0 - 1e-6 and d.max() <= 8.0 + 1e-6


def test_nearest_resize_copies_input_values_for_sparse_depth():
    rng = np.random.default_rng(3)
    depth = np.zeros((40, 60), np.float32)
    valid = rng.random((40, 60)) < 0.07  # LiDAR-like
    depth[valid] = rng.uniform(1, 80, valid.sum())
    out = DepthTransform(False, image_size=(23, 31), depth_interpolation="nearest")(make_sample(40, 60, depth, valid))
    got = out["depth"][out["valid"]]
    assert len(got) > 0
    assert np.isin(got, depth[valid]).all()  # each value is one LiDAR return, bit for bit
    assert (out["depth"][~out["valid"]] == 0).all()


def test_colour_jitter_leaves_depth_bit_identical_and_follows_the_formula():
    s = make_sample()
    t = DepthTransform(True, color_p=1.0, rotate_degrees=0.0, flip_p=0.0, gamma=(1.05, 1.05),
                       brightness=(1.2, 1.2), gain=(0.95, 0.95), seed=0)
    out = t(s)
    assert out["depth"].dtype == np.float32
    assert np.array_equal(out["depth"], s["depth"]) and np.array_equal(out["valid"], s["valid"])
    expected = np.clip((s["image"].astype(np.float64) / 255) ** 1.05 * 1.2 * 0.95, 0, 1)
    np.testing.assert_allclose(out["image"], expected, atol=1e-6)
    plain = DepthTransform(False)(s)["image"]
    np.testing.assert_allclose(plain, s["image"] / 255.0, atol=1e-7)


def test_colour_jitter_ranges_of_the_original():
    nyu = build_transform("train", {"name": "nyu", "domain": "nyu"})
    kitti = build_transform("train", {"name": "kitti", "domain": "kitti", "sparse": True})
    assert nyu.brightness == (0.75, 1.25) and kitti.brightness == (0.9, 1.1)
    for t in (nyu, kitti):
        assert t.gamma == (0.9, 1.1) and t.gain == (0.9, 1.1) and t.color_p == 0.5 and t.flip_p == 0.5
        assert t.rotate_degrees == 1.0
    # drawn factors stay in range: a mid-grey image scales by gamma, brightness and gain only
    t = DepthTransform(True, color_p=1.0, rotate_degrees=0.0, flip_p=0.0, seed=1)
    grey = make_sample()
    grey["image"][:] = 128
    for _ in range(20):
        ratio = t(grey)["image"][0, 0] / (128 / 255)
        lo, hi = (128 / 255) ** 0.1 * 0.75 * 0.9, (128 / 255) ** -0.1 * 1.25 * 1.1
        assert ((ratio >= lo - 1e-6) & (ratio <= hi + 1e-6)).all()


def test_flip_mirrors_image_depth_valid_and_cx():
    s = make_sample(k=(20.0, 22.0, 3.0, 11.5))
    s["valid"][2, 1] = False
    s["depth"][2, 1] = 0
    out = DepthTransform(True, rotate_degrees=0.0, flip_p=1.0, color_p=0.0, seed=0)(s)
    assert np.array_equal(out["depth"], s["depth"][:, ::-1])
    assert np.array_equal(out["valid"], s["valid"][:, ::-1])
    np.testing.assert_allclose(out["image"], s["image"][:, ::-1] / 255.0, atol=1e-7)
    np.testing.assert_allclose(out["intrinsics"], [20.0, 22.0, 31 - 3.0, 11.5])  # W - 1 - cx, W = 32


def test_kb_crop_offsets_values_and_intrinsics():
    h, w = 375, 1242
    depth = np.zeros((h, w), np.float32)
    depth[23, 13] = 7.0  # becomes the top-left pixel of the 352x1216 crop
    depth[-1, 13 + 1215] = 9.0  # bottom-right
    s = make_sample(h, w, depth=depth, valid=depth > 0, k=(721.5, 721.5, 609.6, 172.9))
    assert kb_crop_box(h, w) == (13, 23, 1229, 375)
    t = build_transform("eval", {"name": "kitti", "domain": "kitti", "sparse": True})
    out = t(s)
    assert out["depth"].shape == (352, 1216)
    assert out["depth"][0, 0] == 7.0 and out["depth"][-1, -1] == 9.0 and out["valid"].sum() == 2
    np.testing.assert_allclose(out["intrinsics"], [721.5, 721.5, 609.6 - 13, 172.9 - 23], rtol=1e-6)
    again = t({**s, **{k: out[k] for k in ("depth", "valid")},
               "image": (out["image"] * 255).round().astype(np.uint8)})
    assert np.array_equal(again["depth"], out["depth"])  # idempotent on an already cropped sample
    with pytest.raises(ValueError, match="KB crop"):
        t(make_sample(300, 1000))


@pytest.mark.parametrize("hw,target,expected", [  # facts §1.2 "resulting sizes"
    ((480, 640), (384, 512), (384, 512)), ((375, 1242), (384, 512), (384, 1280)),
    ((352, 1216), (384, 512), (384, 1312)), ((768, 1024), (384, 512), (384, 512)),
    ((1080, 1920), (384, 512), (384, 672)), ((375, 1242), (384, 768), (384, 1280)),
    ((352, 1216), (384, 768), (384, 1312)), ((768, 1024), (384, 768), (576, 768)),
    ((1080, 1920), (384, 768), (448, 768)),
    ((480, 640), (384, 768), (384, 512)),  # the tie (0.8 vs 1.2): the original fits the height
    ((400, 400), (300, 500), (288, 288)),  # tie 0.75 vs 1.25: 300 rounds to 288
])
def test_keep_aspect_sizes_match_the_original(hw, target, expected):
    assert keep_aspect_size(*hw, target, 32) == expected


def test_keep_aspect_policy_output_and_intrinsics():
    s = make_sample(48, 80, k=(40.0, 40.0, 39.5, 23.5))  # principal point at the image centre
    out = DepthTransform(False, image_size=(32, 32), resize="keep_aspect", multiple_of=32)(s)
    # scales 32/48 = 0.667 and 32/80 = 0.4: 0.667 is closer to 1 -> 32 x 53.3 -> 32 x 64
    assert out["image"].shape == (32, 64, 3)
    np.testing.assert_allclose(out["intrinsics"], [40 * 64 / 80, 40 * 32 / 48, 31.5, 15.5], rtol=1e-6)


def test_squash_intrinsics_keep_the_centre_at_the_centre():
    s = make_sample(20, 40, k=(30.0, 30.0, 19.5, 9.5))
    out = DepthTransform(False, image_size=(10, 20), resize="squash")(s)
    np.testing.assert_allclose(out["intrinsics"], [15.0, 15.0, 9.5, 4.5])


def test_pad_policy_pads_with_invalid_depth():
    s = make_sample(10, 20, depth=np.full((10, 20), 3.0, np.float32), k=(10.0, 10.0, 9.5, 4.5))
    out = DepthTransform(False, image_size=(16, 16), resize="pad", depth_interpolation="nearest")(s)
    # fit: scale min(16/10, 16/20) = 0.8 -> 8 x 16, then 4 rows of padding above and below
    assert out["image"].shape == (16, 16, 3)
    assert not out["valid"][:4].any() and not out["valid"][12:].any() and out["valid"][4:12].all()
    assert (out["depth"][4:12] == 3.0).all() and (out["image"][:4] == 0).all()
    np.testing.assert_allclose(out["intrinsics"], [8.0, 8.0, 7.5, 3.5 + 4])


def test_rotation_is_small_nearest_and_fills_invalid():
    rng = np.random.default_rng(5)
    depth = rng.uniform(1, 9, (64, 64)).astype(np.float32)
    t = DepthTransform(True, rotate_degrees=1.0, flip_p=0.0, color_p=0.0, seed=3)
    for _ in range(5):
        out = t(make_sample(64, 64, depth=depth))
        assert np.isin(out["depth"][out["valid"]], depth).all()  # nearest: original values only
        assert 0.97 < out["valid"].mean() <= 1.0  # a corner sliver at most (1 degree)
        assert (out["depth"][~out["valid"]] == 0).all()


def test_random_crop_size_and_intrinsics_shift():
    s = make_sample(24, 32, k=(20.0, 20.0, 15.5, 11.5))
    s["depth"] = (np.arange(24)[:, None] * 100 + np.arange(32)[None, :]).astype(np.float32) + 1
    s["valid"] = np.ones((24, 32), bool)
    out = DepthTransform(True, random_crop=(10, 12), **NO_AUG, seed=2)(s)
    assert out["depth"].shape == (10, 12)
    y0, x0 = divmod(int(out["depth"][0, 0]) - 1, 100)
    assert np.array_equal(out["depth"], s["depth"][y0:y0 + 10, x0:x0 + 12])
    np.testing.assert_allclose(out["intrinsics"], [20, 20, 15.5 - x0, 11.5 - y0])


def test_seeded_transform_is_reproducible_and_varies_between_calls():
    s = make_sample()
    a = [DepthTransform(True, random_crop=(16, 16), seed=7)(s) for _ in range(1)][0]
    b = DepthTransform(True, random_crop=(16, 16), seed=7)(s)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["depth"], b["depth"])
    t = DepthTransform(True, random_crop=(16, 16), seed=7)
    outs = [t(s)["depth"] for _ in range(4)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_eval_transform_is_deterministic_and_does_not_augment():
    t = build_transform("eval", {"name": "nyu", "domain": "nyu"}, image_size=[12, 16])
    s = make_sample()
    assert not t.augment
    a, b = t(s), t(s)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["depth"], b["depth"])


def test_defaults_per_dataset_kind():
    sparse = build_transform("train", {"name": "kitti", "domain": "kitti", "sparse": True})
    dense = build_transform("train", {"name": "nyu", "domain": "nyu", "sparse": False})
    assert sparse.depth_interpolation == "nearest" and sparse.kb_crop
    assert dense.depth_interpolation == "masked" and not dense.kb_crop
    assert build_transform("eval", "kitti").kb_crop


def test_bad_inputs_fail_loud():
    t = DepthTransform(False)
    s = make_sample()
    with pytest.raises(ValueError, match="uint8"):
        t({**s, "image": s["image"].astype(np.float32)})
    with pytest.raises(ValueError, match="differ from image"):
        t({**s, "depth": s["depth"][:-1]})
    with pytest.raises(ValueError, match="data.resize"):
        DepthTransform(False, image_size=(8, 8), resize="stretch")
    with pytest.raises(ValueError, match="kind"):
        build_transform("test", "nyu")


def test_each_loader_worker_draws_its_own_reproducible_stream(monkeypatch):
    import torch.utils.data as tud
    from types import SimpleNamespace

    s = make_sample()

    def stream(worker_id):
        monkeypatch.setattr(tud, "get_worker_info", lambda: SimpleNamespace(id=worker_id))
        t = DepthTransform(True, random_crop=(12, 12), seed=11)
        return [t(s)["depth"] for _ in range(3)]

    w0, w1, w0_again = stream(0), stream(1), stream(0)
    assert all(np.array_equal(a, b) for a, b in zip(w0, w0_again))
    assert not all(np.array_equal(a, b) for a, b in zip(w0, w1))


def test_random_crop_larger_than_the_image_pads_with_invalid_depth():
    s = make_sample(6, 8, depth=np.full((6, 8), 2.0, np.float32), k=(5.0, 5.0, 3.5, 2.5))
    out = DepthTransform(True, random_crop=(10, 12), **NO_AUG, seed=0)(s)
    expected = np.zeros((10, 12), bool)
    expected[2:8, 2:10] = True  # 2 px of centred padding on every side
    assert np.array_equal(out["valid"], expected) and (out["depth"][expected] == 2.0).all()
    np.testing.assert_allclose(out["intrinsics"], [5.0, 5.0, 5.5, 4.5])
