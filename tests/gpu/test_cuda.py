"""Tests of the code paths that matter on a GPU: bf16 autocast, fused AdamW, torch.compile, the
speed variants, and a bf16-mixed Lightning step.

They are marked ``gpu``: ``make test`` leaves them out, ``benchmarks/gpu_check.sh`` runs them on the
CUDA device, and its dry run runs the same tests on the CPU (``ZOE_TEST_DEVICE=cpu``), so the tests
themselves are known to work before a GPU is ever used.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from ..conftest import tiny_config

DEVICE = os.environ.get("ZOE_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE is None, reason="needs a CUDA device (or ZOE_TEST_DEVICE=cpu for a dry run)")]

NK = "model.bins=[{name: nyu, n_bins: 16, max_depth: 10},{name: kitti, n_bins: 16, max_depth: 80}]"
SMALL = ["model.features=32", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=32",
         "model.head.projector_mlp_dim=16"]
# every speed switch off: the original op order
REFERENCE_SPEED = ["model.speed.fast_path=false", "model.speed.winograd=false", "model.speed.fused_attention=false",
                   "model.speed.channels_last=false", "model.speed.memory_efficient=false"]


def _model(*overrides, seed: int = 0):
    from zoe_lightning.models import build_model

    torch.manual_seed(seed)
    return build_model(tiny_config(*SMALL, *overrides)).to(DEVICE)


def _images(n: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 96, generator=g).to(DEVICE)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()).abs() / b.float().abs().clamp_min(1e-6)).median())


@pytest.mark.parametrize("extra", [[], [NK, "model.router.type=trained"]], ids=["N", "NK"])
def test_bf16_autocast_forward_is_close_to_fp32(extra):
    model = _model(*extra).eval()
    x = _images()
    with torch.no_grad():
        ref = model(x).metric_depth
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            low = model(x).metric_depth
    assert torch.isfinite(low).all()
    assert low.shape == ref.shape
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9 per op): a few per cent at most
    assert _relative_error(low, ref) < 0.03


def test_fused_adamw_takes_the_same_steps_as_foreach():
    from omegaconf import OmegaConf

    from zoe_lightning.modules.base import make_adamw

    a = _model()
    b = copy.deepcopy(a)
    opts = [make_adamw([{"params": list(m.parameters())}], OmegaConf.create({"lr": 1e-3, "weight_decay": 0.01,
                                                                            "adamw": kind}))
            for m, kind in ((a, "fused"), (b, "foreach"))]
    x = _images()
    for _ in range(3):
        for model, opt in zip((a, b), opts):
            opt.zero_grad()
            model(x).metric_depth.mean().backward()
            opt.step()
    worst = max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    moved = max(float(p.detach().abs().max()) for p in a.parameters())
    assert moved > 0 and worst < 1e-5


def test_speed_variants_compute_the_reference_function_on_the_device():
    # same seed, same weights: the switches change how the function is computed, not the function
    fast = _model(NK, "model.router.type=trained").eval()
    ref = _model(NK, "model.router.type=trained", *REFERENCE_SPEED).eval()
    assert all(torch.equal(p, q) for p, q in zip(fast.state_dict().values(), ref.state_dict().values()))
    x = _images(3)
    with torch.no_grad():
        a = fast(x).metric_depth
        b = ref(x).metric_depth
    assert float((a - b).abs().max()) < 1e-4 * float(b.abs().max())


@pytest.mark.skipif(DEVICE == "cpu" and not os.environ.get("ZOE_TEST_COMPILE"),
                    reason="torch.compile on the CPU takes minutes; set ZOE_TEST_COMPILE=1 to include it")
def test_compiled_forward_matches_eager():
    model = _model().eval()
    compiled = torch.compile(model)
    x = _images()
    with torch.no_grad():
        ref = model(x).metric_depth
        out = compiled(x).metric_depth
    assert float((out - ref).abs().max()) < 1e-3 * float(ref.abs().max())


def test_one_bf16_mixed_lightning_step_trains(tmp_path):
    import lightning as L

    from data_modules.datamodule import build_datamodule
    from zoe_lightning.modules import MetricDepthModule

    cfg = tiny_config(*SMALL, "trainer.precision=bf16-mixed", "data.num_workers=0", "data.batch_size=2", "data.image_size=[64,96]",
                      "data.train=[{name: synthetic_indoor, domain: nyu, options: {length: 4}}]",
                      "data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 2}}]")
    torch.manual_seed(0)
    module = MetricDepthModule(cfg)
    before = [p.detach().clone() for p in module.parameters()]
    # the project's gradient clipping under Lightning's mixed-precision plugin
    trainer = L.Trainer(accelerator="gpu" if DEVICE.startswith("cuda") else "cpu", devices=1,
                        precision="bf16-mixed", gradient_clip_val=float(cfg.trainer.gradient_clip_val),
                        max_steps=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 2
    after = list(module.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a.detach().cpu(), b.cpu()) for a, b in zip(after, before))
