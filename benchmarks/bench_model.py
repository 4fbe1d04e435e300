"""Model benchmarks for ``benchmarks/run.py`` (rows 1-5 of RESULTS.md).

Every function returns a list of row dicts: ``row``, ``name``, ``ours``, ``ref`` (the peer or the
original-style baseline, same unit), ``unit``, ``ratio`` (ours / ref), ``goal`` (max ratio) and
``note``. Timings are medians over ``reps`` repetitions after ``warmup`` un-timed runs, all in
the calling process, except the training-step variants (row 2): each runs once in a fresh
subprocess so that its peak memory can be read from the kernel (see ``peak_memory_note``), and
all of them run together in one more subprocess for the step times, stepped round-robin.

Run directly only as a worker: ``python benchmarks/bench_model.py --worker train|train_times '<json>'``.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

peak_memory_note = (
    "peak memory = extra resident memory of one training step: each variant runs in a fresh "
    "subprocess with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go back to the OS), builds "
    "the model, AdamW state and gradients (kept allocated: zero_grad(set_to_none=False)), runs its "
    "warm-up step, then resets the kernel's high-water mark "
    "(/proc/self/clear_refs) and reports VmHWM - VmRSS around one step (ru_maxrss fallback); "
    "on CUDA torch.cuda.max_memory_allocated - memory_allocated. Row 2 step times: all variants in one "
    "process, one step of each in turn (round-robin), so drift of a shared machine hits all alike"
)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# row 1: inference latency vs HF transformers
# ----------------------------------------------------------------------------------------------

HF_BACKBONES = {
    # our backbone name -> (HF backbone config kwargs, neck sizes)
    "beit_base_patch16_384": ("beit", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                           intermediate_size=3072, image_size=384, out_indices=[3, 6, 9, 12]),
                              [96, 192, 384, 768]),
    "beit_large_patch16_384": ("beit", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                            intermediate_size=4096, image_size=384, out_indices=[6, 12, 18, 24]),
                               [256, 512, 1024, 1024]),
    # SwinV2-T with 8x8 windows: at 384x512 every stage (96x128 ... 12x16) is a whole number of
    # windows. With 16x16 windows stages 3-4 need padding, which HF and timm do differently (HF pads
    # before the cyclic shift and keeps square windows; timm shifts first and clamps each side), so
    # the two would compute different functions.
    "swinv2_tiny_window8_256": ("swinv2", dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                               window_size=8), [96, 192, 384, 768]),
    "swinv2_tiny_window16_256": ("swinv2", dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                                                window_size=16), [96, 192, 384, 768]),
}


def hf_zoedepth(backbone: str, size: Sequence[int]):
    """A randomly initialised HF ``ZoeDepthForDepthEstimation`` (ZoeD-N layout) for ``backbone``."""
    from transformers import BeitConfig, Swinv2Config, ZoeDepthConfig, ZoeDepthForDepthEstimation

    kind, kwargs, neck = HF_BACKBONES[backbone]
    if kind == "beit":
        bcfg = BeitConfig(use_relative_position_bias=True, use_absolute_position_embeddings=False,
                          reshape_hidden_states=False, layer_scale_init_value=0.1, **kwargs)
        hidden = kwargs["hidden_size"]
    else:
        bcfg = Swinv2Config(image_size=tuple(size), out_features=["stage1", "stage2", "stage3", "stage4"], **kwargs)
        hidden = None
    cfg = ZoeDepthConfig(backbone_config=bcfg, neck_hidden_sizes=neck, backbone_hidden_size=hidden)
    torch.manual_seed(0)
    model = ZoeDepthForDepthEstimation(cfg).eval()
    # HF's init (std 0.02) gives a nearly constant depth map, which would make the equality check
    # vacuous: use fan-in scaled weights and non-zero biases instead (LayerNorm scales stay 1).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("bias"):
                p.uniform_(-0.1, 0.1)
    return model


def _ours_from_hf(hf_model, backbone: str, size: Sequence[int]):
    """Our model carrying the peer's weights via the project's converter; (model, note)."""
    try:
        from zoe_lightning.models import checkpoints
    except Exception as exc:  # pragma: no cover
        return None, f"converter unavailable ({exc})"
    try:
        model = checkpoints.from_hf(hf_model, overrides=[f"model.img_size=[{size[0]},{size[1]}]"])
        return model.eval(), "same weights (converted by zoe_lightning.models.checkpoints.from_hf)"
    except Exception as exc:
        return None, f"converter failed: {str(exc).splitlines()[0][:160]}"


def _float64_context(hf, ours, image, pixel_values, ref_depth, our_depth) -> str:
    """How far each fp32 output is from the same function in float64 (ours and the peer in double):
    the scale of float rounding against which the ours-vs-peer difference should be read."""
    with torch.inference_mode():
        exact = copy.deepcopy(ours).double()(image.double(), maps=False).metric_depth.reshape(-1)
        peer_exact = copy.deepcopy(hf).double()(pixel_values=pixel_values.double()).predicted_depth.reshape(-1)
    ours_err = float((our_depth.reshape(-1).double() - exact).abs().max())
    peer_err = float((ref_depth.reshape(-1).double() - peer_exact).abs().max())
    return (f"float rounding for scale: max |fp32 - float64| = {ours_err:.2e} m for ours, {peer_err:.2e} m for "
            f"the peer (each against itself in float64)")


def bench_inference(backbones: Sequence[str], size: Sequence[int], reps: int, warmup: int,
                    device: str = "cpu", ablations: bool = False, no_grad: bool = False) -> List[Dict]:
    from zoe_lightning.models import build_model

    rows = []
    for backbone in backbones:
        note = []
        hf = hf_zoedepth(backbone, size).to(device)
        ours, how = _ours_from_hf(hf, backbone, size)
        checked = None
        cfg = _cfg("zoed_m12_n", backbone, size)
        if ours is None:
            note.append(f"{how}; ours built with random weights (same architecture)")
            ours = build_model(cfg).eval()
        ours = ours.to(device)
        torch.manual_seed(1)
        image = torch.rand(1, 3, *size, device=device)
        pixel_values = (image - 0.5) / 0.5
        with torch.inference_mode():
            ref_depth = hf(pixel_values=pixel_values).predicted_depth
            our_depth = ours(image, maps=False).metric_depth
        if "converted" in how:
            checked = float((ref_depth.reshape(-1) - our_depth.reshape(-1)).abs().max())
            note.append(f"outputs checked first: max |ours - peer| = {checked:.2e} m on a depth map with "
                        f"range {float(ref_depth.min()):.3f}-{float(ref_depth.max()):.3f} m, std {float(ref_depth.std()):.3f}")
            if not checked <= 1e-4 * max(1.0, float(ref_depth.abs().max())):
                note.append("OUTPUTS DIFFER")
            note.append(_float64_context(hf, ours, image, pixel_values, ref_depth, our_depth))
        else:
            note.append("outputs not compared")

        def peer():
            with torch.no_grad():
                hf(pixel_values=pixel_values)

        def infer(model, maps=False):
            # the peer returns depth only; ours the same way (what evaluate / predict call)
            def run():
                with torch.inference_mode():
                    model(image, maps=maps)
            return run

        def ours_nograd():
            with torch.no_grad():
                ours(image, maps=False)

        direct = _with_speed(copy.deepcopy(ours), cfg, winograd=False)
        with torch.inference_mode():
            wino_diff = float((direct(image, maps=False).metric_depth - our_depth).abs().max())
        candidates = {"peer": peer, "ours": infer(ours), "ours_maps": infer(ours, maps=True),
                      "winograd_off": infer(direct)}
        if ablations:  # what each default switch buys (first backbone only): copies with one switch off
            slow = _with_speed(copy.deepcopy(ours), cfg, fast_path=False)
            nchw = _with_speed(copy.deepcopy(ours), cfg, channels_last=False)
            candidates.update(fast_path_off=infer(slow), channels_last_off=infer(nchw))
        if no_grad:
            candidates["ours_no_grad"] = ours_nograd
        times = interleaved_times(candidates, reps, warmup, device)
        t_peer, t_ours = times["peer"], times["ours"]
        extra = {"times_ours": t_ours["times"], "times_peer": t_peer["times"], "max_abs_diff": checked,
                 "ours_with_maps_s": times["ours_maps"]["median"]}
        note.append(f"ours returning the per-bin maps too (model(image) default, maps=True): "
                    f"{extra['ours_with_maps_s']:.3f} s (ratio {extra['ours_with_maps_s'] / t_peer['median']:.3f})")
        t_direct = times["winograd_off"]["median"]
        extra["ours_winograd_off_s"] = t_direct
        note.append(f"ours with model.speed.winograd=false (PyTorch's 3x3 convolution kernels): {t_direct:.3f} s "
                    f"(ratio {t_direct / t_peer['median']:.3f}), max |depth difference| to the default {wino_diff:.2e} m")
        if no_grad:
            extra["ours_no_grad_s"] = times["ours_no_grad"]["median"]
            note.append(f"ours under no_grad instead of inference_mode: {extra['ours_no_grad_s']:.3f} s")
        if ablations:
            t_slow, t_nchw = times["fast_path_off"]["median"], times["channels_last_off"]["median"]
            extra.update(ours_fast_path_off_s=t_slow, ours_channels_last_off_s=t_nchw)
            note.append(f"ours with model.speed.fast_path=false: {t_slow:.3f} s (ratio {t_slow / t_peer['median']:.3f}); "
                        f"with model.speed.channels_last=false: {t_nchw:.3f} s (ratio {t_nchw / t_peer['median']:.3f})")
            ablations = False
        rows.append(row(1, f"inference ZoeD-N {backbone} {size[0]}x{size[1]} batch 1 (ours with its defaults, "
                           f"depth only, inference_mode, vs HF no_grad)", t_ours["median"], t_peer["median"], "s", 0.7, "; ".join(note),
                        **extra))
        del hf, ours
        gc.collect()
    return rows


# ----------------------------------------------------------------------------------------------
# row 2: training step (subprocess per variant)
# ----------------------------------------------------------------------------------------------

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
        base = results.get("original", {})
        for variant, res in results.items():
            if variant == "original":
                continue
            label = f"ZoeD-{name} {backbone} {size[0]}x{size[1]} batch {batch}"
            if "error" in res or "error" in base:
                rows.append(row(2, f"train step time {label}: {variant} vs original", None, None, "s",
                                note=f"failed: {res.get('error') or base.get('error')}"))
                continue
            same = abs(res["losses"][0] - base["losses"][0]) <= 1e-4 * max(1.0, abs(base["losses"][0]))
            lnote = (f"first loss ours {res['losses'][0]:.6f} vs original {base['losses'][0]:.6f}"
                     + ("" if same or variant.endswith(("bf16",)) else " (DIFFERENT)"))
            # the time goal is the default's; grad checkpointing is a memory switch (recomputes the backbone)
            memory_switch = "grad_checkpointing" in variant
            if memory_switch:
                lnote += "; a memory switch: the backbone's forward runs twice, no time goal"
            rows.append(row(2, f"train step time {label}: {variant} vs original", res["median_s"],
                            base["median_s"], "s", None if memory_switch else 0.8, lnote, times_ours=res["times"],
                            times_ref=base["times"]))
            mem_goal = 0.6 if name == "NK" else None
            rows.append(row(2, f"train step peak memory {label}: {variant} vs original",
                            res["peak_bytes"] / 2**20 if res["peak_bytes"] is not None else None,
                            base["peak_bytes"] / 2**20 if base["peak_bytes"] is not None else None, "MiB", mem_goal,
                            f"method: {res['memory_method']} (see header); static memory (weights, gradients, "
                            f"AdamW state, interpreter) {res['static_bytes'] / 2**20:,.0f} MiB ours vs "
                            f"{base['static_bytes'] / 2**20:,.0f} MiB original, excluded"))
    return rows


# ----------------------------------------------------------------------------------------------
# row 3: metric head cost
# ----------------------------------------------------------------------------------------------


def bench_head(backbone: str, size: Sequence[int], reps: int, warmup: int, device: str = "cpu",
               experiment: str = "zoed_m12_n") -> List[Dict]:
    from zoe_lightning.accel.kernels import Upsampled
    from zoe_lightning.models import build_model

    cfg = _cfg(experiment, backbone, size)
    model = build_model(cfg).eval().to(device)
    image = torch.rand(1, 3, *size, device=device)
    name = model.domains[0]
    with torch.inference_mode():
        x = model.prep(image)
        core = model.core(x)
        # the original order receives the finest map upsampled, as its core produces it (ours keeps
        # it low-resolution: accel.kernels.Upsampled), so the upsampling is not charged to its head
        full_fusion = [f.full() if isinstance(f, Upsampled) else f for f in core.fusion]

    def backbone_fn():
        with torch.inference_mode():
            model.core.pretrained(x)

    # the original op order: a copy of the head with the reference modules (model.speed.fast_path and
    # memory_efficient off)
    original_head = _with_speed(copy.deepcopy(model.head), cfg, fast_path=False, memory_efficient=False)

    def head_fn(head, maps: bool, fusion):
        with torch.inference_mode():
            shared = head.shared(core.bottleneck, fusion)
            head.forward_domain(name, shared, core.out_conv, core.relative_depth, maps=maps)

    def core_fn():
        with torch.inference_mode():
            model.core(x)

    def head_variant(fast: bool, maps: bool):
        def run():
            head_fn(model.head if fast else original_head, maps, core.fusion if fast else full_fusion)
        return run

    variants = {"ours, depth only (maps=False: evaluate / predict)": (True, False),
                "ours, with the per-bin maps (model(image) default)": (True, True),
                "original op order, full attractor tensors": (False, True)}
    times = interleaved_times({"backbone": backbone_fn, "core": core_fn,
                               **{label: head_variant(*flags) for label, flags in variants.items()}},
                              reps, warmup, device)
    t_backbone, t_core = times["backbone"]["median"], times["core"]["median"]
    out = []
    for label in variants:
        t_head = times[label]["median"]
        out.append(row(3, f"metric head / backbone, {experiment} {backbone} {size[0]}x{size[1]}: {label}",
                       t_head, t_backbone, "s", 0.05 if label.startswith("ours") else None,
                       f"head {t_head:.3f} s, backbone {t_backbone:.3f} s, DPT core (backbone+decoder) {t_core:.3f} s; "
                       f"head share of a full forward {t_head / (t_core + t_head):.1%}"))
    return out


# ----------------------------------------------------------------------------------------------
# row 4: Lightning loop overhead
# ----------------------------------------------------------------------------------------------


def bench_loop(backbone: str, size: Sequence[int], batch: int, steps: int, warmup: int) -> List[Dict]:
    import warnings

    import lightning as L

    from zoe_lightning.losses import silog_loss
    from zoe_lightning.modules import MetricDepthModule
    from zoe_lightning.modules.base import make_adamw

    warnings.filterwarnings("ignore")
    cfg = _cfg("quickstart", backbone, size, ["data.augment=false", "logger.csv=false", f"trainer.max_steps={steps}",
                                              "model.bins=[{name: nyu, n_bins: 64, min_depth: 0.001, max_depth: 10}]"])
    g = torch.Generator().manual_seed(0)
    batch_data = {
        "image": torch.rand(batch, 3, *size, generator=g), "depth": 0.5 + 5 * torch.rand(batch, 1, *size, generator=g),
        "valid": torch.ones(batch, 1, *size, dtype=torch.bool), "domain_label": torch.zeros(batch, dtype=torch.long),
        "domain": ["nyu"] * batch,
    }
    total = warmup + steps

    class Repeat(torch.utils.data.Dataset):
        def __len__(self):
            return total

        def __getitem__(self, i):
            return batch_data

    loader = torch.utils.data.DataLoader(Repeat(), batch_size=None, num_workers=0)

    torch.manual_seed(0)
    module = MetricDepthModule(cfg)
    torch.manual_seed(0)
    bare = MetricDepthModule(cfg)
    model = bare.model.train()
    o = cfg.optim
    groups = model.parameter_groups(o.lr, o.encoder_lr_factor, o.pos_enc_lr_factor, o.decoder_lr_factor, o.same_lr)
    opt = make_adamw(groups, o)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[gr["lr"] for gr in groups], total_steps=total + 1, pct_start=o.pct_start,
        div_factor=o.div_factor, final_div_factor=o.final_div_factor, anneal_strategy="cos", cycle_momentum=True,
        base_momentum=o.base_momentum, max_momentum=o.max_momentum)
    bare_batches = iter(torch.utils.data.DataLoader(Repeat(), batch_size=None, num_workers=0))

    def bare_step():
        b = next(bare_batches)
        out = model(b["image"], domain=b["domain_label"])
        loss, _ = silog_loss(out.metric_depth, b["depth"], b["valid"], beta=cfg.loss.silog_beta)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    class Interleave(L.Callback):
        """Round-robin per step: at each Lightning batch start, one bare step runs (timed); the
        Lightning step is the time from the end of that bare step to the next batch start, i.e.
        everything Lightning does for a step (training_step, backward, clipping, optimizer and
        scheduler, logging, hooks, fetching the next batch)."""

        def __init__(self):
            self.lightning, self.bare, self.mark = [], [], None

        def _lap(self):
            now = time.perf_counter()
            if self.mark is not None:
                self.lightning.append(now - self.mark)
            t0 = time.perf_counter()
            bare_step()
            self.bare.append(time.perf_counter() - t0)
            self.mark = time.perf_counter()

        def on_train_batch_start(self, *args):
            self._lap()

        def on_train_end(self, *args):
            self.lightning.append(time.perf_counter() - self.mark)

    clock = Interleave()
    trainer = L.Trainer(max_steps=total, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[clock], num_sanity_val_steps=0)
    trainer.fit(module, train_dataloaders=loader)
    lightning_steps, bare_steps = clock.lightning[warmup:], clock.bare[warmup:]
    t_l, t_b = statistics.median(lightning_steps), statistics.median(bare_steps)
    return [row(4, f"Lightning fit step vs bare PyTorch loop ({backbone} {size[0]}x{size[1]} batch {batch})",
                t_l, t_b, "s", 1.03, f"overhead {100 * (t_l / t_b - 1):+.1f}% (median of {len(bare_steps)} steps "
                "each, round-robin: one bare step inside each Lightning step, timed apart)",
                times_ours=lightning_steps, times_ref=bare_steps)]


# ----------------------------------------------------------------------------------------------
# row 5: evaluation metrics vs per-image numpy
# ----------------------------------------------------------------------------------------------


def numpy_metrics(pred, gt, min_depth: float, max_depth: float, eigen_crop: bool) -> Dict[str, float]:
    """The ZoeDepth formulas for one image, written plainly in numpy (float64)."""
    import numpy as np

    pred = np.clip(np.nan_to_num(pred.astype(np.float64), nan=min_depth, posinf=max_depth, neginf=min_depth),
                   min_depth, max_depth)
    gt = gt.astype(np.float64)
    valid = (gt > min_depth) & (gt < max_depth)
    if eigen_crop:
        box = np.zeros_like(valid)
        box[45:471, 41:601] = True
        valid &= box
    p, g = pred[valid], gt[valid]
    thresh = np.maximum(g / p, p / g)
    err = np.log(p) - np.log(g)
    return {
        "a1": float((thresh < 1.25).mean()), "a2": float((thresh < 1.25 ** 2).mean()),
        "a3": float((thresh < 1.25 ** 3).mean()), "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)), "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(err ** 2))),
        "log_10": float(np.mean(np.abs(np.log10(g) - np.log10(p)))),
        "silog": float(100 * np.sqrt(max(np.mean(err ** 2) - np.mean(err) ** 2, 0.0))),
    }


def make_maps(n: int, size=(480, 640), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = 0.5 + 9.0 * torch.rand(n, 1, *size, generator=g)
    gt[torch.rand(n, 1, *size, generator=g) < 0.1] = 0.0  # invalid pixels
    pred = gt * (1 + 0.2 * torch.randn(n, 1, *size, generator=g)).clamp_min(0.05)
    return pred, gt


def bench_metrics(n_maps: int, reps: int, warmup: int, device: str = "cpu", chunk: int = 64) -> List[Dict]:
    from zoe_lightning.metrics import FUSED_MIN_PIXELS, METRIC_NAMES, DepthMetrics, fused_metrics_available

    pred, gt = make_maps(n_maps)
    pred_np, gt_np = pred.numpy(), gt.numpy()
    pred_d, gt_d = pred.to(device), gt.to(device)

    def ours(fused=None):
        # default fused=None: the compiled CPU kernel for these batches (eager PyTorch elsewhere)
        metric = DepthMetrics(1e-3, 10.0, crop="eigen", fused=fused).to(device)
        for i in range(0, n_maps, chunk):
            metric.update(pred_d[i:i + chunk], gt_d[i:i + chunk])
        return {k: float(v) for k, v in metric.compute().items() if k in METRIC_NAMES}

    def reference():
        sums = dict.fromkeys(METRIC_NAMES, 0.0)
        for i in range(n_maps):
            for k, v in numpy_metrics(pred_np[i, 0], gt_np[i, 0], 1e-3, 10.0, True).items():
                sums[k] += v
        return {k: v / n_maps for k, v in sums.items()}

    t0 = time.perf_counter()
    vals_ref = reference()  # one timed run: the slow side
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    vals_ours = ours()  # also the warm-up; compiles the CPU kernel once per process
    t_first = time.perf_counter() - t0
    worst = max(abs(vals_ours[k] - vals_ref[k]) / max(abs(vals_ref[k]), 1e-12) for k in METRIC_NAMES)
    t_ours = median_time(ours, reps, max(0, warmup - 1), device)["median"]
    batches = [min(chunk, n_maps - i) for i in range(0, n_maps, chunk)]
    n_fused = sum(b * 426 * 560 >= FUSED_MIN_PIXELS for b in batches) if device == "cpu" else 0
    fused = n_fused > 0 and fused_metrics_available()
    note = (f"values match: max relative difference {worst:.1e} over the 9 metrics; DepthMetrics default: "
            + (f"compiled CPU kernel (torch.compile) for {n_fused} of {len(batches)} batches, first call incl. "
               f"compiling {t_first:.1f} s" if fused else "eager PyTorch"))
    t_eager = None
    if fused:  # the eager fallback (float64, as the original), one run
        t0 = time.perf_counter()
        vals_eager = ours(fused=False)
        t_eager = time.perf_counter() - t0
        worst_eager = max(abs(vals_eager[k] - vals_ref[k]) / max(abs(vals_ref[k]), 1e-12) for k in METRIC_NAMES)
        note += f"; eager fallback {t_eager:.2f} s (max relative difference {worst_eager:.1e})"
    return [row(5, f"metrics on {n_maps} NYU-size maps (480x640, eigen crop): DepthMetrics vs per-image numpy",
                t_ours, t_ref, "s", 0.05, note, max_rel_diff=worst, values_ours=vals_ours, values_ref=vals_ref,
                first_call_s=t_first, eager_s=t_eager)]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker" and sys.argv[2] == "train":
        print("RESULT " + json.dumps(train_worker(json.loads(sys.argv[3]))), flush=True)
    elif len(sys.argv) == 4 and sys.argv[1] == "--worker" and sys.argv[2] == "train_times":
        print("RESULT " + json.dumps(train_times_worker(json.loads(sys.argv[3]))), flush=True)
    else:
        sys.exit("run benchmarks/run.py; this file is a library (and the row-2 worker)")
