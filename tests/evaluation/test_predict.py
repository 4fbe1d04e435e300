"""`zoe-lightning predict`: output files, point cloud, padding / flip / mixed-size batches."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from .test_evaluate import SMALL, make_checkpoint


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt")


class FirstChannel(nn.Module):
    """'Depth' = 1 + 5 * red channel, at the input resolution (no own resizing)."""

    domains = ["nyu"]

    def forward(self, images, domain=None):
        return SimpleNamespace(metric_depth=1.0 + 5.0 * images[:, :1], domain_index=None)


def _write_image(path, h, w, seed):
    arr = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return arr


def test_pad_amount_hand_values():
    from zoe_lightning.inference import pad_amount

    assert pad_amount(480, 640) == (46, 53)  # int(sqrt(240)*3) = int(46.48), int(sqrt(320)*3) = int(53.67)
    assert pad_amount(2, 2) == (3, 3)


def test_network_input_size_follows_the_keep_aspect_rule_ties_included():
    from zoe_lightning.inference import network_input_size
    from zoe_lightning.models.zoedepth import Prep

    model = SimpleNamespace(prep=Prep([384, 768], True, [0.5] * 3, [0.5] * 3))
    assert network_input_size(model, 480, 640) == (384, 512)  # scales 0.8 / 1.2 tie: fit the height
    assert network_input_size(model, 768, 1024) == (576, 768)  # 0.75 is closer to 1 than 0.5
    model.prep.keep_aspect = False
    assert network_input_size(model, 480, 640) == (384, 768)


def test_padding_and_flip_are_undone_exactly():
    """An identity-like model: padding is cropped away, flip TTA of an equivariant model changes nothing."""
    from zoe_lightning.inference import predict_images

    img = torch.rand(3, 20, 30)
    for pad in (False, True):
        for flip in (False, True):
            (out,) = predict_images(FirstChannel(), [img], flip=flip, pad=pad)
            assert out.shape == (20, 30)
            torch.testing.assert_close(out, 1.0 + 5.0 * img[0], rtol=1e-6, atol=1e-6)


def test_mixed_size_batch_equals_one_by_one():
    from zoe_lightning import build_model
    from zoe_lightning.inference import predict_images

    from ..conftest import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config("model.keep_aspect_ratio=true", *SMALL)).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g) for h, w in ((40, 60), (70, 50), (41, 62))]
    together = predict_images(model, images, flip=False, pad=True)
    for img, out in zip(images, together):
        (alone,) = predict_images(model, [img], flip=False, pad=True)
        assert out.shape == img.shape[1:]
        torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-5)


def test_png16_npy_and_color_files(tmp_path):
    from zoe_lightning.evaluation.predict import write_outputs

    depth = np.array([[0.5, 1.0 / 256 * 10.4], [255.99, 300.0]], dtype=np.float32)  # 300 m saturates
    image = torch.rand(3, 2, 2)
    files = write_outputs(torch.from_numpy(depth), image, tmp_path, "x", ["png16", "npy", "color"])
    assert sorted(p.name for p in files) == ["x_color.png", "x_depth.npy", "x_depth.png"]
    png = np.asarray(Image.open(tmp_path / "x_depth.png"))
    assert png.dtype == np.uint16
    assert png.tolist() == [[128, 10], [65533, 65535]]  # round(d * 256), clipped to 16 bits
    assert np.array_equal(np.load(tmp_path / "x_depth.npy"), depth)
    color = np.asarray(Image.open(tmp_path / "x_color.png"))
    assert color.shape == (2, 2, 3) and color.dtype == np.uint8


def test_point_cloud_back_projection_by_hand(tmp_path):
    from zoe_lightning.evaluation.pointcloud import default_intrinsics, read_ply
    from zoe_lightning.evaluation.predict import write_outputs

    depth = np.full((4, 6), 2.0, dtype=np.float32)
    depth[3, 5] = 8.0
    depth[0, 0] = 0.0  # no point for an invalid pixel
    image = torch.zeros(3, 4, 6)
    image[:, 3, 5] = torch.tensor([1.0, 0.5, 0.0])
    write_outputs(depth, image, tmp_path, "scene", ["ply"], intrinsics=(4.0, 5.0, 2.5, 1.5))
    header, verts = read_ply(tmp_path / "scene.ply")
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 23"]
    assert len(verts) == 23
    # pixel (u=5, v=3), z = 8: x = (5 - 2.5) * 8 / 4 = 5, y = (3 - 1.5) * 8 / 5 = 2.4
    hit = verts[np.isclose(verts["z"], 8.0)]
    assert len(hit) == 1
    assert (float(hit["x"][0]), float(hit["y"][0])) == pytest.approx((5.0, 2.4))
    assert (int(hit["red"][0]), int(hit["green"][0]), int(hit["blue"][0])) == (255, 128, 0)
    # the stated default: 55 degrees horizontal field of view, principal point at the centre
    fx, fy, cx, cy = default_intrinsics(480, 640)
    assert fx == fy == pytest.approx(320 / math.tan(math.radians(27.5)))
    assert (cx, cy) == (320.0, 240.0)
    assert default_intrinsics(10, 20, fov_deg=90)[0] == pytest.approx(10.0)


def test_predict_cli_files_and_skips_unreadable(tiny_ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main
    from zoe_lightning.weights import load_model
    from zoe_lightning.inference import predict_images

    src = tmp_path / "in"
    src.mkdir()
    a = _write_image(src / "a.png", 30, 40, 0)
    _write_image(src / "b.png", 50, 36, 1)
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    rc = main(["predict", "--ckpt", str(tiny_ckpt), "--input", str(src), "--output", str(out),
               "--save", "png16,npy,color,ply", "--intrinsics", "40,40,20,15", "--batch-size", "3"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "2 image(s)" in captured.out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.ply", "a_color.png", "a_depth.npy", "a_depth.png", "b.ply", "b_color.png", "b_depth.npy",
                     "b_depth.png"]
    depth = np.load(out / "a_depth.npy")
    assert depth.shape == (30, 40) and depth.dtype == np.float32
    png = np.asarray(Image.open(out / "a_depth.png")).astype(np.int64)
    assert np.array_equal(png, np.round(depth.astype(np.float64) * 256).astype(np.int64))
    # the CLI's defaults (pad + flip TTA + bicubic) agree with the library call on the same image
    model = load_model(str(tiny_ckpt))
    (ref,) = predict_images(model, [torch.from_numpy(a).permute(2, 0, 1).float() / 255.0])
    np.testing.assert_allclose(depth, ref.numpy(), rtol=1e-5, atol=1e-5)
    from zoe_lightning.evaluation.pointcloud import read_ply

    header, verts = read_ply(out / "a.ply")
    assert len(verts) == 30 * 40
    row, col = 7, 33
    z = depth[row, col]
    hit = verts[row * 40 + col]  # vertices are written row-major
    assert (hit["x"], hit["y"], hit["z"]) == pytest.approx(((col - 20) * z / 40, (row - 15) * z / 40, z), rel=1e-6)


def test_predict_cli_all_unreadable_is_an_error(tiny_ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main

    bad = tmp_path / "x.jpg"
    bad.write_text("nope")
    assert main(["predict", "--ckpt", str(tiny_ckpt), "--input", str(bad), "--output", str(tmp_path / "o")]) == 2
    assert "could be read" in capsys.readouterr().err
    assert main(["predict", "--ckpt", str(tiny_ckpt), "--input", str(bad), "--output", str(tmp_path / "o"),
                 "--save", "png16,exr"]) == 2


def _cmap_bytes(name, x):
    import matplotlib

    return np.round(np.asarray(matplotlib.colormaps[name](x))[:3] * 255).astype(np.uint8)


def test_range_option_is_validated_in_one_line():
    from zoe_lightning.errors import UserError
    from zoe_lightning.evaluation.predict import parse_range

    assert parse_range("0,10") == (0.0, 10.0)
    assert parse_range(" 0.5 , 80 ") == (0.5, 80.0)
    for bad in ("10,0", "5,5", "-1,3", "a,b", "10", "0,10,20", "0,inf", "nan,1"):
        with pytest.raises(UserError, match=r"--range .*LO,HI") as err:
            parse_range(bad)
        assert "\n" not in str(err.value)


def test_fixed_range_clamps_and_default_is_per_image(tmp_path):
    from zoe_lightning.evaluation.predict import color_range, write_outputs

    depth = np.array([[2.0, 5.0], [12.0, -1.0]], dtype=np.float32)
    image = torch.zeros(3, 2, 2)
    lo, hi, how = color_range(depth, (0.0, 10.0))
    assert (lo, hi) == (0.0, 10.0) and "--range" in how
    write_outputs(depth, image, tmp_path, "fixed", ["color"], vmin=lo, vmax=hi)
    rgb = np.asarray(Image.open(tmp_path / "fixed_color.png"))
    np.testing.assert_array_equal(rgb[0, 0], _cmap_bytes("magma_r", 0.2))
    np.testing.assert_array_equal(rgb[0, 1], _cmap_bytes("magma_r", 0.5))
    np.testing.assert_array_equal(rgb[1, 0], _cmap_bytes("magma_r", 1.0))  # 12 m clamped to 10 m
    np.testing.assert_array_equal(rgb[1, 1], _cmap_bytes("magma_r", 0.0))  # -1 m clamped to 0 m
    # default: the image's own min (-1) and max (12)
    assert color_range(depth)[:2] == (-1.0, 12.0)
    write_outputs(depth, image, tmp_path, "auto", ["color"])
    rgb = np.asarray(Image.open(tmp_path / "auto_color.png"))
    np.testing.assert_array_equal(rgb[1, 0], _cmap_bytes("magma_r", 1.0))
    np.testing.assert_array_equal(rgb[0, 0], _cmap_bytes("magma_r", 3 / 13))


def test_colorbar_is_appended_below_the_depth_map(tmp_path):
    from zoe_lightning.evaluation.predict import write_outputs

    depth = np.linspace(1, 9, 40 * 300, dtype=np.float32).reshape(40, 300)
    write_outputs(depth, torch.zeros(3, 40, 300), tmp_path, "plain", ["color"], vmin=0.0, vmax=10.0)
    write_outputs(depth, torch.zeros(3, 40, 300), tmp_path, "bar", ["color"], vmin=0.0, vmax=10.0, colorbar=True)
    plain = np.asarray(Image.open(tmp_path / "plain_color.png"))
    bar = np.asarray(Image.open(tmp_path / "bar_color.png"))
    assert plain.shape == (40, 300, 3) and bar.shape[1] == 300 and bar.shape[0] > 40 + 20
    np.testing.assert_array_equal(bar[:40], plain)  # the depth map itself is unchanged
    strip = bar[40:].astype(int)
    for x in (0.0, 1.0):  # both ends of the palette appear in the bar
        assert (np.abs(strip - _cmap_bytes("magma_r", x).astype(int)).sum(axis=2) <= 6).any()
    assert (strip.min(axis=2) < 60).sum() > 20  # tick labels / caption text


def test_predict_cli_prints_the_range_of_each_image(tiny_ckpt, tmp_path, capsys):
    from zoe_lightning.cli import main

    src = tmp_path / "in"
    src.mkdir()
    _write_image(src / "a.png", 24, 32, 0)
    _write_image(src / "b.png", 24, 32, 1)
    out = tmp_path / "out"
    assert main(["predict", "--ckpt", str(tiny_ckpt), "--input", str(src), "--output", str(out), "--save", "color,npy",
                 "--range", "0,10", "--colorbar"]) == 0
    text = capsys.readouterr().out
    for name in ("a.png", "b.png"):
        line = next(ln for ln in text.splitlines() if name in ln and "colour range" in ln)
        assert "0-10 m (fixed, --range)" in line
    assert np.asarray(Image.open(out / "a_color.png")).shape[0] > 24  # with its colour bar
    out2 = tmp_path / "out2"
    assert main(["predict", "--ckpt", str(tiny_ckpt), "--input", str(src / "a.png"), "--output", str(out2)]) == 0
    text = capsys.readouterr().out
    depth = np.load(out / "a_depth.npy")
    assert f"colour range {depth.min():.3g}-{depth.max():.3g} m (this image's min-max)" in text
    assert np.asarray(Image.open(out2 / "a_color.png")).shape == (24, 32, 3)  # no colour bar by default
    assert main(["predict", "--ckpt", str(tiny_ckpt), "--input", str(src), "--output", str(out2),
                 "--range", "10,0"]) == 2
    assert "--range 10,0" in capsys.readouterr().err
