"""Benchmark helpers (hand-computed metric values, CLI errors) and the AdamW implementations."""

import subprocess
import sys

import pytest
import torch

from .helpers import ROOT


def test_numpy_reference_metrics_hand_values():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np

    import bench_metrics

    gt = np.array([[1.0, 2.0, 0.0]])  # the 0 is invalid
    pred = np.array([[1.0, 4.0, 3.0]])
    m = bench_metrics.numpy_metrics(pred, gt, 1e-3, 10.0, eigen_crop=False)
    assert m["abs_rel"] == pytest.approx(0.5)  # (0 + 2/2) / 2
    assert m["a1"] == pytest.approx(0.5)  # ratios 1 and 2
    assert m["a2"] == pytest.approx(0.5)  # 2 > 1.25^2 = 1.5625
    assert m["a3"] == pytest.approx(0.5)  # 2 > 1.25^3 = 1.953125
    assert m["rmse"] == pytest.approx(2 ** 0.5)  # sqrt((0 + 4) / 2)
    assert m["sq_rel"] == pytest.approx(1.0)  # (0 + 4/2) / 2
    assert m["log_10"] == pytest.approx(np.log10(2) / 2)
    assert m["silog"] == pytest.approx(100 * np.log(2) / 2)  # sqrt(mean(e^2) - mean(e)^2), e = (0, ln 2)


def test_bench_cli_rejects_unknown_rows():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--rows", "9"],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 2
    assert "unknown row" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["fused", "foreach"])
def test_adamw_implementations_match_the_per_parameter_loop(kind):
    from omegaconf import OmegaConf

    from zoe_lightning.modules.base import make_adamw

    torch.manual_seed(7)
    params = {name: [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(4))] for name in ("a", "b")}
    for pa, pb in zip(params["a"], params["b"]):
        pb.data.copy_(pa.data)
    opts = {}
    for name, impl in (("a", "loop"), ("b", kind)):
        cfg = OmegaConf.create({"lr": 1e-2, "weight_decay": 0.1, "adamw": impl})
        groups = [{"params": params[name][:1], "lr": 1e-2}, {"params": params[name][1:], "lr": 1e-3}]
        opts[name] = make_adamw(groups, cfg)
    for step in range(3):
        grads = [torch.randn(5, 3), torch.randn(4)]
        for name in ("a", "b"):
            for p, g in zip(params[name], grads):
                p.grad = g.clone()
            opts[name].param_groups[0]["betas"] = (0.9 - 0.02 * step, 0.999)  # OneCycle cycles momentum
            opts[name].step()
    for pa, pb in zip(params["a"], params["b"]):
        assert not torch.equal(pa.data, torch.zeros_like(pa))
        torch.testing.assert_close(pb.data, pa.data, atol=1e-6, rtol=1e-6)


def test_adamw_choice_is_validated_and_fp16_avoids_fused():
    from omegaconf import OmegaConf

    from zoe_lightning.modules.base import make_adamw

    cfg = OmegaConf.create({"lr": 1.0, "weight_decay": 0.0, "adamw": "fused"})
    assert make_adamw([torch.nn.Parameter(torch.ones(1))], cfg).defaults["fused"]
    fp16 = make_adamw([torch.nn.Parameter(torch.ones(1))], cfg, "16-mixed")  # Lightning clips: no fused
    assert not fp16.defaults["fused"] and fp16.defaults["foreach"]

    with pytest.raises(ValueError, match="optim.adamw"):
        make_adamw([torch.nn.Parameter(torch.ones(1))], OmegaConf.create({"lr": 1.0, "weight_decay": 0.0,
                                                                          "adamw": "lion"}))
