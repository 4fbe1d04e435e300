"""Command line: ``zoe-lightning <command> ...`` (also ``python -m zoe_lightning``).

Commands: train, config, experiments, eval, predict, export, compare, sweep-local, sweep-run, slurm.
User errors (bad config keys, missing files, ...) print one line and exit with status 2.

Each command other than the first three lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; the modules keep heavy imports inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from .config import ConfigError, list_experiments, load_config, to_yaml
from .errors import UserError, worker_message

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("NO_ALBUMENTATIONS_UPDATE", "1")):
    os.environ.setdefault(_key, _value)

__all__ = ["main", "UserError", "COMMANDS"]

# command name -> (module, one-line help)
COMMANDS = {
    "eval": ("zoe_lightning.evaluation.evaluate", "evaluate a checkpoint with the paper's protocol"),
    "predict": ("zoe_lightning.evaluation.predict", "turn images into metric depth maps"),
    "export": ("zoe_lightning.evaluation.export", "export a checkpoint to ONNX"),
    "compare": ("zoe_lightning.tools.compare.report", "compare runs: table and plots"),
    "sweep-local": ("zoe_lightning.tools.sweeps.local", "run a sweep file without W&B (local devices or SLURM array)"),
    "sweep-run": ("zoe_lightning.tools.sweeps.sweep_run", "one run of a sweep (the program a sweep file's command runs)"),
    "slurm": ("zoe_lightning.tools.slurm", "write (and submit) an sbatch script for an experiment"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoe-lightning", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an experiment")
    p.add_argument("experiment", help="experiment name (experiments/NAME.yaml) or path to a YAML file")
    p.add_argument("overrides", nargs="*", help="key=value overrides (OmegaConf dot-list)")
    p.add_argument("--resume", default=None, help="Lightning checkpoint (last.ckpt) to resume from, or 'auto': "
                   "the newest last.ckpt of this experiment (of this SLURM job's run under `slurm`), if any")

    p = sub.add_parser("config", help="print the fully resolved config of an experiment")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")

    sub.add_parser("experiments", help="list the experiment files")

    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a ``nargs="*"`` positional at the first option: key=value overrides
    # given after options (``eval EXP --ckpt X a=b``) come back here and join the others.
    if extra:
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "experiments":
            print("\n".join(list_experiments()))
            return 0
        if hasattr(args, "_run"):
            return int(args._run(args) or 0)
        cfg = load_config(args.experiment, args.overrides)
        if args.command == "config":
            print(to_yaml(cfg), end="")
            return 0
        from .train import train

        train(cfg, resume=args.resume)
        return 0
    except (ConfigError, UserError, FileNotFoundError) as exc:
        print(f"zoe-lightning: error: {worker_message(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
