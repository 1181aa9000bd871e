"""The widely applicable Bayesian information criterion (Watanabe 2013),

    WBIC = E_w[n·L_n(w)]  under the posterior tempered at β = 1/log n,

estimated from the same loss statistics as :func:`numpyro_slt.llc`: for a run at nβ = n/log n,
E_w[L_n] = (mean over post-burn-in steps of L_B − L_n(w*)) + L_n(w*), per chain, so that
WBIC_c = n·L_n(w*) + λ̂_c·log n. It estimates the free energy −log Z_n of the (localized)
posterior at β = 1: F_n = n·L_n(w_0) + λ·log n + O_p(√log n) for a true parameter w_0.

Reference: Watanabe, S. (2013), *A widely applicable Bayesian information criterion*, JMLR 14.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import xarray as xr

from .._arviz import sample_stats
from .llc import llc

__all__ = ["wbic"]


def wbic(
    source: Any,
    *,
    n: int | None = None,
    burn_in: int = 0,
    on_divergence: Literal["raise", "drop"] = "raise",
    rtol: float = 1e-3,
) -> xr.Dataset:
    """Estimate WBIC = E_w[n·L_n(w)] at β = 1/log n from an SGLD run sampled at nβ = n/log n.

    :param source: what :func:`numpyro_slt.llc` accepts: a finished ``MCMC`` with the
        :class:`~numpyro_slt.SGLD` kernel, a ``CheckpointedRun``, its ArviZ data
        (``InferenceData`` or ``DataTree``) or the ``sample_stats`` Dataset.
    :param n: the number of observations; read from the run (the kernel records it as
        ``num_observations``) when not given. Needed for runs that did not record it (older
        versions, or observed sites counting different numbers without ``temper(..., n=)``).
    :param burn_in: kept draws to discard at the start of every chain, as for ``llc``.
    :param on_divergence: as for ``llc``.
    :param rtol: how closely the run's nβ must match n/log n (relative); at 10⁻³ the WBIC moves
        by at most about 0.1% of its λ·log n part (E_β[n·L_n] − n·L_n(w*) ≈ λ/β).
    :return: a Dataset with ``wbic_mean``, ``wbic_std`` (across chains, ddof = 1),
        ``wbic_per_chain`` (chain), ``wbic_trace`` (chain, draw: n times the mean L_B over the
        steps since the previous kept draw), ``llc_mean``, ``init_loss`` (L_n(w*)), ``nbeta``
        and ``n``.
    :raises ValueError: when the run's nβ is not n/log n (the message gives that number), or n
        is unknown.
    """
    stats = sample_stats(source)
    n = _observations(stats, n)
    result = llc(stats, burn_in=burn_in, on_divergence=on_divergence)
    nbeta = float(result.nbeta)
    needed = n / math.log(n)
    if not abs(nbeta - needed) <= rtol * needed:
        raise ValueError(
            f"WBIC needs the posterior tempered at β = 1/log n, i.e. nβ = n/log n = {needed:.6g} "
            f"for n = {n:g}; this run has nβ = {nbeta:.6g}. Sample with "
            f"slt.temper(model, nbeta=n / math.log(n)). At another nβ, n·L_n(w*) + λ̂·log n "
            "(λ̂ from slt.llc) is WBIC's asymptotic form, not WBIC itself"
        )
    init_loss = float(result.init_loss)
    # n·E[L_n] with E[L_n] = llc/nβ + L_n(w*); n/nβ = log n up to rtol
    per_chain = n * (result.llc_per_chain.values / nbeta + init_loss)
    trace = n * result.loss_trace.values
    std = float(np.std(per_chain, ddof=1)) if per_chain.size > 1 else float("nan")
    return xr.Dataset(
        {
            "wbic_mean": float(np.mean(per_chain)),
            "wbic_std": std,
            "wbic_per_chain": ("chain", per_chain),
            "wbic_trace": (("chain", "draw"), trace),
            "llc_mean": float(result.llc_mean),
            "init_loss": init_loss,
            "nbeta": nbeta,
            "n": float(n),
        },
        coords=result.coords,
        attrs={
            "estimator": "wbic = n * (mean over post-burn-in steps of L_B - L_n(w*) + L_n(w*)) "
                         "at nbeta = n / log n",
            "burn_in_draws": burn_in,
            "steps_per_chain": result.attrs["steps_per_chain"],
        },
    )


def _observations(stats: xr.Dataset, n: int | None) -> float:
    """n: given, or the one finite value the run recorded in ``num_observations``."""
    recorded = None
    if "num_observations" in stats:
        values = np.asarray(stats["num_observations"], dtype=np.float64)
        values = np.unique(values[np.isfinite(values)])
        if values.size > 1:
            raise ValueError(f"num_observations differs between draws or chains "
                             f"({values[:4]}...): the data mixes runs; estimate each separately")
        recorded = float(values[0]) if values.size else None
    if n is None:
        if recorded is None:
            raise ValueError(
                "the run does not record n (the observations L_n averages over): pass "
                "wbic(source, n=...)"
            )
        return recorded
    if isinstance(n, bool) or not (isinstance(n, int | float | np.integer | np.floating)
                                   and n > 1 and math.isfinite(n)):
        raise ValueError(f"n must be a number of observations > 1, got {n!r}")
    if recorded is not None and not math.isclose(float(n), recorded, rel_tol=1e-6):
        raise ValueError(f"n = {n!r} but the run records n = {recorded:g} observations; "
                         "leave n out or pass the recorded number")
    return float(n)
