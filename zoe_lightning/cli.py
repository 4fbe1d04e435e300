"""Command line: ``zoe-lightning train|config|experiments ...`` (also ``python -m zoe_lightning``).

User errors (bad config keys, missing files, ...) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .config import ConfigError, list_experiments, load_config, to_yaml

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("NO_ALBUMENTATIONS_UPDATE", "1")):
    os.environ.setdefault(_key, _value)


class UserError(Exception):
    """An error caused by the user's input: shown as one line, no traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoe-lightning", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an experiment")
    p.add_argument("experiment", help="experiment name (experiments/NAME.yaml) or path to a YAML file")
    p.add_argument("overrides", nargs="*", help="key=value overrides (OmegaConf dot-list)")
    p.add_argument("--resume", default=None, help="Lightning checkpoint (last.ckpt) to resume from")

    p = sub.add_parser("config", help="print the fully resolved config of an experiment")
    p.add_argument("experiment")
    p.add_argument("overrides", nargs="*")

    sub.add_parser("experiments", help="list the experiment files")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "experiments":
            print("\n".join(list_experiments()))
            return 0
        cfg = load_config(args.experiment, args.overrides)
        if args.command == "config":
            print(to_yaml(cfg), end="")
            return 0
        from .train import train

        train(cfg, resume=args.resume)
        return 0
    except (ConfigError, UserError, FileNotFoundError) as exc:
        print(f"zoe-lightning: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
