"""Shared helpers of the benchmark rows (``benchmarks/run.py``): timing, row dicts, configs."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], reps: int, warmup: int, device: str = "cpu") -> Dict[str, object]:
    """Median wall time (s) of ``fn`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "times": times}


def interleaved_times(fns: Dict[str, Callable[[], object]], reps: int, warmup: int,
                      device: str = "cpu") -> Dict[str, Dict[str, object]]:
    """Median wall time of each of ``fns``, timed round-robin (one run of each per round), so
    that a neighbour's load on a shared machine hits every candidate alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: {"median": statistics.median(t), "times": t} for name, t in times.items()}


def row(row_id, name, ours, ref, unit, goal=None, note="", **extra) -> Dict[str, object]:
    ratio = (ours / ref) if (ours is not None and ref) else None
    met = None if (goal is None or ratio is None) else bool(ratio <= goal)
    out = {"row": row_id, "name": name, "ours": ours, "ref": ref, "unit": unit, "ratio": ratio, "goal": goal,
           "met": met, "note": note}
    out.update(extra)
    return out


def spread_weights_(model: torch.nn.Module) -> torch.nn.Module:
    """Fan-in scaled random weights and non-zero biases (in place; norm scales stay 1). HF's init
    (std 0.02) gives nearly constant depth maps, which would make an equality check vacuous."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
    return model


def parse_size(text: str) -> List[int]:
    h, _, w = str(text).lower().partition("x")
    return [int(h), int(w)]


def _cfg(experiment: str, backbone: str, size: Sequence[int], extra: Sequence[str] = ()):
    from zoe_lightning import load_config

    return load_config(experiment, [f"model.backbone={backbone}", f"model.img_size=[{size[0]},{size[1]}]",
                                    "logger.wandb=false", *extra])


def _with_speed(model: torch.nn.Module, cfg, **switches) -> torch.nn.Module:
    """``model`` with its ``model.speed`` switches ``switches`` changed (``accel.apply``, in place)."""
    from omegaconf import OmegaConf

    from zoe_lightning import accel

    speed = OmegaConf.merge(cfg.model.speed, switches)
    return accel.apply(model, speed)
