"""The local learning coefficient, λ̂(w*) = nβ·( E_w[L_n(w)] − L_n(w*) ).

E_w[L_n] is estimated from the minibatch losses of *every* post-burn-in SGLD step, not only the
kept draws: the kernel keeps in its state the running mean m_k of L_B − L_n(w*) and its count
c_k, so that for kept draws k the mean over the steps between draw k−1 and draw k is

    (c_k·m_k − c_{k−1}·m_{k−1}) / (c_k − c_{k−1}),

and the mean over all steps after draw b is (c_K·m_K − c_b·m_b) / (c_K − c_b). Per chain,
λ̂_c = nβ·(that mean); the result reports their mean and standard deviation across chains.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jax
import numpy as np
import xarray as xr
from numpyro.infer.mcmc import MCMCKernel

from .._arviz import sample_stats
from ..diagnostics import ess_rhat

__all__ = ["default_nbeta", "estimate_llc", "llc"]

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
    non_finite = ~np.isfinite(mean)
    if "loss" in stats:
        non_finite |= ~np.isfinite(np.asarray(stats["loss"], dtype=np.float64))
    bad = (diverged_at >= 0) | non_finite.any(axis=1)
    if not bad.any():
        return np.arange(mean.shape[0])
    chain_ids = np.asarray(stats["chain"]) if "chain" in stats.coords else np.arange(len(bad))
    draw_ids = (np.asarray(stats["draw"]) if "draw" in stats.coords
                else np.arange(mean.shape[1]))
    report = ", ".join(_where_diverged(chain_ids[c], diverged_at[c], non_finite[c], draw_ids)
                       for c in np.flatnonzero(bad))
    advice = "reduce step_size, or raise gamma, or check the data and the center"
    if on_divergence == "raise" or bad.all():
        raise FloatingPointError(f"SGLD diverged (NaN, Inf or an exploding loss): {report}; "
                                 f"{advice}")
    warnings.warn(f"dropping diverged chains: {report}; {advice}", stacklevel=3)
    return np.flatnonzero(~bad)


def _where_diverged(chain: Any, step: int, non_finite: np.ndarray, draws: np.ndarray) -> str:
    """'chain c at step s' from the kernel's ``diverged_at``; without it, the first kept draw
    whose loss statistics are not finite, read off the data."""
    if step >= 0:
        return f"chain {chain} at step {int(step)}"
    first = int(draws[np.flatnonzero(non_finite)[0]])
    return (f"chain {chain} at draw {first} (the first draw whose loss is not finite; the data "
            "have no diverged_at to give the step)")


def estimate_llc(
    model: Callable,
    center: Mapping[str, Any],
    *model_args: Any,
    nbeta: float,
    gamma: float,
    step_size: float,
    n: int | None = None,
    factors: Any = None,
    num_samples: int = 1_000,
    num_warmup: int | None = None,
    warmup_fraction: float | None = None,
    num_chains: int = 4,
    chain_method: str = "vectorized",
    thinning: int = 1,
    control_variate: bool = True,
    preconditioner: Any = None,
    init_loss: float | None = None,
    init_loss_batches: int | None = None,
    max_excess_loss: float | None = None,
    restrict_to: Iterable[str] | None = None,
    kernel: Callable[..., MCMCKernel] | None = None,
    kernel_options: Mapping[str, Any] | None = None,
    burn_in: int = 0,
    on_divergence: Literal["raise", "drop"] = "raise",
    seed: int = 0,
    progress_bar: bool = True,
    **model_kwargs: Any,
) -> xr.Dataset:
    """One call from a model and its trained parameters to λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)), like
    devinterp's ``estimate_learning_coeff_with_summary``: ``temper`` → ``localize`` →
    (``restrict``) → the kernel in ``MCMC`` → :func:`llc`.

    The posterior sampled is p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²), restricted to the sites
    ``restrict_to`` when given (the others frozen at w*). Run with ``num_chains`` chains of
    ``num_warmup`` burn-in steps and ``num_samples`` steps each (``num_samples / thinning`` kept
    draws; devinterp's ``num_draws`` D and ``num_steps_bw_draws`` T are ``num_samples = D·T``,
    ``thinning = T``).

    :param model: a NumPyro model with an observed site (subsample its data plate for
        minibatches), e.g. :func:`numpyro_slt.loss_model`.
    :param center: the trained parameters w*, a dict keyed by latent site.
    :param model_args: the model's positional arguments (the data); ``model_kwargs`` likewise.
    :param nbeta: nβ; devinterp's default is :func:`default_nbeta` (B / log B of the batch).
    :param gamma: the localization strength γ ≥ 0 (devinterp's ``localization``; 0 is a flat
        prior).
    :param step_size: ε (devinterp's ``lr``).
    :param n: the number of observations L_n averages over, for :func:`~numpyro_slt.temper`;
        needed when the observed sites differ in size.
    :param factors: what the model's ``numpyro.factor`` terms are, for
        :func:`~numpyro_slt.temper` (``"prior"`` or ``{name: n_s}``).
    :param num_warmup: burn-in steps (devinterp's ``num_burnin_steps``); their losses do not
        enter λ̂. Defaults to ⌊``warmup_fraction`` · ``num_samples``⌋.
    :param warmup_fraction: the burn-in as a share of ``num_samples`` when ``num_warmup`` is not
        given; default 0.2. Give one of the two.
    :param control_variate: subtract L_B(w*) on the same minibatch (the kernel's option).
    :param preconditioner: the kernel's ``preconditioner`` (e.g. ``slt.rmsprop()``); ``None``
        leaves the kernel's default.
    :param init_loss: L_n(w*) if known (devinterp's ``init_loss``); by default the kernel
        computes it on the full data.
    :param init_loss_batches: compute L_n(w*) as the mean over this many minibatches instead of
        the full data (devinterp's ``num_init_loss_batches``).
    :param max_excess_loss: a step whose L_B − L_n(w*) exceeds it counts as diverged.
    :param restrict_to: latent sites to sample (``slt.restrict``), the others frozen at
        ``center``: the refined LLC of that component. ``None`` samples every site.
    :param kernel: the kernel class, called as ``kernel(posterior, step_size, **options)``;
        default :class:`~numpyro_slt.SGLD`. Any kernel whose state records the statistics
        :func:`llc` reads works.
    :param kernel_options: further keyword arguments of the kernel (e.g. ``{"minibatch":
        "without_replacement"}``, or a new kernel's own options), passed on unchanged. The
        explicit arguments above that are not ``None`` are passed too; naming one of them here
        as well is an error.
    :param burn_in: kept draws :func:`llc` discards on top of ``num_warmup``.
    :param on_divergence: what :func:`llc` does with a diverged chain (``"raise"`` or ``"drop"``).
    :param seed: the seed of ``jax.random.PRNGKey`` for ``MCMC.run``.
    :return: the Dataset of :func:`llc`, with the run's settings in ``attrs`` (plain numbers and
        strings, so that it writes to netCDF; ``restrict_to`` as "a, b" or "all").
    """
    from numpyro.infer import MCMC

    from ..handlers import localize, restrict, temper
    from ..kernels import SGLD
    from ..utils import reuse_loop_compilation

    kernel = SGLD if kernel is None else kernel
    if not callable(kernel):
        raise ValueError(f"kernel must be a kernel class such as slt.SGLD, called as "
                         f"kernel(model, step_size, **options); got {kernel!r}")
    num_warmup = _warmup_steps(num_samples, num_warmup, warmup_fraction)
    options = _kernel_options(kernel_options, control_variate=control_variate,
                              preconditioner=preconditioner, init_loss=init_loss,
                              init_loss_batches=init_loss_batches,
                              max_excess_loss=max_excess_loss)
    posterior = localize(temper(model, nbeta, n=n, factors=factors), center, gamma)
    if restrict_to is not None:
        restrict_to = (restrict_to,) if isinstance(restrict_to, str) else tuple(restrict_to)
        posterior = restrict(posterior, restrict_to)
    name = getattr(kernel, "__name__", type(kernel).__name__)
    try:
        sampler = kernel(posterior, step_size, **options)
    except TypeError as error:
        raise ValueError(f"kernel {name} does not take the options {sorted(options)}: {error}; "
                         "leave out the ones it lacks (kernel_options, or the explicit "
                         "argument set to None)") from error
    mcmc = MCMC(sampler, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=chain_method, thinning=thinning, progress_bar=progress_bar)
    with reuse_loop_compilation():  # sequential chains: one compile, not one per chain
        mcmc.run(jax.random.PRNGKey(seed), *model_args, **model_kwargs)
    result = llc(mcmc, burn_in=burn_in, on_divergence=on_divergence)
    result.attrs.update(gamma=float(gamma), step_size=float(step_size), num_chains=num_chains,
                        num_samples=num_samples, num_warmup=num_warmup, thinning=thinning,
                        seed=seed, control_variate=int(control_variate), kernel=name,
                        restrict_to=", ".join(restrict_to) if restrict_to is not None else "all",
                        init_loss_batches=(init_loss_batches if init_loss_batches is not None
                                           else "full data"))
    return result


def _warmup_steps(num_samples: int, num_warmup: int | None, warmup_fraction: float | None) -> int:
    """``num_warmup``, or ⌊warmup_fraction · num_samples⌋ (default fraction 0.2)."""
    if num_warmup is not None and warmup_fraction is not None:
        raise ValueError(f"give num_warmup ({num_warmup!r}) or warmup_fraction "
                         f"({warmup_fraction!r}), not both")
    if num_warmup is not None:
        if isinstance(num_warmup, bool) or not isinstance(num_warmup, int | np.integer) \
                or num_warmup < 0:
            raise ValueError(f"num_warmup must be an integer >= 0 (burn-in steps), got "
                             f"{num_warmup!r}")
        return int(num_warmup)
    fraction = 0.2 if warmup_fraction is None else warmup_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) \
            or not 0 <= fraction < math.inf:
        raise ValueError(f"warmup_fraction must be a number >= 0 (burn-in steps per sampled "
                         f"step, e.g. 0.2), got {warmup_fraction!r}")
    return int(num_samples * fraction)


def _kernel_options(extra: Mapping[str, Any] | None, **explicit: Any) -> dict[str, Any]:
    """The keyword arguments of the kernel: the explicit ones that are set (``control_variate``
    always) and ``kernel_options``, which may not repeat them."""
    if extra is None:
        extra = {}
    if not isinstance(extra, Mapping) or not all(isinstance(k, str) for k in extra):
        raise ValueError(f"kernel_options must be a dict of keyword arguments of the kernel, "
                         f"e.g. {{'minibatch': 'without_replacement'}}; got {extra!r}")
    options = {k: v for k, v in explicit.items() if v is not None}
    repeated = sorted(set(extra) & set(explicit))
    if repeated:
        raise ValueError(f"kernel_options repeats {repeated}, which estimate_llc takes as "
                         "arguments of its own; pass them there")
    return {**options, **extra}


def default_nbeta(batch_size: int, gradient_accumulation_steps: int = 1) -> float:
    """devinterp's default inverse temperature, nβ = m / log m with m = ``batch_size`` ×
    ``gradient_accumulation_steps``, the number of samples of one gradient step.

    devinterp (``devinterp.utils.default_nbeta``) takes m from the DataLoader's batch size. Note
    the difference from the WBIC temperature β = 1/log n used across numpyro-slt's docs, which
    gives nβ = n / log n with n the size of the *data set*: for n = 20,000 samples in batches of
    500 the two are 2,019 and 80.5. Both are conventions; λ̂ estimates the same λ at either, but a
    run is only reproduced at the nβ it used.

    :raises ValueError: for m < 2, where m / log m is undefined (devinterp then falls back to
        nβ = 1 with a warning; pass ``nbeta=1.0`` to do the same).
    """
    for name, value in (("batch_size", batch_size),
                        ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    m = int(batch_size) * int(gradient_accumulation_steps)
    if m < 2:
        raise ValueError("batch_size * gradient_accumulation_steps must be >= 2: m / log m is "
                         "undefined at m = 1 (devinterp falls back to nbeta = 1; pass "
                         "nbeta=1.0 for that)")
    return m / math.log(m)
