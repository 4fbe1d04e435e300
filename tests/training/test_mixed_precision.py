"""Mixed precision with the project's gradient clipping: Lightning's mixed-precision plugin cannot
clip the gradients of an optimizer that unscales them itself (the fused AdamW), so every mixed
precision gets the multi-tensor AdamW, and a clipped bf16-mixed step runs."""

import pytest
import torch
from omegaconf import OmegaConf

from zoe_lightning.modules.base import make_adamw

from ..conftest import tiny_config


@pytest.mark.parametrize("precision,fused", [("32-true", True), ("bf16-mixed", False), ("16-mixed", False),
                                             ("bf16-true", True)])
def test_fused_adamw_only_where_lightning_can_clip(precision, fused):
    cfg = OmegaConf.create({"lr": 1e-3, "weight_decay": 0.0, "adamw": "fused"})
    opt = make_adamw([torch.nn.Parameter(torch.ones(1))], cfg, precision)
    assert bool(opt.defaults["fused"]) is fused
    assert bool(opt.defaults["foreach"]) is (not fused)


def test_clipped_bf16_mixed_step_on_the_cpu(tmp_path):
    import lightning as L

    from data_modules.datamodule import build_datamodule
    from zoe_lightning.modules import MetricDepthModule

    cfg = tiny_config("model.features=16", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
                      "model.head.projector_mlp_dim=16", "trainer.precision=bf16-mixed", "data.num_workers=0",
                      "data.batch_size=2", "data.image_size=[64,96]",
                      "data.train=[{name: synthetic_indoor, domain: nyu, options: {length: 2}}]",
                      "data.val=[{name: synthetic_indoor, domain: nyu, options: {length: 1}}]")
    assert cfg.trainer.gradient_clip_val > 0
    module = MetricDepthModule(cfg)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed",
                        gradient_clip_val=float(cfg.trainer.gradient_clip_val), max_steps=1, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=build_datamodule(cfg))
    assert trainer.global_step == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())
