"""Experiment loading: merge order, validation errors naming the key, CLI behaviour."""

import subprocess
import sys
from pathlib import Path

import pytest

from zoe_lightning import ConfigError, cli, load_config
from zoe_lightning.config import list_experiments

REPO = Path(__file__).resolve().parents[2]


def test_merge_order_base_parent_experiment_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\noptim: {lr: 0.5}\nmodel: {features: 64}\n")
    (tmp_path / "parent.yaml").write_text("seed: 2\noptim: {weight_decay: 0.3}\n")
    (tmp_path / "child.yaml").write_text("extends: parent\noptim: {lr: 0.25}\n")
    cfg = load_config("child", ["seed=7"], root=tmp_path)
    assert cfg.seed == 7  # command line wins
    assert cfg.optim.lr == 0.25  # child over base
    assert cfg.optim.weight_decay == 0.3  # parent over schema default
    assert cfg.model.features == 64  # base over schema default
    assert cfg.optim.pct_start == 0.7  # untouched schema default
    assert cfg.name == "child"


def test_extends_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config("a", root=tmp_path)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.head.n_attractor=[1,2,3,4]", r"unknown key 'model.head.n_attractors?'.*n_attractors"),
        ("trainer.max_epoch=3", r"'trainer.max_epoch'.*max_epochs"),
        ("modle.backbone=x", r"'modle'.*model"),
        ("model.bins=[{name: a, n_bin: 3}]", r"'model.bins\[i\].n_bin'.*n_bins"),
    ],
)
def test_unknown_key_names_dotted_path_and_closest(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config("base", [override])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"wrong type for 'optim.lr'"):
        load_config("base", ["optim.lr=fast"])


def test_missing_required_value_names_key():
    with pytest.raises(ConfigError, match=r"missing required value for 'model.bins\[0\].name'"):
        load_config("base", ["model.bins=[{n_bins: 8}]"])


def test_unknown_experiment_suggests_closest():
    with pytest.raises(ConfigError, match="Did you mean: inverse_attractor_16841"):
        load_config("inverse_atractor_16841")


def test_invalid_choice_suggests_closest():
    with pytest.raises(ConfigError, match="model.head.type.*splitter"):
        load_config("base", ["model.head.type=splitt"])
    with pytest.raises(ConfigError, match="model.router.type"):
        load_config("base", ["model.router.type=learned"])


def test_unknown_key_in_experiment_file_names_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  head:\n    atractor_type: inv\n")
    with pytest.raises(ConfigError) as err:
        load_config("bad", root=tmp_path)
    assert "bad.yaml" in str(err.value) and "attractor_type" in str(err.value)


def test_every_shipped_experiment_loads():
    names = list_experiments()
    assert "inverse_attractor_16841" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_cli_config_prints_resolved_and_errors_are_one_line():
    ok = subprocess.run([sys.executable, "-m", "zoe_lightning", "config", "inverse_attractor_16841",
                         "model.backbone=test_vit"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "backbone: test_vit" in ok.stdout and "n_attractors:" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "zoe_lightning", "config", "base", "optim.lrr=1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "optim.lrr" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_overrides_after_options_join_the_overrides(monkeypatch):
    import zoe_lightning.train as train_mod

    seen = {}

    def fake_train(cfg, resume=None):
        seen["seed"], seen["lr"], seen["resume"] = cfg.seed, cfg.optim.lr, resume
        return {}

    monkeypatch.setattr(train_mod, "train", fake_train)
    assert cli.main(["train", "quickstart", "seed=5", "--resume", "x.ckpt", "optim.lr=0.125"]) == 0
    assert seen == {"seed": 5, "lr": 0.125, "resume": "x.ckpt"}
    with pytest.raises(SystemExit):
        cli.main(["train", "quickstart", "--resume", "x.ckpt", "--bogus"])
