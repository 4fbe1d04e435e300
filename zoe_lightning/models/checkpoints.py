"""Load weights from every supported source into this project's models.

``load_model(path, preset=None, overrides=None)`` returns a model in eval mode;
``load_model_and_config`` also returns the resolved run config (domains, bins, image size).

Sources (detected from the file, never from its name):

==================  =====================================================================
``lightning``       this project's ``.ckpt`` (``state_dict`` + ``hyper_parameters.cfg``)
``zoe_lightning``   this project's plain weights file (``save_model``: ``state_dict`` + ``cfg``)
``plain``           a bare state dict of this project's model (needs ``preset``)
``zoedepth``        the released ZoeD_M12_N / K / NK files (``{"model": ...}``, timm-0.6 names)
``midas``           MiDaS v3.x DPT checkpoints (``pretrained.*`` + ``scratch.*``)
``hf``              HF transformers ``ZoeDepthForDepthEstimation`` (folder with ``config.json``)
==================  =====================================================================

Every file is read with ``torch.load(..., weights_only=True)`` (or safetensors); files that need
pickled code are refused. Keys are matched strictly: missing or unexpected keys and shape
mismatches raise :class:`~zoe_lightning.errors.UserError` listing them. Only buffers that the
original stored and this implementation recomputes (BEiT ``relative_position_index``, the
log-binomial ``k_idx`` / ``K_minus_1``, checked against the configuration) are dropped, and only
weights that no forward pass reads (the unused ImageNet classifier / final norm of the timm
backbone) may be absent from foreign files.

Pure PyTorch (plus OmegaConf for the config); no Lightning.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

__all__ = [
    "PRESETS",
    "load_model",
    "load_model_and_config",
    "load_state_file",
    "detect_format",
    "from_hf",
    "hf_state_to_ours",
    "hf_config_to_overrides",
    "zoedepth_state_to_ours",
    "midas_state_to_ours",
    "infer_backbone",
    "core_state_from_file",
    "save_model",
]

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, Path]

# Presets are experiment files (experiments/<name>.yaml): the released configurations.
PRESETS = ("zoed_m12_n", "zoed_m12_k", "zoed_m12_nk")

# Weights of the timm backbone that no forward pass of the encoder reads (we tap intermediate
# blocks): foreign layouts that do not store them (HF) may omit them; they keep their init.
_UNUSED_BACKBONE = re.compile(r"^core\.pretrained\.model\.(head|fc_norm|norm|head_drop)\.")
# Buffers the original stored but this implementation recomputes.
_RECOMPUTED = re.compile(r"(relative_position_index|relative_coords_table|attn_mask)$")


# ----------------------------------------------------------------------------------------------
# reading files
# ----------------------------------------------------------------------------------------------


def _torch_load(path: Path, map_location="cpu") -> Any:
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: refused: the file needs pickled Python code to load, and checkpoints are only read "
            f"with torch.load(weights_only=True) ({first[:160]}). Re-save its state_dict (tensors only) "
            "and load that."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot read as a PyTorch checkpoint: {first[:200]}") from None


def _safetensors_load(path: Path) -> StateDict:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors ships with transformers
        raise UserError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # corrupt header etc.
        raise UserError(f"{path}: cannot read as safetensors: {str(exc).splitlines()[0][:200]}") from None


def _hf_weights_file(folder: Path) -> Optional[Path]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_state_file(path: PathLike, map_location="cpu") -> Tuple[Any, Optional[dict]]:
    """Read ``path`` safely. Returns (loaded object, HF config dict or None).

    A folder is read as an HF model folder (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``); a weights file next to a ``config.json`` whose ``model_type`` is
    ``zoedepth`` is read the same way.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    hf_config = None
    if path.is_dir():
        weights = _hf_weights_file(path)
        if not (path / "config.json").is_file() or weights is None:
            raise UserError(
                f"{path}: a folder must be an HF transformers model folder with config.json and "
                "model.safetensors or pytorch_model.bin"
            )
        hf_config = _read_json(path / "config.json")
        path = weights
    elif (path.parent / "config.json").is_file() and path.name in ("model.safetensors", "pytorch_model.bin"):
        hf_config = _read_json(path.parent / "config.json")
    if path.suffix == ".safetensors":
        return _safetensors_load(path), hf_config
    return _torch_load(path, map_location), hf_config


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read JSON: {exc}") from None


