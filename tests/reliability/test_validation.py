"""Issue #17, input validation: config ranges and list shapes, empty experiment files, loader
worker errors, a training set smaller than one batch and ``model.backbone_weights``. Every user
error is one short line naming the culprit, exit code 2 from the CLI, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tests.conftest import TINY
from tests.fixtures.folder import make_folder
from zoe_lightning import cli
from zoe_lightning.config import ConfigError, load_config
from zoe_lightning.errors import UserError, worker_message

SMALL = TINY + ["model.features=16", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
                "model.head.projector_mlp_dim=16", "logger.wandb=false", "callbacks.rich=false"]


def _one_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, text
    assert "Traceback" not in text
    return lines[0]


# ------------------------------------------------------------------ ranges and shapes in the schema
BAD = [
    ("data.batch_size=-1", "data.batch_size", ">= 1"),
    ("data.batch_size=0", "data.batch_size", ">= 1"),
    ("data.val_batch_size=0", "data.val_batch_size", ">= 1"),
    ("data.num_workers=-2", "data.num_workers", ">= 0"),
    ("data.epoch_length=0", "data.epoch_length", ">= 1"),
    ("model.bins.0.n_bins=0", "model.bins.0.n_bins", ">= 2"),
    ("model.bins.0.n_bins=1", "model.bins.0.n_bins", ">= 2"),
    ("model.bins.0.min_depth=0", "model.bins.0.min_depth", "> 0"),
    ("model.bins.0.max_depth=0.0001", "model.bins.0.max_depth", "> model.bins.0.min_depth"),
    ("model.bins=[]", "model.bins", "at least 1"),
    ("optim.lr=-0.0001", "optim.lr", "> 0"),
    ("optim.lr=0", "optim.lr", "> 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay", ">= 0"),
    ("optim.pct_start=1.5", "optim.pct_start", "<= 1"),
    ("model.features=0", "model.features", ">= 1"),
    ("model.img_size=[64]", "model.img_size", "exactly 2"),
    ("model.img_size=[64,0]", "model.img_size.1", ">= 1"),
    ("data.image_size=[64]", "data.image_size", "exactly 2"),
    ("data.image_size=[64,-8]", "data.image_size.1", ">= 1"),
    ("data.random_crop=[32,32,3]", "data.random_crop", "exactly 2"),
    ("trainer.max_epochs=0", "trainer.max_epochs", ">= 1 or -1"),
    ("trainer.max_epochs=-5", "trainer.max_epochs", ">= 1 or -1"),
    ("trainer.max_steps=0", "trainer.max_steps", ">= 1 or -1"),
    ("model.head.n_attractors=[16,8,4]", "model.head.n_attractors", "exactly 4"),
    ("model.head.n_attractors=[16,0,4,1]", "model.head.n_attractors.1", ">= 1"),
    ("model.head.bin_embedding_dim=0", "model.head.bin_embedding_dim", ">= 1"),
    ("model.head.max_temp=0.01", "model.head.max_temp", "> model.head.min_temp"),
    ("model.router.dropout=1.5", "model.router.dropout", "< 1"),
    ("model.std=[0.5,0.5,0]", "model.std.2", "> 0"),
    ("data.train.0.weight=-1", "data.train.0.weight", ">= 0"),
    ("model.router.n_heads=3", "model.router.n_heads", "divide"),
]


@pytest.mark.parametrize("override, key, rule", BAD, ids=[b[0] for b in BAD])
def test_out_of_range_value_is_one_line_naming_key_value_and_rule(override, key, rule):
    extra = ["model.bins=[{name: nyu},{name: kitti, max_depth: 80}]"] if "router" in override else []
    with pytest.raises(ConfigError) as info:
        load_config("base", extra + [override])
    line = _one_line(str(info.value))
    assert f"'{key}'" in line and rule in line
    if not override.endswith("=[]"):
        assert override.partition("=")[2].strip("[]").split(",")[-1] in line  # the value


@pytest.mark.parametrize("override", ["trainer.max_epochs=-1", "data.num_workers=0", "data.image_size=null",
                                      "data.random_crop=[32,48]", "optim.weight_decay=0", "model.bins.0.n_bins=2"])
def test_edge_values_inside_the_ranges_are_accepted(override):
    load_config("base", [override])


def test_splitter_head_needs_a_multiple_of_split_factor_to_the_fourth():
    with pytest.raises(ConfigError, match=r"'model.bins.0.n_bins'.*split_factor\^4 \(16\)"):
        load_config("base", ["model.head.type=splitter", "model.bins.0.n_bins=24"])


def test_cli_reports_a_range_error_in_one_line_with_exit_2():
    proc = subprocess.run([sys.executable, "-m", "zoe_lightning", "config", "base", "data.batch_size=-1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "'data.batch_size'" in _one_line(proc.stderr) and "-1" in proc.stderr


# ------------------------------------------------------------------ experiment files
@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n", "{}\n"], ids=["empty", "comment", "list", "empty-mapping"])
def test_empty_or_non_mapping_experiment_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(path) in _one_line(str(info.value))
    assert path.read_text() == text  # untouched


def test_experiment_extending_an_empty_file_fails_naming_the_empty_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.yaml").write_text("")
    (tmp_path / "child.yaml").write_text("extends: mine\noptim:\n  lr: 1.0e-3\n")
    monkeypatch.setenv("ZOE_EXPERIMENTS", str(tmp_path))
    assert cli.main(["config", "child"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "mine.yaml") in _one_line(err)


# ------------------------------------------------------------------ loader workers
class _Reads(Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from data_modules.datasets.io import read_image

        return torch.from_numpy(read_image(str(self.paths[i]), index=i))


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_gives_the_same_one_line_error_with_or_without_workers(tmp_path, workers):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(UserError) as info:
        next(iter(DataLoader(_Reads([bad]), num_workers=workers)))
    line = _one_line(str(info.value))
    assert str(bad) in line and "sample 0" in line and "worker" not in line


def test_worker_message_unwraps_other_exception_types():
    class Missing(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise FileNotFoundError("file not found: /data/x.png (sample 0)")

    with pytest.raises(FileNotFoundError) as info:
        next(iter(DataLoader(Missing(), num_workers=1)))
    assert "Traceback" in str(info.value)  # torch's wrapping ...
    assert worker_message(str(info.value)) == "file not found: /data/x.png (sample 0)"  # ... undone for the CLI
    assert worker_message("plain message") == "plain message"


def _folder_cfg(root, *extra):
    entry = (f"{{name: folder, domain: nyu, options: {{root: {root}, image_glob: 'images/**/*.png', "
             "depth_glob: 'depth/**/*.npy', image_suffix: _rgb, depth_suffix: _depth}}")
    return load_config("base", SMALL + [f"data.train=[{entry}]", f"data.val=[{entry}]", "data.image_size=[32,48]",
                                        "data.augment=false", *extra])


def test_corrupt_image_through_the_datamodule_with_workers_is_one_line(tmp_path):
    from data_modules.datamodule import build_datamodule

    fake = make_folder(tmp_path, n=2)
    fake.images[0].write_bytes(b"\xff\xd8\xff" + b"junk" * 20)
    dm = build_datamodule(_folder_cfg(tmp_path, "data.batch_size=2", "data.num_workers=1"))
    dm.setup("fit")
    with pytest.raises(UserError) as info:
        next(iter(dm.train_dataloader()))
    assert str(fake.images[0]) in _one_line(str(info.value))


# ------------------------------------------------------------------ a training set smaller than one batch
@pytest.mark.parametrize("batching", ["mixed", "per_dataset"])
def test_training_set_smaller_than_one_batch_is_an_error(tmp_path, batching):
    from data_modules.datamodule import build_datamodule

    make_folder(tmp_path, n=3)
    dm = build_datamodule(_folder_cfg(tmp_path, "data.batch_size=4", "data.num_workers=0",
                                      f"data.batching={batching}"))
    dm.setup("fit")
    with pytest.raises(UserError) as info:
        dm.train_dataloader()
    line = _one_line(str(info.value))
    assert "data.batch_size=4" in line and "3 samples" in line


# ------------------------------------------------------------------ model.backbone_weights
def _module(*extra):
    from zoe_lightning.modules.metric import MetricDepthModule

    return MetricDepthModule(load_config("base", SMALL + list(extra)))


def _backbone_file(tmp_path, name="vit.pth", backbone="test_vit", drop_head=False, extra=None):
    from zoe_lightning.models import build_model
    from zoe_lightning.weights.io import write_checkpoint

    torch.manual_seed(7)
    cfg = load_config("base", SMALL + [f"model.backbone={backbone}"])
    state = build_model(cfg).core.pretrained.model.state_dict()
    state = {k: v.clone() for k, v in state.items() if not (drop_head and k.startswith("head."))}
    state.update(extra or {})
    path = tmp_path / name
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        write_checkpoint(state, path)
    return path, state


@pytest.mark.parametrize("name, drop_head, extra", [
    ("vit.pth", False, None), ("vit.safetensors", False, None), ("vit.pt", True, {"fc.weight": torch.zeros(3, 4)}),
])
def test_backbone_weights_are_loaded_into_the_backbone(tmp_path, name, drop_head, extra):
    path, state = _backbone_file(tmp_path, name, drop_head=drop_head, extra=extra)
    loaded = _module(f"model.backbone_weights={path}").model.core.pretrained.model.state_dict()
    random = _module().model.core.pretrained.model.state_dict()
    key = "blocks.0.attn.qkv.weight"
    assert not torch.equal(random[key], state[key])
    for k, v in state.items():
        if k in loaded:
            assert torch.equal(loaded[k], v), k


def test_missing_backbone_weights_file_is_one_line(tmp_path):
    with pytest.raises(UserError) as info:
        _module(f"model.backbone_weights={tmp_path / 'nonexistent.pth'}")
    line = _one_line(str(info.value))
    assert "model.backbone_weights" in line and "nonexistent.pth" in line


def test_backbone_weights_of_another_backbone_fail_naming_keys(tmp_path):
    path, _ = _backbone_file(tmp_path, "beit.pth", backbone="test_beit")
    with pytest.raises(UserError) as info:
        _module(f"model.backbone_weights={path}")
    line = _one_line(str(info.value))
    assert "model.backbone_weights" in line and "beit.pth" in line and "keys" in line


def test_backbone_weights_with_a_wrong_shape_fail_naming_the_tensor(tmp_path):
    path, _ = _backbone_file(tmp_path, extra={"cls_token": torch.zeros(1, 1, 3)})
    with pytest.raises(UserError, match=r"cls_token \(1, 1, 3\)") as info:
        _module(f"model.backbone_weights={path}")
    _one_line(str(info.value))


def test_cli_train_with_nonexistent_backbone_weights_exits_2_in_one_line(tmp_path, capsys):
    rc = cli.main(["train", "base", *SMALL, "model.backbone_weights=/nonexistent.pth", "data.num_workers=0",
                   f"output_dir={tmp_path}", "trainer.accelerator=cpu", "trainer.extra={fast_dev_run: 1}"])
    err = capsys.readouterr().err
    assert rc == 2 and "/nonexistent.pth" in _one_line(err)
