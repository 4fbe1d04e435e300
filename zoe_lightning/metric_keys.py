"""Names of the logged validation metrics, their direction and the checkpoint monitor.

One key per (domain, metric): ``val/<domain>/<metric>`` (metric stage), plus a headline
``val/<metric>`` (mean over the domains seen) only when the model has several domains. The
relative stage has no domains: ``val/rel`` and ``val/a1``. Kept free of heavy imports: ``compare``
and the sweep tools read it too.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

__all__ = ["DEPTH_METRICS", "HIGHER_IS_BETTER", "domain_key", "headline_keys", "validation_keys", "monitor_key",
           "goal", "monitor_for"]

# the per-domain validation metrics of the metric stage (zoe_lightning.evaluation.metrics.DepthMetrics)
DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log_10", "silog", "a1", "a2", "a3")
# threshold accuracies delta1-3 and the router's accuracy; every other metric is an error
HIGHER_IS_BETTER = frozenset({"a1", "a2", "a3", "router_accuracy"})


def domain_key(domain: str, metric: str) -> str:
    return f"val/{domain}/{metric}"


def headline_keys(domains: Sequence[str]) -> List[str]:
    """``val/<metric>`` means over the domains: only for several domains (one domain has its own keys)."""
    return [f"val/{m}" for m in DEPTH_METRICS] if len(domains) > 1 else []


def validation_keys(stage: str, domains: Sequence[str]) -> Dict[str, bool]:
    """Every validation metric key of a run -> True when higher is better."""
    if stage == "relative":
        return {"val/rel": False, "val/a1": True}
    keys = [domain_key(d, m) for d in domains for m in DEPTH_METRICS] + headline_keys(domains)
    keys.append("val/silog_loss")  # the training loss on the validation batches
    if len(domains) > 1:
        keys.append("val/router_accuracy")  # callbacks.RouterStatsCallback, when labels were seen
    return {k: k.rsplit("/", 1)[1] in HIGHER_IS_BETTER for k in keys}


def monitor_key(stage: str, domains: Sequence[str]) -> str:
    """The key that picks ``best.ckpt``: validation REL (the headline mean for several domains)."""
    if stage == "relative":
        return "val/rel"
    return domain_key(domains[0], "abs_rel") if len(domains) == 1 else "val/abs_rel"


def monitor_for(cfg) -> str:
    """:func:`monitor_key` of a run config."""
    return monitor_key(str(cfg.stage), [b.name for b in cfg.model.bins])


def goal(key: str) -> str:
    """``"max"`` for an accuracy (delta1-3, the router's), else ``"min"``."""
    return "max" if key.rsplit("/", 1)[-1] in HIGHER_IS_BETTER else "min"