# ----------------------------------------------------------------------------------------------
# format detection
# ----------------------------------------------------------------------------------------------


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip_module(state: StateDict) -> StateDict:
    """Remove a DataParallel / DDP ``module.`` prefix carried by every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def detect_format(obj: Any, hf_config: Optional[dict] = None) -> Tuple[str, StateDict]:
    """Classify a loaded checkpoint. Returns (format, state dict); see the module docstring."""
    if hf_config is not None:
        if not _is_state(obj):
            raise UserError("HF weights file holds no tensor state dict")
        return "hf", dict(obj)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj.get("hyper_parameters"), Mapping):
        state = obj["state_dict"]
        if _is_state(state) and "cfg" in obj["hyper_parameters"]:
            return "lightning", dict(state)
    if isinstance(obj, Mapping) and "zoe_lightning" in obj and _is_state(obj.get("state_dict")):
        return "zoe_lightning", dict(obj["state_dict"])
    state = obj.get("model") if isinstance(obj, Mapping) and "model" in obj else obj
    if isinstance(obj, Mapping) and "state_dict" in obj and _is_state(obj["state_dict"]):
        state = obj["state_dict"]
    if not _is_state(state):
        raise UserError("the file holds no state dict (expected a mapping of names to tensors, a 'model' "
                        "or 'state_dict' entry, or a Lightning checkpoint)")
    state = _strip_module(dict(state))
    keys = list(state)
    if any(k.startswith("core.core.") for k in keys):
        return "zoedepth", state
    if any(k.startswith("model.core.") for k in keys) and not any(k.startswith("core.") for k in keys):
        return "plain", {k[len("model."):]: v for k, v in state.items()}  # a Lightning module's state
    if any(k.startswith("core.pretrained.") for k in keys):
        return "plain", state
    if any(k.startswith("backbone.") for k in keys) and any(k.startswith("neck.") for k in keys):
        return "hf", state
    if any(k.startswith("pretrained.") for k in keys) and any(k.startswith("scratch.") for k in keys):
        return "midas", state
    raise UserError(
        "unrecognised checkpoint layout (first keys: " + ", ".join(keys[:4]) + "); supported: this project's "
        "checkpoints, ZoeDepth releases (core.core.*), MiDaS DPT (pretrained.* + scratch.*), HF ZoeDepth folders"
    )


# ----------------------------------------------------------------------------------------------
# strict loading
# ----------------------------------------------------------------------------------------------


def _listing(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return f"{shown}" + (f", ... ({len(items)} in all)" if len(items) > n else f" ({len(items)})")


def load_strict(model: nn.Module, state: StateDict, source: str,
                may_be_missing: Callable[[str], bool] = lambda k: False) -> None:
    """Copy ``state`` into ``model``; any missing / unexpected key or shape mismatch is an error."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not may_be_missing(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches: {_listing(wrong, 4)}")
    if problems:
        raise UserError(f"{source}: the weights do not fit the model built from the configuration: "
                        + "; ".join(problems))
    model.load_state_dict(state, strict=False)


# ----------------------------------------------------------------------------------------------
# configuration helpers
# ----------------------------------------------------------------------------------------------


def _config(experiment: str, overrides: Sequence[str]) -> DictConfig:
    from ..config import load_config

    return load_config(experiment, list(overrides))


def _cfg_from_container(container: Mapping, overrides: Sequence[str], source: str) -> DictConfig:
    """A stored run config, merged over today's schema (new keys get defaults), plus overrides."""
    from ..config import ConfigError, RunConfig, _apply_overrides, _check_choices, move_speed_keys

    try:
        container = move_speed_keys(OmegaConf.to_container(OmegaConf.create(dict(container))))
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.create(container))
    except Exception as exc:
        raise UserError(f"{source}: the stored configuration does not fit this version's schema: "
                        f"{str(exc).splitlines()[0]}") from None
    if overrides:
        _apply_overrides(cfg, list(overrides))
    try:
        _check_choices(cfg)
    except ConfigError as exc:
        raise UserError(f"{source}: {exc}") from None
    return cfg


