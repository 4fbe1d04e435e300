"""``accel.apply``: swaps variants in place (state dict unchanged), restores the reference, and every
variant computes its reference module's function (float64 to 1e-10, float32 to 1e-5; gradients too)."""

import ast
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from zoe_lightning import accel
from zoe_lightning.accel.bins import AcceleratedAttractorLayer, FastSeedBinRegressor, PointwiseMLP
from zoe_lightning.accel.dpt import FastFeatureFusionBlock
from zoe_lightning.accel.encoder import FastProjectReadout
from zoe_lightning.accel.log_binomial import FastConditionalLogBinomial, MemoryEfficientLogBinomial
from zoe_lightning.accel.winograd import WinogradConv2d
from zoe_lightning.config import SpeedConfig
from zoe_lightning.models import build_model
from zoe_lightning.models.bins import (AttractorLayer, ConditionalLogBinomial, LogBinomial, Projector,
                                       SeedBinRegressor, Splitter)
from zoe_lightning.models.dpt import FeatureFusionBlock
from zoe_lightning.models.encoder import ProjectReadout

from ..conftest import NK_BINS, tiny_config
from .helpers import BEIT, as_variant

ROOT = Path(__file__).resolve().parents[2]
ALL_OFF = dict(fast_path=False, winograd=False, memory_efficient=False, fused_attention=False,
               grad_checkpointing=False, channels_last=False, compile=False)


def _speed(**switches):
    return OmegaConf.structured(SpeedConfig(**switches))


def test_models_package_does_not_know_accel():
    for path in (ROOT / "zoe_lightning" / "models").glob("*.py"):
        if path.name == "zoedepth.py":  # build_model calls accel.apply, lazily
            continue
        tree = ast.parse(path.read_text())
        names = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not any("accel" in n for n in names), path.name


@pytest.mark.parametrize("extra", [[], [NK_BINS], ["model.head.type=splitter"], ["model.head.type=naive"]])
def test_apply_keeps_the_state_dict_and_restore_gives_the_reference(extra):
    torch.manual_seed(0)
    model = build_model(tiny_config(*BEIT, *extra))  # the default switches
    accelerated = {type(m).__name__ for m in model.modules() if "reference" in type(m).__dict__}
    assert "FastDPTCore" in accelerated and "AcceleratedEncoder" in accelerated
    state = {k: v.clone() for k, v in model.state_dict().items()}
    accel.apply(model, _speed(**ALL_OFF))
    assert not any("reference" in type(m).__dict__ for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    accel.apply(model, _speed())
    assert {type(m).__name__ for m in model.modules() if "reference" in type(m).__dict__} == accelerated
    assert list(model.state_dict()) == list(state)


@pytest.mark.parametrize("extra", [[], [NK_BINS], ["model.head.type=splitter"], ["model.head.bin_centers_type=normed",
                                                                             "model.head.attractor_type=exp"]])
def test_accelerated_model_equals_the_reference_in_float64(extra):
    torch.manual_seed(0)
    ref = accel.apply(build_model(tiny_config(*BEIT, *extra)), _speed(**ALL_OFF)).double().eval()
    fast = accel.apply(build_model(tiny_config(*BEIT, *extra)), _speed(channels_last=False)).double().eval()
    fast.load_state_dict(ref.state_dict())
    image = torch.rand(2, 3, 32, 48, dtype=torch.float64)
    domain = torch.tensor([0, 1])
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            a, b = ref(image, domain=domain), fast(image, domain=domain)
        for name in ("metric_depth", "relative_depth", "bin_centers", "probs"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), atol=1e-10, rtol=1e-10)
    ref.train(), fast.train()
    grads = []
    for model in (ref, fast):
        torch.manual_seed(1)
        out = model(image, domain=domain)
        loss = (out.metric_depth * torch.linspace(0.5, 1.5, out.metric_depth.numel()).view_as(out.metric_depth)).sum()
        grads.append(torch.autograd.grad(loss, list(model.parameters()), allow_unused=True))
    for g_ref, g_fast in zip(*grads):
        if g_ref is not None or g_fast is not None:
            torch.testing.assert_close(g_fast, g_ref, atol=1e-9, rtol=1e-8)


def _mlp_variant(module):
    out = as_variant(module, type(module))
    out._net.__class__ = PointwiseMLP
    return out


