"""Observe-only Lightning callbacks: depth panels, bin-centre plots and router statistics."""

from .bin_centers import BinCentersCallback
from .depth_panels import DepthPanelCallback
from .router_stats import RouterStatsCallback

__all__ = ["DepthPanelCallback", "BinCentersCallback", "RouterStatsCallback"]
