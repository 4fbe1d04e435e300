"""Every experiment file loads, holds what its table row says, and trains one step on synthetic data.

The one-step runs use a tiny backbone and ``data.source=synthetic`` (every dataset entry replaced
by its synthetic counterpart) so that no experiment can rot unnoticed.
"""

import math

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from zoe_lightning import load_config
from zoe_lightning.config import OWN_LABELS, experiments_dir, list_experiments
from zoe_lightning.metric_keys import monitor_for

TABLE5 = ["naive_head", "splitter_2", "exponential_attractor_16841", "inverse_attractor_8888",
          "inverse_attractor_16_2_2_16", "inverse_attractor_14816", "inverse_attractor_16841"]
TABLE6 = ["router_labeled", "router_trained", "router_auto"]
MODELS = ["zoed_m12_n", "zoed_m12_k", "zoed_m12_nk", "relative_m12", "zoed_x_n", "zoed_x_k", "zoed_x_nk"]
M12 = ["hrwsi", "blendedmvs", "redweb", "diml_indoor", "movies_3d", "megadepth", "wsvd", "tartanair",
       "apolloscape", "irs", "kitti", "nyu"]

# CPU-sized: tiny ViT, small images, one training step and one validation batch (fast_dev_run).
ONE_STEP = [
    "model.backbone=test_vit", "model.img_size=[64,64]", "model.features=16", "data.source=synthetic",
    "data.image_size=[64,64]", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
    "model.head.projector_mlp_dim=16", "model.router.dim=16", "model.router.n_layers=1", "model.router.n_heads=2",
    "model.router.ffn_dim=16", "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=2",
    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.extra={fast_dev_run: 1}", "logger.wandb=false",
    "callbacks.rich=false", "callbacks.depth_panels_every=0", "callbacks.bin_centers=false",
    "callbacks.router_stats=false", "followup=null",
]


# Depth Anything experiments (model.decoder=depth_anything): a tiny DINOv2 at multiples of 14
DINOV2_STEP = ["model.backbone=test_dinov2", "model.img_size=[98,98]", "data.image_size=[98,98]"]


def test_every_row_of_the_issue_has_its_file():
    names = set(list_experiments())
    missing = [n for n in TABLE5 + TABLE6 + MODELS if n not in names]
    assert not missing, f"experiment files missing: {missing}"


def _item_defaults(key):
    """Schema defaults of one entry of the list at dotted ``key`` (e.g. ``model.bins``)."""
    import dataclasses
    import typing

    from zoe_lightning.config import RunConfig

    cls = RunConfig
    for part in key.split("."):
        cls = typing.get_type_hints(cls)[part]
    item = typing.get_args(cls)[0]
    return {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for f in dataclasses.fields(item)}


def restated(raw, parent, prefix=""):
    """Keys of an experiment file whose value its parent's resolved config already has (lists
    compare whole); entries of a list of sections are compared with the item's schema defaults."""
    found = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if path in ("extends", *OWN_LABELS):  # a run's own labels are not inherited: stating them is no restatement
            continue
        theirs = parent.get(key) if parent is not None else None
        if isinstance(value, DictConfig) and isinstance(theirs, DictConfig):
            found += restated(value, theirs, f"{path}.")
            continue
        mine = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
        if mine == (OmegaConf.to_container(theirs) if isinstance(theirs, (DictConfig, ListConfig)) else theirs):
            found.append(path)
        elif isinstance(mine, list) and mine and all(isinstance(v, dict) for v in mine):
            defaults = _item_defaults(path)
            found += [f"{path}[{i}].{k}" for i, entry in enumerate(mine) for k, v in entry.items()
                      if k in defaults and v == defaults[k]]
    return found


@pytest.mark.parametrize("name", list_experiments())
def test_experiment_restates_nothing_its_parent_has(name):
    raw = OmegaConf.load(experiments_dir() / f"{name}.yaml")
    parent = load_config(str(raw.get("extends") or "base"))
    assert restated(raw, parent) == [], f"{name}.yaml restates its parent's values"


def test_restatement_check_catches_restated_values(tmp_path):
    (tmp_path / "p.yaml").write_text("optim: {lr: 0.5}\n")
    raw = OmegaConf.create({"extends": "p", "optim": {"lr": 0.5, "weight_decay": 0.01, "pct_start": 0.5},
                            "model": {"bins": [{"name": "a", "n_bins": 64, "max_depth": 80.0}]},
                            "data": {"train": [{"name": "x", "weight": 1.0}], "batch_size": 16}})
    assert restated(raw, load_config("p", root=tmp_path)) == [
        "optim.lr", "optim.weight_decay", "model.bins[0].n_bins", "data.train[0].weight", "data.batch_size"]


