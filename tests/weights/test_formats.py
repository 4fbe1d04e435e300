"""The format registry: each format claims its own files and no other format's (matches()), and
a file no format claims is one clear error naming the file."""

import pytest
import torch

from zoe_lightning.errors import UserError
from zoe_lightning.weights import FORMATS, Checkpoint, detect, formats

T = torch.zeros(1)
CORE = {"core.pretrained.model.cls_token": T, "core.scratch.layer1_rn.weight": T}
HF_STATE = {"backbone.embeddings.cls_token": T, "neck.convs.0.weight": T, "metric_head.conv2.weight": T}

# One sample of every layout each format reads (keys as documented in facts §7 / the format modules).
SAMPLES = {
    "native": [
        {"state_dict": {"model." + k: v for k, v in CORE.items()}, "hyper_parameters": {"cfg": {}}},  # Lightning
        {"zoe_lightning": "0.1.0", "cfg": {}, "state_dict": dict(CORE)},  # save_model
        dict(CORE),  # a bare state dict
        {"module." + k: v for k, v in CORE.items()},  # DDP-wrapped
        {"state_dict": {"model." + k: v for k, v in CORE.items()}},  # a Lightning state without its cfg
    ],
    "zoedepth": [
        {"model": {"core.core.pretrained.model.cls_token": T, "seed_bin_regressor._net.0.weight": T}},
        {"core.core.scratch.layer1_rn.weight": T, "patch_transformer.embedding_convPxP.weight": T},
    ],
    "midas": [
        {"pretrained.model.cls_token": T, "scratch.layer1_rn.weight": T},
        {"state_dict": {"pretrained.model.pos_embed": T, "scratch.output_conv.0.weight": T}},
    ],
    "hf": [dict(HF_STATE)],  # HF key layout without its config.json (matched, then refused by config())
}
HF_CONFIG = {"model_type": "zoedepth"}


def _all_samples():
    for name, payloads in SAMPLES.items():
        for i, payload in enumerate(payloads):
            yield pytest.param(name, Checkpoint(payload, None, f"{name}{i}.pt"), id=f"{name}{i}")
    # with an HF config.json beside it, a weights file is HF's whatever its keys say
    for i, payload in enumerate([HF_STATE, CORE, SAMPLES["midas"][0]]):
        yield pytest.param("hf", Checkpoint(dict(payload), dict(HF_CONFIG), "folder"), id=f"hf-folder{i}")


@pytest.mark.parametrize("owner,ckpt", list(_all_samples()))
def test_exactly_one_format_claims_each_layout(owner, ckpt):
    claims = [fmt.NAME for fmt in FORMATS if fmt.matches(ckpt)]
    assert claims == [owner]
    assert detect(ckpt).NAME == owner


def test_registry_order_and_interface():
    assert [f.NAME for f in FORMATS] == ["native", "depth_anything", "zoedepth", "midas", "hf"]
    for fmt in FORMATS:
        for name in ("matches", "config", "state_dict", "may_be_missing"):
            assert callable(getattr(fmt, name)), (fmt.NAME, name)


def test_native_kinds():
    kinds = [formats.native.kind(Checkpoint(p)) for p in SAMPLES["native"]]
    assert kinds == ["lightning", "zoe_lightning", "plain", "plain", "plain"]


@pytest.mark.parametrize("payload,match", [
    ({"epoch": 3, "optimizer_states": []}, "holds no state dict"),
    ([torch.zeros(1)], "holds no state dict"),
    ({"encoder.layer.0.weight": T, "decoder.weight": T}, r"unrecognised checkpoint layout \(first keys: encoder"),
])
def test_unclaimed_files_are_one_line_errors_naming_the_file(payload, match):
    with pytest.raises(UserError, match=match) as info:
        detect(Checkpoint(payload, None, "/data/odd.pt"))
    assert str(info.value).startswith("/data/odd.pt: ") and "\n" not in str(info.value)


def test_hf_weights_without_config_json_are_refused_when_configuring():
    ckpt = Checkpoint(dict(HF_STATE), None, "w.pt")
    with pytest.raises(UserError, match="w.pt: .*config.json"):
        formats.hf.config(ckpt)
    # the DPT core needs no configuration
    core = formats.hf.state_dict(ckpt)
    assert set(core) == {"core.pretrained.model.cls_token", "core.scratch.layer1_rn.weight"}


def test_core_keys_without_a_config():
    # every format names the DPT core's keys without a configuration (core_state_from_file)
    assert set(formats.zoedepth.state_dict(Checkpoint(SAMPLES["zoedepth"][0]))) == {"core.pretrained.model.cls_token"}
    assert set(formats.midas.state_dict(Checkpoint(SAMPLES["midas"][0]))) == {
        "core.pretrained.model.cls_token", "core.scratch.layer1_rn.weight"}
    assert set(formats.native.state_dict(Checkpoint(SAMPLES["native"][0]))) == set(CORE)
