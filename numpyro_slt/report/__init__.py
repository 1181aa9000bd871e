"""Reports on finished runs: chain health today; plots and the HTML report later."""

from .chain_health import ChainReport, check_chains

__all__ = ["ChainReport", "check_chains"]
