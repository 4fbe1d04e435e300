"""Evaluate a checkpoint with ZoeDepth's protocol on one or more datasets.

Flip test-time augmentation at network resolution, bilinear upsampling to the ground-truth size,
prediction clamped to the dataset's evaluation range, the dataset's crop; metrics are per-image
values averaged over images (``zoe_lightning.metrics``). Results are printed, written as Markdown
and JSON beside the run (or to ``--output``) and logged to W&B as a table when W&B is on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import UserError

__all__ = [
    "add_arguments",
    "run",
    "load_checkpoint_model",
    "flip_tta",
    "shard_indices",
    "evaluate_dataset",
    "evaluate_model",
    "results_markdown",
    "read_reference",
    "attach_relative_improvement",
]

TABLE_COLUMNS = (
    ("a1", "δ1"), ("a2", "δ2"), ("a3", "δ3"), ("abs_rel", "REL"), ("sq_rel", "Sq.Rel"), ("rmse", "RMSE"),
    ("rmse_log", "RMSE log"), ("log_10", "log10"), ("silog", "SILog"),
)
CROP_CHOICES = ("auto", "none", "eigen", "garg", "eigen_kitti")


# ----------------------------------------------------------------------------------------------
# Model loading (shared with predict and export)
# ----------------------------------------------------------------------------------------------


def load_checkpoint_model(path: str, preset: Optional[str] = None, overrides: Sequence[str] = ()):
    """Load ``path`` (own .ckpt, released ZoeDepth / MiDaS / HF weights) -> ``(model in eval mode, cfg)``
    with :func:`zoe_lightning.weights.load_model_and_config`."""
    from .weights import load_model_and_config

    if not Path(path).exists():
        raise FileNotFoundError(f"--ckpt: no such file or folder: {path}")
    try:
        model, cfg = load_model_and_config(str(path), preset=preset, overrides=list(overrides) or None)
    except (ValueError, KeyError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise UserError(f"{path}: {msg}") from None
    return model.eval(), cfg


# ----------------------------------------------------------------------------------------------
# Inference helpers
# ----------------------------------------------------------------------------------------------


def flip_tta(predict: Callable, images, flip: bool = True):
    """``0.5 * (predict(x) + unflip(predict(flip(x))))``, the original's evaluation TTA."""
    pred = predict(images)
    if not flip:
        return pred
    return 0.5 * (pred + predict(images.flip(-1)).flip(-1))


