"""Shared helpers of the speed-variant tests: model pairs with identical weights, outputs and
gradients, saved-tensor accounting, and a module turned into one of its accel variants."""

import copy
from pathlib import Path

import torch

from ..conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.img_size=[32,48]", "model.features=32", "model.head.bin_embedding_dim=16",
         "model.head.seed_mlp_dim=16", "model.head.projector_mlp_dim=16"]
BEIT = ["model.backbone=test_beit", *SMALL]


def _pair(*overrides, base=BEIT):
    """Two models with identical weights: the defaults and the defaults + ``overrides``."""
    torch.manual_seed(0)
    from zoe_lightning.models import build_model

    ref = build_model(tiny_config(*base))
    other = build_model(tiny_config(*base, *overrides))
    other.load_state_dict(ref.state_dict())
    return ref, other


def _forward_and_grads(model, image):
    out = model(image, domain=torch.zeros(image.shape[0], dtype=torch.long))
    loss = (out.metric_depth * torch.linspace(0.5, 1.5, out.metric_depth.numel()).view_as(out.metric_depth)).sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    return out.metric_depth.detach(), grads


def _assert_same(ref, other, image, atol=1e-4, rtol=1e-4):
    d1, g1 = _forward_and_grads(ref, image)
    d2, g2 = _forward_and_grads(other, image)
    torch.testing.assert_close(d2, d1, atol=atol, rtol=rtol)
    for a, b in zip(g1, g2):
        if a is not None or b is not None:
            torch.testing.assert_close(b, a, atol=atol, rtol=rtol)


class SavedBytes:
    """Bytes of the tensors autograd saves for backward (unique storages) inside the context."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def __enter__(self):
        self.ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)

    @property
    def total(self):
        return sum(self.storages.values())


def as_variant(module, cls, share=False, **attrs):
    """``module`` (a copy unless ``share``: then the same parameters) as the accel class ``cls``."""
    out = module if share else copy.deepcopy(module)
    out.__class__ = cls
    for name, value in attrs.items():
        setattr(out, name, value)
    return out
