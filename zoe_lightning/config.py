"""Typed experiment configuration.

Every run is described by one :class:`RunConfig`. An experiment is assembled as

    schema defaults -> experiments/base.yaml -> parent experiments -> EXP.yaml -> overrides

with OmegaConf. Each experiment file holds only what it changes; ``extends: other`` names a
parent experiment. Unknown keys, wrong types, missing values and unknown experiment names fail
here, at load time, with one message naming the dotted key and the closest valid names.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

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
    "experiments_dir",
    "list_experiments",
    "to_yaml",
]


class ConfigError(ValueError):
    """A user error in an experiment file or an override: one clear message, no traceback."""


# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------


@dataclass
class BinConfig:
    """One metric domain: a head of ``n_bins`` bins over ``[min_depth, max_depth]`` metres."""

    name: str = MISSING
    n_bins: int = 64
    min_depth: float = 1e-3
    max_depth: float = 10.0


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

    type: str = "metric_bins"  # metric_bins | splitter | naive
    bin_centers_type: str = "softplus"  # softplus | normed | hybrid1 | hybrid2
    bin_embedding_dim: int = 128
    seed_mlp_dim: int = 256
    projector_mlp_dim: int = 128
    n_attractors: List[int] = field(default_factory=lambda: [16, 8, 4, 1])
    attractor_type: str = "inv"  # inv | exp
    attractor_aggregation: str = "mean"  # mean | sum
    attractor_alpha: float = 1000.0
    attractor_gamma: float = 2.0
    min_temp: float = 0.0212
    max_temp: float = 50.0
    clb_bottleneck_factor: int = 2
    use_relative_input: bool = True
    split_factor: int = 2  # splitter head only
    naive_hidden: int = 32  # naive head only


@dataclass
class RouterConfig:
    """How a multi-domain model picks a head per image (ignored with one domain)."""

    type: str = "trained"  # labeled | trained | auto
    train_route: str = "label"  # trained router, training only: route by "label" or "predicted"
    n_layers: int = 4
    dim: int = 128
    n_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    auto_temperature: float = 1.0  # auto router: softness of the training-time mixture


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
    backbone_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model args
    backbone_weights: Optional[str] = None  # local timm state_dict file; never downloaded
    img_size: List[int] = field(default_factory=lambda: [384, 512])
    features: int = 256
    readout: str = "project"  # project | ignore | add (ViT-like backbones)
    hooks: Optional[List[int]] = None  # block indices tapped; None = the MiDaS v3.1 choice
    reassemble_channels: Optional[List[int]] = None  # None = the MiDaS v3.1 choice
    resize_input: bool = True  # the model resizes inputs to img_size itself
    keep_aspect_ratio: bool = False  # resize policy of the model's own preprocessing
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    head: HeadConfig = field(default_factory=HeadConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    bins: List[BinConfig] = field(default_factory=lambda: [BinConfig(name="nyu")])
    faithful: FaithfulConfig = field(default_factory=FaithfulConfig)
    core_checkpoint: Optional[str] = None  # stage-1 checkpoint whose core initialises stage 2
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass
class DatasetConfig:
    """One dataset in a list. ``name`` picks a reader; ``options`` are passed to it."""

    name: str = MISSING
    weight: float = 1.0
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
    batch_size: int = 16  # global batch size; divided over devices
    val_batch_size: int = 1
    num_workers: int = 4
    epoch_length: Optional[int] = None  # samples per training epoch of a mixture (None = sum)
    image_size: Optional[List[int]] = None  # loader-side resize (None = native size)
    augment: bool = True
    seed: int = 43
    source: str = "real"  # real | synthetic (each entry replaced by its synthetic counterpart)
    resize: str = "squash"  # squash | keep_aspect | pad | none (file datasets, to image_size)
    depth_interpolation: str = "auto"  # auto (nearest if sparse, else masked) | nearest | masked
    random_crop: Optional[List[int]] = None  # [h, w] training crop before the resize (file datasets)
    rotate_degrees: float = 1.0  # training rotation range +-deg (file datasets; 0 = off)
    batching: str = "auto"  # auto | mixed | per_dataset (every training batch from one dataset)


@dataclass
class LossConfig:
    w_silog: float = 1.0
    silog_beta: float = 0.15
    w_grad: float = 0.0
    w_domain: float = 100.0
    # stage 1
    ssi_alignment: str = "trimmed"  # lstsq | trimmed (median/MAD)
    ssi_trim: float = 0.2
    w_gradient_matching: float = 0.5
    gradient_scales: int = 4


@dataclass
class OptimConfig:
    lr: float = 1.61e-4
    weight_decay: float = 0.01
    encoder_lr_factor: float = 10.0
    pos_enc_lr_factor: float = 10.0
    decoder_lr_factor: float = 1.0
    same_lr: bool = False
    div_factor: float = 1.0
    final_div_factor: float = 1e4
    pct_start: float = 0.7
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    freeze_bn: bool = True
    adamw: str = "fused"  # fused (one kernel per step) | foreach (multi-tensor) | loop (per parameter, the original)


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer``; ``extra`` holds any further Trainer argument."""

    max_epochs: int = 5
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float = 0.1
    # Lightning's convention: an int counts batches, a float is a fraction (so 1 = one batch, 1.0 = all)
    val_check_interval: Any = 0.25
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    log_every_n_steps: int = 50
    deterministic: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    wandb: bool = True
    project: str = "zoe-lightning"
    entity: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; None = WANDB_MODE or offline
    csv: bool = True


