"""Row 7 of RESULTS.md: Depth Anything V2 metric inference (ViT-S / ViT-L), ours vs HF transformers
``DepthAnythingForDepthEstimation``, same weights.

The peer is built from the released V2 metric configuration (DINOv2 width / depth / heads, the V2
converter's ``out_indices``, decoder widths, ``max_depth`` 20), with random weights scaled by fan-in
(HF's 0.02-std initialisation gives a near-constant map), saved with ``save_pretrained`` and loaded
by our loader: the outputs are compared before anything is timed. Both run at the same network
size on the same pixels (ours normalises inside; the peer gets ImageNet-normalised pixels).
"""

from __future__ import annotations

import tempfile
from typing import Dict, List, Sequence

import torch

from common import interleaved_times, row, spread_weights_

# size -> (width, blocks, heads, V2 out_indices, neck widths, fusion width)
DA_SIZES = {"vits": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
            "vitb": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
            "vitl": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256)}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def hf_depth_anything(size: str, max_depth: int = 20):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    width, depth, heads, out, neck, fusion = DA_SIZES[size]
    backbone = Dinov2Config(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads, patch_size=14,
                            image_size=518, out_indices=out, apply_layernorm=True, reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=width, patch_size=14,
                              fusion_hidden_size=fusion, neck_hidden_sizes=neck, head_hidden_size=32,
                              depth_estimation_type="metric", max_depth=max_depth)
    torch.manual_seed(0)
    return spread_weights_(DepthAnythingForDepthEstimation(cfg).eval())


def bench_depth_anything(sizes: Sequence[str], image_size: Sequence[int], reps: int, warmup: int,
                         device: str = "cpu") -> List[Dict]:
    from zoe_lightning.weights import load_model_and_config

    rows = []
    h, w = int(image_size[0]), int(image_size[1])
    for size in sizes:
        hf = hf_depth_anything(size)
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours, _ = load_model_and_config(folder, overrides=[f"model.img_size=[{h},{w}]"])
        hf, ours = hf.to(device), ours.to(device)
        torch.manual_seed(1)
        image = torch.rand(1, 3, h, w, device=device)
        pixel_values = (image - MEAN.to(device)) / STD.to(device)
        with torch.inference_mode():
            ref = hf(pixel_values=pixel_values).predicted_depth.reshape(-1)
            got = ours(image, maps=False).metric_depth.reshape(-1)
        diff = float((ref - got).abs().max())
        note = (f"same weights (HF folder read by zoe_lightning.weights); outputs checked first: max |ours - peer| = "
                f"{diff:.2e} m on a map with range {float(ref.min()):.2f}-{float(ref.max()):.2f} m"
                + ("" if diff <= 1e-4 * max(1.0, float(ref.abs().max())) else "; OUTPUTS DIFFER"))

        def peer():
            with torch.inference_mode():
                hf(pixel_values=pixel_values)

        def mine():
            with torch.inference_mode():
                ours(image, maps=False)

        times = interleaved_times({"peer": peer, "ours": mine}, reps, warmup, device)
        t_ours, t_peer = times["ours"]["median"], times["peer"]["median"]
        rows.append(row(7, f"Depth Anything V2 metric ViT-{size[-1].upper()} inference {h}x{w}, ours vs HF",
                        t_ours, t_peer, "s", 1.05, note, max_abs_diff=diff, times_ours=times["ours"]["times"],
                        times_peer=times["peer"]["times"]))
        del hf, ours
    return rows
