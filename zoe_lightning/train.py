"""``train(cfg)``: assemble data, module, loggers and callbacks; fit; report.

A run writes to ``<output_dir>/<name>/<timestamp>/``: ``checkpoints/`` (best by validation REL
and ``last.ckpt``), ``csv/metrics.csv`` and ``wandb/`` (offline unless you are logged in).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from .config import check_init
from .errors import TrainingDiverged
from .run_summary import constant_baseline, print_report, write_stopped, write_summary

__all__ = ["train", "build_trainer", "wandb_mode"]


def wandb_mode(cfg: DictConfig) -> str:
    """Explicit config, else ``WANDB_MODE``, else online when an API key is configured, else offline."""
    if cfg.logger.mode:
        return str(cfg.logger.mode)
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    logged_in = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return "online" if logged_in else "offline"


def new_wandb_logger(**kwargs):
    """Lightning's ``WandbLogger`` with ``kwargs`` (``wandb.init`` arguments), minus the deprecated
    ``anonymous`` setting Lightning always passes (wandb warns about it even when it is None)."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(**kwargs)
    if getattr(logger, "_wandb_init", {}).get("anonymous", "unset") is None:
        del logger._wandb_init["anonymous"]
    return logger


RUN_ID_ENV = "ZOE_RUN_ID"  # fixed run-directory name: the sbatch script sets slurm-<job id>


def _global_rank() -> int:
    """This process's rank as the launcher set it in the environment (0 outside DDP)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def _run_dir(cfg: DictConfig) -> Path:
    run_id = os.environ.get(RUN_ID_ENV)
    if run_id:  # stable across DDP ranks and SLURM requeues
        return Path(cfg.output_dir) / cfg.name / run_id
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(cfg.output_dir) / cfg.name / stamp
    suffix = 1
    while path.exists():
        path = Path(cfg.output_dir) / cfg.name / f"{stamp}-{suffix}"
        suffix += 1
    return path


def find_last_checkpoint(cfg: DictConfig) -> Optional[Path]:
    """``--resume auto``: the newest ``last.ckpt`` / ``hpc_ckpt_<n>.ckpt`` of this run's fixed
    directory when ``ZOE_RUN_ID`` is set (a requeued SLURM job), else the newest
    ``<output_dir>/<name>/*/checkpoints/last.ckpt``; None when there is none (the run starts from scratch)."""
    if os.environ.get(RUN_ID_ENV):  # also Lightning's SIGUSR1 checkpoint (hpc_ckpt_<n>.ckpt) of a requeue
        run_dir = _run_dir(cfg)
        found = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
        return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None
    found = [p for p in (Path(cfg.output_dir) / cfg.name).glob("*/checkpoints/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p))) if found else None


def _device_count(t) -> int:
    """Processes per node that ``trainer.devices`` asks for (``auto``/-1: every visible GPU, else 1)."""
    devices = t.devices
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        gpu = t.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return max(1, torch.cuda.device_count()) if gpu else 1
    if "," in text:  # "0,1": device indices
        return len([d for d in text.split(",") if d.strip()])
    return int(text)


def heads_can_skip_batches(cfg: DictConfig) -> bool:
    """True when a training batch may leave a whole metric head without images (several heads,
    hard routing): DDP then has to look for parameters without gradients."""
    if cfg.stage != "metric" or len(cfg.model.bins) < 2:
        return False
    return cfg.model.router.type in ("labeled", "trained")  # the auto router mixes every head


def resolve_strategy(cfg: DictConfig) -> str:
    """``trainer.strategy``, with DDP's unused-parameter detection switched on for multi-process
    runs of multi-head models whose heads skip batches (``auto``/``ddp`` only; explicit choices
    such as ``ddp_find_unused_parameters_false`` or ``deepspeed`` are kept)."""
    t = cfg.trainer
    strategy = str(t.strategy)
    world = _device_count(t) * int(t.num_nodes)
    if strategy in ("auto", "ddp") and world > 1 and heads_can_skip_batches(cfg):
        return "ddp_find_unused_parameters_true"
    return strategy