@dataclass
class CallbackConfig:
    depth_panels_every: int = 50  # validation steps between depth panels (0 = off)
    n_panels: int = 4
    bin_centers: bool = True
    router_stats: bool = True
    rich: bool = True


@dataclass
class RunConfig:
    name: str = "base"
    extends: Optional[str] = None
    followup: Optional[str] = None  # experiment trained next, its core initialised from this run's best
    stage: str = "metric"  # metric | relative
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


# Choices checked after the merge (OmegaConf checks types, not enumerations).
CHOICES: Dict[str, Sequence[str]] = {
    "stage": ("metric", "relative"),
    "model.readout": ("project", "ignore", "add"),
    "model.head.bin_centers_type": ("softplus", "normed", "hybrid1", "hybrid2"),
    "optim.adamw": ("fused", "foreach", "loop"),
    "model.head.attractor_type": ("inv", "exp"),
    "model.head.attractor_aggregation": ("mean", "sum"),
    "model.router.type": ("labeled", "trained", "auto"),
    "model.router.train_route": ("label", "predicted"),
    "loss.ssi_alignment": ("lstsq", "trimmed"),
    "data.source": ("real", "synthetic"),
    "data.resize": ("squash", "keep_aspect", "pad", "none"),
    "data.depth_interpolation": ("auto", "nearest", "masked"),
    "data.batching": ("auto", "mixed", "per_dataset"),
}


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def experiments_dir() -> Path:
    """Folder of experiment YAML files (``$ZOE_EXPERIMENTS`` or the repository's ``experiments``)."""
    env = os.environ.get("ZOE_EXPERIMENTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "experiments"


def list_experiments(root: Optional[Path] = None) -> List[str]:
    root = root or experiments_dir()
    return sorted(p.stem for p in root.glob("*.yaml") if p.stem != "base")


def _close(word: str, options: Sequence[str]) -> str:
    hits = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(hits)}?" if hits else ""


def _schema_paths(node: Any = RunConfig, prefix: str = "") -> Dict[type, str]:
    """Map each section dataclass of the schema to its dotted path (list items as ``[i]``)."""
    paths: Dict[type, str] = {node: prefix or "<root>"}
    for f in fields(node):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        path = f"{prefix}.{f.name}" if prefix else f.name
        if is_dataclass(default):
            paths.update(_schema_paths(type(default), path))
        elif isinstance(default, list) and default and is_dataclass(default[0]):
            paths.update(_schema_paths(type(default[0]), f"{path}[i]"))
    return paths


