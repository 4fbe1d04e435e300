"""Command line: ``zoe-lightning <command> ...`` (also ``python -m zoe_lightning``).

Commands: train, config, experiments, eval, predict, export, compare, sweep-local, sweep-run, slurm.
User errors (bad config keys, missing files, ...) print one line and exit with status 2.

Each command other than the first three lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the command being run (or
asked for ``--help``) is imported, so ``zoe-lightning --help`` does not load torch.

Overrides are one style everywhere: ``key=value`` items (OmegaConf dot-list), anywhere on the line.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import textwrap
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .errors import UserError, worker_message

__all__ = ["main", "UserError", "COMMANDS", "plain_text"]

# command name -> (module, one-line help); train / config / experiments are defined here
COMMANDS = {
    "eval": ("zoe_lightning.evaluation.evaluate", "evaluate a checkpoint with the paper's protocol"),
    "predict": ("zoe_lightning.evaluation.predict", "turn images into metric depth maps"),
    "export": ("zoe_lightning.evaluation.export", "export a checkpoint to ONNX"),
    "compare": ("zoe_lightning.tools.compare.report", "compare runs: table and plots"),
    "sweep-local": ("zoe_lightning.tools.sweeps.local", "run a sweep file without W&B (local devices or SLURM array)"),
    "sweep-run": ("zoe_lightning.tools.sweeps.sweep_run",
                  "one run of a sweep (the program a sweep file's command runs)"),
    "slurm": ("zoe_lightning.tools.slurm", "write (and submit) an sbatch script for an experiment"),
}
BUILTIN = {"train": "train an experiment", "config": "print the fully resolved config of an experiment",
           "experiments": "list the experiment files"}
# commands whose ``overrides`` take every key=value item of the line, wherever it stands
OVERRIDE_COMMANDS = ("train", "config", "eval", "predict", "export")
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(?:\.[\w-]+|\[\d+\])*=")
# options that an earlier version had, with what replaces them
REMOVED_OPTIONS = {
    "--set": "give experiment overrides as key=value items (e.g. data.num_workers=0)",
    "--model-set": "give overrides of the checkpoint's config as model.KEY=VALUE items",
}

_ROLE = re.compile(r":[\w:.-]+:`~?([^`]+)`")  # :class:`~pkg.Name` -> pkg.Name (then the last part for ~)


def plain_text(text: str) -> str:
    """Docstring / help text without reStructuredText markup: ``:role:`~a.b.C``` -> ``C``,
    ``:role:`a.b``` -> ``a.b``, double backticks -> plain text."""
    text = re.sub(r":[\w:.-]+:`~([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = _ROLE.sub(r"\1", text)
    return text.replace("``", "")


class _HelpFormatter(argparse.HelpFormatter):
    """Plain help text; descriptions keep their paragraphs."""

    def _format_text(self, text: str) -> str:
        text = plain_text(text) % dict(prog=self._prog) if "%(prog)" in text else plain_text(text)
        width = max(self._width - self._current_indent, 11)
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
        return "\n\n".join(textwrap.fill(p, width) for p in paragraphs) + "\n\n"

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


def _version() -> str:
    from . import __version__

    return f"zoe-lightning {__version__}"


def _parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; the options of ``command`` (a module command) are added only when it is the one
    asked for, so that its module alone is imported."""
    parser = argparse.ArgumentParser(prog="zoe-lightning", description=plain_text(__doc__.splitlines()[0]),
                                     formatter_class=_HelpFormatter,
                                     epilog="zoe-lightning COMMAND --help lists the options of one command.")
    parser.add_argument("--version", action="version", version=_version(), help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, description: Optional[str] = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=description or help_text,
                              formatter_class=_HelpFormatter)

    p = add("train", BUILTIN["train"])
    p.add_argument("experiment", help="experiment name (experiments/NAME.yaml) or path to a YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the experiment "
                   "(OmegaConf dot-list, e.g. trainer.max_epochs=1), before or after the options")
    p.add_argument("--resume", default=None, help="Lightning checkpoint (last.ckpt) to resume from, or 'auto': "
                   "the newest last.ckpt of this experiment (of this SLURM job's run under `slurm`), if any")

    p = add("config", BUILTIN["config"])
    p.add_argument("experiment", help="experiment name (experiments/NAME.yaml) or path to a YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the experiment (OmegaConf dot-list)")

    add("experiments", BUILTIN["experiments"])

    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            add(name, help_text)
            continue
        module = importlib.import_module(module_name)
        p = add(name, help_text, (module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def _take_overrides(sub: argparse.ArgumentParser, tokens: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``(other tokens, key=value items)``: every key=value item that is not the value of a
    single-value option is an override, also after an option that takes several values (``--input``)."""
    single = {opt for a in sub._actions if a.option_strings and a.nargs in (None, 1) for opt in a.option_strings}
    rest: List[str] = []
    overrides: List[str] = []
    for i, token in enumerate(tokens):
        after_option = i > 0 and tokens[i - 1] in single
        if OVERRIDE.match(token) and not after_option:
            overrides.append(token)
        else:
            rest.append(token)
    return rest, overrides


CKPT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors", ".bin")


def _positional_checkpoint(command: str, sub: argparse.ArgumentParser, tokens: Sequence[str]) -> None:
    """``export best.ckpt ...`` (the checkpoint as a positional argument, without ``--ckpt``): one
    line saying to use ``--ckpt``, before argparse's "the following arguments are required"."""
    if command not in ("eval", "predict", "export") or any(t == "--ckpt" or t.startswith("--ckpt=") for t in tokens):
        return
    valued = {opt for a in sub._actions if a.option_strings and a.nargs != 0 for opt in a.option_strings}
    for i, token in enumerate(tokens):
        if token.startswith("-") or (i > 0 and tokens[i - 1] in valued) or OVERRIDE.match(token):
            continue
        if Path(token).suffix.lower() in CKPT_SUFFIXES or Path(token).is_dir():
            raise UserError(f"{command}: give the checkpoint with --ckpt: zoe-lightning {command} --ckpt {token} ...")


def _check_positionals(command: str, items: Sequence[str]) -> None:
    """Items of ``overrides`` that are not key=value (the checkpoint given as a positional argument
    besides ``--ckpt``, or a typo)."""
    for item in items:
        if command in ("eval", "predict", "export") and Path(item).suffix.lower() in CKPT_SUFFIXES:
            raise UserError(f"{command}: give the checkpoint with --ckpt only: '{item}' is not a key=value override")
        raise UserError(f"{command}: '{item}' is not a key=value override")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _parser(command if command in COMMANDS else None)
    try:
        if command in OVERRIDE_COMMANDS:
            removed = next((a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in REMOVED_OPTIONS), None)
            if removed:
                raise UserError(f"{command}: {removed} is gone; {REMOVED_OPTIONS[removed]}")
            head, tail = argv[:argv.index(command) + 1], argv[argv.index(command) + 1:]
            sub = _subparser(parser, command)
            rest, overrides = _take_overrides(sub, tail)
            _positional_checkpoint(command, sub, rest)
            args = parser.parse_args(head + rest)
            _check_positionals(command, args.overrides)
            args.overrides = overrides
        else:
            args = parser.parse_args(argv)
        if args.command == "experiments":
            from .config import list_experiments

            print("\n".join(list_experiments()))
            return 0
        if hasattr(args, "_run"):
            return int(args._run(args) or 0)
        from .config import load_config, to_yaml

        cfg = load_config(args.experiment, args.overrides)
        if args.command == "config":
            print(to_yaml(cfg), end="")
            return 0
        from .train import train

        train(cfg, resume=args.resume)
        return 0
    except (UserError, FileNotFoundError, ValueError) as exc:
        from .config import ConfigError

        if isinstance(exc, ValueError) and not isinstance(exc, ConfigError):
            raise
        print(f"zoe-lightning: error: {worker_message(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
