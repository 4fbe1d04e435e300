import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY = ["model.backbone=test_vit", "model.img_size=[64,96]"]
NK_BINS = "model.bins=[{name: nyu, n_bins: 16, max_depth: 10},{name: kitti, n_bins: 16, max_depth: 80}]"


@pytest.fixture
def tiny_overrides():
    return list(TINY)


def tiny_config(*overrides, experiment="base"):
    from zoe_lightning import load_config

    return load_config(experiment, TINY + list(overrides))
