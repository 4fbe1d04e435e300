"""`zoe-lightning export`: ONNX graphs checked by onnxruntime against PyTorch (single head and NK)."""

import numpy as np
import pytest
import torch

from ..conftest import NK_BINS, tiny_config
from .test_evaluate import SMALL, make_checkpoint

ort = pytest.importorskip("onnxruntime")

ROUTER = ["model.router.dim=16", "model.router.n_layers=1", "model.router.n_heads=2", "model.router.ffn_dim=32"]


def _nk_model(router):
    from zoe_lightning import build_model

    torch.manual_seed(0)
    return build_model(tiny_config(NK_BINS, f"model.router.type={router}", *ROUTER, *SMALL)).eval()


def _run_onnx(path, **feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feeds.items()})


def test_export_cli_single_head_dynamic_batch(tmp_path, capsys):
    from zoe_lightning.cli import main
    from zoe_lightning.weights import load_model

    ckpt = make_checkpoint(tmp_path / "best.ckpt")
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(ckpt), "--onnx", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "max abs error" in out
    model = load_model(str(ckpt))
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))  # traced with 2, checked with 3
    (got,) = _run_onnx(onnx_path, image=x)
    with torch.no_grad():
        ref = model(x).metric_depth.numpy()
    assert got.shape == ref.shape == (1, 1, 64, 96)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_export_beit_single_head(tmp_path):
    """BEiT backbones (the released models' family): relative position bias tables in the graph."""
    from zoe_lightning import build_model
    from zoe_lightning.evaluation.export import check_onnx, export_onnx

    torch.manual_seed(0)
    model = build_model(tiny_config("model.backbone=test_beit", *SMALL)).eval()
    path = export_onnx(model, tmp_path / "beit.onnx", (64, 96))
    res = check_onnx(model, path, (64, 96), batch=3)
    assert res["ok"] and res["max_abs_err"] < 1e-4


@pytest.mark.slow
def test_export_nk_labeled_router_mixed_domains(tmp_path):
    from zoe_lightning.evaluation.export import export_onnx

    model = _nk_model("labeled")
    path = export_onnx(model, tmp_path / "nk_labeled.onnx", (64, 96))
    x = torch.rand(4, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    domain = torch.tensor([0, 1, 1, 0])
    depth, index = _run_onnx(path, image=x, domain=domain)
    with torch.no_grad():
        ref = model(x, domain=domain).metric_depth.numpy()
        only_kitti = model(x, domain=torch.ones(4, dtype=torch.long)).metric_depth.numpy()
    assert np.abs(ref - only_kitti)[0].max() > 1e-3  # the two heads really differ
    np.testing.assert_allclose(depth, ref, rtol=1e-4, atol=1e-4)
    assert index.tolist() == [0, 1, 1, 0]


def test_export_nk_trained_router_routes_like_pytorch(tmp_path):
    from zoe_lightning.evaluation.export import check_onnx, export_onnx

    model = _nk_model("trained")
    last = model.router.mlp_classifier[-1]
    x = torch.rand(4, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    x = x * torch.tensor([0.2, 1.0, 0.4, 0.8]).view(4, 1, 1, 1)
    with torch.no_grad():  # logits (a - m, m - a) with m the median of a: two images per head
        last.weight[1] = -last.weight[0]
        last.bias.zero_()
        a = model(x).domain_logits[:, 0]
        m = a.median() + 0.5 * (a.sort().values[2] - a.median())
        last.bias[0], last.bias[1] = -m, m
        routed = model(x).domain_index
    assert sorted(routed.tolist()) == [0, 0, 1, 1], (a, routed)
    path = export_onnx(model, tmp_path / "nk_trained.onnx", (64, 96))
    res = check_onnx(model, path, (64, 96), inputs=(x,))
    assert res["ok"] and res["routing_agrees"] and res["max_abs_err"] < 1e-4


@pytest.mark.slow
def test_export_depth_anything_v2_metric(tmp_path):
    """A DINOv2 core (keep-aspect prep, resized position table) with the V2 metric head."""
    import zoe_lightning as zl
    from zoe_lightning.evaluation.export import check_onnx, export_onnx

    torch.manual_seed(0)
    cfg = zl.load_config("da2_metric_hypersim_vits", ["model.backbone=test_dinov2", "model.features=16",
                                                      "model.img_size=[98,126]"])
    model = zl.build_model(cfg).eval()
    path = export_onnx(model, tmp_path / "da.onnx", (98, 126))
    res = check_onnx(model, path, (98, 126), batch=2)
    assert res["ok"] and res["max_abs_err"] < 1e-4
