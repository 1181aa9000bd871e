"""Reports on finished runs: chain health (imported here; no matplotlib), the plots and the HTML
report of a study (``report.plots``, ``report.study_report``; they import matplotlib)."""

from .chain_health import ChainReport, check_chains

__all__ = ["ChainReport", "check_chains"]