def shard_indices(n: int, rank: int, world: int) -> List[int]:
    """Indices of rank ``rank`` among ``world``: a strided split, every index exactly once, no padding."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad rank {rank} of world {world}")
    return list(range(rank, n, world))


def _as_list(samples):
    return list(samples)


def _unwrap(ds) -> Any:
    """The innermost dataset (through ``_WithDomainLabel``-style ``.dataset`` wrappers)."""
    seen = 0
    while hasattr(ds, "dataset") and seen < 8:
        ds = ds.dataset
        seen += 1
    return ds


def _attr(ds, name: str, default=None):
    for candidate in (ds, _unwrap(ds)):
        if hasattr(candidate, name):
            return getattr(candidate, name)
    return default


def _model_predict(model, domain_label: Optional[int]):
    import torch

    router = getattr(model, "router", None)
    needs_label = router is not None and type(router).__name__ == "LabeledRouter"

    def predict(images):
        # only depth is needed: the bins heads skip their full-resolution per-bin maps
        kwargs = {"maps": False} if getattr(model, "head", None) is not None else {}
        if needs_label:
            if domain_label is None:
                raise UserError("this model routes by domain label (labeled router) but the dataset's domain "
                                "is not one of its heads; pass --domain")
            kwargs["domain"] = torch.full((images.shape[0],), domain_label, dtype=torch.long, device=images.device)
        out = model(images, **kwargs)
        depth = getattr(out, "metric_depth", out)
        if depth is None:
            raise UserError("this command needs a metric model; the checkpoint is a relative (stage-1) model")
        return depth, getattr(out, "domain_index", None)

    return predict


def evaluate_dataset(
    model,
    dataset,
    *,
    min_depth: float,
    max_depth: float,
    crop: Optional[str],
    flip: bool = True,
    batch_size: int = 1,
    device: str = "cpu",
    domain_label: Optional[int] = None,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
    panels: int = 0,
    panel_dir: Optional[Path] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> Dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (this rank's shard; synced over DDP when initialised).

    Returns the :class:`~zoe_lightning.metrics.DepthMetrics` results as floats plus ``n_images``,
    ``n_empty`` and ``routed`` (images per head index).
    """
    import torch
    from torch.utils.data import DataLoader, Subset, default_collate

    from .metrics import DepthMetrics

    metric = DepthMetrics(min_depth, max_depth, crop).to(device)
    indices = shard_indices(len(dataset), rank, world)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_as_list)
    predict = _model_predict(model, domain_label)
    routed = torch.zeros(64, dtype=torch.long, device=device)
    position = 0
    with torch.inference_mode():
        for samples in loader:
            # samples of one size are stacked and run together: datasets with mixed sizes work
            groups: Dict[tuple, List[int]] = {}
            for j, s in enumerate(samples):
                groups.setdefault((tuple(s["image"].shape), tuple(s["depth"].shape)), []).append(j)
            for members in groups.values():
                batch = default_collate([{k: samples[j][k] for k in ("image", "depth", "valid") if k in samples[j]}
                                         for j in members])
                images = batch["image"].to(device)
                gt = batch["depth"].to(device)
                routes = []

                def forward(x):
                    depth, index = predict(x)
                    routes.append(index)
                    return depth

                pred = flip_tta(forward, images, flip)
                if routes[0] is not None:
                    routed += torch.bincount(routes[0].view(-1).long(), minlength=64)[:64]
                valid = batch.get("valid")
                metric.update(pred, gt, None if valid is None else valid.to(device))
                if panels and panel_dir is not None:
                    _save_panels(batch, pred, [indices[position + j] for j in members], panels, panel_dir,
                                 min_depth, max_depth)
            position += len(samples)
            if progress is not None:
                progress(len(samples))
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(routed)
    values = metric.compute()
    out: Dict[str, Any] = {k: float(v) for k, v in values.items() if k not in ("n_images", "n_empty")}
    out["n_images"] = int(values["n_images"])
    out["n_empty"] = int(values["n_empty"])
    counts = routed.tolist()
    last = max((i for i, c in enumerate(counts) if c), default=-1)
    out["routed"] = counts[: last + 1]
    return out


def _save_panels(batch, pred, global_indices, limit, panel_dir: Path, min_depth, max_depth) -> None:
    import torch.nn.functional as F

    from .metrics import clamp_prediction
    from .viz import depth_panel, save_png

    gt = batch["depth"]
    for j, gi in enumerate(global_indices):
        if gi >= limit:
            continue
        p = F.interpolate(pred[j: j + 1].float().cpu(), size=gt.shape[-2:], mode="bilinear", align_corners=True)
        p = clamp_prediction(p, min_depth, max_depth)[0, 0]
        g = gt[j, 0]
        valid = (g > min_depth) & (g < max_depth)
        vmax = float(g[valid].max()) if valid.any() else max_depth
        panel = depth_panel(batch["image"][j], g, p, valid, vmin=0.0, vmax=vmax)
        save_png(panel, panel_dir / f"{gi:05d}.png")


# ----------------------------------------------------------------------------------------------
# Datasets of a config
# ----------------------------------------------------------------------------------------------


def _dataset_entries(cfg, names: Optional[Sequence[str]], data_root: Optional[str] = None) -> List[Any]:
    """``data.val`` entries, or the named registry datasets (options from same-named config
    entries). ``data_root``: file datasets without a ``root`` option get ``<data_root>/<name>``."""
    from omegaconf import OmegaConf

    if names:
        known = {e.name: e for e in list(cfg.data.val) + list(cfg.data.train)}
        entries = [known[n] if n in known else
                   OmegaConf.create({"name": n, "weight": 1.0, "domain": None, "options": {}}) for n in names]
    else:
        entries = list(cfg.data.val)
    out = []
    for e in entries:
        e = OmegaConf.create(OmegaConf.to_container(e, resolve=True))
        if data_root and not str(e.name).startswith("synthetic") and "root" not in e.options:
            e.options["root"] = str(Path(data_root) / str(e.name))
        out.append(e)
    return out


