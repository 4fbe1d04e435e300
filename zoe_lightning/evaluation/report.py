"""Reporting evaluation results: console, Markdown, JSON-ready dicts, mRID / mRIθ against a
reference, W&B (through Lightning's ``WandbLogger``) and colourised panels of the first samples."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Mapping

from lightning.pytorch.callbacks import Callback

from ..errors import UserError
from .metrics import relative_improvement

__all__ = ["TABLE_COLUMNS", "read_reference", "attach_relative_improvement", "results_markdown", "print_results",
           "wandb_logger", "log_results_wandb", "default_output_dir", "EvalPanels"]

TABLE_COLUMNS = (
    ("a1", "δ1"), ("a2", "δ2"), ("a3", "δ3"), ("abs_rel", "REL"), ("sq_rel", "Sq.Rel"), ("rmse", "RMSE"),
    ("rmse_log", "RMSE log"), ("log_10", "log10"), ("silog", "SILog"),
)


def read_reference(path: str) -> Dict[str, Dict[str, float]] | Dict[str, float]:
    """A reference results file: our ``results.json`` (``{"datasets": {name: metrics}}``),
    ``{name: metrics}``, or one flat ``{metric: value}`` applied to every dataset."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--reference: no such file: {path}")
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"--reference {path}: not valid JSON: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("datasets"), dict):
        obj = obj["datasets"]
    if not isinstance(obj, dict):
        raise UserError(f"--reference {path}: expected a JSON object")
    return obj


def attach_relative_improvement(results: Dict[str, Dict[str, Any]], reference: Mapping[str, Any]) -> None:
    """Add ``mRID`` / ``mRItheta`` (percent, vs ``reference``) to each dataset that has a reference."""
    flat = any(k in reference for k in ("abs_rel", "rmse", "a1"))
    for name, res in results.items():
        ref = reference if flat else reference.get(name)
        if not isinstance(ref, Mapping):
            continue
        ref = {k: float(v) for k, v in ref.items() if isinstance(v, (int, float))}
        res.update(relative_improvement(res, ref))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def results_markdown(results: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """One Markdown table, a row per dataset (metrics rounded to 3 decimals like the original)."""
    extra = [("mRID", "mRID %"), ("mRItheta", "mRIθ %")]
    extra = [c for c in extra if any(c[0] in r for r in results.values())]
    cols = list(TABLE_COLUMNS) + extra
    lines = [f"## {title}", ""] if title else []
    lines.append("| dataset | " + " | ".join(label for _, label in cols) + " | images | crop | range |")
    lines.append("|---" * (len(cols) + 4) + "|")
    for name, r in results.items():
        cells = [_fmt(r.get(k, float("nan"))) for k, _ in cols]
        rng = f"{r.get('min_depth', 0):g}–{r.get('max_depth', 0):g} m"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('n_images', '')} | {r.get('crop') or '-'} "
                     f"| {rng} |")
    return "\n".join(lines) + "\n"


def print_results(results: Mapping[str, Mapping[str, Any]]) -> None:
    """The console report: one block per dataset."""
    for name, r in results.items():
        print(f"\n{name}: {r['n_images']} images ({r['n_empty']} without valid pixels skipped), crop "
              f"{r.get('crop') or 'none'}, range {r['min_depth']:g}–{r['max_depth']:g} m, "
              f"flip TTA {'on' if r.get('flip') else 'off'}")
        keys = [k for k, _ in TABLE_COLUMNS] + [k for k in ("mRID", "mRItheta") if k in r]
        labels = dict(TABLE_COLUMNS, mRID="mRID %", mRItheta="mRIθ %")
        print("  " + " ".join(f"{labels[k]:>9}" for k in keys))
        print("  " + " ".join(f"{_fmt(r[k]):>9}" for k in keys))
        if r.get("heads") and len(r["heads"]) > 1 and r.get("routed"):
            share = ", ".join(f"{h}: {c}" for h, c in zip(r["heads"], r["routed"]))
            print(f"  images routed per head (flip pass excluded): {share}")