def _bins_signature(cfg) -> List[Tuple]:
    return [(b.name, int(b.n_bins), float(b.min_depth), float(b.max_depth)) for b in cfg.model.bins]


def _finish(model: nn.Module) -> nn.Module:
    return model.eval()


def _build(cfg) -> nn.Module:
    from .zoedepth import build_model

    return build_model(cfg)


# ----------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------


def load_model_and_config(path: PathLike, preset: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
                          *, map_location: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, DictConfig]:
    """Load any supported checkpoint. Returns (model in eval mode, run config).

    ``preset``: a preset / experiment name or YAML path giving the configuration (``zoed_m12_n``,
    ``zoed_m12_k``, ``zoed_m12_nk``, or any experiment). Inferred for official ZoeDepth files and
    MiDaS files when unambiguous; required for bare state dicts. This project's checkpoints carry
    their configuration; a preset given with them must describe the same bins.
    ``overrides``: OmegaConf dot-list items applied on top (``model.bins.0.max_depth=80``).
    """
    overrides = list(overrides or [])
    source = str(path)
    obj, hf_config = load_state_file(path, map_location="cpu")
    fmt, state = detect_format(obj, hf_config)
    if fmt in ("lightning", "zoe_lightning"):
        container = obj["hyper_parameters"]["cfg"] if fmt == "lightning" else obj["cfg"]
        stored = _cfg_from_container(container, overrides, source)
        cfg = stored
        if preset is not None:
            cfg = _config(preset, overrides)
            if _bins_signature(cfg) != _bins_signature(stored) or \
                    cfg.model.head.bin_centers_type != stored.model.head.bin_centers_type:
                raise UserError(
                    f"{source}: preset '{preset}' does not match the checkpoint's own configuration "
                    f"(bins {_bins_signature(cfg)} / {cfg.model.head.bin_centers_type} vs "
                    f"{_bins_signature(stored)} / {stored.model.head.bin_centers_type}); omit the preset"
                )
        if fmt == "lightning":
            state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        model = _build(cfg)
        load_strict(model, state, source)
    elif fmt == "plain":
        if preset is None:
            raise UserError(f"{source}: a bare state dict carries no configuration; pass preset=<experiment name "
                            "or YAML> (CLI: --preset / EXP=) describing the model it was saved from")
        cfg = _config(preset, overrides)
        model = _build(cfg)
        load_strict(model, state, source)
    elif fmt == "zoedepth":
        preset = _zoedepth_preset(state, preset, source)
        cfg = _config(preset, overrides)
        model = _build(cfg)
        load_strict(model, zoedepth_state_to_ours(state, cfg, source), source)
    elif fmt == "midas":
        model, cfg = _load_midas(state, preset, overrides, source)
    else:  # hf
        if hf_config is None:
            raise UserError(f"{source}: HF ZoeDepth weights need their config.json: pass the model folder")
        model, cfg = _load_hf_state(state, hf_config, preset, overrides, source)
    return _finish(model.to(map_location)), cfg