def _unknown_key_message(exc: OmegaConfBaseException, source: str) -> str:
    key = str(getattr(exc, "key", None) or "")
    full_key = str(getattr(exc, "full_key", None) or key)
    section = getattr(exc, "object_type", None)
    if not (isinstance(section, type) and is_dataclass(section)):
        section = RunConfig
    where = _schema_paths().get(section, "")
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
    raise ConfigError(
        f"unknown experiment '{name}' (looked in {root}).{_close(name, list_experiments(root))}"
        f" Available: {', '.join(list_experiments(root)) or 'none'}."
    )


def _read_yaml(path: Path) -> DictConfig:
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml syntax errors
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: an experiment file must hold a mapping at the top level")
    return node


def _chain(name: str, root: Path) -> List[Path]:
    """Experiment files from the oldest ancestor to ``name`` (``extends`` links)."""
    chain: List[Path] = []
    seen = set()
    current: Optional[str] = name
    while current:
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


def _check_choices(cfg: DictConfig) -> None:
    for key, options in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in options:
            raise ConfigError(
                f"invalid value '{value}' for '{key}'.{_close(str(value), options)}"
                f" Choices: {', '.join(options)}."
            )
    from .models import HEADS  # registry: populated by the model package

    if cfg.model.head.type not in HEADS:
        raise ConfigError(
            f"invalid value '{cfg.model.head.type}' for 'model.head.type'.{_close(cfg.model.head.type, list(HEADS))}"
            f" Choices: {', '.join(HEADS)}."
        )
    bins = cfg.model.bins
    if len(bins) == 0:
        raise ConfigError("'model.bins' is empty: give at least one {name, n_bins, min_depth, max_depth}")
    names = [b.name for b in bins]
    if len(set(names)) != len(names):
        raise ConfigError(f"'model.bins' names must be unique, got {names}")
    if len({b.n_bins for b in bins}) != 1:
        raise ConfigError(f"'model.bins': all domains must use the same n_bins, got {[b.n_bins for b in bins]}")
    for i, b in enumerate(bins):
        if not 0 < b.min_depth < b.max_depth:
            raise ConfigError(f"'model.bins.{i}': need 0 < min_depth < max_depth, got {b.min_depth}, {b.max_depth}")
    if len(cfg.model.head.n_attractors) != 4:
        raise ConfigError(
            f"'model.head.n_attractors' needs one count per decoder level (4), got {list(cfg.model.head.n_attractors)}"
        )
    if len(cfg.model.img_size) != 2:
        raise ConfigError(f"'model.img_size' must be [height, width], got {list(cfg.model.img_size)}")


def load_config(
    experiment: str = "base",
    overrides: Optional[Sequence[str]] = None,
    *,
    root: Optional[os.PathLike] = None,
) -> DictConfig:
    """Merge schema -> base.yaml -> parents -> ``experiment`` -> ``overrides`` and validate.

    ``experiment`` is a name in the experiments folder or a path to a YAML file. ``overrides``
    are OmegaConf dot-list items such as ``"model.backbone=test_vit"``. Returns a typed,
    read-only-by-convention ``DictConfig`` whose every value is set.
    """
    root_path = Path(root) if root is not None else experiments_dir()
    cfg: DictConfig = OmegaConf.structured(RunConfig)
    base = root_path / "base.yaml"
    if base.exists():
        cfg = _merge(cfg, _read_yaml(base), str(base))
    if experiment and experiment != "base":
        for path in _chain(experiment, root_path):
            cfg = _merge(cfg, _read_yaml(path), str(path))
        cfg.name = Path(experiment).stem
    if overrides:
        _apply_overrides(cfg, overrides)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required value for '{missing[0]}'" + (
            f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else ""))
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve interpolation: {exc}") from None
    _check_choices(cfg)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)

