"""Run dashboard: live plots, distributions, samples and episodes of reasonrl runs (``reasonrl dashboard``)."""

from reasonrl.dashboard.server import DashboardError, DashboardServer, export_static

__all__ = ["DashboardServer", "DashboardError", "export_static"]