def _module_class(cfg: DictConfig):
    from .modules import MetricDepthModule, RelativeDepthModule

    return RelativeDepthModule if cfg.stage == "relative" else MetricDepthModule


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: Optional[List[Any]] = None):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from callbacks import DataProbe, DivergenceGuard, GuardedCheckpoint, SignalGuard

    from .metric_keys import monitor_for

    monitor = monitor_for(cfg)
    loggers: List[Any] = []
    if cfg.logger.csv:
        loggers.append(CSVLogger(str(run_dir), name="", version="csv"))
    if cfg.logger.wandb:
        mode = wandb_mode(cfg)
        loggers.append(new_wandb_logger(
            project=cfg.logger.project, entity=cfg.logger.entity, name=f"{cfg.name}-{run_dir.name}",
            group=cfg.group or cfg.name, tags=list(cfg.tags), notes=cfg.notes, save_dir=str(run_dir), mode=mode,
            job_type=cfg.logger.job_type, config=OmegaConf.to_container(cfg, resolve=True),
            # best.ckpt (alias "best", and last.ckpt as "latest") uploaded at the end of a successful fit
            log_model=bool(cfg.logger.log_model) and mode == "online",
        ))
    callbacks: List[Any] = [
        GuardedCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor=monitor, mode="min",
                          save_last=True, save_top_k=1, auto_insert_metric_name=False),
        DataProbe(), DivergenceGuard(cfg.trainer.max_bad_steps), SignalGuard(),
    ]
    cb = cfg.callbacks
    # 1-based epochs, no v_num, no FLOPs column (see callbacks/console.py); plain text when rich=false
    from callbacks.console import (EpochProgressBar, QuietModelSummary, RichEpochProgressBar, RichQuietModelSummary,
                                   ValidationStep)

    callbacks.append(ValidationStep())
    if cb.rich:
        callbacks += [RichEpochProgressBar(leave=True), RichQuietModelSummary(max_depth=2)]
    else:  # plain text (Lightning would otherwise pick Rich whenever it is installed)
        callbacks += [EpochProgressBar(), QuietModelSummary(max_depth=2)]
    multi = len(cfg.model.bins) > 1
    if cfg.stage == "metric" and (cb.depth_panels_every > 0 or cb.bin_centers or (cb.router_stats and multi)):
        from callbacks import BinCentersCallback, DepthPanelCallback, RouterStatsCallback

        if cb.depth_panels_every > 0:
            callbacks.append(DepthPanelCallback(every_n_steps=cb.depth_panels_every, n_panels=cb.n_panels))
        if cb.bin_centers:
            callbacks.append(BinCentersCallback())
        if cb.router_stats and multi:
            callbacks.append(RouterStatsCallback())
    callbacks += list(extra_callbacks or [])
    t = cfg.trainer
    kwargs: Dict[str, Any] = dict(
        max_epochs=t.max_epochs, max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=resolve_strategy(cfg), precision=t.precision,
        gradient_clip_val=t.gradient_clip_val,
        val_check_interval=t.val_check_interval, log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic, default_root_dir=str(run_dir), logger=loggers or False,
        callbacks=callbacks, use_distributed_sampler=False, enable_progress_bar=True,
        enable_model_summary=False,  # the summary callback above is the one
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    kwargs.update(OmegaConf.to_container(t.extra, resolve=True))
    return L.Trainer(**kwargs)


def train(cfg: DictConfig, resume: Optional[str] = None, extra_callbacks: Optional[List[Any]] = None) -> Dict[str, Any]:
    """Train the experiment ``cfg``; returns the final validation metrics, baseline and paths."""
    import lightning as L

    from data_modules.datamodule import build_datamodule

    run_dir: Optional[Path] = None
    if resume == "auto":  # resume the newest run of this experiment, in its own directory
        found = find_last_checkpoint(cfg)
        resume = str(found) if found is not None else None
        if found is not None:
            run_dir = found.parent.parent if found.parent.name == "checkpoints" else found.parent
        if _global_rank() == 0:
            what = f"resuming from {found.resolve()}" if found is not None else "no checkpoint found, starting fresh"
            print(f"--resume auto: {what}")
    if resume and not Path(resume).is_file():
        raise FileNotFoundError(f"--resume: no such checkpoint: {resume}")
    if not resume:  # a resumed run restores every weight from its checkpoint
        check_init(cfg)
    from callbacks.console import quiet_lightning

    quiet_lightning()  # known notices that are not the user's to act on
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in config.yaml
    run_dir = run_dir or _run_dir(cfg)
    if _global_rank() == 0:  # DDP: only rank 0 owns the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    module = _module_class(cfg)(cfg)
    if resume:  # read safely and checked against this config before Lightning opens it
        from .weights.resume import check_resume

        check_resume(resume, module, cfg)
    datamodule = build_datamodule(cfg)
    trainer = build_trainer(cfg, run_dir, extra_callbacks)
    from callbacks.console import quiet_wandb_logger

    for logger in trainer.loggers:
        quiet_wandb_logger(logger)
    # Processes that Lightning's DDP launcher starts during fit re-run this command: they find the
    # run directory (and --resume auto its checkpoint) through the environment.
    previous_id = os.environ.get(RUN_ID_ENV)
    if run_dir.parent == Path(cfg.output_dir) / cfg.name:
        os.environ[RUN_ID_ENV] = run_dir.name
    from .weights.io import unsafe_load_variable_hidden

    try:
        with unsafe_load_variable_hidden():  # Lightning's own load: weights only, whatever the environment
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except (TrainingDiverged, SystemExit) as exc:
        write_stopped(cfg, trainer, run_dir, resume, exc)
        raise
    finally:
        if previous_id is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous_id
    ckpt = trainer.checkpoint_callback
    # every rank: the baseline's metric syncs over processes; the report is printed by rank 0
    baseline = constant_baseline(datamodule, cfg.model.bins) if cfg.stage == "metric" else {}
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if trainer.is_global_zero:
        write_summary(cfg, trainer, run_dir, metrics, baseline, ckpt, resume)
    import wandb

    if wandb.run is not None:  # close the run so a follow-up or a second train() starts its own
        wandb.finish()
    if trainer.is_global_zero:  # last, after W&B's closing lines
        print_report(cfg, trainer, run_dir, baseline, ckpt, metrics)
    result = {"metrics": metrics, "baseline": baseline, "run_dir": str(run_dir),
              "best": ckpt.best_model_path, "last": ckpt.last_model_path}
    if cfg.get("followup"):
        from .config import load_config

        best = ckpt.best_model_path or ckpt.last_model_path
        print(f"\nfollow-up experiment '{cfg.followup}' initialised from {Path(best).resolve()}")
        next_cfg = load_config(cfg.followup, [f"model.core_checkpoint={best}", f"output_dir={cfg.output_dir}"])
        result["followup"] = train(next_cfg, extra_callbacks=extra_callbacks)
    return result
