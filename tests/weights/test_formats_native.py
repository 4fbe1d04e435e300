"""This project's own files (zoe_lightning.weights.formats.native): Lightning checkpoints,
``save_model`` files and bare state dicts."""

import pickle

import pytest
import torch
from omegaconf import OmegaConf

import zoe_lightning as zl
from zoe_lightning.errors import UserError
from zoe_lightning.weights import save_model

from .tiny import SMALL, TINY_BEIT, metric_depth, tiny_model


def test_lightning_checkpoint_layout_roundtrip(tmp_path):
    model, cfg = tiny_model("base")
    container = OmegaConf.to_container(cfg, resolve=True)
    ckpt = {"epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.6.0",
            "state_dict": {"model." + k: v for k, v in model.state_dict().items()},
            "hyper_parameters": {"cfg": container}, "optimizer_states": [], "lr_schedulers": []}
    path = tmp_path / "best.ckpt"
    torch.save(ckpt, path)
    loaded, loaded_cfg = zl.load_model_and_config(path)
    assert not loaded.training
    assert loaded_cfg.model.backbone == "test_beit" and list(loaded_cfg.model.img_size) == [64, 64]
    assert torch.equal(metric_depth(loaded), metric_depth(model))
    # overrides apply on top of the stored configuration
    _, cfg2 = zl.load_model_and_config(path, overrides=["model.bins.0.max_depth=20"])
    assert cfg2.model.bins[0].max_depth == 20


def test_save_model_roundtrip_and_plain_state_dict(tmp_path):
    model, cfg = tiny_model("zoed_m12_k")
    path = save_model(model, cfg, tmp_path / "w.pt")
    assert torch.equal(metric_depth(zl.load_model(path)), metric_depth(model))
    plain = tmp_path / "plain.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, plain)  # DDP-wrapped names
    with pytest.raises(UserError, match="preset"):
        zl.load_model(plain)
    loaded = zl.load_model(plain, preset="zoed_m12_k", overrides=TINY_BEIT + SMALL)
    assert torch.equal(metric_depth(loaded), metric_depth(model))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "fn": OmegaConf}, f)  # a class: needs code to unpickle
    torch.save({"model": {"w": torch.zeros(1)}, "obj": torch.nn.Linear(1, 1)}, tmp_path / "module.pt")
    for p in (path, tmp_path / "module.pt"):
        with pytest.raises(UserError, match="weights_only|cannot read"):
            zl.load_model(p)
    with pytest.raises(FileNotFoundError):
        zl.load_model(tmp_path / "missing.pt")
