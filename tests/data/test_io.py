"""The decoders (``data_modules/datasets/io.py``): exact values, orientation, endianness, and one clear
line naming file and sample for truncated, corrupt or unsupported files."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data_modules.datasets.io import read_depth, read_exr, read_hdf5, read_image, read_pfm, write_pfm
from zoe_lightning.errors import UserError

from ..fixtures.common import coord_image, truncate, write_exr_file, write_pfm_file, write_png16, write_rgb


def test_read_image_png_exact_and_grey_expanded(tmp_path):
    rgb = coord_image(5, 7, seed=9)
    assert np.array_equal(read_image(write_rgb(tmp_path / "a.png", rgb)), rgb)
    grey = (np.arange(35).reshape(5, 7) * 7).astype(np.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))


@pytest.mark.parametrize("name", ["img.jpg", "img.png"])
def test_truncated_image_error_names_file_and_index(tmp_path, name):
    path = write_rgb(tmp_path / name, coord_image(40, 40))
    truncate(path, 0.6)
    with pytest.raises(UserError) as err:
        read_image(path, index=7)
    assert str(path) in str(err.value) and "sample 7" in str(err.value) and "truncated" in str(err.value)


def test_complete_jpeg_with_trailing_bytes_is_accepted(tmp_path):
    rgb = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    path = write_rgb(tmp_path / "a.jpg", rgb)
    with open(path, "ab") as fh:
        fh.write(b"APPENDED-METADATA" * 20)
    assert np.abs(read_image(path).astype(int) - rgb).max() <= 3


def test_truncated_depth_png_error_names_file_and_index(tmp_path):
    path = write_png16(tmp_path / "d.png", (np.arange(1600) * 37 % 65536).reshape(40, 40))
    truncate(path, 0.6)
    with pytest.raises(UserError, match=r"corrupt or truncated depth image .*d\.png \(sample 5\)"):
        read_depth(path, 256.0, index=5)


def test_garbage_image_error_names_file_and_index(tmp_path):
    path = tmp_path / "junk.jpg"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(UserError, match=r"corrupt.*junk\.jpg \(sample 3\)"):
        read_image(path, index=3)


def test_png16_divisor_values(tmp_path):
    path = write_png16(tmp_path / "d.png", np.array([[1234, 0], [65535, 17]]))
    out = read_depth(path, 1000.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[1.234, 0.0], [65.535, 0.017]], rtol=1e-6)


def test_pfm_reader_orientation_and_endianness(tmp_path):
    rows = [[1.0, 2.0, 3.0], [4.0, 5.5, -6.0]]  # top row first
    for little in (True, False):
        path = write_pfm_file(tmp_path / f"d{little}.pfm", rows, little_endian=little)
        assert np.array_equal(read_pfm(path), np.array(rows, np.float32))
    back = tmp_path / "w.pfm"
    write_pfm(back, np.array(rows, np.float32))
    head = back.read_bytes()[:12]
    assert head.startswith(b"Pf\n3 2\n-1")
    # stored bottom row first: the first float after the header is 4.0
    body = back.read_bytes()[len(b"Pf\n3 2\n-1.0\n"):]
    assert np.frombuffer(body[:4], "<f4")[0] == 4.0


def test_truncated_pfm_is_reported(tmp_path):
    path = write_pfm_file(tmp_path / "t.pfm", [[1.0, 2.0], [3.0, 4.0]])
    truncate(path, 0.8)
    with pytest.raises(UserError, match=r"truncated PFM.*t\.pfm \(sample 2\)"):
        read_pfm(path, index=2)


def test_npy_npz_and_hdf5_depth(tmp_path):
    a = np.array([[0.5, 1.5], [2.5, np.nan]], np.float32)
    np.save(tmp_path / "d.npy", a[..., None])  # H×W×1 like DIODE
    np.testing.assert_array_equal(read_depth(tmp_path / "d.npy"), a)
    np.savez(tmp_path / "d.npz", depth=a, other=a * 2)
    np.testing.assert_array_equal(read_depth(tmp_path / "d.npz", key="other"), a * 2)
    with pytest.raises(UserError, match="set depth_key"):
        read_depth(tmp_path / "d.npz")
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as fh:
        fh.create_dataset("dataset", data=a * 4)
    np.testing.assert_array_equal(read_depth(tmp_path / "d.h5"), a * 4)
    with pytest.raises(UserError, match=r"no dataset 'depth'"):
        read_hdf5(tmp_path / "d.h5", key="depth")


def test_hdf5_without_h5py_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("no h5py")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(UserError, match=re.escape("pip install 'zoe-lightning[formats]'")):
        read_hdf5(tmp_path / "x.h5")


def test_exr_depth_decoded_and_corrupt_exr_reported(tmp_path):

    a = np.array([[1.25, 2.5, 0.0], [3.75, 80.0, 1e-3]], np.float32)
    path = write_exr_file(tmp_path / "d.exr", a)
    np.testing.assert_array_equal(read_depth(path), a)
    bad = tmp_path / "bad.exr"
    bad.write_bytes(b"not an exr file at all")
    with pytest.raises(UserError, match=r"cannot decode EXR .*bad\.exr \(sample 4\)"):
        read_exr(bad, index=4)


def test_unknown_depth_extension(tmp_path):
    (tmp_path / "d.xyz").write_bytes(b"1")
    with pytest.raises(UserError, match=r"unsupported depth file type '\.xyz'"):
        read_depth(tmp_path / "d.xyz")
