"""Depth Anything checkpoints (facts: DEPTH_ANYTHING_FACTS.md §2.5, §3.1, §3.4, §4).

Three layouts:

* ``official``  a flat ``pretrained.*`` (DINOv2) + ``depth_head.*`` (DPT) state dict: V1 relative
  ``depth_anything_vit{s,b,l}14.pth``, V2 relative ``depth_anything_v2_vit{s,b,l,g}.pth`` and V2 metric
  ``depth_anything_v2_metric_{hypersim,vkitti}_vit{s,b,l}.pth`` (also a ``{"model": ...}`` wrapper with
  ``module.`` prefixes, as V2's ``train.py`` saves). The size (width, decoder widths) is read from the
  shapes. The three kinds share one key layout, so the file cannot tell them apart: without a preset
  it is a V2 relative model; ``preset=da1_relative`` (V1's last-four-block taps) or a
  ``da2_metric_*`` preset say otherwise.
* ``v1_metric``  Depth Anything V1's ZoeDepth (``core.core.pretrained.*`` + ``core.core.depth_head.*`` +
  the ZoeDepth head): ``depth_anything_metric_depth_{indoor,outdoor}.pt``. Without a preset it is
  ``da1_metric_indoor``; the outdoor file has the same architecture (only the evaluation range
  differs): ``preset=da1_metric_outdoor``.
* ``hf``  an HF ``DepthAnythingForDepthEstimation`` folder (``config.json`` with
  ``model_type: depth_anything``), relative or metric; configured from ``config.json``.

Renaming: ``pretrained.X`` -> ``core.pretrained.X`` (timm's DINOv2 keys are the original's; the
unused ``mask_token`` is dropped, Giant's ``mlp.w12`` / ``mlp.w3`` become ``mlp.fc1`` / ``mlp.fc2``);
``depth_head.X`` -> ``core.depth_head.X``. A V2 metric model's last 1x1 conv
(``depth_head.scratch.output_conv2.2``) is also the ``da2_metric`` head's ``head.regressors.<domain>``.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from omegaconf import DictConfig

from ...errors import UserError
from ..io import Checkpoint
from ..strict import nothing_may_be_missing
from . import zoedepth
from .common import StateDict, checkpoint_state, compose, has_prefix, tensors

NAME = "depth_anything"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# ViT width -> (timm name, depth, heads) of the DINOv2 sizes Depth Anything uses
SIZES = {384: ("vit_small_patch14_dinov2", 12, 6), 768: ("vit_base_patch14_dinov2", 12, 12),
         1024: ("vit_large_patch14_dinov2", 24, 16), 1536: ("vit_giant_patch14_dinov2", 40, 24)}
LETTER = {384: "S", 768: "B", 1024: "L", 1536: "G"}


def _kind(ckpt: Checkpoint) -> Optional[str]:
    if ckpt.hf_config is not None:
        return "hf" if ckpt.hf_config.get("model_type") == "depth_anything" else None
    state = tensors(ckpt.payload)
    if state is None:
        return None
    if has_prefix(state, "core.core.depth_head."):
        return "v1_metric"
    if has_prefix(state, "pretrained.") and has_prefix(state, "depth_head."):
        return "official"
    if has_prefix(state, "backbone.") and has_prefix(state, "neck.") and "head.conv3.weight" in state:
        return "hf_bare"
    return None


def matches(ckpt: Checkpoint) -> bool:
    return _kind(ckpt) is not None


# ----------------------------------------------------------------------------------------------
# architecture from shapes
# ----------------------------------------------------------------------------------------------


def _blocks(state: StateDict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"blocks\.(\d+)\.")
    found = {int(m[1]) for k in state for m in [pat.match(k)] if m}
    return max(found) + 1 if found else 0


def architecture(state: StateDict, source: str, prefix: str = "", preset: Optional[str] = None) -> Dict[str, Any]:
    """The ``model`` delta (backbone, decoder widths, training size) of a Depth Anything state dict
    whose DINOv2 keys start ``{prefix}pretrained.`` and decoder keys ``{prefix}depth_head.``.
    A width that is no Depth Anything size needs a ``preset`` (the head count is not in the
    weights); the preset's model is then taken as it is (empty delta)."""
    enc, head = prefix + "pretrained.", prefix + "depth_head."
    if any(re.match(re.escape(enc) + r"blocks\.\d+\.\d+\.", k) for k in state):
        raise UserError(f"{source}: chunked DINOv2 blocks ({enc}blocks.<chunk>.<i>.*) are not supported; "
                        "save the model with block_chunks=0")
    cls = state.get(enc + "cls_token")
    if cls is None:
        raise UserError(f"{source}: no {enc}cls_token: not a Depth Anything DINOv2 encoder")
    width = int(cls.shape[-1])
    if width not in SIZES:
        if preset is not None:
            return {}
        raise UserError(f"{source}: ViT width {width} is not a Depth Anything size (384 S, 768 B, 1024 L, 1536 G); "
                        "pass preset=<experiment> describing the model")
    name, depth, _ = SIZES[width]
    found = _blocks(state, enc)
    if found != depth:
        raise UserError(f"{source}: a ViT-{LETTER[width]} of width {width} has {depth} blocks, the file {found}")
    model: Dict[str, Any] = {"decoder": "depth_anything", "backbone": name}
    grid = int(round((state[enc + "pos_embed"].shape[1] - 1) ** 0.5)) if enc + "pos_embed" in state else 37
    if grid != 37:
        model["backbone_kwargs"] = {"img_size": grid * 14}
    try:
        model["features"] = int(state[head + "scratch.layer1_rn.weight"].shape[0])
        model["reassemble_channels"] = [int(state[f"{head}projects.{i}.weight"].shape[0]) for i in range(4)]
        out = int(state[head + "scratch.output_conv2.0.weight"].shape[0])
    except KeyError as exc:
        raise UserError(f"{source}: the Depth Anything decoder lacks {exc.args[0]}") from None
    if out != 32:
        raise UserError(f"{source}: {head}scratch.output_conv2.0 has {out} output channels; the decoder needs 32")
    return model


