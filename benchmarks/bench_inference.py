"""Row 1 of RESULTS.md: inference latency of ZoeD-N, ours vs HF transformers ZoeDepthForDepthEstimation."""

from __future__ import annotations

import copy
import gc
from typing import Dict, List, Sequence

import torch

from common import interleaved_times, row, spread_weights_, _cfg, _with_speed


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
    # a tiny BEiT (4 blocks of width 64) for the GPU check's dry run: the same code paths, seconds on a CPU
    "test_beit": ("beit", dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256,
                               image_size=384, out_indices=[1, 2, 3, 4]), [16, 32, 64, 64]),
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
    return spread_weights_(ZoeDepthForDepthEstimation(cfg).eval())


def _ours_from_hf(hf_model, backbone: str, size: Sequence[int]):
    """Our model carrying the peer's weights via the project's converter; (model, note)."""
    try:
        from zoe_lightning import weights
    except Exception as exc:  # pragma: no cover
        return None, f"converter unavailable ({exc})"
    try:
        model = weights.from_hf(hf_model, overrides=[f"model.img_size=[{size[0]},{size[1]}]"])
        return model.eval(), "same weights (converted by zoe_lightning.weights.from_hf)"
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
