"""What a finished or stopped run leaves behind: the constant-depth baseline it is compared with,
``<run>/summary.json`` (also the W&B summary) and the report printed at the end."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from omegaconf import DictConfig

from .errors import RunInterrupted, TrainingDiverged

__all__ = ["constant_baseline", "baseline_text", "print_report", "write_summary", "write_stopped"]


@torch.no_grad()
def constant_baseline(datamodule, bins, max_train_samples: int = 256) -> Dict[str, float]:
    """REL on the validation sets of the best constant predictor: for each domain, the median of
    the per-image median depths of (up to ``max_train_samples``) training images."""
    from .evaluation.metrics import DepthMetrics

    medians: Dict[str, List[float]] = {}
    for ds in datamodule.train_sets:
        for i in range(min(len(ds), max_train_samples)):
            s = ds[i]
            if s["valid"].any():
                medians.setdefault(s["domain"], []).append(float(s["depth"][s["valid"]].median()))
    constants = {d: float(torch.tensor(v).median()) for d, v in medians.items()}
    results: Dict[str, float] = {}
    for b in bins:
        if b.name not in constants:
            continue
        metric = DepthMetrics(float(b.min_depth), float(b.max_depth))
        for ds in datamodule.val_sets:
            for i in range(len(ds)):
                s = ds[i]
                if s["domain"] == b.name:
                    gt = s["depth"][None]
                    metric.update(torch.full_like(gt, constants[b.name]), gt)
        if metric.update_count:
            results[b.name] = float(metric.compute()["abs_rel"])
    return results


def baseline_text(ours: float, const: float) -> str:
    """``better by 12.0%`` / ``worse by 36.1%``: the model's REL against the constant predictor's."""
    if not (const > 0) or ours != ours:
        return "no comparison"
    if ours < const:
        return f"better by {100 * (1 - ours / const):.1f}%"
    if ours > const:
        return f"worse by {100 * (ours / const - 1):.1f}%"
    return "the same"


def print_report(cfg, trainer, run_dir: Path, baseline: Dict[str, float], ckpt,
                  metrics: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """The closing report (rank 0): final validation metrics, the constant baseline, the best
    validation and where everything is; every path absolute, steps as ``trainer.global_step``."""
    import json

    if metrics is None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    run_dir = run_dir.resolve()
    print("\n" + "=" * 72)
    epochs = int(trainer.current_epoch)
    print(f"run '{cfg.name}' finished in {run_dir} after {trainer.global_step} steps "
          f"({epochs} epoch{'' if epochs == 1 else 's'})")
    keys = ["abs_rel", "rmse", "log_10", "a1", "a2", "a3"] if cfg.stage == "metric" else ["rel", "a1"]
    labels = {"abs_rel": "REL", "rmse": "RMSE", "log_10": "log10", "a1": "delta1", "a2": "delta2", "a3": "delta3",
              "rel": "REL (aligned disparity)"}
    domains = [b.name for b in cfg.model.bins] if cfg.stage == "metric" else [None]
    from callbacks.console import ValidationStep

    val_step = next((c.step for c in trainer.callbacks if isinstance(c, ValidationStep)), None)
    at = f" at step {val_step}" if val_step is not None else ""
    for dom in domains:
        prefix = f"val/{dom}/" if dom else "val/"
        if not any(prefix + k in metrics for k in keys):  # e.g. no validation image of this domain
            continue
        print(f"\nlast validation metrics{at}{f' ({dom})' if dom and len(domains) > 1 else ''}:")
        for k in keys:
            if prefix + k in metrics:
                print(f"  {labels[k]:<24} {metrics[prefix + k]:.4f}")
        if dom in baseline and prefix + "abs_rel" in metrics:
            ours, const = metrics[prefix + "abs_rel"], baseline[dom]
            print(f"  REL vs the best constant-depth predictor: {ours:.4f} vs {const:.4f}, "
                  f"{baseline_text(ours, const)}")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    monitor, best = summary.get("monitor"), summary.get("best") or {}
    if monitor in best and summary.get("best_step") is not None:
        print(f"\nbest validation {labels.get(monitor.split('/')[-1], monitor)}: {best[monitor]:.4f} "
              f"at step {int(summary['best_step'])}")

    def where(path) -> str:
        return str(Path(path).resolve()) if path else "-"

    print(f"\ncheckpoints: best={where(ckpt.best_model_path)}  last={where(ckpt.last_model_path)}")
    if cfg.logger.csv:
        print(f"CSV log:     {run_dir / 'csv' / 'metrics.csv'}")
    if summary:
        print(f"summary:     {summary_path}")
    if cfg.logger.wandb:
        from .train import wandb_mode

        mode = wandb_mode(cfg)
        runs = sorted((run_dir / "wandb").glob("offline-run-*")) if (run_dir / "wandb").exists() else []
        where_wandb = runs[-1] if runs else run_dir / "wandb"
        if mode == "offline":
            print(f"W&B run:     {where_wandb} (offline) -> upload with: wandb sync {where_wandb}")
        else:
            print(f"W&B run:     mode={mode}, files in {where_wandb}")
    print("=" * 72)
    return metrics


def write_summary(cfg: DictConfig, trainer, run_dir: Path, metrics: Dict[str, float], baseline: Dict[str, float],
                   ckpt, resume: Optional[str], status: str = "finished", reason: Optional[str] = None
                   ) -> Dict[str, Any]:
    """``<run>/summary.json``: final and best validation metrics and the run's identity, read by
    ``zoe-lightning compare`` and the sweep launcher (rank 0 only); also copied to the W&B summary."""
    import json

    from .metric_keys import domain_key, monitor_for
    from .tools.compare.runs import best_point, read_csv_log, validation_points

    monitor = monitor_for(cfg)
    csv_path = run_dir / "csv" / "metrics.csv"
    points = validation_points(read_csv_log(csv_path)) if csv_path.is_file() else []
    best = best_point(points, monitor) or {}
    # percent by which the best checkpoint's REL is below the constant predictor's (negative: worse)
    improvement = {d: round(100.0 * (1.0 - best[domain_key(d, "abs_rel")] / rel), 2)
                   for d, rel in baseline.items() if domain_key(d, "abs_rel") in best and rel > 0}
    import wandb

    summary = {
        "experiment": cfg.name, "group": cfg.group or cfg.name, "tags": list(cfg.tags), "seed": int(cfg.seed),
        "stage": cfg.stage, "domains": [b.name for b in cfg.model.bins] if cfg.stage == "metric" else [],
        "project": cfg.logger.project, "run_dir": str(run_dir), "status": status, "resumed_from": resume,
        "global_step": int(trainer.global_step), "monitor": monitor,
        "final": metrics, "best": {k: v for k, v in best.items() if k.startswith("val/")},
        "best_step": best.get("step"), "baseline_rel": baseline, "improvement_pct": improvement,
        "checkpoints": {"best": ckpt.best_model_path or None, "last": ckpt.last_model_path or None},
        "wandb_run_id": wandb.run.id if wandb.run is not None else None, "job_type": cfg.logger.job_type,
        "wall_time_s": round(time.time() - (run_dir / "config.yaml").stat().st_mtime, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if status != "finished":  # diverged / interrupted: where and why the run stopped
        summary.update(stopped_at_step=int(trainer.global_step), reason=reason)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _wandb_summary(summary)
    return summary


def _wandb_summary(summary: Dict[str, Any]) -> None:
    """The open W&B run's summary: ``best_step``, ``best/<domain>/<metric>`` (the validation that
    picked best.ckpt), ``baseline/<domain>/abs_rel`` (constant predictor) and
    ``improvement/<domain>/abs_rel_pct`` (percent below the constant), ``status``."""
    import wandb

    if wandb.run is None:
        return
    values: Dict[str, Any] = {"status": summary["status"], "monitor": summary["monitor"]}
    if summary.get("best_step") is not None:
        values["best_step"] = int(summary["best_step"])
    values.update({"best/" + k[len("val/"):]: v for k, v in summary["best"].items()})
    values.update({f"baseline/{d}/abs_rel": v for d, v in summary["baseline_rel"].items()})
    values.update({f"improvement/{d}/abs_rel_pct": v for d, v in summary["improvement_pct"].items()})
    wandb.run.summary.update(values)


def write_stopped(cfg: DictConfig, trainer, run_dir: Path, resume: Optional[str], exc: BaseException) -> None:
    """A diverged or signalled run: summary with status ``diverged`` / ``interrupted`` (rank 0), then
    ``RunInterrupted`` (exit 128 + signal) for a signal; other exits propagate unchanged."""
    import signal

    import wandb

    from callbacks import SignalGuard

    guard = next((c for c in trainer.callbacks if isinstance(c, SignalGuard)), None)
    signum = guard.signum if guard is not None else None
    if not isinstance(exc, TrainingDiverged) and signum is None:
        return
    ckpt = trainer.checkpoint_callback
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if isinstance(exc, TrainingDiverged):
        status, reason = "diverged", str(exc)
    else:
        status = "interrupted"
        reason = f"{signal.Signals(signum).name} at step {trainer.global_step}; resumable checkpoint: " + (
            ckpt.last_model_path or "none (no step completed)")
    if trainer.is_global_zero and (run_dir / "config.yaml").is_file():
        write_summary(cfg, trainer, run_dir, metrics, {}, ckpt, resume, status=status, reason=reason)
    if wandb.run is not None:
        wandb.finish(exit_code=1)
    if status == "interrupted":
        if trainer.is_global_zero:
            print(f"zoe-lightning: interrupted by {reason}", file=sys.stderr)
        raise RunInterrupted(128 + int(signum)) from None