def _width(cfg) -> Optional[int]:
    from ...models.encoder import resolve_backbone

    spec = resolve_backbone(cfg.model.backbone)
    kwargs = {**spec.kwargs, **dict(cfg.model.backbone_kwargs or {})}
    if kwargs.get("embed_dim"):
        return int(kwargs["embed_dim"])
    for w, (name, _, _) in SIZES.items():
        if spec.timm_name.replace("_reg4", "") == name:
            return w
    return None


def _with_preset(preset: str, arch: Dict[str, Any], overrides: Sequence[str], source: str) -> DictConfig:
    """The preset's configuration; a relative preset takes its size from the file, a metric one must
    name the file's size."""
    cfg = compose(preset, None, overrides)
    if cfg.model.decoder != "depth_anything":
        raise UserError(f"{source}: preset '{preset}' is not a Depth Anything configuration "
                        "(model.decoder is not depth_anything)")
    if not arch:  # a width of no Depth Anything size: the preset describes the model
        return cfg
    width = int(SIZES_BY_NAME[arch["backbone"]])
    if cfg.stage == "relative":
        return compose(preset, {"model": arch}, overrides, source=f"{source} (with preset {preset})")
    have = _width(cfg)
    if have != width:
        raise UserError(f"{source}: preset '{preset}' describes a ViT-{LETTER.get(have, have)} core but the file holds "
                        f"a ViT-{LETTER[width]} (width {width}); pick the preset of that size")
    return cfg


SIZES_BY_NAME = {name: w for w, (name, _, _) in SIZES.items()}


# ----------------------------------------------------------------------------------------------
# HF config.json
# ----------------------------------------------------------------------------------------------


