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
    pred[0, 1, 1] = 8.0  # relative error +1.0 -> clipped to +err_max: the red end
    pred[0, 3, 3] = 2.0  # relative error -0.5 = -err_max: the blue end
    panel = viz.depth_panel(image, gt, pred, valid, vmin=0.0, vmax=4.0)
    assert panel.shape == (h, 4 * w, 3) and panel.dtype == np.uint8
    img_part = panel[:, :w]
    np.testing.assert_array_equal(img_part, np.round(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    gt_part, pred_part, err_part = panel[:, w:2 * w], panel[:, 2 * w:3 * w], panel[:, 3 * w:]
    np.testing.assert_array_equal(gt_part[0, 0], GREY)
    np.testing.assert_array_equal(gt_part[2, 2], _cmap_bytes("magma_r", 1.0))
    np.testing.assert_array_equal(pred_part[0, 0], _cmap_bytes("magma_r", 1.0))  # prediction is not masked
    np.testing.assert_array_equal(err_part[0, 0], GREY)
    np.testing.assert_array_equal(err_part[2, 2], _cmap_bytes("RdBu_r", 0.5))  # exact: the neutral centre
    np.testing.assert_array_equal(err_part[1, 1], _cmap_bytes("RdBu_r", 1.0))
    np.testing.assert_array_equal(err_part[3, 3], _cmap_bytes("RdBu_r", 0.0))


def test_error_tile_tells_too_near_from_too_far_on_a_non_depth_palette():
    gt = np.full((4, 4), 5.0)
    pred = gt.copy()
    pred[0, 0], pred[1, 1] = 6.0, 4.0  # +20 % and -20 %: same absolute error, opposite sign
    err = viz.depth_panel(np.zeros((4, 4, 3)), gt, pred, None, 0.0, 10.0)[:, 12:].astype(int)
    far, near, exact = err[0, 0], err[1, 1], err[2, 2]
    assert far[0] > far[2] + 40 and near[2] > near[0] + 40  # red vs blue
    assert exact.min() > 200  # near-white where the prediction is right
    # none of the error colours is a colour of the depth palette (magma_r)
    lut = np.round(matplotlib.colormaps["magma_r"](np.linspace(0, 1, 256))[:, :3] * 255)
    for colour in (far, near, exact):
        assert np.abs(lut - colour).sum(axis=1).min() > 25


def test_labelled_panel_has_titles_colour_bars_and_the_raw_tiles():
    h, w = 6, 10
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 9, (h, w))
    pred = gt * rng.uniform(0.7, 1.3, (h, w))
    tiles = viz.depth_panel(np.zeros((h, w, 3)), gt, pred, None, 0.0, 10.0)
    panel = viz.labelled_depth_panel(np.zeros((h, w, 3)), gt, pred, None, 0.0, 10.0, header="dataset nyu · step 7")
    scale = 16  # ceil(160 / 10): small tiles are enlarged to at least 160 px
    tw, th = w * scale, h * scale
    assert panel.shape[1] == 4 * tw and panel.dtype == np.uint8
    # the tiles appear unchanged (enlarged by whole pixels) below a header
    big = np.repeat(np.repeat(tiles, scale, axis=0), scale, axis=1)
    rows = [r for r in range(panel.shape[0] - th + 1) if np.array_equal(panel[r], big[0])]
    assert rows and rows[0] > 20
    top = rows[0]
    np.testing.assert_array_equal(panel[top: top + th], big)
    head, foot = panel[:top], panel[top + th:]
    for k in range(4):  # a title over every column: dark text pixels in each quarter of the header
        assert (head[:, k * tw: (k + 1) * tw].min(axis=2) < 100).sum() > 20, k
    # colour bars: the depth palette under ground truth / prediction, the error palette under the error
    def has_colour(region, cmap, x):
        c = _cmap_bytes(cmap, x).astype(int)
        return (np.abs(region.astype(int) - c).sum(axis=2) <= 6).any()
    assert has_colour(foot[:, tw: 3 * tw], "magma_r", 0.0) and has_colour(foot[:, tw: 3 * tw], "magma_r", 1.0)
    assert not has_colour(foot[:, tw: 3 * tw], "RdBu_r", 0.0)
    assert has_colour(foot[:, 3 * tw:], "RdBu_r", 0.0) and has_colour(foot[:, 3 * tw:], "RdBu_r", 1.0)
    assert not has_colour(foot[:, 3 * tw:], "magma_r", 0.5) and not has_colour(foot[:, 3 * tw:], "magma_r", 0.0)
    # a different range gives a different depth colour bar (its scale is drawn, not a fixed picture)
    other = viz.labelled_depth_panel(np.zeros((h, w, 3)), gt, pred, None, 0.0, 80.0, header="dataset nyu · step 7")
    assert not np.array_equal(other[top + th:, tw: 3 * tw], foot[:, tw: 3 * tw])
    np.testing.assert_array_equal(other[top + th:, 3 * tw:], foot[:, 3 * tw:])  # error scale unchanged


def test_depth_range_is_the_domain_range_not_the_image_maximum():
    gt = np.array([[1.0, 4.0], [2.0, 0.0]])
    assert viz.depth_range(1e-3, 10.0, gt) == (0.0, 10.0)
    assert viz.depth_range(torch.tensor(1e-3), torch.tensor(80.0)) == (0.0, 80.0)
    assert viz.depth_range(None, None, gt) == (0.0, 4.0)  # no range known: the largest valid depth
    assert viz.depth_range(None, None, gt, gt < 3) == (0.0, 2.0)
    assert viz.depth_range(None, None) == (0.0, 1.0)
    assert viz.sample_abs_rel(np.array([[2.0, 4.0]]), np.array([[3.0, 3.0]])) == pytest.approx((0.5 + 0.25) / 2)


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
    # one panel set and one bin plot per domain (the outdoor domain too)
    assert sorted(p.name for p in media.iterdir()) == [
        "val_bin_centers_kitti_step1.png", "val_bin_centers_nyu_step1.png", "val_depth_panels_kitti_step1.png",
        "val_depth_panels_nyu_step1.png", "val_router_confusion_step1.png"]
    tile_w = W * 14  # 12 px tiles enlarged by ceil(160 / 12) = 14
    one = viz.labelled_depth_panel(np.zeros((H, W, 3)), np.ones((H, W)), np.ones((H, W)), None, 0.0, 1.0)
    for dom in ("nyu", "kitti"):  # 3 panels each (batch 0 gives 2 + 2, batch 1 the third of each) + 2 gaps
        stacked = np.asarray(Image.open(media / f"val_depth_panels_{dom}_step1.png"))
        assert stacked.shape[1] == 4 * tile_w and stacked.shape[0] == 3 * one.shape[0] + 2 * 4
        assert sorted(panels.last_ranges[dom]) == [(0.0, 10.0 if dom == "nyu" else 80.0)] * 3
        assert len(bins.centers[dom]) == N_BINS and np.all(np.diff(bins.centers[dom]) >= 0)

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
    assert sorted(p.name for p in media.iterdir()) == ["val_depth_panels_nyu_step1.png"]
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
    assert not panels._panels and bins.last_path is None


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
    assert names == ["val_bin_centers_kitti_step1.png", "val_bin_centers_nyu_step1.png",
                     "val_depth_panels_kitti_step1.png", "val_depth_panels_nyu_step1.png",
                     "val_router_confusion_step1.png"]


def _outputs(domain, max_depth, gt, pred, b=1):
    h, w = gt.shape
    return {
        "image": torch.zeros(b, 3, h, w), "depth": torch.as_tensor(gt, dtype=torch.float32).expand(b, 1, h, w),
        "valid": torch.as_tensor(gt > 0).expand(b, 1, h, w), "pred": torch.as_tensor(pred, dtype=torch.float32)
        .expand(b, 1, h, w), "domain": [domain] * b, "dataset": [domain] * b, "max_depth": torch.full((b,), max_depth),
        "min_depth": torch.full((b,), 1e-3), "domain_names": ["nyu", "kitti"],
    }


def test_late_domain_still_gets_panels_and_bin_plot(tmp_path):
    """NK validation: NYU batches first, KITTI only in a batch that is not a multiple of every_n_steps."""
    panels, bins = DepthPanelCallback(every_n_steps=50, n_panels=2), BinCentersCallback()
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, global_step=3, loggers=[],
                              default_root_dir=str(tmp_path))
    gt = np.full((4, 6), 5.0)
    panels.on_validation_epoch_start(trainer, None)
    bins.on_validation_epoch_start(trainer, None)
    for idx, (dom, top) in enumerate([("nyu", 10.0), ("nyu", 10.0), ("kitti", 80.0), ("kitti", 80.0)]):
        out = _outputs(dom, top, gt, gt * 1.1, b=2)
        out["bin_centers"] = torch.rand(2, 8, 2, 3)
        panels.on_validation_batch_end(trainer, None, out, None, idx)
        bins.on_validation_batch_end(trainer, None, out, None, idx)
    assert {d: len(p) for d, p in panels._panels.items()} == {"nyu": 2, "kitti": 2}
    assert panels.last_ranges == {"nyu": [(0.0, 10.0)] * 2, "kitti": [(0.0, 80.0)] * 2}
    assert set(bins.centers) == {"nyu", "kitti"}
    assert sorted(p.name for p in (tmp_path / "media").iterdir()) == [
        "val_bin_centers_kitti_step3.png", "val_bin_centers_nyu_step3.png"]


