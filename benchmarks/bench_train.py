"""Row 2 of RESULTS.md: a training step (forward + SILog + backward + AdamW), ours vs the original's way
(time, peak memory). Each variant runs in a fresh subprocess for its peak memory (see ``peak_memory_note``),
and all of them together in one more subprocess for the step times, stepped round-robin.

Run directly only as a worker: ``python benchmarks/bench_train.py --worker train|train_times '<json>'``.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from common import ROOT, sync, interleaved_times, row, _cfg


peak_memory_note = (
    "peak memory = extra resident memory of one training step: each variant runs in a fresh "
    "subprocess with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go back to the OS), builds "
    "the model, AdamW state and gradients (kept allocated: zero_grad(set_to_none=False)), runs its "
    "warm-up step, then resets the kernel's high-water mark "
    "(/proc/self/clear_refs) and reports VmHWM - VmRSS around one step (ru_maxrss fallback); "
    "on CUDA torch.cuda.max_memory_allocated - memory_allocated. Row 2 step times: all variants in one "
    "process, one step of each in turn (round-robin), so drift of a shared machine hits all alike"
)


TRAIN_VARIANTS = {
    # name -> config overrides; "original": the way the original trains (full attractor tensors,
    # explicit attention, the original op order, a per-parameter AdamW loop, fp32)
    "original": ["model.speed.memory_efficient=false", "model.speed.fused_attention=false",
                 "model.speed.fast_path=false", "model.speed.winograd=false", "model.speed.channels_last=false",
                 "optim.adamw=loop"],
    "ours": [],
    "ours+grad_checkpointing": ["model.speed.grad_checkpointing=true"],
    "ours+channels_last": ["model.speed.channels_last=true"],
    "ours+compile": ["model.speed.compile=true"],
    "ours+bf16": [],  # autocast bf16 (GPU); SILog stays fp32
}
# the original's way under the same bf16 autocast: the reference of the bf16 ratio
TRAIN_VARIANTS["original+bf16"] = list(TRAIN_VARIANTS["original"])


def _read_status(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _train_step_fn(spec: Dict):
    """(step function, losses list) of one row-2 variant: model, AdamW state and a fixed batch."""
    from zoe_lightning.losses import silog_loss
    from zoe_lightning.models import build_model
    from zoe_lightning.modules.base import make_adamw

    torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    size = spec["size"]
    cfg = _cfg(spec["experiment"], spec["backbone"], size, spec["overrides"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    o = cfg.optim
    groups = model.parameter_groups(o.lr, o.encoder_lr_factor, o.pos_enc_lr_factor, o.decoder_lr_factor, o.same_lr)
    opt = make_adamw(groups, o)
    b = int(spec["batch"])
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 3, *size, generator=g).to(device)
    depth = (0.5 + 5 * torch.rand(b, 1, *size, generator=g)).to(device)
    valid = (torch.rand(b, 1, *size, generator=g) > 0.1).to(device)
    labels = torch.zeros(b, dtype=torch.long, device=device)
    bf16 = spec["variant"].endswith("bf16")
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    losses = []

    def step():
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=bf16):
            out = model(image, domain=labels)
            loss, _ = silog_loss(out.metric_depth, depth, valid)  # fp32 inside (autocast off)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # gradients stay allocated: part of the static state
        losses.append(float(loss))

    return step, losses


def train_worker(spec: Dict) -> Dict:
    """One training-step variant in its own process: times and the peak extra memory of one step."""
    device = spec["device"]
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    step, losses = _train_step_fn(spec)
    for _ in range(int(spec["warmup"])):
        step()
    gc.collect()
    sync(device)
    times = []
    peak = None
    method = None
    for i in range(int(spec["reps"])):
        if i == 0:
            if dev_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                method = "cuda"
            else:
                base = _read_status("VmRSS")
                method = "clear_refs" if _reset_peak() else "ru_maxrss"
                if method == "ru_maxrss":
                    import resource

                    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
        if i == 0:
            if method == "cuda":
                peak = torch.cuda.max_memory_allocated() - base
            elif method == "clear_refs":
                peak = _read_status("VmHWM") - base
            else:
                import resource

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"variant": spec["variant"], "median_s": statistics.median(times), "times": times,
            "peak_bytes": peak, "memory_method": method, "losses": losses, "static_bytes": base}


def train_times_worker(specs: List[Dict]) -> Dict:
    """Every variant in one process, timed round-robin (one step of each in turn), so that a
    shared machine's drift hits all variants alike. Returns {variant: {times, losses}}."""
    steps = {spec["variant"]: _train_step_fn(spec) for spec in specs}
    warmup, reps = int(specs[0]["warmup"]), int(specs[0]["reps"])
    device = specs[0]["device"]
    times = interleaved_times({v: fn for v, (fn, _) in steps.items()}, reps, warmup, device)
    return {v: {"times": times[v]["times"], "median_s": times[v]["median"], "losses": losses}
            for v, (_, losses) in steps.items()}


