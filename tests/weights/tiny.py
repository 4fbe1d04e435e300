"""Tiny source models for the weight-format tests: a randomised model and its config."""

import torch

import zoe_lightning as zl

TINY_BEIT = ["model.backbone=test_beit", "model.img_size=[64,64]"]
E = 16  # bin embedding width of the tiny heads (the release uses 128)
SMALL = ["model.features=32", f"model.head.bin_embedding_dim={E}", "model.head.seed_mlp_dim=16",
         "model.head.projector_mlp_dim=16", "model.router.ffn_dim=64"]
X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
N_BLOCKS = 4  # test_beit depth
TOKENS = 4 * 4 + 1  # 64x64 input, 16px patches, + class token


def randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_model(preset, *extra):
    cfg = zl.load_config(preset, TINY_BEIT + SMALL + list(extra))
    return randomise(zl.build_model(cfg)), cfg


def metric_depth(model, x=X):
    with torch.no_grad():
        return model(x).metric_depth
