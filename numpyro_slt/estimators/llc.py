"""The local learning coefficient, λ̂(w*) = nβ·( E_w[L_n(w)] − L_n(w*) ).

E_w[L_n] is estimated from the minibatch losses of *every* post-burn-in SGLD step, not only the
kept draws: the kernel keeps in its state the running mean m_k of L_B − L_n(w*) and its count
c_k, so that for kept draws k the mean over the steps between draw k−1 and draw k is

    (c_k·m_k − c_{k−1}·m_{k−1}) / (c_k − c_{k−1}),

and the mean over all steps after draw b is (c_K·m_K − c_b·m_b) / (c_K − c_b). Per chain,
λ̂_c = nβ·(that mean); the result reports their mean and standard deviation across chains.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import numpy as np
import xarray as xr

from .._arviz import sample_stats
from ..diagnostics import ess_rhat

__all__ = ["estimate_llc", "llc"]

_REQUIRED = ("mean_excess_loss", "mean_count", "init_loss", "nbeta")


def llc(
    source: Any,
    *,
    burn_in: int = 0,
    on_divergence: Literal["raise", "drop"] = "raise",
) -> xr.Dataset:
    """Estimate the LLC from an SGLD run.

    :param source: a finished ``numpyro.infer.MCMC`` with the :class:`~numpyro_slt.SGLD` kernel,
        its ``az.from_numpyro`` conversion (``InferenceData`` or ``DataTree``), or the
        ``sample_stats`` Dataset.
    :param burn_in: kept draws to discard at the start of every chain, on top of ``num_warmup``
        (the steps before and up to the last discarded draw leave the estimate).
    :param on_divergence: ``"raise"`` (default) stops at a chain whose loss or gradient became NaN
        or infinite, naming chain and step; ``"drop"`` leaves such chains out with a warning.
    :return: a Dataset with ``llc_mean``, ``llc_std`` (across chains, ddof = 1),
        ``llc_per_chain`` (chain), ``llc_trace`` and ``loss_trace`` (chain, draw: nβ·(mean excess
        loss) and mean L_B over the steps since the previous kept draw), ``loss_ess``,
        ``loss_rhat`` (of ``llc_trace``), ``init_loss`` (L_n(w*)) and ``nbeta``.
    """
    stats = sample_stats(source)
    missing = [name for name in _REQUIRED if name not in stats]
    if missing:
        raise ValueError(
            f"source lacks the SGLD statistics {missing}: sample with numpyro_slt.SGLD and "
            "convert with az.from_numpyro(mcmc) (SGLD puts them in sample_stats)"
        )
    if on_divergence not in ("raise", "drop"):
        raise ValueError(f"on_divergence must be 'raise' or 'drop', got {on_divergence!r}")
    mean = np.asarray(stats["mean_excess_loss"], dtype=np.float64)
    count = np.asarray(stats["mean_count"], dtype=np.float64)
    num_chains, num_draws = mean.shape
    if not isinstance(burn_in, int | np.integer) or not 0 <= burn_in < num_draws:
        raise ValueError(
            f"burn_in must be an integer in [0, {num_draws - 1}] (kept draws per chain), "
            f"got {burn_in!r}"
        )
    nbeta = _constant(stats, "nbeta")
    init_loss = _constant(stats, "init_loss")
    if np.any(count <= 0):
        raise ValueError(
            "some kept draws average no post-burn-in steps (mean_count = 0); were they collected "
            "during warmup?"
        )

    chains = _usable_chains(stats, mean, on_divergence)
    total = count * mean
    previous_total = np.concatenate([np.zeros((num_chains, 1)), total[:, :-1]], axis=1)
    previous_count = np.concatenate([np.zeros((num_chains, 1)), count[:, :-1]], axis=1)
    window_mean = (total - previous_total) / (count - previous_count)
    start_total = previous_total[:, burn_in]
    start_count = previous_count[:, burn_in]
    chain_mean = (total[:, -1] - start_total) / (count[:, -1] - start_count)

    per_chain = nbeta * chain_mean[chains]
    llc_trace = nbeta * window_mean[chains, burn_in:]
    if per_chain.size > 1:
        llc_std = float(np.std(per_chain, ddof=1))
    else:
        warnings.warn("one chain: llc_std is undefined (NaN); run num_chains >= 2", stacklevel=2)
        llc_std = float("nan")
    ess, rhat = ess_rhat(llc_trace)
    chain_ids = np.asarray(stats["chain"])[chains] if "chain" in stats.coords else chains
    draw_ids = np.arange(burn_in, num_draws)
    coords = {"chain": chain_ids, "draw": draw_ids}
    return xr.Dataset(
        {
            "llc_mean": float(np.mean(per_chain)),
            "llc_std": llc_std,
            "llc_per_chain": ("chain", per_chain),
            "llc_trace": (("chain", "draw"), llc_trace),
            "loss_trace": (("chain", "draw"), window_mean[chains, burn_in:] + init_loss),
            "loss_ess": ess,
            "loss_rhat": rhat,
            "init_loss": init_loss,
            "nbeta": nbeta,
        },
        coords=coords,
        attrs={
            "estimator": "llc = nbeta * (mean over post-burn-in steps of L_B - L_n(w*))",
            "burn_in_draws": burn_in,
            "steps_per_chain": int(count[0, -1] - start_count[0]),
        },
    )


def _constant(stats: xr.Dataset, name: str) -> float:
    values = np.asarray(stats[name], dtype=np.float64)
    if not np.all(values == values.flat[0]):
        raise ValueError(
            f"{name} differs between draws or chains ({np.unique(values)[:4]}...): the data mixes "
            "runs with different settings; estimate each run separately"
        )
    return float(values.flat[0])


def _usable_chains(stats: xr.Dataset, mean: np.ndarray, on_divergence: str) -> np.ndarray:
    """Indices of the chains that never diverged (NaN, Inf or an exploded loss)."""
    diverged_at = (
        np.asarray(stats["diverged_at"])[:, -1] if "diverged_at" in stats
        else np.full(mean.shape[0], -1)
    )
    bad = (diverged_at >= 0) | ~np.all(np.isfinite(mean), axis=1)
    if not bad.any():
        return np.arange(mean.shape[0])
    report = ", ".join(
        f"chain {c} at step {int(diverged_at[c]) if diverged_at[c] >= 0 else 'unknown'}"
        for c in np.flatnonzero(bad)
    )
    advice = "reduce step_size, or raise gamma, or check the data and the center"
    if on_divergence == "raise" or bad.all():
        raise FloatingPointError(f"SGLD diverged (NaN, Inf or an exploding loss): {report}; "
                                 f"{advice}")
    warnings.warn(f"dropping diverged chains: {report}; {advice}", stacklevel=3)
    return np.flatnonzero(~bad)


def estimate_llc(
    model: Callable,
    center: Mapping[str, Any],
    *model_args: Any,
    nbeta: float,
    gamma: float,
    step_size: float,
    num_samples: int = 1_000,
    num_warmup: int | None = None,
    num_chains: int = 4,
    chain_method: str = "vectorized",
    thinning: int = 1,
    control_variate: bool = True,
    preconditioner: Any = None,
    seed: int = 0,
    progress_bar: bool = True,
    **model_kwargs: Any,
) -> xr.Dataset:
    """One call from a model and its trained parameters to λ̂, like devinterp's
    ``estimate_learning_coeff``: ``temper`` → ``localize`` → ``SGLD`` in ``MCMC`` → :func:`llc`.

    :param model: a NumPyro model with an observed site (subsample its data plate for minibatches).
    :param center: the trained parameters w*, a dict keyed by latent site.
    :param model_args: the model's positional arguments (the data); ``model_kwargs`` likewise.
    :param num_warmup: burn-in steps; defaults to ``num_samples // 5``.
    :return: the Dataset of :func:`llc`, with the run's settings in ``attrs``.
    """
    from numpyro.infer import MCMC

    from ..handlers import localize, temper
    from ..kernels import SGLD
    from ..utils import reuse_loop_compilation

    posterior = localize(temper(model, nbeta), center, gamma)
    kernel = SGLD(posterior, step_size, control_variate=control_variate,
                  preconditioner=preconditioner)
    mcmc = MCMC(kernel, num_warmup=num_samples // 5 if num_warmup is None else num_warmup,
                num_samples=num_samples, num_chains=num_chains, chain_method=chain_method,
                thinning=thinning, progress_bar=progress_bar)
    with reuse_loop_compilation():  # sequential chains: one compile, not one per chain
        mcmc.run(jax.random.PRNGKey(seed), *model_args, **model_kwargs)
    result = llc(mcmc)
    result.attrs.update(gamma=float(gamma), step_size=float(step_size), num_chains=num_chains,
                        num_samples=num_samples, seed=seed, control_variate=int(control_variate))
    return result
