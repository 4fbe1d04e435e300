"""``make bench``: measure zoe-lightning against its peers in one run -> benchmarks/RESULTS.md + .json.

Rows (``--rows``, default all):
  1 inference latency of ZoeD-N, ours vs HF transformers ZoeDepthForDepthEstimation (bench_inference.py)
  2 training step (forward + SILog + backward + AdamW), ours vs the original's way (time, peak memory) (bench_train.py)
  3 metric head cost vs the backbone, ours vs the original op order (bench_head.py)
  4 Lightning fit step vs a bare PyTorch loop (bench_loop.py)
  5 evaluation metrics vs a per-image numpy implementation (bench_metrics.py)
  6 data pipeline (bench_data.py); shared helpers in common.py
  7 Depth Anything V2 metric inference (ViT-S; + ViT-L on a GPU), ours vs HF DepthAnythingForDepthEstimation
    (bench_depth_anything.py)

Examples:
  python benchmarks/run.py --quick                      # small sizes, a few minutes
  python benchmarks/run.py --rows 1,3 --reps 5
  python benchmarks/run.py --device cuda --rows 1,2     # adds BEiT-L and batch 16 on a GPU
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

import bench_depth_anything  # noqa: E402
import bench_head  # noqa: E402
import bench_inference  # noqa: E402
import bench_loop  # noqa: E402
import bench_metrics  # noqa: E402
import bench_train  # noqa: E402
from common import parse_size, row  # noqa: E402


def machine_info(device: str) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "device": device, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def fmt(v, unit=""):
    if v is None:
        return "-"
    if unit == "MiB":
        return f"{v:,.0f} MiB"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    return f"{v:.4g} {unit}".strip()


KEEP_FROM = "## Other measurements"


def write_results(rows, info, args, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "RESULTS.json").write_text(json.dumps({"machine": info, "args": vars(args), "rows": rows},
                                                     indent=2, default=str))
    lines = ["# zoe-lightning benchmarks", "",
             f"Measured {info['date_utc']} by `python benchmarks/run.py {' '.join(sys.argv[1:])}`.", "",
             f"- machine: {info['cpu']} ({info['cpu_count']} cores, {info['cpu_capability']}), {info['platform']}",
             f"- device: {info['device']}" + (f" ({info['gpu']})" if "gpu" in info else ""),
             f"- torch {info['torch']} with {info['torch_threads']} threads, transformers "
             f"{info.get('transformers', '-')}, python {info['python']}",
             f"- load average at start: {', '.join(f'{x:.1f}' for x in info.get('load_average', ()))} "
             "(the machine may be shared: compare ratios, not absolute times)",
             f"- every time is the median of {args.reps} repetitions after {args.warmup} warm-up run(s), all rows in "
             "this one run; ratio = ours / reference (lower is better, except the throughputs of row 6)",
             f"- {bench_train.peak_memory_note}", "",
             "| row | measurement | ours | reference | ratio | goal | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        goal = "-" if r.get("goal") is None else f"<= {r['goal']:g}"
        met = {True: "yes", False: "**no**", None: "-"}[r.get("met")]
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.3f}"
        lines.append(f"| {r['row']} | {r['name']} | {fmt(r.get('ours'), r.get('unit', ''))} | "
                     f"{fmt(r.get('ref'), r.get('unit', ''))} | {ratio} | {goal} | {met} |")
    lines += ["", "Notes:", ""]
    for r in rows:
        if r.get("note"):
            lines.append(f"- row {r['row']}, {r['name']}: {r['note']}")
    # the hand-recorded section after KEEP_FROM (and the GPU section) survive a new table
    old = out_dir / "RESULTS.md"
    kept = old.read_text().split(KEEP_FROM, 1) if old.is_file() else []
    tail = "\n" + KEEP_FROM + kept[1] if len(kept) == 2 else ""
    old.write_text("\n".join(lines) + "\n" + tail)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="1,2,3,4,5,6,7", help="comma-separated rows to run (default all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (cuda when available)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median)")
    p.add_argument("--warmup", type=int, default=1, help="un-timed warm-up runs per measurement")
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions (smoke test)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--size", default=None, help="input size of rows 1 and 3 (default 384x512; --quick: 128x160)")
    p.add_argument("--backbones", default=None,
                   help="row 1 backbones (default beit_base_patch16_384,swinv2_tiny_window8_256; + BEiT-L on cuda)")
    p.add_argument("--head-backbones", default=None,
                   help="row 3 backbones (default beit_large_patch16_384 (the released ZoeD-N's) and the first row-1 "
                        "backbone)")
    p.add_argument("--train-backbone", default=None, help="row 2 backbone (default beit_base_patch16_384; "
                   "beit_large_patch16_384 on cuda)")
    p.add_argument("--train-size", default=None, help="row 2 input size (default 128x160 on CPU, 384x512 on cuda)")
    p.add_argument("--train-batch", type=int, default=None, help="row 2 batch (default 2 on CPU, 16 on cuda)")
    p.add_argument("--variants", default="original,ours,ours+grad_checkpointing",
                   help=f"row 2 variants, from {','.join(bench_train.TRAIN_VARIANTS)} ('original' is the reference)")
    p.add_argument("--train-models", default="N,NK", help="row 2 models: N (one head), NK (two heads + router)")
    p.add_argument("--loop-backbone", default="small_beit", help="row 4 backbone")
    p.add_argument("--da-sizes", default=None, help="row 7 Depth Anything sizes from vits,vitb,vitl (default vits on "
                   "CPU, vits,vitl on cuda)")
    p.add_argument("--da-size", default=None, help="row 7 input size, multiples of 14 (default 518x686; --quick: "
                   "266x350)")
    p.add_argument("--maps", type=int, default=654, help="row 5 number of 480x640 maps")
    p.add_argument("--out", default=str(ROOT / "benchmarks"), help="folder of RESULTS.md / RESULTS.json")
    args = p.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("run.py: --device cuda but no GPU is available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.startswith("cuda")
    rows_wanted = [int(x) for x in args.rows.split(",") if x.strip()]
    bad = [r for r in rows_wanted if r not in range(1, 8)]
    if bad:
        print(f"run.py: --rows: unknown row(s) {bad}; choose from 1-7", file=sys.stderr)
        return 2
    size = parse_size(args.size or "384x512")
    if args.quick:
        args.reps, args.warmup = min(args.reps, 2), 1
    backbones = (args.backbones.split(",") if args.backbones else
                 ["beit_base_patch16_384", "swinv2_tiny_window8_256"] + (["beit_large_patch16_384"] if gpu else []))
    train_backbone = args.train_backbone or ("beit_large_patch16_384" if gpu else "beit_base_patch16_384")
    train_size = parse_size(args.train_size or ("384x512" if gpu else "128x160"))
    train_batch = args.train_batch or (16 if gpu else 2)
    if args.quick:
        size = parse_size(args.size) if args.size else [128, 160]
        train_size = parse_size(args.train_size) if args.train_size else [64, 96]
        backbones = backbones[:1]
        train_backbone = args.train_backbone or "small_beit"
        args.maps = min(args.maps, 64)

    head_backbones = (args.head_backbones.split(",") if args.head_backbones else
                      backbones[:1] if args.quick else list(dict.fromkeys(["beit_large_patch16_384", backbones[0]])))
    info = machine_info(device)
    print(json.dumps(info))
    rows = []
    jobs = {
        1: lambda: bench_inference.bench_inference(backbones, size, args.reps, args.warmup, device, ablations=True),
        2: lambda: bench_train.bench_train([m for m in args.train_models.split(",") if m], train_backbone, train_size,
                                           train_batch, args.reps, args.warmup, device,
                                           [v for v in args.variants.split(",") if v], args.threads),
        3: lambda: [r for b in head_backbones for r in bench_head.bench_head(b, size, args.reps, args.warmup, device)],
        4: lambda: bench_loop.bench_loop(args.loop_backbone, [64, 96] if args.quick else [128, 160], 2,
                                 max(12 * args.reps, 24), args.warmup + 2),
        5: lambda: bench_metrics.bench_metrics(args.maps, args.reps, args.warmup, device),
        6: lambda: run_data_rows(args.quick),
        7: lambda: bench_depth_anything.bench_depth_anything(
            (args.da_sizes or ("vits,vitl" if gpu else "vits")).split(","),
            parse_size(args.da_size or ("266x350" if args.quick else "518x686")), args.reps, args.warmup, device),
    }
    for r in rows_wanted:
        t0 = time.time()
        print(f"--- row {r}", flush=True)
        try:
            new = jobs[r]()
        except Exception as exc:  # one failing row must not lose the others
            traceback.print_exc()
            new = [row(r, f"row {r}", None, None, "", note=f"failed: {type(exc).__name__}: {exc}"[:300])]
        for x in new:
            print(json.dumps({k: x[k] for k in ("row", "name", "ours", "ref", "ratio", "goal", "met")}), flush=True)
        rows += new
        print(f"--- row {r} took {time.time() - t0:.0f} s", flush=True)
        write_results(rows, info, args, Path(args.out))  # partial results survive an interruption
    print(f"wrote {Path(args.out) / 'RESULTS.md'}")
    return 0


def run_data_rows(quick: bool):
    """Row 6 from ``benchmarks/bench_data.run``: per data set a baseline row and a project row."""
    try:
        import bench_data
    except ImportError as exc:
        return [row(6, "data pipeline", None, None, "", note=f"benchmarks/bench_data.py not available ({exc})")]
    cases = {}
    for r in bench_data.run(quick):
        kind = "ref" if float(r.get("ratio", 0)) == 1.0 and "zoe-lightning" not in r.get("impl", "") else "ours"
        case = cases.setdefault(str(r["row"]), {})
        case[kind] = r
    out = []
    for label, case in cases.items():
        ours, ref = case.get("ours", {}), case.get("ref", {})
        x = row(6, f"data {label}: {ours.get('impl', '?')} vs {ref.get('impl', '?')} "
                      f"({ours.get('unit', ref.get('unit', ''))}, higher is better)",
                   ours.get("value"), ref.get("value"), "", note=ours.get("note", ref.get("note", "")))
        x["higher_is_better"] = True
        out.append(x)
    return out


if __name__ == "__main__":
    sys.exit(main())
