"""HF transformers ``ZoeDepthConfig`` (a ``config.json`` dict) -> this project's configuration.

:func:`hf_config_to_delta` returns a typed config delta: a nested dict shaped like
:class:`~zoe_lightning.config.RunConfig` (``{"model": {"backbone": ..., "head": {...}}}``) that is
merged over ``base`` and validated by the schema. Architectures this project cannot reproduce
exactly are refused with one line naming the field.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ...errors import UserError

__all__ = ["BEIT_RELEASE", "hf_config_to_delta", "release_preset", "swin_window_mismatch"]

# The BEiT-L/16-384 backbone of the released models, in HF's BeitConfig names.
BEIT_RELEASE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    image_size=384, patch_size=16)
_DEFAULT_BINS = [{"n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}]


def _get(cfg: Mapping, key: str, default: Any = None) -> Any:
    """``cfg[key]``, with ``default`` for an absent key or a null value."""
    value = cfg.get(key, default)
    return default if value is None else value


def _check_supported(hf: Mapping, bb: Mapping, source: str) -> int:
    """Refuse what the DPT decoder here does not implement; returns the fusion width."""
    if hf.get("model_type", "zoedepth") != "zoedepth":
        raise UserError(f"{source}: model_type is '{hf.get('model_type')}', expected 'zoedepth'")
    if bb.get("model_type", "beit") not in ("beit", "swinv2"):
        raise UserError(f"{source}: backbone '{bb.get('model_type')}' is not supported (BEiT and SwinV2 backbones)")
    for key, want in {"add_projection": False, "use_batch_norm_in_fusion_residual": False, "head_in_index": -1}.items():
        if hf.get(key, want) != want:
            raise UserError(f"{source}: {key}={hf.get(key)} is not supported (need {want})")
    if list(_get(hf, "reassemble_factors", [4, 2, 1, 0.5])) != [4, 2, 1, 0.5]:
        raise UserError(f"{source}: reassemble_factors must be [4, 2, 1, 0.5]")
    if int(_get(hf, "num_relative_features", 32)) != 32:
        raise UserError(f"{source}: num_relative_features must be 32 (the DPT relative head width)")
    features = int(_get(hf, "fusion_hidden_size", 256))
    if int(_get(hf, "bottleneck_features", 256)) != features:
        raise UserError(f"{source}: bottleneck_features must equal fusion_hidden_size")
    return features


def _beit_model(bb: Mapping, hf: Mapping, out_indices: Sequence[int]) -> Dict[str, Any]:
    """A timm BEiT with the HF backbone's hyper-parameters, tapped after the given stages."""
    full = {k: bb.get(k, v) for k, v in BEIT_RELEASE.items()}
    model: Dict[str, Any] = {
        "hooks": [int(i) - 1 for i in out_indices],
        "reassemble_channels": [int(c) for c in hf.get("neck_hidden_sizes")],
        "readout": str(_get(hf, "readout_type", "project")),
    }
    if full == BEIT_RELEASE:
        model["backbone"] = "beit_large_patch16_384"
        return model
    width = int(full["hidden_size"])
    scale = bb.get("layer_scale_init_value", 0.1)
    model["backbone"] = "beit_base_patch16_384"
    model["backbone_kwargs"] = dict(
        embed_dim=width, depth=int(full["num_hidden_layers"]), num_heads=int(full["num_attention_heads"]),
        mlp_ratio=float(full["intermediate_size"]) / width, img_size=int(full["image_size"]),
        patch_size=int(full["patch_size"]), num_classes=0,
        init_values=float(scale) if scale and float(scale) > 0 else None)
    return model