def load_model(path: PathLike, preset: Optional[str] = None, overrides: Optional[Sequence[str]] = None,
               *, map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load any supported checkpoint into a model in eval mode (see :func:`load_model_and_config`)."""
    return load_model_and_config(path, preset, overrides, map_location=map_location)[0]


def save_model(model: nn.Module, cfg, path: PathLike) -> Path:
    """Write ``{"zoe_lightning": 1, "cfg": ..., "state_dict": ...}``: loadable without a preset."""
    from .. import __version__

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"zoe_lightning": __version__, "cfg": container, "state_dict": state}, str(path))
    return path


def core_state_from_file(path: PathLike) -> StateDict:
    """The DPT-core weights (keys relative to ``core``) of any supported checkpoint."""
    obj, hf_config = load_state_file(path)
    fmt, state = detect_format(obj, hf_config)
    source = str(path)
    if fmt == "lightning":
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    elif fmt == "zoedepth":
        state = _rename_zoedepth_core(state)
    elif fmt == "midas":
        state = midas_state_to_ours(state, None)
    elif fmt == "hf":
        state = _hf_core_to_ours(state, source)
    core = {k[len("core."):]: v for k, v in state.items() if k.startswith("core.")}
    if not core:
        raise UserError(f"{source}: holds no DPT-core weights")
    return core


# ----------------------------------------------------------------------------------------------
# released ZoeDepth checkpoints
# ----------------------------------------------------------------------------------------------


def _zoedepth_preset(state: StateDict, preset: Optional[str], source: str) -> str:
    """ZoeD_M12_NK has a router; K's attractors output 2 channels per attractor (normed bins)."""
    if any(k.startswith("patch_transformer.") for k in state):
        guess = "zoed_m12_nk"
    else:
        key = "attractors.0._net.2.weight"
        if key not in state:
            raise UserError(f"{source}: a ZoeDepth checkpoint without '{key}': unknown head layout; "
                            "pass preset=<experiment> describing it")
        first = state[key].shape[0]
        n_first = state.get("attractors.3._net.2.weight")
        n_last = None if n_first is None else n_first.shape[0]
        # single head: [16,8,4,1] attractors; normed layers output 2 per attractor -> 32 ... 2
        guess = {(16, 1): "zoed_m12_n", (32, 2): "zoed_m12_k"}.get((first, n_last))
        if guess is None and preset is None:
            raise UserError(
                f"{source}: cannot tell ZoeD_M12_N from ZoeD_M12_K (first/last attractor outputs {first}/{n_last}); "
                "pass preset=zoed_m12_n (softplus bins) or preset=zoed_m12_k (normed bins) or your experiment"
            )
    if preset is None:
        return guess
    if preset in PRESETS and guess is not None and preset != guess:
        raise UserError(f"{source}: preset '{preset}' does not match the file, whose keys say it is "
                        f"'{guess}' ({'router present' if guess.endswith('nk') else 'attractor layout'})")
    return preset


def _rename_zoedepth_core(state: StateDict) -> StateDict:
    out = {}
    for k, v in state.items():
        if k.startswith("core.core."):
            if _RECOMPUTED.search(k):
                continue
            out["core." + k[len("core.core."):]] = v
    return out


def zoedepth_state_to_ours(state: StateDict, cfg, source: str = "checkpoint") -> StateDict:
    """Rename a released ZoeDepth state dict (N, K or NK layout) to this project's keys.

    Single head: ``seed_bin_regressor`` / ``attractors.i`` / ``conditional_log_binomial`` move under
    ``head.*.<domain>``; NK: per-domain modules keep their domain names, ``patch_transformer`` and
    ``mlp_classifier`` move under ``router``. The log-binomial buffers are checked, then dropped.
    """
    names = [b.name for b in cfg.model.bins]
    n_bins = {b.name: int(b.n_bins) for b in cfg.model.bins}
    single = len(names) == 1
    out = _rename_zoedepth_core(state)
    for k, v in state.items():
        if k.startswith("core."):
            if not k.startswith("core.core."):
                out[k] = v  # unexpected under the core: reported by the strict load
            continue
        if ".log_binomial_transform." in k:
            domain = names[0] if single else k.split(".")[1]
            _check_log_binomial(k, v, n_bins.get(domain), source)
            continue
        top = k.split(".")[0]
        if top in ("patch_transformer", "mlp_classifier"):
            out["router." + k] = v
        elif single and top == "seed_bin_regressor":
            out[f"head.seed_bin_regressors.{names[0]}." + k[len(top) + 1:]] = v
        elif single and top in ("attractors", "conditional_log_binomial"):
            out[f"head.{top}.{names[0]}." + k[len(top) + 1:]] = v
        else:  # conv2, seed_projector, projectors, and NK's per-domain dicts
            out["head." + k] = v
    return out


def _check_log_binomial(key: str, value: torch.Tensor, n_bins: Optional[int], source: str) -> None:
    if n_bins is None:
        return  # unknown domain: the strict load reports its other keys
    if key.endswith("k_idx"):
        ok = value.numel() == n_bins and torch.equal(value.flatten().float(), torch.arange(n_bins).float())
    elif key.endswith("K_minus_1"):
        ok = value.numel() == 1 and float(value.flatten()[0]) == n_bins - 1
    else:
        ok = True
    if not ok:
        raise UserError(f"{source}: buffer {key} {tuple(value.shape)} does not fit n_bins={n_bins} "
                        "of the configuration (wrong preset or model.bins)")


# ----------------------------------------------------------------------------------------------
# MiDaS DPT checkpoints
# ----------------------------------------------------------------------------------------------


def infer_backbone(core: StateDict, prefix: str = "pretrained.model.") -> Tuple[str, List[int]]:
    """(backbone name, training image size) of a MiDaS-style core from its keys and shapes."""

    def get(name):
        return core.get(prefix + name)

    table = get("blocks.0.attn.relative_position_bias_table")
    if table is not None:  # BEiT
        width = int(get("cls_token").shape[-1])
        depth = len({k.split(".")[len(prefix.split(".")) ] for k in core if k.startswith(prefix + "blocks.")})
        grid = int(round((math.sqrt(table.shape[0] - 3) + 1) / 2))
        size = grid * 16
        name = {(1024, 24, 384): "beit_large_patch16_384", (1024, 24, 512): "beit_large_patch16_512",
                (768, 12, 384): "beit_base_patch16_384"}.get((width, depth, size))
        if name is None:
            raise UserError(f"BEiT of width {width}, depth {depth}, trained at {size}px is not a MiDaS v3.1 "
                            "backbone; pass preset=<experiment> naming model.backbone")
        return name, [size, size]
    if get("pos_embed") is not None and get("blocks.0.attn.qkv.weight") is not None:
        if any(k.startswith(prefix + "patch_embed.backbone.") for k in core):
            raise UserError("DPT_Hybrid (ViT-B + ResNet-50) checkpoints are not supported")
        width = int(get("pos_embed").shape[-1])
        name = {1024: "vit_large_patch16_384", 768: "vit_base_patch16_384"}.get(width)
        if name is None:
            raise UserError(f"ViT of width {width} is not a MiDaS backbone; pass preset=<experiment>")
        return name, [384, 384]
    if get("layers.0.blocks.0.attn.qkv.weight") is not None:
        if get("layers.0.blocks.0.attn.logit_scale") is None:
            raise UserError("Swin (v1) DPT checkpoints are not supported; SwinV2 ones are")
        width = int(get("patch_embed.proj.weight").shape[0])
        name = {192: "swinv2_large_window12to24_192to384", 128: "swinv2_base_window12to24_192to384",
                96: "swinv2_tiny_window16_256"}.get(width)
        if name is None:
            raise UserError(f"SwinV2 of width {width} is not a MiDaS backbone; pass preset=<experiment>")
        return name, ([256, 256] if name.endswith("256") else [384, 384])
    raise UserError("cannot infer the backbone of this MiDaS checkpoint (LeViT / Next-ViT / v2.1 "
                    "checkpoints are not supported); pass preset=<experiment> naming model.backbone")


def _swin_filter(state: StateDict, model: nn.Module) -> StateDict:
    """timm < 0.9 SwinV2 layout -> today's (downsample moved to the next stage)."""
    try:
        from timm.models.swin_transformer_v2 import checkpoint_filter_fn
    except ImportError:  # pragma: no cover
        return state
    return checkpoint_filter_fn(state, model)


def midas_state_to_ours(state: StateDict, model: Optional[nn.Module]) -> StateDict:
    """``pretrained.*`` / ``scratch.*`` -> ``core.pretrained.*`` / ``core.scratch.*``."""
    backbone = {k[len("pretrained.model."):]: v for k, v in state.items() if k.startswith("pretrained.model.")}
    if model is not None and any(k.startswith("layers.") for k in backbone):
        backbone = _swin_filter(backbone, model.core.pretrained.model)
    out = {}
    for k, v in backbone.items():
        if not _RECOMPUTED.search(k):
            out["core.pretrained.model." + k] = v
    for k, v in state.items():
        if k.startswith("pretrained.model."):
            continue
        if _RECOMPUTED.search(k):
            continue
        out["core." + k] = v
    return out


def _load_midas(state: StateDict, preset: Optional[str], overrides: Sequence[str], source: str):
    if preset is None:
        backbone, size = infer_backbone(state)
        keep = "false" if backbone.startswith("swin") else "true"
        cfg = _config("base", ["stage=relative", f"model.backbone={backbone}", f"model.img_size=[{size[0]},{size[1]}]",
                               f"model.keep_aspect_ratio={keep}"] + list(overrides))
    else:
        cfg = _config(preset, overrides)
    model = _build(cfg)
    ours = midas_state_to_ours(state, model)
    if cfg.stage == "relative":
        load_strict(model, ours, source, lambda k: False)
        return model, cfg
    # the MiDaS weights become the core of a stage-2 model; the metric head keeps its initialisation
    core_model = model.core
    core_state = {k[len("core."):]: v for k, v in ours.items()}
    load_strict(core_model, core_state, f"{source} (as the core of '{cfg.name}')")
    return model, cfg


# ----------------------------------------------------------------------------------------------
# HF transformers ZoeDepth
# ----------------------------------------------------------------------------------------------


def _hf_core_to_ours(state: StateDict, source: str) -> StateDict:
    return {k: v for k, v in hf_state_to_ours(state, "_", source).items() if k.startswith("core.")}


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


def hf_state_to_ours(state: StateDict, domain: Optional[str], source: str = "HF weights") -> StateDict:
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


_BEIT_RELEASE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     image_size=384, patch_size=16)