def wandb_logger(cfg, out_dir: Path, config: Mapping[str, Any]):
    """A Lightning ``WandbLogger`` for an evaluation run (job type ``eval``) with ``config`` (the
    evaluation setting and the training run, see ``evaluate.run``), or None when W&B is off in
    ``cfg`` or disabled. The run joins the training run's group when that is known."""
    from ..train import new_wandb_logger, wandb_mode

    if cfg is None or not cfg.logger.wandb or wandb_mode(cfg) == "disabled":
        return None
    import wandb

    if wandb.run is not None:  # e.g. left open by a training run in the same process
        wandb.finish()
    return new_wandb_logger(project=cfg.logger.project, entity=cfg.logger.entity,
                            group=config.get("train_group") or cfg.group or cfg.name, job_type="eval",
                            name=f"eval-{cfg.name}-{out_dir.name}", save_dir=str(out_dir), mode=wandb_mode(cfg),
                            config=dict(config))


def log_results_wandb(logger, results: Mapping[str, Mapping[str, Any]]) -> None:
    """The results table (``eval/results``) and ``eval/<set>/<metric>`` summary values; closes the run."""
    import wandb

    run = logger.experiment
    columns = ["dataset"] + [k for k, _ in TABLE_COLUMNS] + ["n_images", "crop"]
    table = wandb.Table(columns=columns)
    for name, r in results.items():
        table.add_data(name, *[r[k] for k, _ in TABLE_COLUMNS], r["n_images"], r.get("crop") or "none")
        for k, _ in TABLE_COLUMNS:
            run.summary[f"eval/{name}/{k}"] = r[k]
    run.log({"eval/results": table})
    run.finish()


def default_output_dir(ckpt: str, cfg_name: str, output_root: str = "runs") -> Path:
    """``<run>/eval/<stamp>`` for a checkpoint inside a run's ``checkpoints/``; else
    ``<output_root>/eval/<checkpoint stem>/<stamp>``."""
    p = Path(ckpt).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if p.parent.name == "checkpoints":
        base = p.parent.parent / "eval"
    else:
        base = Path(output_root) / "eval" / p.stem
    path, k = base / stamp, 1
    while path.exists():
        path, k = base / f"{stamp}-{k}", k + 1
    return path


class EvalPanels(Callback):
    """Saves labelled image | GT | prediction | error panels of the first ``limit`` samples of each
    evaluation set to ``<folder>/<set name>/<index>.png`` (prediction at the GT size, clamped).

    The colour range is :func:`~zoe_lightning.evaluation.viz.depth_range` of the set's range, the
    rule the training panels use, so a sample looks the same in both; ``source`` (e.g. the
    checkpoint's file name) is written on each panel."""

    def __init__(self, folder: Path, limit: int, source: str | None = None) -> None:
        self.folder, self.limit, self.source = Path(folder), int(limit), source

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.folder = Path(trainer.strategy.broadcast(str(self.folder), src=0))  # rank 0's folder for all

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        import torch.nn.functional as F

        from .protocol import clamp_prediction
        from .viz import depth_range, labelled_depth_panel, sample_abs_rel, save_png

        s = pl_module.test_sets[dataloader_idx]
        for group, pred in zip(batch, outputs["pred"]):
            gt = group["depth"].cpu()
            for j, index in enumerate(group["index"].tolist()):
                if index >= self.limit:
                    continue
                p = F.interpolate(pred[j: j + 1].float().cpu(), size=gt.shape[-2:], mode="bilinear",
                                  align_corners=True)
                p = clamp_prediction(p, s.min_depth, s.max_depth)[0, 0]
                g = gt[j, 0]
                valid = (g > s.min_depth) & (g < s.max_depth)
                vmin, vmax = depth_range(s.min_depth, s.max_depth, g, valid)
                parts = [f"dataset {s.name}", f"domain {s.domain}", f"sample {index}",
                         f"REL {sample_abs_rel(g, p, valid):.3f} (uncropped)"]
                if self.source:
                    parts.insert(2, self.source)
                panel = labelled_depth_panel(group["image"][j].cpu(), g, p, valid, vmin, vmax,
                                             header=" · ".join(parts))
                save_png(panel, self.folder / s.name / f"{index:05d}.png")