def test_training_and_eval_panels_use_the_same_range(tmp_path):
    """The same sample gives the same colours and colour bar in a training panel and an eval panel,
    both using the domain range 0-10 m (not the image's own 4 m maximum)."""
    from zoe_lightning.evaluation.report import EvalPanels

    h, w = 6, 8
    gt = np.full((h, w), 2.0)
    gt[:, :4] = 4.0  # the image's maximum is 4 m; the nyu range is 0-10 m
    pred = gt * 1.2
    trainer = SimpleNamespace(is_global_zero=True, sanity_checking=False, global_step=5, loggers=[],
                              default_root_dir=str(tmp_path / "train"))
    train_cb = DepthPanelCallback(every_n_steps=1, n_panels=1)
    train_cb.on_validation_epoch_start(trainer, None)
    train_cb.on_validation_batch_end(trainer, None, _outputs("nyu", 10.0, gt, pred), None, 0)
    train_cb.on_validation_epoch_end(trainer, None)
    train_png = np.asarray(Image.open(train_cb.last_paths["nyu"]).convert("RGB"))

    eval_cb = EvalPanels(tmp_path / "panels", limit=1, source="best.ckpt")
    s = SimpleNamespace(name="nyu", domain="nyu", min_depth=1e-3, max_depth=10.0)
    batch = [{"depth": torch.tensor(gt, dtype=torch.float32)[None, None], "image": torch.zeros(1, 3, h, w),
              "index": torch.tensor([0])}]
    eval_cb.on_test_batch_end(None, SimpleNamespace(test_sets=[s]), {"pred": [torch.tensor(pred)[None, None]]},
                              batch, 0)
    eval_png = np.asarray(Image.open(tmp_path / "panels" / "nyu" / "00000.png").convert("RGB"))

    assert train_png.shape == eval_png.shape
    lay = viz.panel_layout(h, w)
    top, bottom, tw = lay["top"], lay["bottom"], lay["tile_w"]
    # ground truth, prediction and error tiles, and the colour bars below them, are identical
    np.testing.assert_array_equal(train_png[top:, tw:], eval_png[top:, tw:])
    gt_tile = train_png[top:bottom, tw: 2 * tw]
    np.testing.assert_array_equal(gt_tile[0, 0], _cmap_bytes("magma_r", 0.4))  # 4 m of 0-10 m
    np.testing.assert_array_equal(gt_tile[0, -1], _cmap_bytes("magma_r", 0.2))  # 2 m
    assert train_png[:top].min() < 100 and not np.array_equal(train_png[:top], eval_png[:top])  # own headers