def _hf_get(cfg: Mapping, key: str, default=None):
    value = cfg.get(key, default)
    return default if value is None else value


def hf_config_to_overrides(hf: Mapping, source: str = "config.json") -> List[str]:
    """Config overrides (on ``base``) describing the model of an HF ZoeDepth ``config.json`` dict."""
    if hf.get("model_type", "zoedepth") != "zoedepth":
        raise UserError(f"{source}: model_type is '{hf.get('model_type')}', expected 'zoedepth'")
    bb = dict(hf.get("backbone_config") or {})
    if bb.get("model_type", "beit") not in ("beit", "swinv2"):
        raise UserError(f"{source}: backbone '{bb.get('model_type')}' is not supported (BEiT and SwinV2 backbones)")
    checks = {"add_projection": False, "use_batch_norm_in_fusion_residual": False, "head_in_index": -1}
    for key, want in checks.items():
        if hf.get(key, want) != want:
            raise UserError(f"{source}: {key}={hf.get(key)} is not supported (need {want})")
    if list(_hf_get(hf, "reassemble_factors", [4, 2, 1, 0.5])) != [4, 2, 1, 0.5]:
        raise UserError(f"{source}: reassemble_factors must be [4, 2, 1, 0.5]")
    if int(_hf_get(hf, "num_relative_features", 32)) != 32:
        raise UserError(f"{source}: num_relative_features must be 32 (the DPT relative head width)")
    features = int(_hf_get(hf, "fusion_hidden_size", 256))
    if int(_hf_get(hf, "bottleneck_features", 256)) != features:
        raise UserError(f"{source}: bottleneck_features must equal fusion_hidden_size")
    full = {k: bb.get(k, v) for k, v in _BEIT_RELEASE.items()}
    out_indices = bb.get("out_indices") or [int(s.replace("stage", "")) for s in bb.get("out_features", [])]
    if len(out_indices) != 4:
        raise UserError(f"{source}: the backbone must expose 4 stages (out_features), got {out_indices}")
    hooks = [int(i) - 1 for i in out_indices]
    width, heads = int(full["hidden_size"]), int(full["num_attention_heads"])
    ovr: List[str] = []
    if bb.get("model_type") == "swinv2":
        ovr += _hf_swinv2_overrides(bb, hf, out_indices, source)
    elif full == _BEIT_RELEASE:
        ovr.append("model.backbone=beit_large_patch16_384")
    else:
        scale = bb.get("layer_scale_init_value", 0.1)
        kwargs = dict(embed_dim=width, depth=int(full["num_hidden_layers"]), num_heads=heads,
                      mlp_ratio=float(full["intermediate_size"]) / width, img_size=int(full["image_size"]),
                      patch_size=int(full["patch_size"]), num_classes=0,
                      init_values=float(scale) if scale and float(scale) > 0 else None)
        ovr += ["model.backbone=beit_base_patch16_384",
                "model.backbone_kwargs={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in kwargs.items()) + "}"]
    if bb.get("model_type") != "swinv2":
        ovr += [f"model.hooks=[{', '.join(map(str, hooks))}]",
                f"model.reassemble_channels=[{', '.join(str(int(c)) for c in hf.get('neck_hidden_sizes'))}]",
                f"model.readout={_hf_get(hf, 'readout_type', 'project')}"]
    ovr.append(f"model.features={features}")
    bins = list(_hf_get(hf, "bin_configurations", [{"n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}]))
    multi = len(bins) > 1
    names = [str(b.get("name") or ("nyu" if i == 0 else f"domain{i}")) for i, b in enumerate(bins)]
    if not multi and "name" not in bins[0]:
        names = ["kitti" if float(bins[0]["max_depth"]) > 10 else "nyu"]
    items = [f"{{name: {n}, n_bins: {int(b['n_bins'])}, min_depth: {float(b['min_depth'])}, "
             f"max_depth: {float(b['max_depth'])}}}" for n, b in zip(names, bins)]
    ovr.append("model.bins=[" + ", ".join(items) + "]")
    e = int(_hf_get(hf, "bin_embedding_dim", 128))
    kind = str(_hf_get(hf, "bin_centers_type", "softplus"))
    if kind not in ("softplus", "normed"):
        raise UserError(f"{source}: bin_centers_type '{kind}' is not supported by HF ZoeDepth")
    n_att = [int(a) for a in _hf_get(hf, "num_attractors", [16, 8, 4, 1])]
    ovr += [
        "model.head.type=metric_bins", f"model.head.bin_centers_type={kind}", f"model.head.bin_embedding_dim={e}",
        f"model.head.n_attractors=[{', '.join(map(str, n_att))}]", "model.head.attractor_type=inv",
        f"model.head.attractor_aggregation={_hf_get(hf, 'attractor_kind', 'mean')}",
        f"model.head.attractor_alpha={float(_hf_get(hf, 'attractor_alpha', 1000))}",
        f"model.head.attractor_gamma={float(_hf_get(hf, 'attractor_gamma', 2))}",
        f"model.head.min_temp={float(_hf_get(hf, 'min_temp', 0.0212))}",
        f"model.head.max_temp={float(_hf_get(hf, 'max_temp', 50.0))}",
        f"model.head.seed_mlp_dim={e // 2 if multi else 256}",
        f"model.head.projector_mlp_dim={e // 2 if multi else 128}",
        f"model.head.clb_bottleneck_factor={4 if multi else 2}",
        "model.head.use_relative_input=true",
        # HF keeps the original's quirks (facts §2.9): fixed alpha/gamma, discarded normalisation,
        # Stirling log C(n,k), NK: 16 attractors per level, no relative channel, one vote per batch
        "model.faithful.fixed_alpha_gamma=true", "model.faithful.discard_attractor_norm=true",
        "model.faithful.stirling_log_binomial=true",
        "model.resize_input=true", "model.keep_aspect_ratio=false",
        "model.mean=[0.5, 0.5, 0.5]", "model.std=[0.5, 0.5, 0.5]",
    ]
    if multi:
        if len(bins) != 2:
            raise UserError(f"{source}: HF's multi-head ZoeDepth routes between exactly 2 bin configurations")
        dim = int(_hf_get(hf, "patch_transformer_hidden_size", 128))
        n_layers = int(_hf_get(hf, "num_patch_transformer_layers", 4))
        if dim != 128 or n_layers != 4:
            raise UserError(f"{source}: HF's router needs patch_transformer_hidden_size=128 and 4 layers "
                            f"(got {dim}, {n_layers})")
        ovr += [
            "model.faithful.nk_sixteen_attractors=true", "model.faithful.nk_no_relative_input=true",
            "model.faithful.batch_vote=true", "model.router.type=trained", f"model.router.dim={dim}",
            f"model.router.n_layers={n_layers}",
            f"model.router.n_heads={int(_hf_get(hf, 'patch_transformer_num_attention_heads', 4))}",
            f"model.router.ffn_dim={int(_hf_get(hf, 'patch_transformer_intermediate_size', 1024))}",
        ]
    return ovr


def _swin_window_mismatch(h: int, w: int, window: int, stages: int) -> Optional[str]:
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


def _hf_swinv2_overrides(bb: Mapping, hf: Mapping, out_indices: Sequence[int], source: str) -> List[str]:
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
    why = _swin_window_mismatch(-(-size[0] // patch), -(-size[1] // patch), window, len(depths))
    if why:
        warnings.warn(f"{source}: at image_size {size[0]}x{size[1]} HF's SwinV2 and timm's compute different "
                      f"functions: {why}", UserWarning, stacklevel=2)
    kwargs = dict(embed_dim=dim, depths=depths, num_heads=[int(h) for h in bb.get("num_heads", [3, 6, 12, 24])],
                  window_size=window, patch_size=patch,
                  mlp_ratio=float(bb.get("mlp_ratio", 4.0)), qkv_bias=bool(bb.get("qkv_bias", True)),
                  pretrained_window_sizes=[int(w) for w in bb.get("pretrained_window_sizes", [0, 0, 0, 0])],
                  num_classes=0)
    return ["model.backbone=swinv2_tiny_window8_256", f"model.img_size=[{size[0]}, {size[1]}]",
            "model.hooks=null", "model.reassemble_channels=null",
            "model.backbone_kwargs={" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in kwargs.items()) + "}"]


def _hf_release_preset(hf: Mapping) -> Optional[str]:
    """The preset of an HF port of a released model (BEiT-L-384, 64 bins), else None."""
    bb = dict(hf.get("backbone_config") or {})
    if any(bb.get(k, v) != v for k, v in _BEIT_RELEASE.items()):
        return None
    bins = list(hf.get("bin_configurations") or [{"n_bins": 64}])
    if any(int(b.get("n_bins", 64)) != 64 for b in bins):
        return None
    if len(bins) == 2:
        return "zoed_m12_nk"
    if len(bins) == 1:
        return "zoed_m12_k" if hf.get("bin_centers_type") == "normed" else "zoed_m12_n"
    return None


def _load_hf_state(state: StateDict, hf_config: Mapping, preset: Optional[str], overrides: Sequence[str],
                   source: str):
    base = hf_config_to_overrides(hf_config, source)
    if preset is None:
        preset = _hf_release_preset(hf_config)
    if preset is not None:
        cfg = _config(preset, overrides)
        want = _config("base", base)
        for key in ("model.head.bin_centers_type", "model.features", "model.head.bin_embedding_dim"):
            if OmegaConf.select(cfg, key) != OmegaConf.select(want, key):
                raise UserError(f"{source}: preset '{preset}' has {key}={OmegaConf.select(cfg, key)} but the HF "
                                f"config says {OmegaConf.select(want, key)}")
        if len(cfg.model.bins) != len(want.model.bins):
            raise UserError(f"{source}: preset '{preset}' has {len(cfg.model.bins)} bin configurations, the HF "
                            f"config {len(want.model.bins)}")
    else:
        cfg = _config("base", base + list(overrides))
    names = [b.name for b in cfg.model.bins]
    model = _build(cfg)
    load_strict(model, hf_state_to_ours(state, names[0] if len(names) == 1 else None, source), source,
                lambda k: bool(_UNUSED_BACKBONE.match(k)))
    return model, cfg


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
    if isinstance(hf_model_or_dir, (str, Path)):
        model, cfg = load_model_and_config(hf_model_or_dir, preset, overrides)
        folder = Path(hf_model_or_dir)
        folder = folder if folder.is_dir() else folder.parent
        hf_config = _read_json(folder / "config.json")
    else:
        hf_config = hf_model_or_dir.config.to_dict()
        state = {k: v.detach().cpu() for k, v in hf_model_or_dir.state_dict().items()}
        model, cfg = _load_hf_state(state, hf_config, preset, list(overrides or []), "HF model")
        model = _finish(model)
    eps = (hf_config.get("backbone_config") or {}).get("layer_norm_eps")
    if match_hf_eps and eps is not None:
        for module in model.core.pretrained.model.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = float(eps)
    return (model, cfg) if return_config else model
