"""Strict loading: every key of the model filled, no key left over, every shape equal.

The only exceptions are named here: buffers that the original files store and this
implementation recomputes (dropped by the format readers), and the timm backbone weights that no
forward pass reads (foreign layouts may omit them; they keep their initialisation).
"""

from __future__ import annotations

import re
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn

from ..errors import UserError

__all__ = ["RECOMPUTED", "UNUSED_BACKBONE", "load_strict", "nothing_may_be_missing"]

StateDict = Dict[str, torch.Tensor]

# Weights of the timm backbone that no forward pass of the encoder reads (we tap intermediate blocks).
UNUSED_BACKBONE = re.compile(r"^core\.pretrained\.model\.(head|fc_norm|norm|head_drop)\.")
# Buffers the original stored but this implementation recomputes.
RECOMPUTED = re.compile(r"(relative_position_index|relative_coords_table|attn_mask)$")


def nothing_may_be_missing(key: str) -> bool:
    return False


def _listing(items: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(items[:n])
    return f"{shown}" + (f", ... ({len(items)} in all)" if len(items) > n else f" ({len(items)})")


def load_strict(model: nn.Module, state: StateDict, source: str,
                may_be_missing: Callable[[str], bool] = nothing_may_be_missing) -> None:
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
