"""Both LightningModules end to end on tiny models and the embedded synthetic data."""

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from zoe_lightning import load_config
from zoe_lightning.modules import MetricDepthModule, RelativeDepthModule
from zoe_lightning.train import train

TINY_RUN = [
    "model.backbone=test_vit", "model.img_size=[64,96]", "model.features=32", "data.image_size=[64,96]",
    "data.num_workers=0", "data.batch_size=2", "data.val_batch_size=2", "logger.wandb=false",
    "callbacks.rich=false", "trainer.log_every_n_steps=1",
]


def _small_data(cfg_name, *extra):
    return load_config(cfg_name, TINY_RUN + list(extra))


def test_onecycle_shape_and_group_lrs():
    cfg = load_config("base", ["model.backbone=test_beit", "model.img_size=[64,64]", "optim.lr=1.0",
                               "optim.encoder_lr_factor=10", "optim.pos_enc_lr_factor=20",
                               "optim.decoder_lr_factor=2"])
    module = MetricDepthModule(cfg)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    names = [g["name"] for g in opt.param_groups]
    expected = {"encoder": 0.1, "positional": 0.05, "decoder": 0.5, "head": 1.0}
    assert {n: g["lr"] for n, g in zip(names, opt.param_groups)} == pytest.approx(expected)
    assert all(g["weight_decay"] == 0.01 for g in opt.param_groups)
    head = names.index("head")
    lrs, betas = [], []
    for _ in range(100):
        lrs.append(opt.param_groups[head]["lr"])
        betas.append(opt.param_groups[head]["betas"][0])
        opt.step()
        sched.step()
    # div_factor 1: flat at the maximum for the first 70 % of steps, then cosine to max / 1e4
    assert lrs[0] == pytest.approx(1.0) and lrs[60] == pytest.approx(1.0, rel=1e-3)
    assert lrs[85] < lrs[75] < 1.0
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)
    # momentum: 0.95 -> 0.85 over the first 70 %, then back up to 0.95
    assert betas[0] == pytest.approx(0.95) and min(betas) == pytest.approx(0.85, abs=1e-3)
    assert abs(betas.index(min(betas)) - 69) <= 1 and betas[-1] == pytest.approx(0.95, abs=1e-3)


@pytest.mark.parametrize("experiment", ["quickstart", "quickstart_nk"])
def test_fast_dev_run_of_quickstarts(experiment, tmp_path):
    cfg = _small_data(experiment, f"output_dir={tmp_path}", "trainer.extra={fast_dev_run: true}")
    result = train(cfg)
    key = "val/nyu/abs_rel" if experiment == "quickstart" else "val/abs_rel"  # one domain: no headline mean
    assert result["metrics"][key] > 0
    assert math.isfinite(result["metrics"][key])
    assert ("val/abs_rel" in result["metrics"]) == (experiment == "quickstart_nk")


def test_quickstart_relative_then_metric_from_its_core(tmp_path):
    cfg = _small_data("quickstart_relative", f"output_dir={tmp_path}", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                      "followup=null")
    first = train(cfg)
    assert first["best"] and math.isfinite(first["metrics"]["val/rel"])
    stage2 = _small_data("quickstart", f"output_dir={tmp_path}", f"model.core_checkpoint={first['best']}")
    module = MetricDepthModule(stage2)
    stage1 = RelativeDepthModule.load_from_checkpoint(first["best"], weights_only=True)
    for (k, a), (_, b) in zip(module.model.core.state_dict().items(), stage1.model.core.state_dict().items()):
        assert torch.equal(a, b), k


def test_core_checkpoint_of_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"model.core.foo": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="does not fit model.backbone"):
        MetricDepthModule(_small_data("quickstart", f"model.core_checkpoint={path}"))


class _StepLosses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append((trainer.current_epoch, batch_idx, float(outputs["loss"])))


class _StopAfterFirstEpoch(L.Callback):
    """Simulates an interrupted job: the run is configured for 2 epochs but stops after one."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resume_gives_the_same_next_step_loss(tmp_path):
    common = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.val_check_interval=1.0",
              "data.train.0.options.length=20"]
    full = _StepLosses()
    train(_small_data("quickstart", f"output_dir={tmp_path / 'a'}", "trainer.max_epochs=2", *common),
          extra_callbacks=[full])
    first = _StepLosses()
    run = train(_small_data("quickstart", f"output_dir={tmp_path / 'b'}", "trainer.max_epochs=2", *common),
                extra_callbacks=[first, _StopAfterFirstEpoch()])
    resumed = _StepLosses()
    train(_small_data("quickstart", f"output_dir={tmp_path / 'c'}", "trainer.max_epochs=2", *common),
          resume=run["last"], extra_callbacks=[resumed])
    assert first.losses == full.losses[:3]
    assert [e for e, _, _ in resumed.losses] == [1, 1, 1]
    assert [l for _, _, l in resumed.losses] == pytest.approx([l for _, _, l in full.losses[3:]], rel=1e-5)


def test_empty_masks_do_not_break_training(tmp_path):
    """A batch without any valid pixel contributes zero loss and is counted, never NaN."""
    cfg = _small_data("quickstart")
    module = MetricDepthModule(cfg)
    batch = {
        "image": torch.rand(2, 3, 64, 96), "depth": torch.zeros(2, 1, 64, 96),
        "valid": torch.zeros(2, 1, 64, 96, dtype=torch.bool), "domain_label": torch.tensor([0, 0]),
    }
    module.log = lambda *a, **k: None
    loss = module.training_step(batch, 0)
    assert loss.item() == 0.0 and module.empty_batches == 1
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in module.parameters())


def test_relative_validation_metrics_are_alignment_invariant():
    from zoe_lightning.modules.relative import aligned_disparity_errors

    gt = torch.rand(2, 1, 8, 8) + 0.5
    valid = torch.ones_like(gt, dtype=torch.bool)
    rel, d1 = aligned_disparity_errors(3.0 * gt + 2.0, gt, valid)  # any positive affine map of the truth
    assert torch.allclose(rel, torch.zeros(2), atol=1e-5) and torch.equal(d1, torch.ones(2))
    noisy = gt.clone()
    noisy[:, :, :4] *= 2.0  # half of each image doubled: no affine fit removes it
    rel, d1 = aligned_disparity_errors(noisy, gt, valid)
    assert (rel > 0.1).all() and (d1 < 1).all()
    empty = torch.zeros_like(valid)
    rel, _ = aligned_disparity_errors(gt, gt, empty)
    assert rel.numel() == 0  # images without valid pixels are left out, never NaN


def test_wandb_mode_resolution(monkeypatch, tmp_path):
    from zoe_lightning.train import wandb_mode

    cfg = load_config("quickstart")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(cfg) == "offline"  # not logged in
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(cfg) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(cfg) == "disabled"  # the environment is respected
    assert wandb_mode(load_config("quickstart", ["logger.mode=offline"])) == "offline"  # config forces
