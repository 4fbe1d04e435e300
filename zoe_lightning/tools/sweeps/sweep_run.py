"""The program a sweep file's ``command:`` runs (W&B agent and ``sweep-local`` alike):
``zoe-lightning sweep-run experiment=NAME [key=value ...] [--resume CKPT]``.

``experiment`` picks the experiment; every other ``key=value`` is a config override. The run is
grouped by the sweep (``group=`` parameter, else ``$ZOE_SWEEP``, else ``sweep-<W&B sweep id>``) and
tagged with its variant (experiment name), ``seed<N>`` and ``sweep:<group>``.
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence, Tuple

from ...errors import UserError

__all__ = ["add_arguments", "run", "sweep_run_overrides", "tag_run", "sweep_run_main"]


def sweep_run_overrides(items: Sequence[str], sweep: Optional[str] = None) -> Tuple[str, List[str]]:
    """Split ``experiment=NAME`` from the other ``key=value`` items; add ``group=<sweep>`` unless
    given. Returns (experiment, overrides)."""
    experiment, rest = None, []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"sweep-run: argument '{item}' is not of the form key=value")
        if key == "experiment":
            experiment = value
        else:
            rest.append(item)
    if not experiment:
        raise UserError("sweep-run: missing experiment=NAME (a sweep parameter)")
    if sweep and not any(i.partition("=")[0] == "group" for i in rest):
        rest.append(f"group={sweep}")
    return experiment, rest


def tag_run(cfg, extra_tags: Sequence[str] = ()) -> None:
    """Append the variant (experiment name), ``seed<N>`` and ``extra_tags`` to ``cfg.tags`` (no duplicates)."""
    tags = list(cfg.tags)
    for t in [cfg.name, f"seed{cfg.seed}", *extra_tags]:
        if t and t not in tags:
            tags.append(t)
    cfg.tags = tags


def sweep_run_main(items: Sequence[str], resume: Optional[str] = None) -> int:
    from ...config import load_config
    from ...train import train

    sweep = os.environ.get("ZOE_SWEEP")
    if not sweep and os.environ.get("WANDB_SWEEP_ID"):
        sweep = f"sweep-{os.environ['WANDB_SWEEP_ID']}"
    experiment, overrides = sweep_run_overrides(items, sweep)
    cfg = load_config(experiment, overrides)
    tag_run(cfg, [f"sweep:{cfg.group}"] if cfg.group else [])
    cfg.logger.job_type = "sweep"  # the W&B agent's and the local launchers' runs alike
    train(cfg, resume=resume)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", help="experiment=NAME and key=value overrides")
    parser.add_argument("--resume", default=None, help="Lightning checkpoint (last.ckpt) to resume from")


def run(args: argparse.Namespace) -> int:
    return sweep_run_main(args.items, resume=args.resume)