def test_files_hold_only_deltas():
    """Rows of a table extend the row they differ from and do not restate the parent's recipe."""
    for name in TABLE5[:-1]:
        raw = OmegaConf.load(experiments_dir() / f"{name}.yaml")
        assert raw.extends == "inverse_attractor_16841", name
        assert set(raw.keys()) <= {"extends", "group", "tags", "model"} and set(raw.model.keys()) == {"head"}, name
    for name in ("router_labeled", "router_auto"):
        raw = OmegaConf.load(experiments_dir() / f"{name}.yaml")
        assert raw.extends == "router_trained", name
    assert OmegaConf.load(experiments_dir() / "inverse_attractor_16841.yaml").extends == "zoed_m12_n"
    assert OmegaConf.load(experiments_dir() / "router_trained.yaml").extends == "zoed_m12_nk"


# (experiment, head type, attractor type, attractor counts) -- paper Table 5
HEADS = [
    ("naive_head", "naive", None, None),
    ("splitter_2", "splitter", None, None),
    ("exponential_attractor_16841", "metric_bins", "exp", [16, 8, 4, 1]),
    ("inverse_attractor_8888", "metric_bins", "inv", [8, 8, 8, 8]),
    ("inverse_attractor_16_2_2_16", "metric_bins", "inv", [16, 2, 2, 16]),
    ("inverse_attractor_14816", "metric_bins", "inv", [1, 4, 8, 16]),
    ("inverse_attractor_16841", "metric_bins", "inv", [16, 8, 4, 1]),
]


@pytest.mark.parametrize("name,head,kind,counts", HEADS)
def test_table5_rows(name, head, kind, counts):
    cfg = load_config(name)
    reference = load_config("zoed_m12_n")
    assert cfg.model.head.type == head
    if kind is not None:
        assert cfg.model.head.attractor_type == kind
        assert list(cfg.model.head.n_attractors) == counts
    if name == "splitter_2":
        assert cfg.model.head.split_factor == 2
        assert cfg.model.bins[0].n_bins % 2 ** 4 == 0  # 4 splits of a whole number of seed bins
    # everything but the head is ZoeD-M12-N on NYU
    assert cfg.group == "table5_heads" and name in cfg.tags
    for key in ("data", "optim", "loss", "trainer"):
        assert cfg[key] == reference[key], key
    assert [b.name for b in cfg.model.bins] == ["nyu"] and cfg.model.backbone == reference.model.backbone


@pytest.mark.parametrize("name,router", [("router_labeled", "labeled"), ("router_trained", "trained"),
                                         ("router_auto", "auto")])
def test_table6_rows(name, router):
    cfg = load_config(name)
    nk = load_config("zoed_m12_nk")
    assert cfg.model.router.type == router
    assert [b.name for b in cfg.model.bins] == ["nyu", "kitti"]
    assert [b.max_depth for b in cfg.model.bins] == [10.0, 80.0]
    assert sorted(d.domain for d in cfg.data.val) == ["kitti", "nyu"]  # Table 6 reports both
    assert cfg.group == "table6_routers" and name in cfg.tags
    assert cfg.data.train == nk.data.train and cfg.optim == nk.optim and cfg.model.head == nk.model.head
    assert cfg.loss.w_domain == (0.0 if router == "auto" else nk.loss.w_domain)


def test_relative_m12_is_the_twelve_dataset_mixture():
    cfg = load_config("relative_m12")
    assert cfg.stage == "relative"
    assert sorted(d.name for d in cfg.data.train) == sorted(M12)
    assert len({d.weight for d in cfg.data.train}) == 1  # sampled equally (MiDaS)
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.lr / cfg.optim.encoder_lr_factor == pytest.approx(1e-5)
    assert cfg.data.batch_size == 16 and cfg.loss.ssi_alignment == "trimmed" and cfg.loss.ssi_trim == 0.2


@pytest.mark.parametrize("x,m12", [("zoed_x_n", "zoed_m12_n"), ("zoed_x_k", "zoed_m12_k"),
                                   ("zoed_x_nk", "zoed_m12_nk")])
def test_x_variants_differ_only_by_the_missing_relative_pretraining(x, m12):
    a, b = load_config(x), load_config(m12)
    assert a.model.core_checkpoint is None
    assert a.model.bins == b.model.bins and a.model.head == b.model.head and a.data == b.data
    if x == "zoed_x_nk":  # the decoder is slowed down only when it is pretrained (facts §3.5)
        assert b.optim.decoder_lr_factor == 10.0 and a.optim.decoder_lr_factor == 1.0
    # what each promises is part of the resolved config: an M12 core, or ImageNet backbone weights
    assert (a.model.init, b.model.init) == ("backbone", "core")
    assert a.model != b.model


