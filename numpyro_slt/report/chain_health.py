"""Is a run trustworthy? Per-chain checks of an SGLD run, each with what to change.

For every chain of an SGLD run (a finished ``MCMC``, ``InferenceData``, ``DataTree`` or
``sample_stats`` Dataset) :func:`check_chains` looks at

- **divergence**: a non-finite loss or gradient (``diverged_at >= 0``);
- **MALA acceptance**: the mean of ``mala_accept``; below ``mala_min`` the step size ε is too large
  for the curvature (λ̂ is biased upwards), above ``mala_max`` the chain barely moves (ε too small);
- **drift**: the z-score of the change in the LLC trace between the first and the last third,
  z = (m₃ − m₁) / √(s₁²/ESS₁ + s₃²/ESS₃); |z| > ``drift_z`` means the loss is still moving
  (burn-in too short, or the chain is leaving w*);
- **escape**: the mean ``distance`` from w* in the last third over the first third; above
  ``escape_ratio`` the localization γ is too weak to hold the chain;

and, across chains, the R-hat and bulk ESS of the LLC trace (R-hat > ``rhat_max`` or
ESS < ``ess_min`` flag the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .._arviz import sample_stats
from ..diagnostics import ess_rhat
from ..estimators.llc import llc

__all__ = ["ChainReport", "check_chains"]


@dataclass
class ChainReport:
    """Per-chain figures (``table``), run-level figures and the problems found, with advice."""

    table: xr.Dataset
    rhat: float
    ess: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"LLC trace: R-hat {self.rhat:.3f}, bulk ESS {self.ess:.0f}"]
        for chain in self.table.chain.values:
            row = self.table.sel(chain=chain)
            lines.append(
                f"chain {chain}: llc {float(row.llc):.4g}, mala {float(row.mala_accept):.3f}, "
                f"drift z {float(row.drift_z):+.1f}, distance ratio {float(row.escape):.2f}"
            )
        lines += ["OK: no problem found"] if self.ok else [f"PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


def check_chains(
    source: Any,
    *,
    rhat_max: float = 1.1,
    ess_min: float = 100.0,
    mala_min: float = 0.8,
    mala_max: float = 0.999,
    drift_z: float = 4.0,
    escape_ratio: float = 2.0,
) -> ChainReport:
    """Check every chain of an SGLD run and say what to change. See the module docstring."""
    stats = sample_stats(source)
    problems: list[str] = []
    diverged_at = np.asarray(stats["diverged_at"])[:, -1] if "diverged_at" in stats else None
    if diverged_at is not None and np.any(diverged_at >= 0):
        bad = ", ".join(f"chain {c} at step {diverged_at[c]}" for c in np.flatnonzero(diverged_at
                                                                                      >= 0))
        problems.append(f"diverged ({bad}): reduce step_size, or raise gamma")
        result = llc(stats, on_divergence="drop") if not np.all(diverged_at >= 0) else None
    else:
        result = llc(stats)
    if result is None:
        return ChainReport(xr.Dataset(), float("nan"), float("nan"), problems)
    chains = result.chain.values
    trace = result.llc_trace.values
    thirds = max(trace.shape[1] // 3, 2)
    first, last = trace[:, :thirds], trace[:, -thirds:]
    drift = np.array([_drift(a, b) for a, b in zip(first, last, strict=True)])
    mala = _per_chain_mean(stats, "mala_accept", chains)
    distance = np.asarray(stats["distance"], dtype=float)[chains] if "distance" in stats else None
    escape = (distance[:, -thirds:].mean(1) / np.maximum(distance[:, :thirds].mean(1), 1e-300)
              if distance is not None else np.full(len(chains), np.nan))
    table = xr.Dataset(
        {"llc": ("chain", result.llc_per_chain.values), "mala_accept": ("chain", mala),
         "drift_z": ("chain", drift), "escape": ("chain", escape)},
        coords={"chain": chains},
    )
    for c, value in zip(chains, mala, strict=True):
        if value < mala_min:
            problems.append(f"chain {c}: MALA acceptance {value:.2f} < {mala_min}: the step size "
                            "is too large for the curvature (λ̂ is biased up); reduce step_size")
        elif value > mala_max:
            problems.append(f"chain {c}: MALA acceptance {value:.4f} > {mala_max}: the chain "
                            "barely moves; raise step_size or run longer")
    for c, z in zip(chains, drift, strict=True):
        if abs(z) > drift_z:
            problems.append(f"chain {c}: the LLC trace still drifts (z = {z:+.1f} between the "
                            "first and last third): lengthen num_warmup or pass burn_in, or raise "
                            "gamma if the chain walks away from w*")
    for c, ratio in zip(chains, escape, strict=True):
        if ratio > escape_ratio:
            problems.append(f"chain {c}: the distance from w* grew {ratio:.1f}-fold: the "
                            "localization is too weak; raise gamma (or lower nbeta)")
    rhat, ess = float(result.loss_rhat), float(result.loss_ess)
    if rhat > rhat_max:
        problems.append(f"R-hat {rhat:.3f} > {rhat_max}: chains disagree; run longer, add burn-in "
                        "or lower step_size")
    if ess < ess_min:
        problems.append(f"bulk ESS {ess:.0f} < {ess_min:.0f}: too few effective draws; run longer "
                        "or use control_variate=True")
    return ChainReport(table, rhat, ess, problems)


def _drift(first: np.ndarray, last: np.ndarray) -> float:
    ess_first, _ = ess_rhat(first[None, :])
    ess_last, _ = ess_rhat(last[None, :])
    variance = (first.var(ddof=1) / max(ess_first, 1.0)) + (last.var(ddof=1) / max(ess_last, 1.0))
    if not np.isfinite(variance) or variance <= 0:
        return 0.0
    return float((last.mean() - first.mean()) / np.sqrt(variance))


def _per_chain_mean(stats: xr.Dataset, name: str, chains: np.ndarray) -> np.ndarray:
    if name not in stats:
        return np.full(len(chains), np.nan)
    return np.asarray(stats[name], dtype=float)[chains].mean(axis=1)
