"""Convergence diagnostics of scalar traces, through ArviZ (either line)."""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["ess_rhat", "ess_rhat_columns"]


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


def ess_rhat_columns(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ess_rhat` of every column of a (chain, draw, k) array: two arrays of length k."""
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 3:
        raise ValueError(f"draws must have shape (chain, draw, k), got {draws.shape}")
    pairs = [ess_rhat(draws[:, :, j]) for j in range(draws.shape[2])]
    return (np.array([p[0] for p in pairs], dtype=float),
            np.array([p[1] for p in pairs], dtype=float))
