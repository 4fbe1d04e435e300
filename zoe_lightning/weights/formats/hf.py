"""HF transformers ``ZoeDepthForDepthEstimation``: a model folder (``config.json`` + weights) or
the in-memory model (:func:`from_hf`).

The configuration comes from ``config.json`` (:mod:`.hf_config`); the keys are renamed by the
rules below (facts §7.3, inverted), split q / k / v projections fused back. The timm backbone's
classifier and final norm, which HF does not store and no forward pass reads, keep their
initialisation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from ...errors import UserError
from ..io import Checkpoint, read_checkpoint
from ..strict import UNUSED_BACKBONE
from .common import StateDict, checkpoint_state, compose, has_prefix, tensors
from .hf_config import hf_config_to_delta, release_preset

NAME = "hf"


def matches(ckpt: Checkpoint) -> bool:
    """A file with an HF ``config.json`` beside it, or HF's key layout (``backbone.*`` + ``neck.*``)."""
    if ckpt.hf_config is not None:
        return True
    state = tensors(ckpt.payload)
    return state is not None and has_prefix(state, "backbone.") and has_prefix(state, "neck.")


# transformers >= 5 names its BEiT modules differently in memory; files keep the names below.
_HF_V5_BEIT = [
    (r"^backbone\.beit\.embeddings\.", "backbone.embeddings."),
    (r"^backbone\.beit\.layers\.(\d+)\.attention\.q_proj\.", r"backbone.encoder.layer.\1.attention.attention.query."),
    (r"^backbone\.beit\.layers\.(\d+)\.attention\.k_proj\.", r"backbone.encoder.layer.\1.attention.attention.key."),
    (r"^backbone\.beit\.layers\.(\d+)\.attention\.v_proj\.", r"backbone.encoder.layer.\1.attention.attention.value."),
    (r"^backbone\.beit\.layers\.(\d+)\.attention\.o_proj\.", r"backbone.encoder.layer.\1.attention.output.dense."),
    (r"^backbone\.beit\.layers\.(\d+)\.relative_position_bias\.",
     r"backbone.encoder.layer.\1.attention.attention.relative_position_bias."),
    (r"^backbone\.beit\.layers\.(\d+)\.mlp\.fc1\.", r"backbone.encoder.layer.\1.intermediate.dense."),
    (r"^backbone\.beit\.layers\.(\d+)\.mlp\.fc2\.", r"backbone.encoder.layer.\1.output.dense."),
    (r"^backbone\.beit\.layers\.(\d+)\.", r"backbone.encoder.layer.\1."),
    (r"^backbone\.beit\.", "backbone."),
]

_POST = "core.pretrained.act_postprocess"


def _up1(index: str) -> int:  # HF counts stages from 0, MiDaS names them from 1
    return int(index) + 1


def _seq(conv: str) -> int:  # HF conv1 / conv2 / conv3 -> index 0 / 2 / 4 of an nn.Sequential
    return 2 * (int(conv) - 1)


