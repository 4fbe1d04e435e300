# Over 400 lines: the schema, its validation and the experiment loader stay together as the one place of config.
"""Typed experiment configuration.

Every run is described by one :class:`RunConfig`. The dataclasses below are the only place
defaults live; the experiment ``base`` is the schema itself. An experiment is assembled as

    schema defaults -> parent experiments -> EXP.yaml -> overrides

with OmegaConf. Each experiment file holds only what it changes; ``extends: other`` names a
parent experiment, whose run labels (``group``, ``tags``, ``notes``) are not inherited. Unknown
keys, wrong types, invalid choices (``Literal`` fields and the head / router registries), missing
values and unknown experiment names fail here, at load time, with one message naming the dotted
key and the valid choices or closest names.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

__all__ = [
    "ConfigError",
    "RunConfig",
    "ModelConfig",
    "load_config",
    "schema",
    "validate",
    "check_init",
    "experiments_dir",
    "list_experiments",
    "to_yaml",
]


class ConfigError(ValueError):
    """A user error in an experiment file or an override: one clear message, no traceback."""


def ranged(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A schema field with a declared range, checked by :func:`validate`. ``rule`` keys:
    ``ge`` / ``gt`` / ``le`` / ``lt`` (bounds of a number, or of every item of a list), ``above``
    (the name of a sibling field this value must exceed), ``length`` / ``min_length`` (of a list)
    and ``also`` (values allowed besides the range, e.g. ``-1`` for unlimited). None passes."""
    return field(default=default, default_factory=factory, metadata={"rule": rule})


# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------


@dataclass
class BinConfig:
    """One metric domain: a head of ``n_bins`` bins over ``[min_depth, max_depth]`` metres."""

    name: str = MISSING
    n_bins: int = ranged(64, ge=2)
    min_depth: float = ranged(1e-3, gt=0)
    max_depth: float = ranged(10.0, above="min_depth")


@dataclass
class FaithfulConfig:
    """Switches that reproduce the original implementation's quirks (facts file §2.9, §9).

    All off for new training; the presets for imported official weights turn them on.
    """

    fixed_alpha_gamma: bool = False  # attractors ignore alpha/gamma and use 300 / 2
    discard_attractor_norm: bool = False  # normed attractor keeps ReLU+eps, drops pair-normalisation
    nk_sixteen_attractors: bool = False  # multi-domain heads use 16 attractors at every level
    nk_no_relative_input: bool = False  # multi-domain output head gets no relative-depth channel
    stirling_log_binomial: bool = False  # truncated Stirling log C(n,k) instead of lgamma
    batch_vote: bool = False  # router: one decision per batch (sum of logits) instead of per image


@dataclass
class HeadConfig:
    """The metric head. ``type`` picks a registry entry (``zoe_lightning.models.heads``)."""

    type: str = "metric_bins"  # a name in zoe_lightning.models.HEADS: metric_bins | splitter | naive | da2_metric
    bin_centers_type: Literal["softplus", "normed", "hybrid1", "hybrid2"] = "softplus"
    bin_embedding_dim: int = ranged(128, ge=1)
    seed_mlp_dim: int = ranged(256, ge=1)
    projector_mlp_dim: int = ranged(128, ge=1)
    n_attractors: List[int] = ranged(factory=lambda: [16, 8, 4, 1], length=4, ge=1)  # one count per decoder level
    attractor_type: Literal["inv", "exp"] = "inv"
    attractor_aggregation: Literal["mean", "sum"] = "mean"
    attractor_alpha: float = ranged(1000.0, gt=0)
    attractor_gamma: float = ranged(2.0, gt=0)
    min_temp: float = ranged(0.0212, gt=0)
    max_temp: float = ranged(50.0, above="min_temp")
    clb_bottleneck_factor: int = ranged(2, ge=1)
    use_relative_input: bool = True
    split_factor: int = ranged(2, ge=1)  # splitter head only
    naive_hidden: int = ranged(32, ge=1)  # naive head only


