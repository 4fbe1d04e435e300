"""Experiment loading: merge order, validation errors naming the key, CLI behaviour."""

import subprocess
import sys
from pathlib import Path

import pytest

from zoe_lightning import ConfigError, cli, load_config
from zoe_lightning.config import check_init, list_experiments

REPO = Path(__file__).resolve().parents[2]


def test_merge_order_schema_ancestors_experiment_overrides(tmp_path):
    (tmp_path / "grandparent.yaml").write_text("seed: 1\noptim: {lr: 0.5}\nmodel: {features: 64}\n")
    (tmp_path / "parent.yaml").write_text("extends: grandparent\nseed: 2\noptim: {weight_decay: 0.3}\n")
    (tmp_path / "child.yaml").write_text("extends: parent\noptim: {lr: 0.25}\n")
    cfg = load_config("child", ["seed=7"], root=tmp_path)
    assert cfg.seed == 7  # command line wins
    assert cfg.optim.lr == 0.25  # child over grandparent
    assert cfg.optim.weight_decay == 0.3  # parent over schema default
    assert cfg.model.features == 64  # grandparent over schema default
    assert cfg.optim.pct_start == 0.7  # untouched schema default
    assert cfg.name == "child"


def test_base_is_the_schema_and_no_file_restates_it(tmp_path):
    """Defaults live in one place: ``base`` resolves to the dataclass defaults, ``extends: base``
    adds nothing, and a base.yaml in an experiments folder is refused instead of silently read."""
    from zoe_lightning.config import RunConfig

    assert not (REPO / "experiments" / "base.yaml").exists()
    assert "base" not in list_experiments()
    cfg = load_config("base")
    defaults = RunConfig()
    assert cfg.optim.lr == defaults.optim.lr == 1.61e-4 and cfg.model.head.n_attractors == [16, 8, 4, 1]
    assert cfg.model.bins[0].name == "nyu" and cfg.model.init == "auto" and cfg.name == "base"
    (tmp_path / "child.yaml").write_text("extends: base\nseed: 5\n")
    child = load_config("child", root=tmp_path)
    assert child.seed == 5 and child.optim == cfg.optim and child.model == cfg.model
    (tmp_path / "base.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"base.yaml: defaults live in the schema"):
        load_config("child", root=tmp_path)


def test_extends_does_not_inherit_the_parents_group_tags_and_notes(tmp_path):
    (tmp_path / "parent.yaml").write_text("group: pg\ntags: [synthetic, p]\nnotes: parent's\nseed: 2\n")
    (tmp_path / "child.yaml").write_text("extends: parent\noptim: {lr: 0.25}\n")
    (tmp_path / "own.yaml").write_text("extends: child\ngroup: og\ntags: [mine]\n")
    child = load_config("child", root=tmp_path)
    assert child.seed == 2 and child.optim.lr == 0.25  # everything else is inherited
    assert (child.group, list(child.tags), child.notes) == (None, [], "")
    own = load_config("own", root=tmp_path)
    assert (own.group, list(own.tags), own.notes, own.seed) == ("og", ["mine"], "", 2)
    parent = load_config("parent", root=tmp_path)  # a file's own labels stay
    assert (parent.group, list(parent.tags), parent.notes) == ("pg", ["synthetic", "p"], "parent's")
    assert load_config("child", ["group=cli", "tags=[x]"], root=tmp_path).group == "cli"


def test_shipped_experiments_that_extend_name_their_own_labels():
    own = load_config("folder_quickstart", ["data.root=/data/x"])
    assert own.group == "folder_quickstart" and "synthetic" not in own.tags
    nk = load_config("quickstart_nk")
    assert nk.group == "quickstart" and list(nk.tags) == ["quickstart", "synthetic", "nk"]
    assert load_config("zoed_m12_k").group == "official" and load_config("naive_head").group == "table5_heads"


def test_data_root_is_given_exactly_when_the_experiment_reads_it(tmp_path):
    cfg = load_config("folder_quickstart", ["data.root=/data/my_rgbd"])
    assert [d.options.root for d in [*cfg.data.train, *cfg.data.val]] == ["/data/my_rgbd"] * 2
    assert cfg.data.val[0].options.depth_divisor == cfg.data.train[0].options.depth_divisor == 1000
    unset = load_config("folder_quickstart")  # printing the configuration needs no folder; training does
    with pytest.raises(ConfigError, match=r"folder_quickstart.*pass data.root=") as info:
        check_init(unset)
    assert "\n" not in str(info.value)
    check_init(cfg)
    check_init(load_config("folder_quickstart", ["data.source=synthetic"]))  # the folder is not read
    with pytest.raises(ConfigError, match=r"data.root=/x is set but experiment 'quickstart' does not read it"):
        load_config("quickstart", ["data.root=/x"])


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
    with pytest.raises(ConfigError, match="'model.router.type'.*Choices: labeled, trained, auto"):
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


# Every Literal field of the schema with its choices, written out independently of the code.
LITERALS = {
    "stage": ["metric", "relative"],
    "model.readout": ["project", "ignore", "add"],
    "model.pos_embed_resize": ["offset", "size", "timm"],
    "model.init": ["auto", "core", "backbone", "scratch"],
    "model.core_checkpoint_part": ["all", "encoder"],
    "model.head.bin_centers_type": ["softplus", "normed", "hybrid1", "hybrid2"],
    "model.head.attractor_type": ["inv", "exp"],
    "model.head.attractor_aggregation": ["mean", "sum"],
    "model.router.train_route": ["label", "predicted"],
    "data.source": ["real", "synthetic"],
    "data.resize": ["squash", "keep_aspect", "pad", "none"],
    "data.depth_interpolation": ["auto", "nearest", "masked"],
    "data.batching": ["auto", "mixed", "per_dataset"],
    "loss.ssi_alignment": ["lstsq", "trimmed"],
    "loss.silog_form": ["zoedepth", "da2"],
    "optim.schedule": ["onecycle", "poly"],
    "optim.adamw": ["fused", "foreach", "loop"],
    "logger.mode": ["online", "offline", "disabled"],
    "logger.job_type": ["train", "sweep"],
}


def _literal_keys(cls, prefix=""):
    import dataclasses
    import typing

    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], prefix + f.name
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal or any(typing.get_origin(a) is typing.Literal for a in args):
            out[key] = hint
        elif dataclasses.is_dataclass(hint):
            out.update(_literal_keys(hint, key + "."))
    return out