# Experiments built on an M12 core: the released models and the Table 5 / 6 rows (all extend them).
NEEDS_CORE = ["zoed_m12_n", "zoed_m12_k", "zoed_m12_nk"] + TABLE5 + TABLE6
NEEDS_BACKBONE = ["zoed_x_n", "zoed_x_k", "zoed_x_nk"]
# Depth Anything metric experiments fine-tune a relative Depth Anything core (docs/depth-anything.md)
DA_NEEDS_CORE = ["da1_metric_indoor", "da1_metric_outdoor", "dinov2_da2_head", "dinov2_metric_bins",
                 "dinov2_naive_head"] + [f"da2_metric_{d}_vit{s}" for d in ("hypersim", "vkitti") for s in "sbl"]


def test_which_experiments_promise_which_starting_weights():
    for name in list_experiments():
        expected = ("core" if name in NEEDS_CORE + DA_NEEDS_CORE else "backbone" if name in NEEDS_BACKBONE
                    else "auto")
        assert load_config(name).model.init == expected, name


@pytest.mark.parametrize("name", NEEDS_CORE)
def test_training_an_m12_experiment_without_a_core_stops_in_one_line(name, tmp_path):
    from zoe_lightning import ConfigError
    from zoe_lightning.config import check_init
    from zoe_lightning.train import train

    cfg = load_config(name, [f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as err:
        train(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "model.core_checkpoint=PATH" in msg and "model.init=scratch" in msg
    assert not any(tmp_path.iterdir())  # stopped before anything was written
    check_init(load_config(name, ["model.core_checkpoint=some/stage1.ckpt"]))
    check_init(load_config(name, ["model.init=scratch"]))
    with pytest.raises(ConfigError, match="model.init=scratch .* model.core_checkpoint is set"):
        check_init(load_config(name, ["model.init=scratch", "model.core_checkpoint=some/stage1.ckpt"]))


@pytest.mark.parametrize("name", NEEDS_BACKBONE)
def test_x_experiments_need_backbone_weights_and_no_core(name):
    from zoe_lightning import ConfigError
    from zoe_lightning.config import check_init

    with pytest.raises(ConfigError, match=r"model.backbone_weights=PATH.*model.init=scratch"):
        check_init(load_config(name))
    with pytest.raises(ConfigError, match=r"model.core_checkpoint is set.*model.init=core"):
        check_init(load_config(name, ["model.backbone_weights=w.pth", "model.core_checkpoint=c.ckpt"]))
    check_init(load_config(name, ["model.backbone_weights=w.pth"]))
    check_init(load_config(name, ["model.init=scratch"]))


def test_auto_init_accepts_whatever_is_given():
    from zoe_lightning.config import check_init

    for overrides in ([], ["model.core_checkpoint=c.ckpt"], ["model.backbone_weights=w.pth"]):
        check_init(load_config("quickstart", overrides))


def test_cli_train_without_core_is_one_line_and_config_or_presets_do_not_check(capsys, tmp_path):
    from zoe_lightning import cli
    from zoe_lightning.weights import PRESETS

    assert cli.main(["train", "zoed_m12_n", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "model.core_checkpoint=PATH" in err and "model.init=scratch" in err
    assert cli.main(["config", "zoed_m12_n"]) == 0 and "init: core" in capsys.readouterr().out
    for preset in PRESETS:  # the weights loader's presets: configurations, never training runs
        assert load_config(preset).model.init == "core"


def _tiny_lengths(cfg):
    """Few synthetic samples per entry (keeps the end-of-run baseline pass short) and 16 bins per
    head (the smallest count the splitter's four 2-way splits allow)."""
    for b in cfg.model.bins:
        b.n_bins = 16
    for entry in list(cfg.data.train) + list(cfg.data.val):
        entry.options = {**OmegaConf.to_container(entry.options), "length": 2}
    return cfg


_TRAINED = {}  # tiny-scale config (identity fields removed) -> experiment that already ran it


def _run_key(cfg) -> str:
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in ("name", "extends", "group", "tags", "notes", "output_dir"):
        plain.pop(key, None)
    return OmegaConf.to_yaml(OmegaConf.create(plain))


@pytest.mark.parametrize("name", [n for n in list_experiments()])
def test_every_experiment_trains_one_step_on_synthetic_data(name, tmp_path):
    from zoe_lightning.train import train

    # the released recipes start from weights the test has not got: their tiny twins start at random
    scratch = ["model.init=scratch"] if load_config(name).model.init in ("core", "backbone") else []
    dinov2 = DINOV2_STEP if load_config(name).model.decoder == "depth_anything" else []  # patch 14
    cfg = _tiny_lengths(load_config(name, ONE_STEP + scratch + dinov2 + [f"output_dir={tmp_path}"]))
    key = _run_key(cfg)
    if key in _TRAINED:  # shares the run of an identical (at tiny scale) experiment, e.g. zoed_x_n = zoed_m12_n
        pytest.skip(f"same tiny-scale run as '{_TRAINED[key]}', which trained")
    result = train(cfg)
    _TRAINED[key] = name
    key = monitor_for(cfg)
    assert math.isfinite(result["metrics"][key]), result["metrics"]