def _hf_delta(hf: Dict[str, Any], source: str) -> Dict[str, Any]:
    bb = dict(hf.get("backbone_config") or {})
    if bb.get("model_type", "dinov2") != "dinov2":
        raise UserError(f"{source}: backbone '{bb.get('model_type')}' is not supported (DINOv2 without registers)")
    checks = {"reassemble_factors": ([4, 2, 1, 0.5], hf.get("reassemble_factors", [4, 2, 1, 0.5])),
              "head_in_index": (-1, hf.get("head_in_index", -1)), "head_hidden_size": (32, hf.get("head_hidden_size", 32)),
              "patch_size": (14, hf.get("patch_size", 14)), "backbone_config.patch_size": (14, bb.get("patch_size", 14)),
              "backbone_config.qkv_bias": (True, bb.get("qkv_bias", True)),
              "backbone_config.apply_layernorm": (True, bb.get("apply_layernorm", True)),
              "backbone_config.layer_norm_eps": (1e-6, bb.get("layer_norm_eps", 1e-6))}  # timm's DINOv2 eps
    for key, (want, got) in checks.items():
        if (list(got) if isinstance(got, (list, tuple)) else got) != want:
            raise UserError(f"{source}: {key}={got} is not supported (need {want})")
    width = int(bb.get("hidden_size", 768))
    if int(hf.get("reassemble_hidden_size", width)) != width:
        raise UserError(f"{source}: reassemble_hidden_size {hf.get('reassemble_hidden_size')} must equal the "
                        f"backbone width {width}")
    depth, heads = int(bb.get("num_hidden_layers", 12)), int(bb.get("num_attention_heads", 12))
    size, ratio = int(bb.get("image_size", 518)), float(bb.get("mlp_ratio", 4))
    swiglu = bool(bb.get("use_swiglu_ffn", False))
    if not swiglu and str(bb.get("hidden_act", "gelu")) != "gelu":
        raise UserError(f"{source}: backbone hidden_act '{bb.get('hidden_act')}' is not supported (gelu)")
    out_indices = list(bb.get("out_indices") or [int(s.replace("stage", "")) for s in bb.get("out_features", [])])
    if len(out_indices) != 4:
        raise UserError(f"{source}: the backbone must expose 4 stages (out_indices), got {out_indices}")
    model: Dict[str, Any] = {"decoder": "depth_anything", "hooks": [int(i) - 1 for i in out_indices],
                             "reassemble_channels": [int(c) for c in hf.get("neck_hidden_sizes", [])],
                             "features": int(hf.get("fusion_hidden_size", 64)), "pos_embed_resize": "size",
                             "img_size": [size, size], "keep_aspect_ratio": True, "resize_input": True,
                             "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    known = SIZES.get(width)
    if known and (depth, heads, size, ratio, swiglu) == (known[1], known[2], 518, 4.0, width == 1536):
        model["backbone"] = known[0]
    else:
        hidden = int(width * ratio)
        if swiglu:  # HF's SwiGLU hidden width: 2/3 of width * ratio, rounded up to a multiple of 8;
            # timm's packed SwiGLU counts both halves of fc1 in its mlp_ratio
            hidden = 2 * ((int(hidden * 2 / 3) + 7) // 8 * 8)
        model["backbone"] = "vit_giant_patch14_dinov2" if swiglu else "vit_small_patch14_dinov2"
        model["backbone_kwargs"] = {"embed_dim": width, "depth": depth, "num_heads": heads, "img_size": size,
                                    "mlp_ratio": (hidden + 0.5) / width,  # timm takes int(width * ratio)
                                    "init_values": float(bb.get("layerscale_value", 1.0))}
    kind = str(hf.get("depth_estimation_type", "relative"))
    max_depth = hf.get("max_depth")
    if kind == "relative":
        if max_depth not in (None, 1, 1.0):
            raise UserError(f"{source}: a relative model with max_depth={max_depth} (a scaled disparity) is not "
                            "supported; relative models use max_depth 1")
        return {"stage": "relative", "model": model}
    if kind != "metric":
        raise UserError(f"{source}: depth_estimation_type '{kind}' is not supported (relative, metric)")
    max_depth = float(1 if max_depth is None else max_depth)
    name = "kitti" if max_depth >= 80 else "nyu"
    model["head"] = {"type": "da2_metric", "use_relative_input": False}
    model["bins"] = [{"name": name, "n_bins": 64, "min_depth": 1e-3, "max_depth": max_depth}]
    return {"stage": "metric", "model": model}


# ----------------------------------------------------------------------------------------------
# the three questions
# ----------------------------------------------------------------------------------------------


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    kind, source = _kind(ckpt), ckpt.source
    if kind == "hf_bare":
        raise UserError(f"{source}: HF Depth Anything weights need their config.json: pass the model folder")
    if kind == "hf":
        delta = _hf_delta(ckpt.hf_config, source)
        if preset is None:
            return compose("base", delta, overrides, source=f"{source} (translated)")
        return compose(preset, {"model": {k: v for k, v in delta["model"].items() if k not in ("head", "bins")}},
                       overrides, source=f"{source} (with preset {preset})")
    state = tensors(ckpt.payload)
    if kind == "v1_metric":
        preset = preset or "da1_metric_indoor"
        return _with_preset(preset, architecture(state, source, "core.core.", preset), overrides, source)
    arch = architecture(state, source, "", preset)
    if preset is not None:
        return _with_preset(preset, arch, overrides, source)
    delta = {"stage": "relative", "model": {**arch, "img_size": [518, 518], "keep_aspect_ratio": True,
                                            "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}
    return compose("base", delta, overrides, source=f"{source} (Depth Anything, read as V2 relative)")


def _encoder_key(key: str) -> Optional[str]:
    """An original DINOv2 key (without ``pretrained.``) as timm's, or None when dropped."""
    if key == "mask_token":
        return None
    return key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")


def official_to_ours(state: StateDict, prefix: str = "") -> StateDict:
    """``{prefix}pretrained.*`` / ``{prefix}depth_head.*`` -> ``core.pretrained.*`` / ``core.depth_head.*``;
    other keys are kept as they are (the strict load reports them)."""
    out: StateDict = {}
    enc, head = prefix + "pretrained.", prefix + "depth_head."
    for k, v in state.items():
        if k.startswith(enc):
            new = _encoder_key(k[len(enc):])
            if new is not None:
                out["core.pretrained." + new] = v
        elif k.startswith(head):
            out["core.depth_head." + k[len(head):]] = v
        else:
            out[k] = v
    return out


_HF_RULES = [
    (r"^backbone\.embeddings\.cls_token$", "core.pretrained.cls_token"),
    (r"^backbone\.embeddings\.mask_token$", None),
    (r"^backbone\.embeddings\.position_embeddings$", "core.pretrained.pos_embed"),
    (r"^backbone\.embeddings\.patch_embeddings\.projection\.", "core.pretrained.patch_embed.proj."),
    (r"^backbone\.encoder\.layer\.(\d+)\.(norm1|norm2)\.", r"core.pretrained.blocks.\1.\2."),
    (r"^backbone\.encoder\.layer\.(\d+)\.attention\.(output\.dense|o_proj)\.", r"core.pretrained.blocks.\1.attn.proj."),
    (r"^backbone\.encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"core.pretrained.blocks.\1.ls\2.gamma"),
    (r"^backbone\.encoder\.layer\.(\d+)\.mlp\.(fc1|weights_in)\.", r"core.pretrained.blocks.\1.mlp.fc1."),
    (r"^backbone\.encoder\.layer\.(\d+)\.mlp\.(fc2|weights_out|down_proj)\.", r"core.pretrained.blocks.\1.mlp.fc2."),
    (r"^backbone\.layernorm\.", "core.pretrained.norm."),
    (r"^neck\.reassemble_stage\.layers\.(\d+)\.projection\.", r"core.depth_head.projects.\1."),
    (r"^neck\.reassemble_stage\.layers\.(\d+)\.resize\.", r"core.depth_head.resize_layers.\1."),
    (r"^neck\.convs\.(\d+)\.", lambda m: f"core.depth_head.scratch.layer{int(m[1]) + 1}_rn."),
    (r"^neck\.fusion_stage\.layers\.(\d+)\.projection\.",
     lambda m: f"core.depth_head.scratch.refinenet{4 - int(m[1])}.out_conv."),
    (r"^neck\.fusion_stage\.layers\.(\d+)\.residual_layer(\d)\.convolution(\d)\.",
     lambda m: f"core.depth_head.scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}."),
    (r"^head\.conv1\.", "core.depth_head.scratch.output_conv1."),
    (r"^head\.conv2\.", "core.depth_head.scratch.output_conv2.0."),
    (r"^head\.conv3\.", "core.depth_head.scratch.output_conv2.2."),
]
_HF_RULES_C = [(re.compile(p), r) for p, r in _HF_RULES]
_HF_QKV = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\."
                     r"(weight|bias)$")
_HF_GLU = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.mlp\.(gate|up)_proj\.(weight|bias)$")


def hf_to_ours(state: StateDict, source: str = "HF weights") -> StateDict:
    """An HF ``DepthAnythingForDepthEstimation`` state dict (file or transformers-5 in-memory names)
    under this project's keys; q / k / v (and SwiGLU gate / up) fused back. Unknown keys are kept
    under ``hf:<key>`` so the strict load reports them."""
    out: StateDict = {}
    parts: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = _HF_QKV.match(k)
        if m:
            which = {"query": "q", "key": "k", "value": "v"}.get(m[2], m[3])
            parts.setdefault(("attn.qkv", m[1]), {})[f"{which}.{m[4]}"] = v
            continue
        m = _HF_GLU.match(k)
        if m:
            parts.setdefault(("mlp.fc1", m[1]), {})[("q" if m[2] == "gate" else "k") + "." + m[3]] = v
            continue
        for pattern, repl in _HF_RULES_C:
            mm = pattern.match(k)
            if mm:
                if repl is not None:
                    head = repl(mm) if callable(repl) else mm.expand(repl)
                    out[head + k[mm.end():]] = v
                break
        else:
            out["hf:" + k] = v
    for (target, layer), got in parts.items():
        order = ["q", "k", "v"] if target == "attn.qkv" else ["q", "k"]
        for kind in ("weight", "bias"):
            pieces = [got.get(f"{o}.{kind}") for o in order]
            if any(p is None for p in pieces):
                raise UserError(f"{source}: layer {layer} lacks part of its {target} {kind} "
                                f"({', '.join(o for o, p in zip(order, pieces) if p is None)})")
            out[f"core.pretrained.blocks.{layer}.{target}.{kind}"] = torch.cat(pieces, dim=0)
    return out



def state_dict(ckpt: Checkpoint, cfg: Any = None, model: Optional[nn.Module] = None) -> StateDict:
    """This project's keys; without ``cfg`` the DPT core's only."""
    kind, state = _kind(ckpt), checkpoint_state(ckpt)
    if kind == "hf_bare" and cfg is None:
        return {k: v for k, v in hf_to_ours(state, ckpt.source).items() if k.startswith("core.")}
    if kind in ("hf", "hf_bare"):
        out = hf_to_ours(state, ckpt.source)
    elif kind == "v1_metric":
        if cfg is None:
            return {k: v for k, v in official_to_ours(state, "core.core.").items() if k.startswith("core.")}
        renamed = zoedepth.to_ours(state, cfg, ckpt.source)  # core.core.* -> core.*, the ZoeDepth head
        return official_to_ours({("core.core." + k[len("core."):] if k.startswith("core.") else k): v
                                 for k, v in renamed.items()}, "core.core.")
    else:
        out = official_to_ours(state)
    if cfg is not None and cfg.stage != "relative" and cfg.model.head.type == "da2_metric":
        last = "core.depth_head.scratch.output_conv2.2."
        for b in cfg.model.bins:
            for kind_ in ("weight", "bias"):
                if last + kind_ in out:
                    out[f"head.regressors.{b.name}.{kind_}"] = out[last + kind_]
    return out


def may_be_missing(cfg: Any) -> Callable[[str], bool]:
    return nothing_may_be_missing
