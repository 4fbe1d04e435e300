"""Shared LightningModule plumbing: model assembly, optimiser + OneCycle (or poly), augmentation, logging."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from ..config import move_speed_keys
from ..weights import build_start_model, init_backbone, init_core


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_adamw(groups, optim_cfg, precision: str = "32-true") -> torch.optim.AdamW:
    """AdamW over ``groups`` with ``optim.lr`` / ``optim.weight_decay``; ``optim.adamw`` picks the
    implementation (same update rule): ``fused`` (default), ``foreach`` or ``loop`` (the original's).

    Lightning's mixed-precision plugin (``16-mixed`` and ``bf16-mixed`` alike) refuses to clip the
    gradients of an optimizer that unscales them itself, as the fused AdamW does; under mixed
    precision ``foreach`` is used instead (same update, one multi-tensor kernel per step).
    """
    kind = str(optim_cfg.get("adamw", "fused"))
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
    if kind not in flags:
        raise ValueError(f"optim.adamw must be one of {', '.join(flags)}, got '{kind}'")
    if kind == "fused" and (str(precision).startswith("16") or "mixed" in str(precision)):
        kind = "foreach"
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, **flags[kind])

class DepthModule(L.LightningModule):
    """Base of both stages. ``cfg`` is the whole run config (stored in the checkpoint)."""

    def __init__(self, cfg: Any, model: Optional[torch.nn.Module] = None) -> None:
        """``model``: an already built (e.g. loaded) model to wrap instead of building one from ``cfg``."""
        super().__init__()
        container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        container = move_speed_keys(copy.deepcopy(container))  # hyper-parameters saved by older versions
        # kept in the checkpoint; not sent to the loggers: the run's loggers get the config once, top level
        self.save_hyperparameters({"cfg": container}, logger=False)
        self.cfg = OmegaConf.create(container)
        self.model = build_start_model(self.cfg) if model is None else model
        if model is None and self.cfg.model.core_checkpoint:
            init_core(self.model, self.cfg)
        elif model is None and self.cfg.model.backbone_weights:  # model.init: the core first, else the backbone
            init_backbone(self.model, self.cfg)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.cfg.optim
        groups = self.model.parameter_groups(o.lr, o.encoder_lr_factor, o.pos_enc_lr_factor, o.decoder_lr_factor,
                                             o.same_lr)
        optimizer = make_adamw(groups, o, str(self.cfg.trainer.precision))
        total = int(self.trainer.estimated_stepping_batches)
        if o.get("schedule", "onecycle") == "poly":  # Depth Anything V2: lr * (1 - step / total) ** 0.9
            power = float(o.poly_power)
            for group in optimizer.param_groups:
                group["betas"] = (0.9, 0.999)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: max(0.0, 1.0 - step / max(total, 1)) ** power)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=total,
            pct_start=o.pct_start, div_factor=o.div_factor, final_div_factor=o.final_div_factor,
            anneal_strategy="cos", cycle_momentum=True, base_momentum=o.base_momentum, max_momentum=o.max_momentum,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        n_total = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        extra = {"git_commit": git_commit(), "params/total": n_total, "params/trainable": n_train,
                 "params/core": sum(p.numel() for p in self.model.core.parameters())}
        for logger in self.loggers:
            logger.log_hyperparams(extra)
        self._define_wandb_metrics()

    def _define_wandb_metrics(self) -> None:
        """W&B keeps the best value of each validation metric in the run summary (min for errors,
        max for delta1-3) instead of the last one; the x axis stays Lightning's global step."""
        from lightning.pytorch.loggers import WandbLogger

        from ..metric_keys import goal, validation_keys

        keys = validation_keys(str(self.cfg.stage), [b.name for b in self.cfg.model.bins])
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment  # a no-op stand-in on ranks other than 0
                for key in keys:
                    run.define_metric(key, step_metric="trainer/global_step", summary=goal(key))
                run.define_metric("train/lr", step_metric="trainer/global_step")

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """``checkpoint["wandb"]``: the W&B run that trained these weights (id, project, entity,
        group), so an ``eval`` of the file links back to it even after the file was moved."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
                run = logger.experiment
                if getattr(run, "id", None):
                    checkpoint["wandb"] = {"run_id": str(run.id), "project": str(run.project or ""),
                                           "entity": str(run.entity or ""), "group": str(run.group or "")}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """``train/lr``: one curve, the OneCycle schedule of ``optim.lr``. Every parameter group
        follows the same schedule scaled by its fixed factor (``optim.*_lr_factor``), so one curve
        says it all."""
        if not self.loggers or self.trainer is None or not self.trainer.optimizers:
            return
        group = self.trainer.optimizers[0].param_groups[0]
        scale = float(self.cfg.optim.lr) / float(group.get("max_lr", group["lr"]) or 1.0)
        self.log("train/lr", float(group["lr"]) * scale, on_step=True, on_epoch=False, batch_size=1)

    # ------------------------------------------------------------------ augmentation
    def on_after_batch_transfer(self, batch: Dict[str, Any], dataloader_idx: int) -> Dict[str, Any]:
        """Training-time flip and colour jitter on the device, seeded by (seed, step): resumable."""
        if not (self.training and self.cfg.data.augment and self.trainer is not None and self.trainer.training):
            return batch
        image = batch["image"]
        b = image.shape[0]
        g = torch.Generator(device="cpu").manual_seed(int(self.cfg.seed) * 7919 + int(self.global_step))
        flip = torch.rand(b, generator=g) < 0.5
        colour = torch.rand(b, generator=g) < 0.5
        gamma = torch.empty(b).uniform_(0.9, 1.1, generator=g)
        bright = torch.empty(b).uniform_(0.75, 1.25, generator=g)
        gains = torch.empty(b, 3).uniform_(0.9, 1.1, generator=g)
        dev = image.device
        flip_d = flip.to(dev).view(b, 1, 1, 1)
        for key in ("image", "depth", "valid"):
            batch[key] = torch.where(flip_d, batch[key].flip(-1), batch[key])
        jitter = (batch["image"].clamp(0, 1) ** gamma.to(dev).view(b, 1, 1, 1)) * bright.to(dev).view(b, 1, 1, 1)
        jitter = (jitter * gains.to(dev).view(b, 3, 1, 1)).clamp(0, 1)
        batch["image"] = torch.where(colour.to(dev).view(b, 1, 1, 1), jitter, batch["image"])
        return batch
