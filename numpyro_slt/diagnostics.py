"""Convergence diagnostics of scalar traces, through ArviZ (either line)."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["ess_rhat"]


def ess_rhat(trace: np.ndarray) -> tuple[float, float]:
    """Bulk effective sample size and rank-normalised split R-hat of a (chain, draw) trace.

    Returns NaN for a trace too short to judge (fewer than 4 draws per chain). A single chain is
    judged as its two halves.
    """
    import arviz as az

    trace = np.asarray(trace, dtype=float)
    if trace.ndim != 2:
        raise ValueError(f"trace must have shape (chain, draw), got {trace.shape}")
    if trace.shape[1] < 4 or not np.all(np.isfinite(trace)):
        return float("nan"), float("nan")
    if trace.shape[0] == 1:  # ArviZ wants two chains: judge the two halves of the one chain
        half = trace.shape[1] // 2
        trace = trace[:, : 2 * half].reshape(2, half)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(az.ess(trace)), float(az.rhat(trace))
