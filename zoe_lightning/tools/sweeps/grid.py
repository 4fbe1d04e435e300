"""The sweep file (the one ``wandb sweep`` reads) and its grid: every combination of the
``values:`` lists, a readable key per grid point, and the argv the W&B agent would run for it."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...errors import UserError

__all__ = ["Sweep", "load_sweep", "expand_grid", "run_key", "keyed_grid", "format_args", "build_command"]

SUPPORTED_MACROS = ("env", "interpreter", "program", "args", "args_no_hyphens", "args_no_boolean_flags")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
DISTRIBUTION_KEYS = ("min", "max", "distribution", "mu", "sigma", "q", "probabilities")


@dataclass
class Sweep:
    name: str
    path: Path
    method: str
    parameters: Dict[str, Dict[str, Any]]
    command: List[str]
    program: Optional[str] = None
    notices: List[str] = field(default_factory=list)

    @property
    def varied(self) -> List[str]:
        """Names of the parameters with more than one value, in file order."""
        return [k for k, v in self.parameters.items() if "values" in v and len(v["values"]) > 1]


def load_sweep(path: os.PathLike, name: Optional[str] = None) -> Sweep:
    """Read and check a W&B sweep file. The sweep's name is ``name``, else the file's ``name:``,
    else the file's stem."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such sweep file: {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: cannot parse YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: a sweep file must hold a mapping")
    method = str(doc.get("method", "grid"))
    if method not in ("grid", "random", "bayes"):
        raise UserError(f"{path}: unknown method '{method}' (grid, random or bayes)")
    params = doc.get("parameters")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{path}: 'parameters' must be a non-empty mapping")
    notices = []
    checked: Dict[str, Dict[str, Any]] = {}
    for key, spec in params.items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: parameters.{key} must be a mapping with 'value' or 'values'")
        if "parameters" in spec:
            raise UserError(f"{path}: parameters.{key}: nested parameters are not supported; use dotted names")
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise UserError(f"{path}: parameters.{key}.values must be a non-empty list")
            checked[str(key)] = {"values": list(values)}
        elif "value" in spec:
            checked[str(key)] = {"value": spec["value"]}
        elif any(k in spec for k in DISTRIBUTION_KEYS):
            raise UserError(f"{path}: parameters.{key} is a distribution; sweep-local runs grids only"
                            " (give it 'values: [...]')")
        else:
            raise UserError(f"{path}: parameters.{key} needs 'value' or 'values'")
    if method != "grid":
        notices.append(f"{path.name}: method '{method}' is W&B-only; sweep-local runs the full grid of its values")
    command = doc.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command:
        raise UserError(f"{path}: 'command' must be a list")
    command = [str(c) for c in command]
    for chunk in command:
        m = re.fullmatch(r"\$\{(\w+)\}", chunk)
        if m and m.group(1) not in SUPPORTED_MACROS:
            raise UserError(f"{path}: command macro {chunk} is not supported offline"
                            f" (supported: {', '.join('${%s}' % s for s in SUPPORTED_MACROS)})")
    program = doc.get("program")
    if "${program}" in command and not program:
        raise UserError(f"{path}: the command uses ${{program}} but the file has no 'program'")
    sweep_name = name or str(doc.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", sweep_name):
        raise UserError(f"{path}: sweep name '{sweep_name}' may hold only letters, digits, '.', '_' and '-'")
    return Sweep(name=sweep_name, path=path, method=method, parameters=checked, command=command,
                 program=str(program) if program else None, notices=notices)


def expand_grid(sweep: Sweep) -> List[Dict[str, Any]]:
    """Every combination of the ``values`` lists (first parameter slowest), fixed values included."""
    keys = list(sweep.parameters)
    choices = [sweep.parameters[k]["values"] if "values" in sweep.parameters[k] else [sweep.parameters[k]["value"]]
               for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def _slug(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def run_key(params: Dict[str, Any], varied: Sequence[str]) -> str:
    """A readable folder name: the ``experiment`` value, then ``seed`` and the other varied parameters
    as ``<last dotted part><value>`` (e.g. ``naive_head-seed1``). Experiment and seed always appear,
    so a sweep launched again with one seed fixed (``--override seed=2``) gets new folders."""
    parts = [_slug(params["experiment"])] if "experiment" in params else []
    keys = (["seed"] if "seed" in params else []) + [k for k in varied if k not in ("experiment", "seed")]
    for k in keys:
        v = params[k]
        parts.append(_slug(v) if k == "experiment" else f"{k.rsplit('.', 1)[-1]}{_slug(v)}")
    return "-".join(parts) or "run"


def keyed_grid(sweep: Sweep) -> List[Tuple[str, Dict[str, Any]]]:
    """(key, params) for every grid point; keys made unique with a numeric suffix."""
    out, seen = [], {}
    for params in expand_grid(sweep):
        key = run_key(params, sweep.varied)
        if key in seen:
            seen[key] += 1
            key = f"{key}-{seen[key]}"
        else:
            seen[key] = 0
        out.append((key, params))
    return out


def format_args(params: Dict[str, Any]) -> Dict[str, List[str]]:
    """The argument lists the W&B agent substitutes for each macro (``name=value`` with Python's
    ``str`` of the value, as the agent formats them)."""
    flags = [f"{k}={v}" for k, v in params.items()]
    return {
        "args": ["--" + f for f in flags],
        "args_no_hyphens": flags,
        "args_no_boolean_flags": [("--" + k) if v is True else f"--{k}={v}"
                                  for k, v in params.items() if v is not False],
    }


def build_command(sweep: Sweep, params: Dict[str, Any], python: str = sys.executable,
                  extra: Sequence[str] = ()) -> List[str]:
    """The argv the W&B agent would run for ``params`` (``${env}`` dropped, ``${interpreter}`` ->
    ``python``, ``${envvar:NAME}`` -> its value), then ``extra``."""
    macros = format_args(params)
    argv: List[str] = []
    for chunk in sweep.command:
        m = re.fullmatch(r"\$\{(\w+)\}", chunk)
        if m:
            name = m.group(1)
            if name == "env":
                continue
            if name == "interpreter":
                argv.append(python)
            elif name == "program":
                argv.append(str(sweep.program))
            else:
                argv += macros[name]
            continue
        argv.append(re.sub(r"\$\{envvar:([A-Za-z0-9_]+)\}", lambda mm: os.environ.get(mm.group(1), ""), chunk))
    if argv and argv[0] == "python":
        argv[0] = python
    return argv + list(extra)
