"""Split files: parsing, errors naming file and line, and the shipped lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data_modules.datasets.layouts import parse_split_file
from data_modules.datasets.nyu import NYUDataset
from zoe_lightning.errors import UserError

from ..fixtures.nyu import make_nyu

SPLITS = Path(__file__).resolve().parents[2] / "data_modules" / "splits"


def test_split_parser_skips_blank_and_comment_lines(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("# header\n\na.jpg b.png 1.5\n  \nc.jpg d.png\n")
    rows = parse_split_file(f, min_columns=2, max_columns=3, float_columns=(2,))
    assert [r.columns for r in rows] == [("a.jpg", "b.png", "1.5"), ("c.jpg", "d.png")]
    assert [r.line for r in rows] == [3, 5]


@pytest.mark.parametrize("text, line, what", [
    ("a.jpg b.png 1\nonly_one_column\n", 2, "expected 2..3"),
    ("a.jpg b.png 1\n\nx y z w\n", 3, "found 4"),
    ("a.jpg b.png focal\n", 1, "column 3 ('focal') is not a number"),
])
def test_split_parser_malformed_line_names_file_and_line(tmp_path, text, line, what):
    f = tmp_path / "bad_split.txt"
    f.write_text(text)
    with pytest.raises(UserError) as err:
        parse_split_file(f, min_columns=2, max_columns=3, float_columns=(2,))
    msg = str(err.value)
    assert f"{f}:{line}:" in msg and what in msg and "\n" not in msg


def test_reader_reports_malformed_line_of_its_split_file(tmp_path):
    fake = make_nyu(tmp_path, "train", n=2)
    with open(fake.split_file, "a") as fh:
        fh.write("/kitchen_0000/rgb_00000.jpg\n")  # line 3: one column
    with pytest.raises(UserError, match=re.escape(f"{fake.split_file}:3:")):
        NYUDataset("train", root=str(tmp_path), split_file=str(fake.split_file))


def test_shipped_split_lists_parse_with_documented_counts():
    counts = {name: len(parse_split_file(SPLITS / name, 2, 5, (2,))) for name in (
        "nyudepthv2_train_files_with_gt.txt", "nyudepthv2_test_files_with_gt.txt",
        "kitti_eigen_train_files_with_gt.txt", "kitti_eigen_test_files_with_gt.txt")}
    assert counts == {"nyudepthv2_train_files_with_gt.txt": 24231, "nyudepthv2_test_files_with_gt.txt": 654,
                      "kitti_eigen_train_files_with_gt.txt": 23158, "kitti_eigen_test_files_with_gt.txt": 697}
    rows = parse_split_file(SPLITS / "kitti_eigen_test_files_with_gt.txt", 2, 5)
    assert sum(r.columns[1] == "None" for r in rows) == 45  # 697 - 45 = 652 evaluated (facts §5.1)
