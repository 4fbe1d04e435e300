"""The program a sweep file's ``command:`` runs (W&B agent and ``sweep-local`` alike):
``zoe-lightning sweep-run experiment=NAME [key=value ...] [--resume CKPT]``.

``experiment`` picks the experiment; every other ``key=value`` is a config override. The run is
grouped by the sweep (``group=`` parameter, else ``$ZOE_SWEEP``, else ``sweep-<W&B sweep id>``) and
tagged with its variant (experiment name), ``seed<N>`` and ``sweep:<group>``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("items", nargs="+", help="experiment=NAME and key=value overrides")
    parser.add_argument("--resume", default=None, help="Lightning checkpoint (last.ckpt) to resume from")


def run(args: argparse.Namespace) -> int:
    from .sweeps import sweep_run_main

    return sweep_run_main(args.items, resume=args.resume)
