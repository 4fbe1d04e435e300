"""Batch collation of project sample dicts that refuses to stack images of different sizes
with a clear message (instead of torch's generic stack error)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

from torch.utils.data import default_collate

__all__ = ["collate_samples"]


def collate_samples(samples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """``default_collate`` of the keys common to every sample; a size mismatch of ``image``,
    ``depth`` or ``valid`` raises ValueError naming the datasets and sizes involved."""
    if not samples:
        raise ValueError("collate_samples: empty batch")
    keys = [k for k in samples[0] if all(k in s for s in samples)]
    for name in ("image", "depth", "valid"):
        if name not in keys:
            continue
        shapes = {tuple(s[name].shape) for s in samples}
        if len(shapes) > 1:
            seen: Dict[tuple, List[str]] = {}
            for s in samples:
                seen.setdefault(tuple(s[name].shape), []).append(str(s.get("dataset", "?")))
            detail = "; ".join(f"{list(k)} from {sorted(set(v))}" for k, v in seen.items())
            raise ValueError(
                f"cannot batch '{name}' tensors of different sizes ({detail}): set data.image_size with "
                f"data.resize=squash or pad, or data.batching=per_dataset"
            )
    return default_collate([{k: s[k] for k in keys} for s in samples])