def swin_window_mismatch(h: int, w: int, window: int, stages: int) -> Optional[str]:
    """Why HF's and timm's shifted windows differ on stages starting at ``h`` x ``w`` tokens, or None.

    HF takes one square window ``min(h, window)`` and the height's shift for both sides and pads
    before the cyclic shift; timm clamps each side on its own and pads after the shift. They agree
    when the windows and shifts come out the same and every padding is zero or exactly the shift
    (the padded rows then fall in their own masked region in both).
    """
    shift = window // 2
    for stage in range(1, stages + 1):
        hf_win, hf_shift = min(h, window), (0 if h <= window else shift)
        for side, n in (("height", h), ("width", w)):
            win, sh = min(n, window), (0 if n <= window else shift)
            if (win, sh) != (hf_win, hf_shift):
                return (f"stage {stage} has {h}x{w} tokens; HF uses a square {hf_win}x{hf_win} window with shift "
                        f"{hf_shift}, timm a {win}-token window with shift {sh} along the {side}")
            pad = -n % win
            if sh and pad not in (0, sh):
                return (f"stage {stage} has {h}x{w} tokens; its {side} is padded by {pad} to whole {win}-token "
                        f"windows, before the cyclic shift ({sh}) in HF and after it in timm")
        h, w = -(-h // 2), -(-w // 2)
    return None


def _swinv2_model(bb: Mapping, hf: Mapping, out_indices: Sequence[int], source: str) -> Dict[str, Any]:
    """A timm SwinV2 with the HF backbone's hyper-parameters (stage outputs, no reassemble)."""
    if list(out_indices) != [1, 2, 3, 4]:
        raise UserError(f"{source}: a SwinV2 backbone must expose stage1-stage4, got {list(out_indices)}")
    if bb.get("use_absolute_embeddings"):
        raise UserError(f"{source}: SwinV2 with absolute position embeddings is not supported")
    if str(bb.get("hidden_act", "gelu")) != "gelu":
        raise UserError(f"{source}: SwinV2 hidden_act '{bb.get('hidden_act')}' is not supported (gelu)")
    dim, depths = int(bb.get("embed_dim", 96)), [int(d) for d in bb.get("depths", [2, 2, 6, 2])]
    widths = [dim * 2 ** i for i in range(len(depths))]
    if [int(c) for c in hf.get("neck_hidden_sizes") or []] != widths:
        raise UserError(f"{source}: neck_hidden_sizes {hf.get('neck_hidden_sizes')} do not match the SwinV2 "
                        f"stage widths {widths}")
    size = bb.get("image_size", 256)
    size = [int(size), int(size)] if isinstance(size, (int, float)) else [int(x) for x in size]
    window, patch = int(bb.get("window_size", 8)), int(bb.get("patch_size", 4))
    why = swin_window_mismatch(-(-size[0] // patch), -(-size[1] // patch), window, len(depths))
    if why:
        warnings.warn(f"{source}: at image_size {size[0]}x{size[1]} HF's SwinV2 and timm's compute different "
                      f"functions: {why}", UserWarning, stacklevel=3)
    kwargs = dict(embed_dim=dim, depths=depths, num_heads=[int(h) for h in bb.get("num_heads", [3, 6, 12, 24])],
                  window_size=window, patch_size=patch, mlp_ratio=float(bb.get("mlp_ratio", 4.0)),
                  qkv_bias=bool(bb.get("qkv_bias", True)),
                  pretrained_window_sizes=[int(w) for w in bb.get("pretrained_window_sizes", [0, 0, 0, 0])],
                  num_classes=0)
    return {"backbone": "swinv2_tiny_window8_256", "img_size": size, "hooks": None, "reassemble_channels": None,
            "backbone_kwargs": kwargs}


def _bins(hf: Mapping) -> List[Dict[str, Any]]:
    bins = list(_get(hf, "bin_configurations", _DEFAULT_BINS))
    names = [str(b.get("name") or ("nyu" if i == 0 else f"domain{i}")) for i, b in enumerate(bins)]
    if len(bins) == 1 and "name" not in bins[0]:
        names = ["kitti" if float(bins[0]["max_depth"]) > 10 else "nyu"]
    return [{"name": n, "n_bins": int(b["n_bins"]), "min_depth": float(b["min_depth"]),
             "max_depth": float(b["max_depth"])} for n, b in zip(names, bins)]


def _router(hf: Mapping, n_domains: int, source: str) -> Dict[str, Any]:
    if n_domains != 2:
        raise UserError(f"{source}: HF's multi-head ZoeDepth routes between exactly 2 bin configurations")
    dim = int(_get(hf, "patch_transformer_hidden_size", 128))
    n_layers = int(_get(hf, "num_patch_transformer_layers", 4))
    if dim != 128 or n_layers != 4:
        raise UserError(f"{source}: HF's router needs patch_transformer_hidden_size=128 and 4 layers "
                        f"(got {dim}, {n_layers})")
    return {"type": "trained", "dim": dim, "n_layers": n_layers,
            "n_heads": int(_get(hf, "patch_transformer_num_attention_heads", 4)),
            "ffn_dim": int(_get(hf, "patch_transformer_intermediate_size", 1024))}


def hf_config_to_delta(hf: Mapping, source: str = "config.json") -> Dict[str, Any]:
    """The configuration delta (on ``base``) describing the model of an HF ZoeDepth ``config.json``."""
    bb = dict(hf.get("backbone_config") or {})
    features = _check_supported(hf, bb, source)
    out_indices = bb.get("out_indices") or [int(s.replace("stage", "")) for s in bb.get("out_features", [])]
    if len(out_indices) != 4:
        raise UserError(f"{source}: the backbone must expose 4 stages (out_features), got {out_indices}")
    if bb.get("model_type") == "swinv2":
        model = _swinv2_model(bb, hf, out_indices, source)
    else:
        model = _beit_model(bb, hf, out_indices)
    bins = _bins(hf)
    multi = len(bins) > 1
    e = int(_get(hf, "bin_embedding_dim", 128))
    kind = str(_get(hf, "bin_centers_type", "softplus"))
    if kind not in ("softplus", "normed"):
        raise UserError(f"{source}: bin_centers_type '{kind}' is not supported by HF ZoeDepth")
    model["features"] = features
    model["bins"] = bins
    model["head"] = {
        "type": "metric_bins", "bin_centers_type": kind, "bin_embedding_dim": e,
        "n_attractors": [int(a) for a in _get(hf, "num_attractors", [16, 8, 4, 1])], "attractor_type": "inv",
        "attractor_aggregation": str(_get(hf, "attractor_kind", "mean")),
        "attractor_alpha": float(_get(hf, "attractor_alpha", 1000)),
        "attractor_gamma": float(_get(hf, "attractor_gamma", 2)),
        "min_temp": float(_get(hf, "min_temp", 0.0212)), "max_temp": float(_get(hf, "max_temp", 50.0)),
        "seed_mlp_dim": e // 2 if multi else 256, "projector_mlp_dim": e // 2 if multi else 128,
        "clb_bottleneck_factor": 4 if multi else 2, "use_relative_input": True,
    }
    # HF keeps the original's quirks (facts §2.9): fixed alpha/gamma, discarded normalisation,
    # Stirling log C(n,k); NK: 16 attractors per level, no relative channel, one vote per batch
    model["faithful"] = {"fixed_alpha_gamma": True, "discard_attractor_norm": True, "stirling_log_binomial": True}
    model.update(resize_input=True, keep_aspect_ratio=False, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    if multi:
        model["faithful"].update(nk_sixteen_attractors=True, nk_no_relative_input=True, batch_vote=True)
        model["router"] = _router(hf, len(bins), source)
    return {"model": model}


def release_preset(hf: Mapping) -> Optional[str]:
    """The preset of an HF port of a released model (BEiT-L-384, 64 bins), else None."""
    bb = dict(hf.get("backbone_config") or {})
    if any(bb.get(k, v) != v for k, v in BEIT_RELEASE.items()):
        return None
    bins = list(hf.get("bin_configurations") or [{"n_bins": 64}])
    if any(int(b.get("n_bins", 64)) != 64 for b in bins):
        return None
    if len(bins) == 2:
        return "zoed_m12_nk"
    if len(bins) == 1:
        return "zoed_m12_k" if hf.get("bin_centers_type") == "normed" else "zoed_m12_n"
    return None
