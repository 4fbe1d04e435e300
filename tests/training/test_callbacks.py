"""Tests for zoe_lightning.evaluation.viz and the observe-only callbacks (fast, CPU, no network)."""

import csv
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from callbacks import BinCentersCallback, DepthPanelCallback, RouterStatsCallback
from zoe_lightning.evaluation import viz

GREY = np.array([128, 128, 128], dtype=np.uint8)


def _cmap_bytes(name, x):
    return np.round(np.asarray(matplotlib.colormaps[name](x))[:3] * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- viz
def test_colorize_range_ends_and_invalid():
    depth = np.array([[1.0, 2.0, 3.0], [0.5, 9.0, np.nan]], dtype=np.float32)
    invalid = np.array([[False, False, False], [False, False, False]])
    invalid[0, 1] = True
    rgb = viz.colorize(depth, 1.0, 3.0, cmap="magma_r", invalid_mask=invalid)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    lo, hi = _cmap_bytes("magma_r", 0.0), _cmap_bytes("magma_r", 1.0)
    np.testing.assert_array_equal(rgb[0, 0], lo)  # vmin -> start of the colormap
    np.testing.assert_array_equal(rgb[0, 2], hi)  # vmax -> end of the colormap
    np.testing.assert_array_equal(rgb[1, 0], lo)  # below range clipped
    np.testing.assert_array_equal(rgb[1, 1], hi)  # above range clipped
    np.testing.assert_array_equal(rgb[0, 1], GREY)  # masked
    np.testing.assert_array_equal(rgb[1, 2], GREY)  # non-finite


def test_colorize_accepts_tensors_and_custom_colour():
    depth = torch.tensor([[[0.0, 10.0]]])  # (1, 1, 2) squeezed to (1, 2)
    rgb = viz.colorize(depth, torch.tensor(0.0), torch.tensor([10.0]), cmap="viridis",
                       invalid_mask=torch.tensor([[False, True]]), invalid_color=(1, 2, 3))
    np.testing.assert_array_equal(rgb[0, 0], _cmap_bytes("viridis", 0.0))
    np.testing.assert_array_equal(rgb[0, 1], [1, 2, 3])


def test_depth_panel_layout_and_values():
    h, w = 5, 7
    image = torch.rand(3, h, w)
    gt = torch.full((1, h, w), 4.0)
    valid = torch.ones(1, h, w, dtype=torch.bool)
    valid[0, 0, 0] = False
    pred = gt.clone()
    pred[0, 1, 1] = 8.0  # abs rel 1.0 -> clipped to err_max
    panel = viz.depth_panel(image, gt, pred, valid, vmin=0.0, vmax=4.0)
    assert panel.shape == (h, 4 * w, 3) and panel.dtype == np.uint8
    img_part = panel[:, :w]
    np.testing.assert_array_equal(img_part, np.round(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    gt_part, pred_part, err_part = panel[:, w:2 * w], panel[:, 2 * w:3 * w], panel[:, 3 * w:]
    np.testing.assert_array_equal(gt_part[0, 0], GREY)
    np.testing.assert_array_equal(gt_part[2, 2], _cmap_bytes("magma_r", 1.0))
    np.testing.assert_array_equal(pred_part[0, 0], _cmap_bytes("magma_r", 1.0))  # prediction is not masked
    np.testing.assert_array_equal(err_part[0, 0], GREY)
    np.testing.assert_array_equal(err_part[2, 2], _cmap_bytes("inferno", 0.0))
    np.testing.assert_array_equal(err_part[1, 1], _cmap_bytes("inferno", 1.0))


def test_depth_panel_resizes_image_to_gt():
    panel = viz.depth_panel(np.zeros((8, 10, 3), np.float32), np.ones((4, 5)), np.ones((4, 5)), None, 0, 2)
    assert panel.shape == (4, 20, 3)


def test_figures_and_save_png(tmp_path):
    bins = viz.bin_centers_figure(np.linspace(5, 0.5, 16), np.random.rand(6, 8) * 5 + 0.1,
                                  gt_center=2.0, pred_center=2.5, max_depth=10.0, title="t")
    conf = viz.confusion_figure(np.array([[2, 0], [1, 1]]), ["nyu", "kitti"], title="acc")
    for arr in (bins, conf):
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] > 50
    path = viz.save_png(conf, tmp_path / "a" / "b" / "conf.png")
    assert path.is_file()
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), conf)
    stacked = viz.stack_panels([np.zeros((2, 4, 3), np.uint8), np.zeros((3, 6, 3), np.uint8)], gap=1)
    assert stacked.shape == (6, 6, 3)


# ----------------------------------------------------------------------------- tiny Lightning run
import lightning as L  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

H, W, N_BINS = 8, 12, 16
LABELS = [[0, 1, 1, 0], [1, 1, 0, 0]]
HEADS = [[0, 1, 0, 0], [1, 1, 0, 0]]
EXPECTED_CONF = [[4, 0], [1, 3]]  # [[2,0],[1,1]] + [[2,0],[0,2]]
EXPECTED_ACC = 7 / 8
EXPECTED_USAGE = {"nyu": 5 / 8, "kitti": 3 / 8}


