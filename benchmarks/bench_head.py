"""Row 3 of RESULTS.md: metric head cost against the backbone, ours vs the original op order."""

from __future__ import annotations

import copy
from typing import Dict, List, Sequence

import torch

from common import interleaved_times, row, _cfg, _with_speed


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