@dataclass
class RouterConfig:
    """How a multi-domain model picks a head per image (ignored with one domain)."""

    type: str = "trained"  # a name in zoe_lightning.models.ROUTERS: labeled | trained | auto
    train_route: Literal["label", "predicted"] = "label"  # trained router, training only: route by label or prediction
    n_layers: int = ranged(4, ge=1)
    dim: int = ranged(128, ge=1)
    n_heads: int = ranged(4, ge=1)
    ffn_dim: int = ranged(1024, ge=1)
    dropout: float = ranged(0.1, ge=0, lt=1)
    auto_temperature: float = ranged(1.0, gt=0)  # auto router: softness of the training-time mixture


@dataclass
class SpeedConfig:
    """Speed switches (``zoe_lightning.accel``; benchmarks/RESULTS.md): none changes the function
    the model computes (outputs and gradients equal to float rounding)."""

    fast_path: bool = True  # same function, less work: 1x1 convs as GEMMs and before upsampling, pixel-major bins
    winograd: bool = True  # decoder 3x3 convs as Winograd F(2x2,3x3) at CPU fp32 inference (2.25x fewer multiplies)
    memory_efficient: bool = True  # attractors and log-binomial as autograd functions that save only their inputs
    fused_attention: bool = True  # scaled_dot_product_attention; false = explicit softmax(QK^T)V
    grad_checkpointing: bool = False  # recompute backbone blocks in backward: less memory, more time
    channels_last: bool = True  # NHWC weights and inputs for the convolutions (faster mkldnn / cuDNN kernels)
    compile: bool = False  # torch.compile the model's forward (first steps compile)


def move_speed_keys(container: Dict[str, Any]) -> Dict[str, Any]:
    """A stored run config (plain containers) whose speed switches sit where older versions kept
    them (``model.<switch>``, ``model.head.memory_efficient``) with them moved to ``model.speed``."""
    model = container.get("model")
    if not isinstance(model, dict):
        return container
    moved = {key: model.pop(key) for key in list(model) if key in SpeedConfig.__dataclass_fields__}
    head = model.get("head")
    if isinstance(head, dict) and "memory_efficient" in head:
        moved["memory_efficient"] = head.pop("memory_efficient")
    if moved:
        model["speed"] = {**moved, **(model.get("speed") or {})}
    return container