def test_string_choices_are_literals_of_the_schema():
    from zoe_lightning.config import RunConfig

    keys = set(_literal_keys(RunConfig))
    # model.decoder=depth_anything also needs a DINOv2 backbone (tests/models/test_depth_anything.py)
    assert set(LITERALS) <= keys and keys - set(LITERALS) == {"trainer.precision", "model.decoder"}


@pytest.mark.parametrize("key", sorted(LITERALS))
def test_every_choice_is_validated_at_load_time_in_one_line(key):
    from omegaconf import OmegaConf

    for good in LITERALS[key]:
        assert OmegaConf.select(load_config("base", [f"{key}={good}"]), key) == good
    with pytest.raises(ConfigError) as err:
        load_config("base", [f"{key}=bogus_value"])
    msg = str(err.value)
    assert "\n" not in msg and f"'{key}'" in msg and "'bogus_value'" in msg
    assert f"Choices: {', '.join(LITERALS[key])}." in msg


def test_choice_errors_suggest_and_optional_choices_accept_null():
    with pytest.raises(ConfigError, match=r"invalid value 'softplu' for 'model.head.bin_centers_type'\. "
                                          r"Did you mean: softplus\?"):
        load_config("base", ["model.head.bin_centers_type=softplu"])
    assert load_config("base", ["logger.mode=null"]).logger.mode is None
    assert load_config("base", ["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"
    assert load_config("base", ["trainer.precision=16"]).trainer.precision == "16"
    with pytest.raises(ConfigError, match="'trainer.precision'.*32-true"):
        load_config("base", ["trainer.precision=32-bit"])


def test_choices_in_experiment_files_are_checked(tmp_path):
    (tmp_path / "bad.yaml").write_text("loss: {ssi_alignment: median}\n")
    with pytest.raises(ConfigError, match="'loss.ssi_alignment'"):
        load_config("bad", root=tmp_path)


def test_empty_experiment_folder_is_an_error(tmp_path, monkeypatch):
    from zoe_lightning.config import experiments_dir

    monkeypatch.setenv("ZOE_EXPERIMENTS", str(tmp_path))
    assert experiments_dir() == tmp_path
    with pytest.raises(ConfigError, match=f"no experiment files .* in {tmp_path}"):
        list_experiments()
    with pytest.raises(ConfigError, match=f"unknown experiment 'quickstart' \\(looked in {tmp_path}\\).*none"):
        load_config("quickstart")
    (tmp_path / "mine.yaml").write_text("seed: 3\n")
    assert list_experiments() == ["mine"] and load_config("mine").seed == 3  # ZOE_EXPERIMENTS overrides


def test_cli_experiments_lists_and_fails_loudly_when_empty(tmp_path, monkeypatch, capsys):
    assert cli.main(["experiments"]) == 0
    assert capsys.readouterr().out.split() == list_experiments()
    monkeypatch.setenv("ZOE_EXPERIMENTS", str(tmp_path))
    assert cli.main(["experiments"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip().count("\n") == 0 and str(tmp_path) in out.err