def _build_sets(cfg, entries, split: str, domains: Sequence[str]) -> List[Tuple[str, Any, Any]]:
    """[(display name, dataset, entry)] built by the data module's own builder; file datasets get the
    evaluation transform without any resize (the paper's protocol scores the ground truth at its
    native resolution, after the dataset's own crop such as KITTI's KB crop)."""
    from omegaconf import OmegaConf

    from data_modules.datamodule import DepthDataModule

    dm = DepthDataModule(cfg.data, list(domains))
    out = []
    for entry in entries:
        options = dict(OmegaConf.to_container(entry.options, resolve=True)) if entry.options is not None else {}
        entry_split = str(options.pop("split", split))
        clean = OmegaConf.create({"name": entry.name, "weight": float(entry.weight), "domain": entry.domain,
                                  "options": options})
        try:
            ds = dm._build([clean], entry_split)[0]
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"dataset '{entry.name}' (split {entry_split}): {exc}") from None
        inner = _unwrap(ds)
        if hasattr(inner, "load_raw") and getattr(inner, "transform", None) is not None:
            from data_modules.transforms import build_transform

            inner.transform = build_transform("eval", inner, resize="none")
        out.append((str(_attr(ds, "name", None) or entry.name), ds, entry))
    return out


def _resolve_crop(choice: str, ds) -> Optional[str]:
    if choice == "auto":
        return _attr(ds, "eval_crop", None)
    return None if choice == "none" else choice


def _dataset_range(ds, entry) -> Tuple[float, float]:
    lo, hi = _attr(ds, "min_depth", None), _attr(ds, "max_depth", None)
    if lo is None or hi is None:
        sample = ds[0]
        lo, hi = float(sample["min_depth"]), float(sample["max_depth"])
    return float(lo), float(hi)


def _dataset_domain(ds, entry) -> Optional[str]:
    if entry.domain:
        return str(entry.domain)
    dom = _attr(ds, "domain", None)
    if dom is None and len(ds):
        dom = ds[0].get("domain")
    return None if dom is None else str(dom)


def evaluate_model(
    model,
    sets: Sequence[Tuple[str, Any, Any]],
    *,
    crop: str = "auto",
    flip: bool = True,
    batch_size: int = 1,
    device: str = "cpu",
    domain: Optional[str] = None,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
    panels: int = 0,
    output: Optional[Path] = None,
    show_progress: bool = False,
) -> Dict[str, Dict[str, Any]]:
    """Evaluate ``model`` on each ``(name, dataset, entry)``; returns ``{name: results}``."""
    heads = list(getattr(model, "domains", []) or [])
    results: Dict[str, Dict[str, Any]] = {}
    for name, ds, entry in sets:
        if len(ds) == 0:
            raise UserError(f"dataset '{name}' has no samples (check its root, split and split_file)")
        lo, hi = _dataset_range(ds, entry)
        crop_used = _resolve_crop(crop, ds)
        dom = domain or _dataset_domain(ds, entry)
        label = heads.index(dom) if dom in heads else None
        key = name
        k = 2
        while key in results:
            key = f"{name}#{k}"
            k += 1
        bar = None
        progress = None
        if show_progress and rank == 0:
            from rich.progress import Progress

            bar = Progress(transient=True)
            bar.start()
            task = bar.add_task(f"eval {key}", total=len(shard_indices(len(ds), rank, world)))

            def progress(n, bar=bar, task=task):
                bar.advance(task, n)

        try:
            res = evaluate_dataset(
                model, ds, min_depth=lo, max_depth=hi, crop=crop_used, flip=flip, batch_size=batch_size,
                device=device, domain_label=label, rank=rank, world=world, num_workers=num_workers,
                panels=panels, panel_dir=None if output is None else output / "panels" / key, progress=progress,
            )
        finally:
            if bar is not None:
                bar.stop()
        res.update({"n_samples": len(ds), "crop": crop_used, "min_depth": lo, "max_depth": hi, "domain": dom,
                    "flip": flip, "heads": heads})
        results[key] = res
    return results


# ----------------------------------------------------------------------------------------------
# Reference (mRID / mRIθ) and reporting
# ----------------------------------------------------------------------------------------------


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
    from .metrics import relative_improvement

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