# (reference factory, variant maker, input factory, call)
CASES = {
    "seed_bins": (lambda: SeedBinRegressor(6, 5, 7, 1e-3, 10.0, normed=True),
                  lambda m: as_variant(m, FastSeedBinRegressor), lambda dt: [torch.randn(2, 6, 3, 4, dtype=dt)], None),
    "projector": (lambda: Projector(6, 5, 7), _mlp_variant, lambda dt: [torch.randn(2, 6, 3, 4, dtype=dt)], None),
    "splitter": (lambda: Splitter(6, 4, 2, 7, 1e-3, 10.0), _mlp_variant,
                 lambda dt: [torch.randn(2, 6, 6, 8, dtype=dt), torch.rand(2, 4, 3, 4, dtype=dt) + 0.1,
                             torch.randn(2, 6, 3, 4, dtype=dt)], None),
    "attractor": (lambda: AttractorLayer(6, 3, 7, 1e-3, 10.0, normed=True, kind="exp", alpha=30.0),
                  lambda m: _mlp_variant(as_variant(m, AcceleratedAttractorLayer, fast_path=True,
                                                    memory_efficient=True)),
                  lambda dt: [torch.randn(2, 6, 6, 8, dtype=dt), torch.rand(2, 5, 3, 4, dtype=dt),
                              torch.randn(2, 6, 3, 4, dtype=dt)], None),
    "fusion_block": (lambda: FeatureFusionBlock(6), lambda m: as_variant(m, FastFeatureFusionBlock),
                     lambda dt: [torch.randn(2, 6, 3, 4, dtype=dt), torch.randn(2, 6, 3, 4, dtype=dt)], None),
    "readout": (lambda: ProjectReadout(6), lambda m: as_variant(m, FastProjectReadout),
                lambda dt: [torch.randn(2, 7, 6, dtype=dt), torch.randn(2, 1, 6, dtype=dt)], None),
    "log_binomial": (lambda: LogBinomial(9), lambda m: as_variant(m, MemoryEfficientLogBinomial),
                     lambda dt: [torch.rand(2, 1, 3, 4, dtype=dt).clamp(0.05, 0.95), torch.rand(2, 1, 3, 4, dtype=dt) + .2],
                     None),
    "conditional_log_binomial": (
        lambda: ConditionalLogBinomial(5, 4, 8), lambda m: as_variant(m, FastConditionalLogBinomial),
        lambda dt: [torch.rand(2, 4, 6, 8, dtype=dt), torch.rand(2, 1, 3, 4, dtype=dt), torch.randn(2, 4, 3, 4, dtype=dt),
                    0.5 + 9 * torch.rand(2, 8, 3, 4, dtype=dt)],
        lambda m, a, b, c, d: m.expected_depth([a, b], c, d)),
}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("case", list(CASES))
def test_variant_equals_reference_module(case, dtype, tol):
    make, to_variant, inputs, call = CASES[case]
    torch.manual_seed(3)
    ref = make().to(dtype)
    fast = to_variant(ref)
    args = inputs(dtype)
    call = call or (lambda m, *a: m(*a))
    flat = lambda out: [t for t in (out if isinstance(out, (tuple, list)) else [out]) if t is not None]  # noqa: E731
    with torch.inference_mode():
        for a, b in zip(flat(call(ref, *args)), flat(call(fast, *args))):
            torch.testing.assert_close(b, a, atol=tol, rtol=tol)
    leaves = [a.clone().requires_grad_() for a in args]
    grads = []
    for module in (ref, fast):
        out = flat(call(module, *leaves))
        loss = sum((o * torch.linspace(0.5, 1.5, o.numel(), dtype=dtype).view_as(o)).sum() for o in out)
        grads.append(torch.autograd.grad(loss, leaves + list(module.parameters()), allow_unused=True))
    for a, b in zip(*grads):
        if a is not None or b is not None:
            torch.testing.assert_close(b, a, atol=tol * 10, rtol=tol * 10)


def test_winograd_conv_equals_the_reference_conv_at_inference():
    torch.manual_seed(4)
    ref = torch.nn.Conv2d(64, 128, 3, padding=1)
    fast = as_variant(ref, WinogradConv2d)
    x = torch.randn(1, 64, 8, 10)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)
        assert fast._winograd_cache is not None and list(fast.state_dict()) == list(ref.state_dict())
    with torch.inference_mode():
        exact = torch.nn.functional.conv2d(x.double(), ref.weight.double(), ref.bias.double(), padding=1)
        torch.testing.assert_close(fast.double()(x.double()), exact, atol=1e-10, rtol=1e-10)  # float64: PyTorch's


def test_stored_configs_with_the_older_speed_keys_still_load():
    from zoe_lightning.config import move_speed_keys

    stored = OmegaConf.to_container(tiny_config())
    speed = stored["model"].pop("speed")
    stored["model"].update(fast_path=False, winograd=speed["winograd"], channels_last=False)
    stored["model"]["head"]["memory_efficient"] = False
    moved = move_speed_keys(stored)
    assert moved["model"]["speed"] == {"fast_path": False, "winograd": True, "channels_last": False,
                                       "memory_efficient": False}
    assert "fast_path" not in moved["model"] and "memory_efficient" not in moved["model"]["head"]
    assert move_speed_keys({"model": {"speed": {"compile": True}}}) == {"model": {"speed": {"compile": True}}}