def _run_worker(kind: str, payload, timeout: int) -> Dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(payload)],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    return json.loads(lines[-1][len("RESULT "):])


def run_train_variant(spec: Dict, timeout: int = 1800) -> Dict:
    return {"variant": spec["variant"], **_run_worker("train", spec, timeout)}


def bench_train(models: Sequence[str], backbone: str, size: Sequence[int], batch: int, reps: int, warmup: int,
                device: str = "cpu", variants: Sequence[str] = ("original", "ours", "ours+grad_checkpointing"),
                threads: Optional[int] = None) -> List[Dict]:
    rows = []
    experiments = {"N": "zoed_m12_n", "NK": "zoed_m12_nk"}
    for name in models:
        results, specs = {}, []
        for variant in variants:
            spec = {"experiment": experiments[name], "backbone": backbone, "size": list(size), "batch": batch,
                    "reps": reps, "warmup": warmup, "device": device, "variant": variant,
                    "overrides": TRAIN_VARIANTS[variant], "threads": threads or torch.get_num_threads()}
            specs.append(spec)
            # peak memory: each variant alone in a fresh process (one timed step is enough)
            results[variant] = run_train_variant(dict(spec, reps=1))
        # time: all variants in one process, round-robin
        timed = _run_worker("train_times", specs, 3600)
        for variant, res in results.items():
            if "error" in timed:
                res.setdefault("error", f"timing worker: {timed['error']}")
            elif "error" not in res:
                res.update(median_s=timed[variant]["median_s"], times=timed[variant]["times"])
        for variant, res in results.items():
            if variant == "original":
                continue
            # bf16 variants of ours are compared with the original's way under the same autocast
            ref_name = "original+bf16" if (variant.endswith("bf16") and variant != "original+bf16"
                                           and "original+bf16" in results) else "original"
            base = results.get(ref_name, {})
            label = f"ZoeD-{name} {backbone} {size[0]}x{size[1]} batch {batch}"
            if "error" in res or "error" in base:
                rows.append(row(2, f"train step time {label}: {variant} vs {ref_name}", None, None, "s",
                                note=f"failed: {res.get('error') or base.get('error')}"))
                continue
            same = abs(res["losses"][0] - base["losses"][0]) <= 1e-4 * max(1.0, abs(base["losses"][0]))
            lnote = (f"first loss ours {res['losses'][0]:.6f} vs {ref_name} {base['losses'][0]:.6f}"
                     + ("" if same or variant.endswith(("bf16",)) else " (DIFFERENT)"))
            # the time goal is the default's; grad checkpointing is a memory switch (recomputes the backbone)
            memory_switch = "grad_checkpointing" in variant
            if memory_switch:
                lnote += "; a memory switch: the backbone's forward runs twice, no time goal"
            rows.append(row(2, f"train step time {label}: {variant} vs {ref_name}", res["median_s"],
                            base["median_s"], "s", None if memory_switch else 0.8, lnote, times_ours=res["times"],
                            times_ref=base["times"]))
            mem_goal = 0.6 if name == "NK" else None
            rows.append(row(2, f"train step peak memory {label}: {variant} vs {ref_name}",
                            res["peak_bytes"] / 2**20 if res["peak_bytes"] is not None else None,
                            base["peak_bytes"] / 2**20 if base["peak_bytes"] is not None else None, "MiB", mem_goal,
                            f"method: {res['memory_method']} (see header); static memory (weights, gradients, "
                            f"AdamW state, interpreter) {res['static_bytes'] / 2**20:,.0f} MiB ours vs "
                            f"{base['static_bytes'] / 2**20:,.0f} MiB {ref_name}, excluded"))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker" and sys.argv[2] == "train":
        print("RESULT " + json.dumps(train_worker(json.loads(sys.argv[3]))), flush=True)
    elif len(sys.argv) == 4 and sys.argv[1] == "--worker" and sys.argv[2] == "train_times":
        print("RESULT " + json.dumps(train_times_worker(json.loads(sys.argv[3]))), flush=True)
    else:
        sys.exit("run benchmarks/run.py; this file is row 2's library and worker")