def _print_results(results) -> None:
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


def _log_wandb(cfg, results, out_dir: Path, ckpt: str) -> Optional[str]:
    from .train import wandb_mode

    if cfg is None or not cfg.logger.wandb:
        return None
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return None
    import wandb

    if wandb.run is not None:  # e.g. left open by a training run in the same process
        wandb.finish()
    run = wandb.init(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.group or cfg.name,
                     job_type="eval", name=f"eval-{cfg.name}-{out_dir.name}", dir=str(out_dir), mode=mode,
                     config={"ckpt": ckpt})
    columns = ["dataset"] + [k for k, _ in TABLE_COLUMNS] + ["n_images", "crop"]
    table = wandb.Table(columns=columns)
    for name, r in results.items():
        table.add_data(name, *[r[k] for k, _ in TABLE_COLUMNS], r["n_images"], r.get("crop") or "none")
        for k, _ in TABLE_COLUMNS:
            run.summary[f"eval/{name}/{k}"] = r[k]
    run.log({"eval/results": table})
    run.finish()
    return mode


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


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


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
    parser.add_argument("--output", default=None, help="folder for results.md / results.json / panels")
    parser.add_argument("--panels", type=int, default=0, metavar="N", help="save colourised panels of the first N "
                        "samples of each dataset")
    parser.add_argument("--reference", default=None, help="results.json of a reference model: adds mRID / mRIθ")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")


def _distributed() -> Tuple[int, int]:
    """(rank, world) from torchrun's environment; initialises the process group if needed."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def run(args: argparse.Namespace) -> int:
    import torch

    from .config import load_config

    exp_cfg = load_config(args.experiment, list(args.overrides) + list(args.set_overrides))
    rank, world = _distributed()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    model, model_cfg = load_checkpoint_model(args.ckpt, args.preset, args.model_overrides)
    model = model.to(device)
    domains = list(getattr(model, "domains", []) or [b.name for b in exp_cfg.model.bins])
    if args.domain and args.domain not in domains:
        raise UserError(f"--domain {args.domain!r} is not a head of this model (heads: {', '.join(domains)})")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    sets = _build_sets(exp_cfg, _dataset_entries(exp_cfg, names, args.data_root), args.split, domains)
    if not sets:
        raise UserError("no dataset to evaluate: data.val is empty and --datasets was not given")
    reference = read_reference(args.reference) if args.reference else None
    out_dir = Path(args.output) if args.output else default_output_dir(args.ckpt, exp_cfg.name, exp_cfg.output_dir)
    if world > 1:
        import torch.distributed as dist

        holder = [str(out_dir)]
        dist.broadcast_object_list(holder, src=0)
        out_dir = Path(holder[0])
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = evaluate_model(
        model, sets, crop=args.crop, flip=not args.no_flip, batch_size=args.batch_size, device=device,
        domain=args.domain, rank=rank, world=world,
        num_workers=exp_cfg.data.num_workers if args.num_workers is None else args.num_workers,
        panels=args.panels, output=out_dir, show_progress=True,
    )
    if reference is not None:
        attach_relative_improvement(results, reference)
    if rank != 0:
        return 0
    _print_results(results)
    meta = {"ckpt": str(args.ckpt), "preset": args.preset, "experiment": exp_cfg.name, "split": args.split,
            "flip_tta": not args.no_flip, "crop": args.crop, "world_size": world,
            "reference": args.reference,
            "backbone": str(model_cfg.model.backbone) if model_cfg is not None and "model" in model_cfg else None}
    (out_dir / "results.json").write_text(json.dumps({"meta": meta, "datasets": results}, indent=2))
    (out_dir / "results.md").write_text(results_markdown(results, f"{exp_cfg.name}: {Path(args.ckpt).name}"))
    print(f"\nresults: {out_dir / 'results.md'} and {out_dir / 'results.json'}")
    if args.panels:
        print(f"panels:  {out_dir / 'panels'}")
    if not args.no_wandb:
        mode = _log_wandb(exp_cfg, results, out_dir, str(args.ckpt))
        if mode:
            print(f"W&B:     table logged (mode={mode}) under {out_dir / 'wandb'}")
    return 0