class DummyModule(L.LightningModule):
    def __init__(self, names=("nyu", "kitti"), with_bins=True, with_labels=True):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.names = list(names)
        self.with_bins = with_bins
        self.with_labels = with_labels

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0].float().unsqueeze(-1)).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        b = batch[0].shape[0]
        g = torch.Generator().manual_seed(batch_idx)
        depth = torch.rand(b, 1, H, W, generator=g) * 9 + 1
        valid = torch.rand(b, 1, H, W, generator=g) > 0.2
        d = len(self.names)
        labels = torch.tensor(LABELS[batch_idx]) % d
        heads = torch.tensor(HEADS[batch_idx]) % d
        max_depth = torch.tensor([10.0 if int(lbl) == 0 else 80.0 for lbl in labels])
        return {
            "image": torch.rand(b, 3, H, W, generator=g),
            "depth": depth,
            "valid": valid,
            "pred": depth * 1.1,
            "bin_centers": torch.rand(b, N_BINS, H // 2, W // 2, generator=g) * 10 if self.with_bins else None,
            "domain_names": list(self.names),
            "domain_label": labels if self.with_labels else None,
            "domain_index": heads,
            "max_depth": max_depth,
            "min_depth": torch.full((b,), 1e-3),
            "dataset": [self.names[int(lbl)] for lbl in labels],
        }

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _loader():
    ds = torch.utils.data.TensorDataset(torch.arange(8))
    return torch.utils.data.DataLoader(ds, batch_size=4)


def _fit(tmp_path, module, cbs, logger=None):
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=2, num_sanity_val_steps=2,
        logger=logger if logger is not None else CSVLogger(tmp_path), callbacks=cbs,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        accelerator="cpu", devices=1, default_root_dir=tmp_path, log_every_n_steps=1,
    )
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader())
    return trainer


def _callbacks():
    return (DepthPanelCallback(every_n_steps=1, n_panels=3), BinCentersCallback(), RouterStatsCallback())


def _metrics_rows(tmp_path):
    files = list(Path(tmp_path).rglob("metrics.csv"))
    assert len(files) <= 1, files
    if not files:  # nothing was logged at all
        return []
    with open(files[0]) as fh:
        return list(csv.DictReader(fh))


def test_lightning_run_writes_media_and_router_stats(tmp_path):
    panels, bins, router = _callbacks()
    _fit(tmp_path, DummyModule(), [panels, bins, router])
    media = tmp_path / "lightning_logs" / "version_0" / "media"
    # global_step is 1 after one training batch; the sanity check is not logged
    assert sorted(p.name for p in media.iterdir()) == [
        "val_bin_centers_step1.png", "val_depth_panels_step1.png", "val_router_confusion_step1.png"]
    stacked = np.asarray(Image.open(media / "val_depth_panels_step1.png"))
    assert stacked.shape[1] == 4 * W and stacked.shape[0] == 3 * H + 2 * 4  # 3 panels + 2 gaps
    assert bins.last_centers is not None and len(bins.last_centers) == N_BINS
    assert np.all(np.diff(bins.last_centers) >= 0)

    assert router.confusion.dtype == torch.long
    assert router.confusion.tolist() == EXPECTED_CONF
    assert router.usage.tolist() == [5, 3]
    rows = _metrics_rows(tmp_path)
    acc = [float(r["val/router_accuracy"]) for r in rows if r.get("val/router_accuracy")]
    assert acc == [pytest.approx(EXPECTED_ACC)]
    for name, frac in EXPECTED_USAGE.items():
        vals = [float(r[f"val/head_usage/{name}"]) for r in rows if r.get(f"val/head_usage/{name}")]
        assert vals == [pytest.approx(frac)]


def test_single_head_and_no_bins_do_nothing(tmp_path):
    panels, bins, router = _callbacks()
    _fit(tmp_path, DummyModule(names=("nyu",), with_bins=False), [panels, bins, router])
    media = tmp_path / "lightning_logs" / "version_0" / "media"
    assert sorted(p.name for p in media.iterdir()) == ["val_depth_panels_step1.png"]
    assert router.confusion is None and router.usage is None
    rows = _metrics_rows(tmp_path)
    assert not any(k.startswith("val/router") or k.startswith("val/head_usage") for r in rows for k, v in r.items()
                   if v)


def test_unlabelled_router_logs_usage_only(tmp_path):
    router = RouterStatsCallback()
    _fit(tmp_path, DummyModule(with_labels=False), [router])
    assert router.confusion is None and router.usage.tolist() == [5, 3]
    media = tmp_path / "lightning_logs" / "version_0" / "media"
    assert not media.exists()
    rows = _metrics_rows(tmp_path)
    assert not any(r.get("val/router_accuracy") for r in rows)
    assert any(r.get("val/head_usage/nyu") for r in rows)


def test_non_zero_rank_collects_nothing():
    panels, bins = DepthPanelCallback(every_n_steps=1), BinCentersCallback()
    trainer = SimpleNamespace(is_global_zero=False, sanity_checking=False, global_step=0, loggers=[])
    module = DummyModule()
    outputs = module.validation_step((torch.arange(4),), 0)
    panels.on_validation_epoch_start(trainer, module)
    panels.on_validation_batch_end(trainer, module, outputs, None, 0)
    bins.on_validation_batch_end(trainer, module, outputs, None, 0)
    assert panels._panels == [] and bins.last_path is None


def test_wandb_logger_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled", project="zoe-test")
    panels, bins, router = _callbacks()
    _fit(tmp_path, DummyModule(), [panels, bins, router], logger=logger)
    assert router.confusion.tolist() == EXPECTED_CONF
    # WandbLogger: media lives under its save_dir
    names = sorted(p.name for p in (tmp_path / "media").iterdir())
    assert names == ["val_bin_centers_step1.png", "val_depth_panels_step1.png", "val_router_confusion_step1.png"]