# file layout (facts §7.3, inverted) -> this project's keys; applied in order, first match wins
_HF_RULES = [
    (r"^backbone\.embeddings\.cls_token$", "core.pretrained.model.cls_token"),
    (r"^backbone\.encoder\.layer\.(\d+)\.lambda_(\d)$", r"core.pretrained.model.blocks.\1.gamma_\2"),
    (r"^backbone\.encoder\.layer\.(\d+)\.layernorm_before\.", r"core.pretrained.model.blocks.\1.norm1."),
    (r"^backbone\.encoder\.layer\.(\d+)\.layernorm_after\.", r"core.pretrained.model.blocks.\1.norm2."),
    (r"^backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"core.pretrained.model.blocks.\1.attn.proj."),
    (r"^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.relative_position_bias\."
     r"relative_position_bias_table$", r"core.pretrained.model.blocks.\1.attn.relative_position_bias_table"),
    (r"^backbone\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"core.pretrained.model.blocks.\1.mlp.fc1."),
    (r"^backbone\.encoder\.layer\.(\d+)\.output\.dense\.", r"core.pretrained.model.blocks.\1.mlp.fc2."),
    # SwinV2 (HF's blocks "layers.i.blocks.j"; its patch merging ends stage i, timm's starts stage i + 1)
    (r"^backbone\.embeddings\.patch_embeddings\.projection\.", "core.pretrained.model.patch_embed.proj."),
    (r"^backbone\.embeddings\.norm\.", "core.pretrained.model.patch_embed.norm."),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.logit_scale$",
     r"core.pretrained.model.layers.\1.blocks.\2.attn.logit_scale"),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.continuous_position_bias_mlp\.",
     r"core.pretrained.model.layers.\1.blocks.\2.attn.cpb_mlp."),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.output\.dense\.",
     r"core.pretrained.model.layers.\1.blocks.\2.attn.proj."),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.",
     r"core.pretrained.model.layers.\1.blocks.\2.norm1."),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.",
     r"core.pretrained.model.layers.\1.blocks.\2.norm2."),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.intermediate\.dense\.",
     r"core.pretrained.model.layers.\1.blocks.\2.mlp.fc1."),
    (r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.output\.dense\.",
     r"core.pretrained.model.layers.\1.blocks.\2.mlp.fc2."),
    (r"^backbone\.encoder\.layers\.(\d+)\.downsample\.",
     lambda m: f"core.pretrained.model.layers.{_up1(m[1])}.downsample."),
    (r"^neck\.reassemble_stage\.readout_projects\.(\d+)\.0\.", lambda m: f"{_POST}{_up1(m[1])}.0.project.0."),
    (r"^neck\.reassemble_stage\.layers\.(\d+)\.projection\.", lambda m: f"{_POST}{_up1(m[1])}.3."),
    (r"^neck\.reassemble_stage\.layers\.(\d+)\.resize\.", lambda m: f"{_POST}{_up1(m[1])}.4."),
    (r"^neck\.convs\.(\d+)\.", lambda m: f"core.scratch.layer{_up1(m[1])}_rn."),
    (r"^neck\.fusion_stage\.layers\.(\d+)\.residual_layer(\d)\.convolution(\d)\.",
     lambda m: f"core.scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}."),
    (r"^neck\.fusion_stage\.layers\.(\d+)\.projection\.", lambda m: f"core.scratch.refinenet{4 - int(m[1])}.out_conv."),
    (r"^relative_head\.conv(\d)\.", lambda m: f"core.scratch.output_conv.{_seq(m[1])}."),
    (r"^metric_head\.conv2\.", "head.conv2."),
    (r"^metric_head\.(seed_projector|projectors\.\d+)\.conv(\d)\.", lambda m: f"head.{m[1]}._net.{_seq(m[2])}."),
    (r"^metric_head\.seed_bin_regressors\.(\w+)\.conv(\d)\.",
     lambda m: f"head.seed_bin_regressors.{m[1]}._net.{_seq(m[2])}."),
    (r"^metric_head\.seed_bin_regressor\.conv(\d)\.", lambda m: f"head.seed_bin_regressors.{{D}}._net.{_seq(m[1])}."),
    (r"^metric_head\.attractors\.(\d+)\.conv(\d)\.", lambda m: f"head.attractors.{{D}}.{m[1]}._net.{_seq(m[2])}."),
    (r"^metric_head\.attractors\.(\w+)\.(\d+)\.conv(\d)\.",
     lambda m: f"head.attractors.{m[1]}.{m[2]}._net.{_seq(m[3])}."),
    (r"^metric_head\.conditional_log_binomial\.mlp\.", "head.conditional_log_binomial.{D}.mlp."),
    (r"^metric_head\.conditional_log_binomial\.(\w+)\.mlp\.", r"head.conditional_log_binomial.\1.mlp."),
    (r"^metric_head\.patch_transformer\.embedding_convPxP\.", "router.patch_transformer.embedding_convPxP."),
    (r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.self_attn\.out_proj\.",
     r"router.patch_transformer.transformer_encoder.layers.\1.self_attn.out_proj."),
    (r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.(linear\d|norm\d)\.",
     r"router.patch_transformer.transformer_encoder.layers.\1.\2."),
    (r"^metric_head\.mlp_classifier\.linear(\d)\.", lambda m: f"router.mlp_classifier.{_seq(m[1])}."),
]
_HF_RULES_C = [(re.compile(p), r) for p, r in _HF_RULES]
_HF_QKV = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
_HF_ROUTER_QKV = re.compile(
    r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.self_attn\.(query|key|value)\.(weight|bias)$")
_HF_SWIN_QKV = re.compile(
    r"^backbone\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)$")
_HF_DROPPED = re.compile(r"(relative_position_index|relative_coords_table|\.k_idx|\.k_minus_1)$")


def _hf_normalise(state: StateDict) -> StateDict:
    """In-memory transformers-5 BEiT names -> the names HF files use."""
    if not any(k.startswith("backbone.beit.") for k in state):
        return dict(state)
    out = {}
    for k, v in state.items():
        for pattern, repl in _HF_V5_BEIT:
            new, n = re.subn(pattern, repl, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def to_ours(state: StateDict, domain: Optional[str], source: str = "HF weights") -> StateDict:
    """Rename an HF ``ZoeDepthForDepthEstimation`` state dict (file or in-memory names) to ours.

    ``domain``: the bins name of a single-head model (its head keys carry no name in HF).
    Split q / k / v projections are fused back (BEiT ``qkv`` + ``q_bias`` / ``v_bias``; the
    router's ``in_proj_weight`` / ``in_proj_bias``). Unknown keys are kept under ``hf:<key>`` so
    the strict load reports them.
    """
    state = _hf_normalise(state)
    out: StateDict = {}
    qkv: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        if _HF_DROPPED.search(k):
            continue
        m = _HF_SWIN_QKV.match(k)
        if m:
            qkv.setdefault(("swin", f"{m[1]}.blocks.{m[2]}"), {})[f"{m[3]}.{m[4]}"] = v
            continue
        m = _HF_QKV.match(k) or _HF_ROUTER_QKV.match(k)
        if m:
            kind = "beit" if k.startswith("backbone.") else "router"
            qkv.setdefault((kind, m[1]), {})[f"{m[2]}.{m[3]}"] = v
            continue
        for pattern, repl in _HF_RULES_C:
            mm = pattern.match(k)
            if mm:
                head = repl(mm) if callable(repl) else mm.expand(repl)
                new = head + k[mm.end():]
                if "{D}" in new:
                    if domain is None:
                        raise UserError(f"{source}: single-head HF weights need the domain name")
                    new = new.replace("{D}", domain)
                out[new] = v
                break
        else:
            out["hf:" + k] = v
    for (kind, layer), parts in qkv.items():
        need = ["query.weight", "key.weight", "value.weight"]
        if any(p not in parts for p in need):
            raise UserError(f"{source}: layer {layer} lacks one of the query / key / value weights")
        weight = torch.cat([parts[p] for p in need], dim=0)
        if kind in ("beit", "swin"):
            base = f"core.pretrained.model.{'blocks' if kind == 'beit' else 'layers'}.{layer}.attn."
            out[base + "qkv.weight"] = weight
            if "key.bias" in parts and bool(parts["key.bias"].abs().max() > 0):
                raise UserError(f"{source}: {kind} layer {layer} has a non-zero key bias, which it does not use")
            if "query.bias" in parts:
                out[base + "q_bias"] = parts["query.bias"]
            if "value.bias" in parts:
                out[base + "v_bias"] = parts["value.bias"]
        else:
            base = f"router.patch_transformer.transformer_encoder.layers.{layer}.self_attn."
            out[base + "in_proj_weight"] = weight
            biases = [parts.get(p) for p in ("query.bias", "key.bias", "value.bias")]
            if all(b is not None for b in biases):
                out[base + "in_proj_bias"] = torch.cat(biases, dim=0)
    return out



def _checked_preset_config(delta: dict, preset: str, overrides: Sequence[str], source: str) -> DictConfig:
    """The preset's configuration, refused where it contradicts the HF config's ``delta``."""
    cfg = compose(preset, None, overrides)
    want = compose("base", delta, (), source=f"{source} (translated)")
    for key in ("model.head.bin_centers_type", "model.features", "model.head.bin_embedding_dim"):
        if OmegaConf.select(cfg, key) != OmegaConf.select(want, key):
            raise UserError(f"{source}: preset '{preset}' has {key}={OmegaConf.select(cfg, key)} but the HF "
                            f"config says {OmegaConf.select(want, key)}")
    if len(cfg.model.bins) != len(want.model.bins):
        raise UserError(f"{source}: preset '{preset}' has {len(cfg.model.bins)} bin configurations, the HF "
                        f"config {len(want.model.bins)}")
    return cfg


def config(ckpt: Checkpoint, preset: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The preset of a released model's port (or the one given, checked), else ``base`` plus the
    translated ``config.json``; then ``overrides``."""
    hf, source = ckpt.hf_config, ckpt.source
    if hf is None:
        raise UserError(f"{source}: HF ZoeDepth weights need their config.json: pass the model folder")
    delta = hf_config_to_delta(hf, source)
    preset = preset if preset is not None else release_preset(hf)
    if preset is not None:
        return _checked_preset_config(delta, preset, overrides, source)
    return compose("base", delta, overrides, source=f"{source} (translated)")


def state_dict(ckpt: Checkpoint, cfg: Any = None, model: Optional[nn.Module] = None) -> StateDict:
    """This project's keys; without ``cfg`` (the single head's domain name unknown) only the core's."""
    state = checkpoint_state(ckpt)
    if cfg is None:
        return {k: v for k, v in to_ours(state, "_", ckpt.source).items() if k.startswith("core.")}
    names = [b.name for b in cfg.model.bins]
    return to_ours(state, names[0] if len(names) == 1 else None, ckpt.source)


def may_be_missing(cfg: Any) -> Callable[[str], bool]:
    return lambda key: bool(UNUSED_BACKBONE.match(key))


def from_hf(hf_model_or_dir, preset: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
            *, return_config: bool = False, match_hf_eps: bool = True):
    """This project's model with the weights of an HF ``ZoeDepthForDepthEstimation``.

    ``hf_model_or_dir``: the HF model object, or a folder with ``config.json`` and weights.
    The result (eval mode) gives the same depth as the HF model on the same normalised pixel tensor
    (``ours(x01)`` vs ``hf(pixel_values=(x01 - 0.5) / 0.5)`` at the network size).
    ``match_hf_eps``: give the backbone's LayerNorms HF's ``layer_norm_eps`` (BeitConfig default
    1e-12) instead of timm's 1e-6, the original's value; for exact peer comparisons. The change is
    not part of the returned config (a model rebuilt from it uses timm's eps).
    """
    from ..loader import load_checkpoint  # the loader asks this module: imported when called

    if isinstance(hf_model_or_dir, (str, Path)):
        ckpt = read_checkpoint(hf_model_or_dir)
        if ckpt.hf_config is None:
            raise UserError(f"{ckpt.source}: not an HF model folder (no config.json beside the weights)")
        hf_config = ckpt.hf_config
    else:
        hf_config = hf_model_or_dir.config.to_dict()
        state = {k: v.detach().cpu() for k, v in hf_model_or_dir.state_dict().items()}
        ckpt = Checkpoint(state, hf_config, "HF model")
    model, cfg = load_checkpoint(ckpt, preset, overrides)
    eps = (hf_config.get("backbone_config") or {}).get("layer_norm_eps")
    if match_hf_eps and eps is not None:
        for module in model.core.pretrained.model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = float(eps)
    return (model, cfg) if return_config else model
