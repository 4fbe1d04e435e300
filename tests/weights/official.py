"""Files of the official ZoeDepth trainer, synthesised from this project's models.

The renaming rules are written out here from the DOCUMENTED layout (facts §7.2, MiDaS's DPT core
under ``core.core.``, timm 0.6 names), independently of zoe_lightning.weights; the loader must
undo them exactly.
"""

import re

import torch

_DOWNSAMPLE = re.compile(r"\.layers\.(\d+)\.downsample\.")


def head_to_official(state, domains):
    """Our head / router keys -> the trainer's (single head: no domain level; NK: router at the top)."""
    single = len(domains) == 1
    out = {}
    for k, v in state.items():
        if k.startswith("core."):
            out["core.core." + k[len("core."):]] = v
        elif k.startswith("router."):  # NK: patch_transformer.*, mlp_classifier.* at the top level
            out[k[len("router."):]] = v
        elif single and k.startswith(f"head.seed_bin_regressors.{domains[0]}."):
            out["seed_bin_regressor." + k.split(".", 3)[3]] = v
        elif single and k.startswith(f"head.attractors.{domains[0]}."):
            out["attractors." + k.split(".", 3)[3]] = v
        elif single and k.startswith(f"head.conditional_log_binomial.{domains[0]}."):
            out["conditional_log_binomial." + k.split(".", 3)[3]] = v
        else:
            assert k.startswith("head."), k
            out[k[len("head."):]] = v
    return out


def timm06_backbone(state, like):
    """Today's timm names -> timm 0.6's, with the buffers timm 0.6 stored (``like`` makes them).

    BEiT: a ``relative_position_index`` per block, (tokens x tokens) at the pretraining grid.
    Swin / SwinV2: patch merging at the END of stage i (today: the start of stage i+1), classifier
    ``head`` (today ``head.fc``), and the index / coords-table / mask buffers of each block.
    """
    out = {}
    for k, v in state.items():
        if ".pretrained.model.layers." in k:
            k = _DOWNSAMPLE.sub(lambda m: f".layers.{int(m.group(1)) - 1}.downsample.", k)
        k = k.replace(".pretrained.model.head.fc.", ".pretrained.model.head.")
        out[k] = v
        if k.endswith(".attn.relative_position_bias_table") and ".blocks." in k and ".layers." not in k:
            grid = round(((v.shape[0] - 3) ** 0.5 + 1) / 2)  # (2g-1)^2 + 3 rows
            tokens = grid * grid + 1
            out[k.replace("relative_position_bias_table", "relative_position_index")] = like(tokens, tokens)
        if ".layers." in k and k.endswith(".attn.qkv.weight"):
            block = k[: -len(".attn.qkv.weight")]
            out[block + ".attn.relative_position_index"] = like(4, 4)
            out[block + ".attn_mask"] = like(1, 4, 4)
            if block + ".attn.logit_scale" in state:  # SwinV2
                out[block + ".attn.relative_coords_table"] = like(1, 3, 3, 2)
    return out


def log_binomial_buffers(domains, n_bins):
    single = len(domains) == 1
    out = {}
    for d in domains:
        prefix = "conditional_log_binomial." + ("" if single else f"{d}.") + "log_binomial_transform."
        out[prefix + "k_idx"] = torch.arange(n_bins).view(1, -1, 1, 1)
        out[prefix + "K_minus_1"] = torch.tensor([[[[n_bins - 1.0]]]])
    return out


def to_official(state, domains, n_bins=64, like=None):
    """Our state dict -> the file the official trainer writes (timm 0.6, with its buffers)."""
    like = like or (lambda *shape: torch.zeros(*shape, dtype=torch.long))
    out = timm06_backbone(head_to_official(state, domains), like)
    out.update(log_binomial_buffers(domains, n_bins))
    return out
