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
from typing import Optional, Sequence, Tuple

from ..errors import UserError
from .protocol import CROP_CHOICES

__all__ = ["add_arguments", "run", "load_checkpoint_model", "add_model_override_argument", "trainer_devices",
           "check_finite_weights"]


def load_checkpoint_model(path: str, preset: Optional[str] = None, overrides: Sequence[str] = ()):
    """Load ``path`` (own .ckpt, released ZoeDepth / MiDaS / HF weights) -> ``(model in eval mode, cfg)``
    with :func:`zoe_lightning.weights.load_model_and_config`."""
    from ..weights import load_model_and_config

    if not Path(path).exists():
        raise FileNotFoundError(f"--ckpt: no such file or folder: {path}")
    try:
        model, cfg = load_model_and_config(str(path), preset=preset, overrides=list(overrides) or None)
    except (ValueError, KeyError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise UserError(f"{path}: {msg}") from None
    check_finite_weights(model, path)
    return model.eval(), cfg


def check_finite_weights(model, path: str) -> None:
    """A ``UserError`` naming the first tensor of ``model`` holding NaN / inf (and how many do)."""
    import torch

    bad = [name for name, t in model.state_dict().items()
           if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise UserError(f"{path}: weight '{bad[0]}' holds NaN or inf values{more}; the checkpoint is unusable")


def add_model_override_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-set", dest="model_overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="overrides of the checkpoint's own config (e.g. "
                        "model.keep_aspect_ratio=true model.bins.0.max_depth=80)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment whose data.val lists the evaluation sets (and W&B settings)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the experiment (before the options)")
    parser.add_argument("--set", dest="set_overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="more experiment overrides, usable after the options (e.g. from make ARGS)")
    parser.add_argument("--ckpt", required=True, help="checkpoint: own .ckpt, released ZoeDepth .pt, HF folder, ...")
    parser.add_argument("--preset", default=None, help="preset of imported weights (zoed_m12_n, zoed_m12_k, ...)")
    add_model_override_argument(parser)
    parser.add_argument("--datasets", default=None,
                        help="comma-separated registry names instead of data.val (options from same-named entries)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="file datasets without a 'root' option are read from DIR/<name>")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--crop", default="auto", choices=CROP_CHOICES,
                        help="auto = each dataset's own protocol crop (default)")
    parser.add_argument("--no-flip", action="store_true", help="turn off flip test-time augmentation")
    parser.add_argument("--domain", default=None, help="head to use for every dataset (labeled router)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=None, help="default: data.num_workers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="processes (Lightning DDP; default: the launcher's, e.g. torchrun's, else 1)")
    parser.add_argument("--output", default=None, help="folder for results.md / results.json / panels")
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


def run(args: argparse.Namespace) -> int:
    import lightning as L

    from data_modules.evaluation import EvalDataModule, dataset_entries

    from ..config import load_config
    from ..modules import MetricDepthModule
    from .report import (EvalPanels, attach_relative_improvement, default_output_dir, log_results_wandb,
                         print_results, read_reference, results_markdown, wandb_logger)

    for option, value, low in (("--batch-size", args.batch_size, 1), ("--num-workers", args.num_workers, 0)):
        if value is not None and value < low:
            raise UserError(f"{option} must be >= {low}, got {value}")
    exp_cfg = load_config(args.experiment, list(args.overrides) + list(args.set_overrides))
    model, model_cfg = load_checkpoint_model(args.ckpt, args.preset, args.model_overrides)
    domains = list(getattr(model, "domains", []) or [b.name for b in exp_cfg.model.bins])
    if args.domain and args.domain not in domains:
        raise UserError(f"--domain {args.domain!r} is not a head of this model (heads: {', '.join(domains)})")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    data = EvalDataModule(cfg=exp_cfg, entries=dataset_entries(exp_cfg, names, args.data_root), split=args.split,
                          domains=domains, domain=args.domain, crop=args.crop, batch_size=args.batch_size,
                          num_workers=exp_cfg.data.num_workers if args.num_workers is None else args.num_workers)
    reference = read_reference(args.reference) if args.reference else None
    out_dir = Path(args.output) if args.output else default_output_dir(args.ckpt, exp_cfg.name, exp_cfg.output_dir)
    module_cfg = model_cfg if model_cfg is not None and "model" in model_cfg else exp_cfg
    module = MetricDepthModule(module_cfg, model=model)
    module.flip_tta = not args.no_flip
    accelerator, devices, nodes = trainer_devices(args.device, args.devices)
    world = (len(devices) if isinstance(devices, list) else devices) * nodes
    logger = None if args.no_wandb else wandb_logger(exp_cfg, out_dir, str(args.ckpt))
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=nodes, strategy="ddp" if world > 1 else "auto",
        precision="32-true", logger=logger if logger is not None else False, enable_checkpointing=False,
        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=str(out_dir),
        callbacks=[EvalPanels(out_dir / "panels", args.panels, Path(args.ckpt).name)] if args.panels else [],
    )
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
    print(f"\nresults: {out_dir / 'results.md'} and {out_dir / 'results.json'}")
    if args.panels:
        print(f"panels:  {out_dir / 'panels'}")
    if logger is not None:
        from ..train import wandb_mode

        log_results_wandb(logger, results)
        print(f"W&B:     table logged (mode={wandb_mode(exp_cfg)}) under {out_dir / 'wandb'}")
    return 0