@dataclass
class ModelConfig:
    backbone: str = "beit_large_patch16_384"
    # the DPT decoder: MiDaS v3.1's (``scratch.*``; reassemble in the encoder) or Depth Anything's
    # (``depth_head.*``; DINOv2 backbones only, patch 14: sizes are multiples of 14)
    decoder: Literal["midas", "depth_anything"] = "midas"
    # DINOv2 position-embedding resizing (depth_anything decoder): offset = the original DINOv2 /
    # Depth Anything rule, size = HF transformers 5, timm = timm's dynamic_img_size (register models)
    pos_embed_resize: Literal["offset", "size", "timm"] = "offset"
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model args
    backbone_weights: Optional[str] = None  # local timm state_dict file (.pth / .safetensors); never downloaded
    pretrained: bool = False  # timm's pretrained backbone weights, downloaded and cached by timm (training only)
    img_size: List[int] = ranged(factory=lambda: [384, 512], length=2, ge=1)  # [height, width]
    features: int = ranged(256, ge=1)
    readout: Literal["project", "ignore", "add"] = "project"  # ViT-like backbones
    # block indices tapped; None = the MiDaS v3.1 / Depth Anything V2 choice; with the depth_anything
    # decoder negative indices count from the end ([-4, -3, -2, -1]: Depth Anything V1)
    hooks: Optional[List[int]] = None
    reassemble_channels: Optional[List[int]] = None  # None = the MiDaS v3.1 choice
    resize_input: bool = True  # the model resizes inputs to img_size itself
    keep_aspect_ratio: bool = False  # resize policy of the model's own preprocessing
    mean: List[float] = ranged(factory=lambda: [0.5, 0.5, 0.5], length=3)
    std: List[float] = ranged(factory=lambda: [0.5, 0.5, 0.5], length=3, gt=0)
    head: HeadConfig = field(default_factory=HeadConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    bins: List[BinConfig] = ranged(factory=lambda: [BinConfig(name="nyu")], min_length=1)
    faithful: FaithfulConfig = field(default_factory=FaithfulConfig)
    # Where the weights of a run that is trained start from; checked when training starts
    # (check_init), not when a configuration is printed or official weights are loaded:
    #   auto      whatever is given: model.core_checkpoint, else model.backbone_weights or
    #             model.pretrained, else random
    #   core      a relative-depth (stage-1, e.g. MiDaS M12) core: model.core_checkpoint is required
    #   backbone  ImageNet backbone weights, random decoder, no relative core (ZoeD-X):
    #             model.backbone_weights or model.pretrained is required, model.core_checkpoint unset
    #   scratch   random initialisation on purpose: no weights file, model.pretrained false
    init: Literal["auto", "core", "backbone", "scratch"] = "auto"
    core_checkpoint: Optional[str] = None  # stage-1 checkpoint whose core initialises stage 2
    # which part of model.core_checkpoint is loaded: all = encoder + decoder; encoder = the backbone
    # only (core.pretrained.*), decoder random, as Depth Anything V2's metric training does
    core_checkpoint_part: Literal["all", "encoder"] = "all"
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass
class DatasetConfig:
    """One dataset in a list. ``name`` picks a reader; ``options`` are passed to it."""

    name: str = MISSING
    weight: float = ranged(1.0, ge=0)
    domain: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    train: List[DatasetConfig] = field(
        default_factory=lambda: [DatasetConfig(name="synthetic_indoor", domain="nyu")]
    )
    val: List[DatasetConfig] = field(
        default_factory=lambda: [DatasetConfig(name="synthetic_indoor", domain="nyu")]
    )
    root: Optional[str] = None  # a dataset folder that experiment files read as ${data.root} (folder_quickstart)
    batch_size: int = ranged(16, ge=1)  # global batch size; divided over devices
    val_batch_size: int = ranged(1, ge=1)
    num_workers: int = ranged(4, ge=0)
    epoch_length: Optional[int] = ranged(None, ge=1)  # samples per training epoch of a mixture (None = sum)
    image_size: Optional[List[int]] = ranged(None, length=2, ge=1)  # [h, w] loader-side resize (None = native size)
    augment: bool = True
    seed: int = 43
    source: Literal["real", "synthetic"] = "real"  # synthetic: each entry replaced by its synthetic counterpart
    resize: Literal["squash", "keep_aspect", "pad", "none"] = "squash"  # file datasets, to image_size
    depth_interpolation: Literal["auto", "nearest", "masked"] = "auto"  # auto: nearest if sparse, else masked
    random_crop: Optional[List[int]] = ranged(None, length=2, ge=1)  # [h, w] training crop before the resize (file datasets)
    rotate_degrees: float = ranged(1.0, ge=0)  # training rotation range +-deg (file datasets; 0 = off)
    batching: Literal["auto", "mixed", "per_dataset"] = "auto"  # per_dataset: every training batch from one dataset


@dataclass
class LossConfig:
    w_silog: float = 1.0
    # zoedepth: 10 * sqrt(Var(g) + beta * mean(g)^2); da2: Depth Anything V2's
    # sqrt(mean(d^2) - lambda * mean(d)^2) (no x10), both pooled over the batch's valid pixels
    silog_form: Literal["zoedepth", "da2"] = "zoedepth"
    silog_beta: float = 0.15
    silog_lambda: float = 0.5  # da2 form only
    w_grad: float = 0.0
    w_domain: float = 100.0
    # stage 1
    ssi_alignment: Literal["lstsq", "trimmed"] = "trimmed"  # trimmed: median/MAD
    ssi_trim: float = 0.2
    w_gradient_matching: float = 0.5
    gradient_scales: int = ranged(4, ge=1)


@dataclass
class OptimConfig:
    lr: float = ranged(1.61e-4, gt=0)
    weight_decay: float = ranged(0.01, ge=0)
    encoder_lr_factor: float = ranged(10.0, gt=0)
    pos_enc_lr_factor: float = ranged(10.0, gt=0)
    decoder_lr_factor: float = ranged(1.0, gt=0)
    same_lr: bool = False
    # onecycle: ZoeDepth's OneCycle (cosine, momentum cycled); poly: Depth Anything V2's
    # lr * (1 - step / total) ** poly_power per step, AdamW betas (0.9, 0.999)
    schedule: Literal["onecycle", "poly"] = "onecycle"
    poly_power: float = ranged(0.9, gt=0)
    div_factor: float = ranged(1.0, gt=0)
    final_div_factor: float = ranged(1e4, gt=0)
    pct_start: float = ranged(0.7, ge=0, le=1)
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    freeze_bn: bool = True
    # fused: one kernel per step; foreach: multi-tensor; loop: per parameter, the original
    adamw: Literal["fused", "foreach", "loop"] = "fused"


# Lightning's precision strings (lightning.fabric.connector._PRECISION_INPUT_STR and its aliases)
Precision = Literal["transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true",
                    "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16"]


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer``; ``extra`` holds any further Trainer argument."""

    max_epochs: int = ranged(5, ge=1, also=(-1,))  # -1: unlimited (then max_steps ends the run)
    max_steps: int = ranged(-1, ge=1, also=(-1,))  # -1: no step limit
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = ranged(1, ge=1)
    strategy: str = "auto"
    precision: Precision = "32-true"
    gradient_clip_val: float = ranged(0.1, ge=0)
    # Lightning's convention: an int counts batches, a float is a fraction (so 1 = one batch, 1.0 = all)
    val_check_interval: Any = 0.25
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    log_every_n_steps: int = 50
    deterministic: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)

    max_bad_steps: int = 5  # consecutive steps with a non-finite loss or gradient (skipped) before the run stops


@dataclass
class LoggerConfig:
    wandb: bool = True
    project: str = "zoe-lightning"
    entity: Optional[str] = None
    mode: Optional[Literal["online", "offline", "disabled"]] = None  # None: WANDB_MODE, else online if logged in
    csv: bool = True
    log_model: bool = False  # upload best.ckpt (and last.ckpt) to W&B as a model artifact; online runs only
    job_type: Literal["train", "sweep"] = "train"  # W&B job type; sweep-run sets "sweep" (eval runs are "eval")


@dataclass
class CallbackConfig:
    depth_panels_every: int = ranged(50, ge=0)  # validation steps between depth panels (0 = off)
    n_panels: int = ranged(4, ge=0)
    bin_centers: bool = True
    router_stats: bool = True
    rich: bool = True


@dataclass
class RunConfig:
    name: str = "base"
    extends: Optional[str] = None
    followup: Optional[str] = None  # experiment trained next, its core initialised from this run's best
    stage: Literal["metric", "relative"] = "metric"
    seed: int = 43
    output_dir: str = "runs"
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    notes: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbackConfig = field(default_factory=CallbackConfig)


# ----------------------------------------------------------------------------------------------
# OmegaConf's view of the schema, and validation
# ----------------------------------------------------------------------------------------------
# Not every OmegaConf release understands ``Literal``: OmegaConf gets a copy of the schema with
# each choice typed as its plain type and checks types; validate() checks the choices.


def _plain_hint(hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return type(args[0])
    if origin is Union:
        return Union[tuple(_plain_hint(a) for a in args)]
    if origin is list:
        return List[_plain_hint(args[0])]
    if isinstance(hint, type) and is_dataclass(hint):
        return _omegaconf_class(hint)
    return hint


def _to_plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _omegaconf_class(type(value))(**{f.name: _to_plain(getattr(value, f.name)) for f in fields(value)})
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


@lru_cache(maxsize=None)
def _omegaconf_class(cls: type) -> type:
    """``cls`` with ``Literal`` fields typed as ``str`` (same names, defaults and nesting)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            default = field(default_factory=lambda factory=f.default_factory: _to_plain(factory()))
        else:
            default = field(default=f.default)
        specs.append((f.name, _plain_hint(hints[f.name]), default))
    return dataclasses.make_dataclass(cls.__name__, specs)


def schema() -> DictConfig:
    """The defaults of every run as a typed DictConfig (the experiment ``base``, before validation)."""
    return OmegaConf.structured(_omegaconf_class(RunConfig))


def _choices(hint: Any) -> Optional[tuple]:
    """The allowed values of a ``Literal`` (or ``Optional[Literal]``) field, else None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return args
    if origin is Union and any(typing.get_origin(a) is Literal for a in args):
        return tuple(v for a in args for v in (typing.get_args(a) if typing.get_origin(a) is Literal else (None,)))
    return None


def _invalid(key: str, value: Any, options: Sequence[Any]) -> ConfigError:
    shown = [str(o) for o in options if o is not None]
    return ConfigError(f"invalid value '{value}' for '{key}'.{_close(str(value), shown)} Choices: {', '.join(shown)}.")


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _rule_error(key: str, value: Any, rule: Dict[str, Any]) -> Optional[ConfigError]:
    """Why ``value`` breaks the declared ``rule`` of ``key`` (``above`` aside), or None."""
    if value is None or value in rule.get("also", ()):
        return None
    items = list(value) if isinstance(value, (list, ListConfig)) else None
    if items is not None:
        if "length" in rule and len(items) != rule["length"]:
            return ConfigError(f"invalid value {items} for '{key}': needs exactly {rule['length']} values")
        if len(items) < rule.get("min_length", 0):
            return ConfigError(f"invalid value {items} for '{key}': needs at least {rule['min_length']} entries")
        checked = [(f"{key}.{i}", v) for i, v in enumerate(items) if isinstance(v, (int, float))]
    else:
        checked = [(key, value)]
    also = "".join(f" or {a}" for a in rule.get("also", ()))
    for where, v in checked:
        for name, (sign, ok) in _BOUNDS.items():
            if name in rule and not ok(v, rule[name]):
                return ConfigError(f"invalid value {v} for '{where}': must be {sign} {rule[name]}{also}")
    return None


def _check_node(node: Any, cls: type, prefix: str = "") -> None:
    """``Literal`` choices and declared ranges (:func:`ranged`) of one section, recursively."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key, hint, value = f"{prefix}{f.name}", hints[f.name], node[f.name]
        options = _choices(hint)
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if options is not None and value not in options:
            raise _invalid(key, value, options)
        rule = f.metadata.get("rule", {})
        error = _rule_error(key, value, rule)
        if error is not None:
            raise error
        if "above" in rule and value is not None and not value > node[rule["above"]]:
            raise ConfigError(f"invalid value {value} for '{key}': must be > {prefix}{rule['above']} "
                              f"({node[rule['above']]})")
        if isinstance(hint, type) and is_dataclass(hint):
            _check_node(value, hint, f"{key}.")
        elif isinstance(item, type) and is_dataclass(item):
            for i, entry in enumerate(value):
                _check_node(entry, item, f"{key}.{i}.")


def validate(cfg: DictConfig) -> None:
    """Every check OmegaConf's types cannot make: ``Literal`` choices, the ranges and list shapes
    declared with :func:`ranged`, the head and router registries, and the rules across fields."""
    _check_node(cfg, RunConfig)
    from .models import HEADS, ROUTERS  # registries: populated by the model package

    for key, registry in (("model.head.type", HEADS), ("model.router.type", ROUTERS)):
        if OmegaConf.select(cfg, key) not in registry:
            raise _invalid(key, OmegaConf.select(cfg, key), list(registry))
    bins = cfg.model.bins
    names = [b.name for b in bins]
    if len(set(names)) != len(names):
        raise ConfigError(f"'model.bins' names must be unique, got {names}")
    if len({b.n_bins for b in bins}) != 1:
        raise ConfigError(f"'model.bins': all domains must use the same n_bins, got {[b.n_bins for b in bins]}")
    split = cfg.model.head.split_factor
    if cfg.model.head.type == "splitter" and bins[0].n_bins % split ** 4:
        raise ConfigError(f"invalid value {bins[0].n_bins} for 'model.bins.0.n_bins': the splitter head needs a "
                          f"multiple of model.head.split_factor^4 ({split ** 4})")
    router = cfg.model.router
    if len(bins) > 1 and router.dim % router.n_heads:
        raise ConfigError(f"invalid value {router.n_heads} for 'model.router.n_heads': must divide "
                          f"model.router.dim ({router.dim})")
    if cfg.model.decoder == "depth_anything":
        from .models.encoder import resolve_backbone

        try:
            family = resolve_backbone(cfg.model.backbone).family
        except ValueError as exc:
            raise ConfigError(f"'model.backbone': {exc}") from None
        if family != "dinov2":
            raise ConfigError(f"'model.decoder=depth_anything' needs a DINOv2 backbone (vit_small/base/large/giant_"
                              f"patch14_dinov2, their reg4 variants, test_dinov2), got '{cfg.model.backbone}'")
        if any(int(s) % 14 for s in cfg.model.img_size):
            raise ConfigError(f"'model.img_size' {list(cfg.model.img_size)}: the DINOv2 core needs multiples of 14")


def check_init(cfg: DictConfig) -> None:
    """Stop a training run whose starting weights are not the ones ``model.init`` promises, or
    whose datasets read a ``data.root`` that was not given.

    Called when training starts; printing a configuration or loading released weights with an
    experiment as preset does not need the weights a training run starts from.
    """
    m, name = cfg.model, cfg.name
    unset = [e for e in [*cfg.data.train, *cfg.data.val] if "root" in e.options and e.options.root is None]
    if unset and cfg.data.root is None and cfg.data.source != "synthetic":
        raise ConfigError(f"experiment '{name}' trains on your dataset folder: pass data.root=/path/to/dataset "
                          "(with make: ARGS=\"data.root=/path/to/dataset\"); the folder layout is in docs/datasets.md")
    if m.init == "core" and not m.core_checkpoint:
        raise ConfigError(f"experiment '{name}' fine-tunes a relative-depth core: pass model.core_checkpoint=PATH "
                          "(a stage-1 checkpoint, e.g. of relative_m12), or model.init=scratch to train from random "
                          "initialisation on purpose")
    if m.init == "backbone" and m.core_checkpoint:
        raise ConfigError(f"experiment '{name}' trains without a relative-depth core (model.init=backbone) but "
                          "model.core_checkpoint is set: drop it, or pass model.init=core")
    if m.init == "backbone" and not (m.backbone_weights or m.pretrained):
        raise ConfigError(f"experiment '{name}' starts from ImageNet backbone weights: pass model.pretrained=true "
                          "(timm's weights, downloaded once) or model.backbone_weights=PATH (a local timm state_dict), "
                          "or model.init=scratch to train from random initialisation on purpose")
    given = [k for k in ("core_checkpoint", "backbone_weights") if m[k]]
    if m.init == "scratch" and (given or m.pretrained):
        what = f"model.{given[0]} is set" if given else "model.pretrained=true"
        raise ConfigError(f"model.init=scratch trains from random initialisation but {what}: drop it, "
                          "or pass model.init=auto")
    if m.pretrained and given:
        raise ConfigError(f"model.pretrained=true downloads timm's backbone weights but model.{given[0]} replaces "
                          "them: drop one of the two")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def experiments_dir() -> Path:
    """Folder of experiment YAML files: ``$ZOE_EXPERIMENTS``, else the ``experiments`` package
    installed beside ``zoe_lightning`` (the repository's folder in a checkout or an editable install)."""
    env = os.environ.get("ZOE_EXPERIMENTS")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / "experiments"
    if (beside / "__init__.py").is_file():
        return beside
    from importlib.resources import files

    try:
        found = files("experiments")  # installed apart from zoe_lightning
    except ModuleNotFoundError:
        return beside
    return found if isinstance(found, Path) else beside


def _names(root: Path) -> List[str]:
    return sorted(p.stem for p in root.glob("*.yaml") if p.stem != "base")


def list_experiments(root: Optional[Path] = None) -> List[str]:
    """Experiment names in ``root`` (default :func:`experiments_dir`); none at all is an error."""
    root = Path(root) if root is not None else experiments_dir()
    names = _names(root)
    if not names:
        raise ConfigError(f"no experiment files (NAME.yaml) in {root}; point ZOE_EXPERIMENTS at a folder of them")
    return names


def _close(word: str, options: Sequence[str]) -> str:
    hits = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""


def _schema_paths(node: Any = RunConfig, prefix: str = "") -> Dict[str, str]:
    """Map the class name of each section of the schema to its dotted path (list items as ``[i]``)."""
    paths: Dict[str, str] = {node.__name__: prefix or "<root>"}
    hints = typing.get_type_hints(node)
    for f in fields(node):
        path = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if isinstance(hint, type) and is_dataclass(hint):
            paths.update(_schema_paths(hint, path))
        elif isinstance(item, type) and is_dataclass(item):
            paths.update(_schema_paths(item, f"{path}[i]"))
    return paths


def _unknown_key_message(exc: OmegaConfBaseException, source: str) -> str:
    key = str(getattr(exc, "key", None) or "")
    full_key = str(getattr(exc, "full_key", None) or key)
    section = getattr(exc, "object_type", None)
    if not (isinstance(section, type) and is_dataclass(section)):
        section = RunConfig
    where = _schema_paths().get(section.__name__, "")
    leaf = key or full_key.rpartition(".")[2]
    if "." not in full_key and where not in ("", "<root>"):
        full_key = f"{where}.{leaf}"
    valid = [f.name for f in fields(section)]
    hint = _close(leaf, valid)
    listing = "" if hint else f" Valid keys under '{where}': {', '.join(valid)}."
    return f"{source}: unknown key '{full_key}'.{hint}{listing}"


def _resolve_experiment_file(name: str, root: Path) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = root / f"{name}.yaml"
    if candidate.exists():
        return candidate
    names = _names(root)
    available = ", ".join(names) or "none: the folder holds no experiment files (ZOE_EXPERIMENTS overrides it)"
    raise ConfigError(f"unknown experiment '{name}' (looked in {root}).{_close(name, names)} Available: {available}.")


def _read_yaml(path: Path) -> DictConfig:
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml syntax errors
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: an experiment file must hold a mapping at the top level")
    if len(node) == 0:
        raise ConfigError(f"{path}: the experiment file is empty; give at least the keys it changes "
                          "(an experiment equal to the defaults is 'base')")
    return node


def _chain(name: str, root: Path) -> List[Path]:
    """Experiment files from the oldest ancestor to ``name`` (``extends`` links; ``base`` is the schema)."""
    chain: List[Path] = []
    seen = set()
    current: Optional[str] = name
    while current and current != "base":
        path = _resolve_experiment_file(current, root)
        if path.resolve() in seen:
            raise ConfigError(f"{path}: 'extends' forms a cycle ({' -> '.join(p.stem for p in chain)})")
        seen.add(path.resolve())
        chain.append(path)
        parent = _read_yaml(path).get("extends")
        current = str(parent) if parent else None
    return list(reversed(chain))


def _guard(action, source: str):
    """Run an OmegaConf merge/update and turn its errors into one-line ConfigErrors."""
    try:
        return action()
    except (ConfigKeyError, ConfigAttributeError) as exc:
        raise ConfigError(_unknown_key_message(exc, source)) from None
    except ValidationError as exc:
        msg = str(exc.msg).splitlines()[0]
        raise ConfigError(f"{source}: wrong type for '{exc.full_key}': {msg}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {str(exc).splitlines()[0]}") from None
    except TypeError as exc:  # e.g. a mapping merged into a list
        raise ConfigError(f"{source}: {exc}") from None


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    return _guard(lambda: OmegaConf.merge(base, update), source)


def _apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """``key=value`` items; keys may index lists (``data.train.0.weight`` or ``data.train[0].weight``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            value = OmegaConf.from_dotlist([f"v={raw}"]).v
        except OmegaConfBaseException as exc:
            raise ConfigError(f"cannot parse the value of override '{item}': {exc}") from None
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        _guard(lambda: OmegaConf.update(cfg, key.strip(), value, merge=True), "command line")


def _check_data_root(cfg: DictConfig) -> None:
    """``data.root`` is only given to an experiment that reads it (``${data.root}``); one that reads
    it without getting it is stopped when training starts (:func:`check_init`)."""
    if cfg.data.root is not None and "${data.root}" not in OmegaConf.to_yaml(cfg):
        raise ConfigError(f"data.root={cfg.data.root} is set but experiment '{cfg.name}' does not read it: use an "
                          "experiment that does (folder_quickstart), or set each dataset's options.root")


# Labels of one run (W&B group, tags, notes): an experiment that ``extends`` another does not inherit them;
# it names its own.
OWN_LABELS = ("group", "tags", "notes")


def load_config(
    experiment: str = "base",
    overrides: Optional[Sequence[str]] = None,
    *,
    root: Optional[os.PathLike] = None,
) -> DictConfig:
    """Merge schema -> parents -> ``experiment`` -> ``overrides`` and validate.

    ``experiment`` is a name in the experiments folder or a path to a YAML file; ``base`` is the
    schema itself. ``overrides``
    are OmegaConf dot-list items such as ``"model.backbone=test_vit"``. Returns a typed,
    read-only-by-convention ``DictConfig`` whose every value is set.
    """
    root_path = Path(root) if root is not None else experiments_dir()
    cfg = schema()
    if (root_path / "base.yaml").exists():
        raise ConfigError(f"{root_path / 'base.yaml'}: defaults live in the schema (zoe_lightning/config.py) and "
                          "'base' names it; rename this file and let your experiments extend it")
    if experiment and experiment != "base":
        chain = _chain(experiment, root_path)
        for path in chain:
            node = _read_yaml(path)
            if path != chain[-1]:  # a run's own labels are not inherited through extends
                for key in OWN_LABELS:
                    node.pop(key, None)
            cfg = _merge(cfg, node, str(path))
        cfg.name = Path(experiment).stem
    if overrides:
        _apply_overrides(cfg, overrides)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required value for '{missing[0]}'" + (
            f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    _check_data_root(cfg)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve interpolation: {exc}") from None
    validate(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)



# ----------------------------------------------------------------------------------------------
# Rebuilding a configuration from data (a run config stored in a checkpoint, a translated
# foreign config): used by zoe_lightning.weights
# ----------------------------------------------------------------------------------------------


def config_from_dict(
    data: Any,
    overrides: Optional[Sequence[str]] = None,
    *,
    base: Optional[DictConfig] = None,
    source: str = "configuration",
) -> DictConfig:
    """``data`` (a nested dict) merged over ``base`` (default: the bare schema), then ``overrides``.

    Validated like :func:`load_config` (types, unknown keys, choices); errors are ConfigErrors
    naming ``source``. Keys absent from ``data`` keep ``base``'s values.
    """
    if isinstance(data, (dict, DictConfig)):  # a config stored by an older version: speed keys moved
        data = move_speed_keys(OmegaConf.to_container(OmegaConf.create(data)) if isinstance(data, DictConfig)
                               else copy.deepcopy(dict(data)))
    cfg = _merge(base if base is not None else schema(), data, source)
    if overrides:
        _apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg
