"""Evaluate a checkpoint with ZoeDepth's protocol on one or more datasets (the ``eval`` command).

``Trainer.test`` of :class:`~zoe_lightning.modules.MetricDepthModule` over an
:class:`~data_modules.evaluation.EvalDataModule`: flip test-time augmentation at network
resolution, bilinear upsampling to the ground-truth size, prediction clamped to the dataset's
evaluation range, the dataset's crop; metrics are per-image values averaged over images. Under
DDP (``--devices N`` or a torchrun launch) every sample is scored once and the metrics are synced.
Results are printed, written as Markdown and JSON beside the run (or to ``--output``) and logged to
W&B as a table when W&B is on.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from .protocol import CROP_CHOICES

__all__ = ["add_arguments", "run", "load_checkpoint_model", "add_checkpoint_arguments", "split_overrides",
           "trainer_devices", "check_finite_weights", "training_run"]


def load_checkpoint_model(path: str, preset: Optional[str] = None, overrides: Sequence[str] = ()):
    """Load ``path`` (own .ckpt, released ZoeDepth / MiDaS / HF weights) -> ``(model in eval mode, cfg)``
    with :func:`zoe_lightning.weights.load_model_and_config`."""
    model, cfg, _ = _load_checkpoint(path, preset, overrides)
    return model, cfg


def _load_checkpoint(path: str, preset: Optional[str], overrides: Sequence[str]):
    """``(model in eval mode, cfg, the file's payload)``."""
    from ..weights import load_checkpoint, read_checkpoint

    if not Path(path).exists():
        raise FileNotFoundError(f"--ckpt: no such file or folder: {path}")
    try:
        ckpt = read_checkpoint(str(path))
        model, cfg = load_checkpoint(ckpt, preset=preset, overrides=list(overrides) or None)
    except (ValueError, KeyError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise UserError(f"{path}: {msg}") from None
    check_finite_weights(model, path)
    return model.eval(), cfg, ckpt.payload


def training_run(path: str, payload: Any = None) -> Dict[str, Any]:
    """The training run behind checkpoint ``path``, for the eval run's W&B config:
    ``train_experiment``, ``train_group``, ``train_project``, ``train_run_id``, ``train_run_dir``
    (None where unknown). First source that knows: the W&B run the checkpoint records
    (``payload["wandb"]``), the run folder (``<run>/checkpoints/<file>``: its summary.json, else
    its ``wandb/`` folder, whose run directory name ends in the run id), the checkpoint's stored
    hyper-parameters (experiment, group, project)."""
    keys = ("train_experiment", "train_group", "train_project", "train_run_id", "train_run_dir")
    sources = []
    payload = payload if isinstance(payload, dict) else {}
    stored = payload.get("wandb")
    if isinstance(stored, dict):
        sources.append({"train_run_id": stored.get("run_id"), "train_group": stored.get("group"),
                        "train_project": stored.get("project")})
    p = Path(path).resolve()
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else None
    if run_dir is not None and ((run_dir / "summary.json").is_file() or (run_dir / "config.yaml").is_file()):
        summary: Dict[str, Any] = {}
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            pass
        found = sorted(d.name for d in (run_dir / "wandb").glob("*run-*-*") if d.is_dir())
        sources.append({"train_run_dir": str(run_dir), "train_run_id": summary.get("wandb_run_id")
                        or (found[-1].rsplit("-", 1)[1] if found else None), "train_group": summary.get("group"),
                        "train_experiment": summary.get("experiment"), "train_project": summary.get("project")})
    hyper = payload.get("hyper_parameters")
    cfg = hyper.get("cfg") if isinstance(hyper, dict) else None
    if isinstance(cfg, dict) and cfg.get("name"):
        sources.append({"train_experiment": cfg["name"], "train_group": cfg.get("group") or cfg["name"],
                        "train_project": (cfg.get("logger") or {}).get("project")})
    return {k: next((s[k] for s in sources if s.get(k)), None) for k in keys}


def check_finite_weights(model, path: str) -> None:
    """A ``UserError`` naming the first tensor of ``model`` holding NaN / inf (and how many do)."""
    import torch

    bad = [name for name, t in model.state_dict().items()
           if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise UserError(f"{path}: weight '{bad[0]}' holds NaN or inf values{more}; the checkpoint is unusable")


CKPT_HELP = "checkpoint: own .ckpt, released ZoeDepth .pt, MiDaS file, HF folder, ..."
PRESET_HELP = "configuration of imported weights (zoed_m12_n, zoed_m12_k, zoed_m12_nk or an experiment)"


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ckpt``, ``--preset`` and the key=value overrides of the checkpoint's own config (predict, export)."""
    parser.add_argument("--ckpt", required=True, help=CKPT_HELP)
    parser.add_argument("--preset", default=None, help=PRESET_HELP)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the checkpoint's own config, anywhere on the line "
                        "(e.g. model.keep_aspect_ratio=true model.bins.0.max_depth=80)")


def split_overrides(overrides: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``(experiment overrides, checkpoint overrides)``: ``model.*`` items change the checkpoint's
    config (the model being evaluated), the others the experiment's (data, logger, ...)."""
    model = [o for o in overrides if o.split("=", 1)[0].strip().startswith("model.")]
    return [o for o in overrides if o not in model], model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment whose data.val lists the evaluation sets (and W&B settings)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides, anywhere on the line: model.* keys change the checkpoint's own config "
                        "(e.g. model.keep_aspect_ratio=true), the others the experiment's (e.g. data.num_workers=0)")
    parser.add_argument("--ckpt", required=True, help=CKPT_HELP)
    parser.add_argument("--preset", default=None, help=PRESET_HELP)
    parser.add_argument("--datasets", default=None,
                        help="comma-separated registry names instead of data.val (options from same-named entries)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="file datasets without a 'root' option are read from DIR/<name>")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test; an entry's own "
                        "'split' option wins)")
    parser.add_argument("--crop", default="auto", choices=CROP_CHOICES,
                        help="auto = each dataset's own protocol crop (default)")
    parser.add_argument("--no-flip", action="store_true", help="turn off flip test-time augmentation")
    parser.add_argument("--domain", default=None, help="head to use for every dataset (labeled router)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per batch (default 1, as the paper)")
    parser.add_argument("--num-workers", type=int, default=None, help="loader processes (default: data.num_workers)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="processes (Lightning DDP; default: the launcher's, e.g. torchrun's, else 1)")
    parser.add_argument("--output", default=None, help="folder for results.md / results.json / panels "
                        "(default: <run>/eval/<time> beside the checkpoint)")
    parser.add_argument("--panels", type=int, default=0, metavar="N", help="save colourised panels of the first N "
                        "samples of each dataset")
    parser.add_argument("--reference", default=None, help="results.json of a reference model: adds mRID / mRIθ")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")


def trainer_devices(device: Optional[str], devices: Optional[int]) -> Tuple[str, object, int]:
    """``(accelerator, devices, num_nodes)`` for the Trainer: ``--device`` picks the accelerator
    (``cuda:1``: that GPU); the process count is ``--devices`` (one node), else torchrun's
    (``LOCAL_WORLD_SIZE`` per node, ``WORLD_SIZE`` in all), else 1."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    accelerator = "gpu" if device.startswith("cuda") else device
    count, nodes = 1, 1
    if devices:
        count = int(devices)
    elif "LOCAL_WORLD_SIZE" in os.environ:  # torchrun
        count = int(os.environ["LOCAL_WORLD_SIZE"])
        nodes = max(1, int(os.environ.get("WORLD_SIZE", str(count))) // count)
    if device.startswith("cuda:") and count == 1:
        return accelerator, [int(device.split(":", 1)[1])], nodes
    return accelerator, count, nodes


def scoring_line(ckpt: str, split: str, entries: Sequence) -> str:
    """``eval: <checkpoint> on the test split of: nyu, kitti`` (an entry's own split is named with it)."""
    names = []
    for e in entries:
        own = (e.options or {}).get("split") if e.options is not None else None
        names.append(f"{e.name} ({own} split)" if own and str(own) != split else str(e.name))
    return f"eval: {Path(ckpt).resolve()} on the {split} split of: {', '.join(names) or '-'}"


def run(args: argparse.Namespace) -> int:
    import lightning as L
    from omegaconf import OmegaConf

    from callbacks.console import quiet_lightning, quiet_wandb_logger
    from data_modules.evaluation import EvalDataModule, dataset_entries

    from ..config import load_config
    from ..modules import MetricDepthModule
    from .report import (EvalPanels, attach_relative_improvement, default_output_dir, log_results_wandb,
                         print_results, read_reference, results_markdown, wandb_logger)

    for option, value, low in (("--batch-size", args.batch_size, 1), ("--num-workers", args.num_workers, 0)):
        if value is not None and value < low:
            raise UserError(f"{option} must be >= {low}, got {value}")
    exp_overrides, model_overrides = split_overrides(args.overrides)
    exp_cfg = load_config(args.experiment, exp_overrides)
    model, model_cfg, payload = _load_checkpoint(args.ckpt, args.preset, model_overrides)
    train_link = training_run(str(args.ckpt), payload)
    del payload  # the file's other content (optimizer state, ...) is not needed
    domains = list(getattr(model, "domains", []) or [b.name for b in exp_cfg.model.bins])
    if args.domain and args.domain not in domains:
        raise UserError(f"--domain {args.domain!r} is not a head of this model (heads: {', '.join(domains)})")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    entries = dataset_entries(exp_cfg, names, args.data_root)
    data = EvalDataModule(cfg=exp_cfg, entries=entries, split=args.split,
                          domains=domains, domain=args.domain, crop=args.crop, batch_size=args.batch_size,
                          num_workers=exp_cfg.data.num_workers if args.num_workers is None else args.num_workers)
    reference = read_reference(args.reference) if args.reference else None
    out_dir = Path(args.output) if args.output else default_output_dir(args.ckpt, exp_cfg.name, exp_cfg.output_dir)
    module_cfg = model_cfg if model_cfg is not None and "model" in model_cfg else exp_cfg
    module = MetricDepthModule(module_cfg, model=model)
    module.flip_tta = not args.no_flip
    accelerator, devices, nodes = trainer_devices(args.device, args.devices)
    world = (len(devices) if isinstance(devices, list) else devices) * nodes
    wandb_config = None
    if not args.no_wandb:  # the whole evaluation setting and the run that trained the checkpoint
        wandb_config = {
            "ckpt": str(Path(args.ckpt).resolve()), "preset": args.preset, "experiment": exp_cfg.name,
            "split": args.split, "flip_tta": not args.no_flip, "crop": args.crop, "domain": args.domain,
            "datasets": [str(e.name) for e in data.entries], "data_root": args.data_root,
            "batch_size": args.batch_size, "world_size": world, "reference": args.reference,
            "model_overrides": list(model_overrides), "overrides": list(exp_overrides),
            "model": OmegaConf.to_container(model_cfg.model, resolve=True)
            if model_cfg is not None and "model" in model_cfg else None,
            **train_link,
        }
    logger = None if args.no_wandb else wandb_logger(exp_cfg, out_dir, wandb_config)
    quiet_lightning()
    if logger is not None:
        quiet_wandb_logger(logger)
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=nodes, strategy="ddp" if world > 1 else "auto",
        precision="32-true", logger=logger if logger is not None else False, enable_checkpointing=False,
        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=str(out_dir),
        callbacks=[EvalPanels(out_dir / "panels", args.panels, Path(args.ckpt).name)] if args.panels else [],
    )
    if trainer.is_global_zero:
        print(scoring_line(args.ckpt, args.split, entries))
    trainer.test(module, datamodule=data, verbose=False)
    results = module.test_results
    if reference is not None:
        attach_relative_improvement(results, reference)
    if trainer.global_rank != 0:
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    print_results(results)
    meta = {"ckpt": str(args.ckpt), "preset": args.preset, "experiment": exp_cfg.name, "split": args.split,
            "flip_tta": not args.no_flip, "crop": args.crop, "world_size": trainer.world_size,
            "reference": args.reference,
            "backbone": str(model_cfg.model.backbone) if model_cfg is not None and "model" in model_cfg else None}
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "datasets": results}, indent=2))
    (out_dir / "results.md").write_text(results_markdown(results, f"{exp_cfg.name}: {Path(args.ckpt).name}"))
    out_dir = out_dir.resolve()
    print(f"\nresults: {out_dir / 'results.md'} and {out_dir / 'results.json'}")
    if args.panels:
        print(f"panels:  {out_dir / 'panels'}")
    if logger is not None:
        from ..train import wandb_mode

        log_results_wandb(logger, results)
        print(f"W&B:     table logged (mode={wandb_mode(exp_cfg)}) under {out_dir / 'wandb'}")
    return 0
