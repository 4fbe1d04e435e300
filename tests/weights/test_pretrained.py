"""``model.pretrained``: timm's pretrained backbone weights (timm's download and cache), one clear
line when they cannot be had; ``model.backbone_weights`` from ``.pth`` and ``.safetensors``.

Nothing here touches the network: timm's hub download is replaced by a function that hands out a
local file (the "online" case) or raises the error huggingface_hub raises offline."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY
from zoe_lightning.config import ConfigError, check_init, load_config
from zoe_lightning.errors import UserError

SMALL = TINY + ["model.features=16", "model.head.bin_embedding_dim=16", "model.head.seed_mlp_dim=16",
                "model.head.projector_mlp_dim=16"]


def _one_line(text: str) -> str:
    assert "\n" not in str(text).strip() and "Traceback" not in str(text), text
    return str(text)


def _module(*extra):
    from zoe_lightning.modules.metric import MetricDepthModule

    return MetricDepthModule(load_config("base", SMALL + list(extra)))


def _timm_weights(tmp_path, timm_name):
    """A state dict of timm's ``timm_name`` (seeded, so unlike a fresh random init) saved as the hub's
    ``model.safetensors``."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1234)
    state = {k: v.clone().contiguous() for k, v in timm.create_model(timm_name).state_dict().items()}
    for v in state.values():  # every float tensor moved away from its initial value
        if v.is_floating_point():
            v.add_(0.5)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace timm's hub download; ``fake_hub.files[repo_id] = path`` serves a file, anything else
    raises huggingface_hub's offline error. ``fake_hub.asked`` lists the repos asked for."""
    import timm.models._hub as hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    class Hub:
        files: dict = {}
        asked: list = []

        def download(self, repo_id, filename=None, **kwargs):
            self.asked.append(repo_id)
            if repo_id in self.files and str(filename).endswith(".safetensors"):
                return str(self.files[repo_id])
            raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub and we "
                                          "cannot find the requested files in the local cache.")

    fake = Hub()
    fake.files, fake.asked = {}, []
    monkeypatch.setattr(hub, "hf_hub_download", fake.download)
    return fake


@pytest.mark.parametrize("backbone, key", [("test_vit", "blocks.0.attn.qkv.weight"),
                                           ("test_resnet", "conv1.0.weight")])
def test_pretrained_backbone_holds_timms_downloaded_weights(tmp_path, fake_hub, backbone, key):
    import timm

    repo = timm.models.get_pretrained_cfg(backbone).hf_hub_id
    fake_hub.files[repo], state = _timm_weights(tmp_path, backbone)
    model = _module(f"model.backbone={backbone}", "model.pretrained=true").model
    loaded = model.core.pretrained.model.state_dict()
    assert fake_hub.asked and set(fake_hub.asked) == {repo}
    assert torch.equal(loaded[key], state[key])
    shared = [k for k in loaded if k in state and loaded[k].is_floating_point()]
    assert len(shared) >= 10 and all(torch.equal(loaded[k], state[k]) for k in shared)
    # without the flag the same backbone starts elsewhere, and nothing is downloaded
    fake_hub.asked.clear()
    fresh = _module(f"model.backbone={backbone}").model.core.pretrained.model.state_dict()
    assert not fake_hub.asked and not torch.equal(fresh[key], state[key])


def test_offline_is_one_line_naming_the_backbone_and_the_fixes(fake_hub):
    with pytest.raises(UserError) as info:
        _module("model.pretrained=true")
    line = _one_line(info.value)
    assert "model.backbone=test_vit" in line and "timm/test_vit.r160_in1k" in line
    assert "HF_HUB_OFFLINE=0 and network access" in line and "model.backbone_weights=FILE" in line
    assert set(fake_hub.asked) == {"timm/test_vit.r160_in1k"}


def test_forced_offline_mode_without_a_cache_is_the_same_line(tmp_path, monkeypatch):
    """huggingface_hub's own offline mode (no replacement of the download), with an empty cache."""
    import huggingface_hub
    from huggingface_hub import constants

    if not huggingface_hub.is_offline_mode():
        pytest.skip("HF_HUB_OFFLINE is not set: this test must not reach the network")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError) as info:
        _module("model.pretrained=true")
    line = _one_line(info.value)
    assert "HF_HUB_OFFLINE=1" in line and "model.backbone=test_vit" in line and "model.backbone_weights" in line
    assert not (tmp_path / "hub" / "models--timm--test_vit.r160_in1k" / "blobs").exists()


def test_a_backbone_timm_has_no_weights_for_is_one_line(fake_hub):
    with pytest.raises(UserError, match=r"model.backbone=test_beit.*no pretrained weights") as info:
        _module("model.backbone=test_beit", "model.pretrained=true", "model.img_size=[64,64]")
    _one_line(info.value)
    assert not fake_hub.asked


def test_weights_that_do_not_fit_the_configured_backbone_are_one_line(tmp_path, fake_hub):
    fake_hub.files["timm/test_vit.r160_in1k"], _ = _timm_weights(tmp_path, "test_vit")
    with pytest.raises(UserError, match=r"do not fit.*backbone_kwargs") as info:
        _module("model.pretrained=true", "model.backbone_kwargs={embed_dim: 32}")
    _one_line(info.value)


def test_loading_a_checkpoint_trained_with_pretrained_downloads_nothing(tmp_path, fake_hub):
    from zoe_lightning import load_model
    from zoe_lightning.weights import save_model

    fake_hub.files["timm/test_vit.r160_in1k"], state = _timm_weights(tmp_path, "test_vit")
    module = _module("model.pretrained=true")
    path = save_model(module.model, module.cfg, tmp_path / "run.ckpt")
    fake_hub.files.clear()
    fake_hub.asked.clear()
    model = load_model(path)
    key = "blocks.0.attn.qkv.weight"
    assert not fake_hub.asked and torch.equal(model.core.pretrained.model.state_dict()[key], state[key])


@pytest.mark.parametrize("extra, message", [
    (["model.backbone_weights=w.pth"], r"model.backbone_weights replaces them"),
    (["model.core_checkpoint=c.ckpt"], r"model.core_checkpoint replaces them"),
    (["model.init=scratch"], r"model.init=scratch .* model.pretrained=true"),
])
def test_pretrained_with_other_starting_weights_is_refused(extra, message):
    with pytest.raises(ConfigError, match=message):
        check_init(load_config("base", ["model.pretrained=true", *extra]))


def test_pretrained_is_an_imagenet_start_for_zoed_x():
    check_init(load_config("zoed_x_n", ["model.pretrained=true"]))
    with pytest.raises(ConfigError, match=r"model.pretrained=true .*model.backbone_weights=PATH"):
        check_init(load_config("zoed_x_n"))


def test_safetensors_backbone_weights_of_the_wrong_shape_are_one_line(tmp_path):
    from safetensors.torch import save_file

    from zoe_lightning.models import build_model

    state = build_model(load_config("base", SMALL)).core.pretrained.model.state_dict()
    state = {k: v.clone().contiguous() for k, v in state.items()}
    state["pos_embed"] = torch.zeros(1, 3, 3)
    path = tmp_path / "backbone.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError, match=r"backbone.safetensors.*pos_embed \(1, 3, 3\)") as info:
        _module(f"model.backbone_weights={path}")
    _one_line(info.value)
