"""Lightning callbacks: depth panels, bin-centre plots and router statistics (observe only); the run
guards (divergence, finite checkpoints, signals) and the data probe."""

from .bin_centers import BinCentersCallback
from .depth_panels import DepthPanelCallback
from .data_probe import DataProbe
from .router_stats import RouterStatsCallback
from .run_guard import DivergenceGuard, GuardedCheckpoint, SignalGuard

__all__ = ["DepthPanelCallback", "BinCentersCallback", "RouterStatsCallback", "DataProbe", "DivergenceGuard",
           "GuardedCheckpoint", "SignalGuard"]
