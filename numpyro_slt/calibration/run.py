""":func:`calibrate`: sweep (ε, nβ, γ) in one compiled run, judge every setting, recommend one."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._validate import nonnegative_int, positive_int
from .criteria import Criteria, judged_sweep
from .grid import checked_grid, settings_grid
from .result import Calibration
from .sweep import Runs, SweepTarget, run_sweep, top_curvature

__all__ = ["calibrate"]

MINIBATCH = ("with_replacement", "without_replacement")


def calibrate(
    model: Callable,
    center: Mapping[str, Any],
    *model_args: Any,
    step_sizes: Any = None,
    nbetas: Any = None,
    gammas: Any = None,
    num_chains: int = 4,
    num_warmup: int = 2_000,
    num_samples: int = 10_000,
    thinning: int = 10,
    control_variate: bool = True,
    preconditioner: Any = None,
    minibatch: str = "with_replacement",
    init_loss_batches: int | None = None,
    criteria: Criteria | None = None,
    seed: int = 0,
    **model_kwargs: Any,
) -> Calibration:
    """Sweep the SGLD settings ε × nβ × γ in one vectorized run, judge every setting by the
    calibration criteria of docs/formulas.md and recommend one.

    Every setting samples ``localize(temper(model, nbeta), center, gamma)`` with
    :class:`~numpyro_slt.SGLD` at ``step_size``, ``num_chains`` chains of ``num_warmup`` burn-in
    steps and ``num_samples`` steps (every ``thinning``-th kept): judge at the budget you will
    run. The minibatches are the model's (its ``numpyro.plate(..., subsample_size=B)``). All
    settings and chains run as one compiled program (see :mod:`numpyro_slt.calibration.sweep`);
    chain c of each setting is the chain ``MCMC(SGLD(...)).run(PRNGKey(seed))`` would draw.

    :param model: the plain NumPyro model (before :func:`~numpyro_slt.temper` and
        :func:`~numpyro_slt.localize`).
    :param center: w*, a dict {latent site: constrained value}, e.g. from
        :func:`~numpyro_slt.find_center`.
    :param model_args: the model's positional arguments (the data); ``model_kwargs`` likewise.
    :param step_sizes: the ε grid (positive numbers); default: a factor-2 grid from the model's
        curvature (:mod:`numpyro_slt.calibration.grid`). Stability under halving is judged only
        where ε/2 is in the grid.
    :param nbetas: the nβ grid; default n/log n × (1/4, 1/2, 1).
    :param gammas: the γ grid (non-negative); default one value, 10⁻³·(n/log n)·h_max.
    :param control_variate: as for :class:`~numpyro_slt.SGLD` (default True, as
        :func:`~numpyro_slt.estimate_llc`); use the kernel options of the run you will make.
    :param preconditioner: as for :class:`~numpyro_slt.SGLD`.
    :param minibatch: as for :class:`~numpyro_slt.SGLD`.
    :param init_loss_batches: as for :class:`~numpyro_slt.SGLD`.
    :param criteria: the thresholds (:class:`~numpyro_slt.calibration.Criteria`); default those
        of :func:`~numpyro_slt.check_chains`, ``dip_max=0.5`` and ``stability_z=2``.
    :param seed: seed of the chains.
    :return: a :class:`~numpyro_slt.calibration.Calibration`: ``recommended`` (step_size, nbeta,
        gamma, or None), ``reasons``, ``sweep`` (xarray), ``plot()``.
    """
    num_chains = positive_int("num_chains", num_chains)
    if num_chains < 2:
        raise ValueError(f"num_chains must be at least 2 (R-hat and the spread between chains "
                         f"need two), got {num_chains}.")
    num_warmup = nonnegative_int("num_warmup", num_warmup)
    num_samples = positive_int("num_samples", num_samples)
    thinning = positive_int("thinning", thinning)
    if num_samples // thinning < 12:
        raise ValueError(f"num_samples // thinning must be at least 12 kept draws per chain "
                         f"(the drift test compares thirds), got {num_samples // thinning}.")
    if minibatch not in MINIBATCH:
        raise ValueError(f"minibatch must be one of {MINIBATCH}, got {minibatch!r}.")
    if not isinstance(control_variate, bool):
        raise ValueError(f"control_variate must be True or False, got {control_variate!r}.")
    if criteria is None:
        criteria = Criteria()
    elif not isinstance(criteria, Criteria):
        raise ValueError(f"criteria must be a numpyro_slt.calibration.Criteria, got "
                         f"{type(criteria).__name__}.")
    if not callable(model):
        raise ValueError(f"model must be a callable NumPyro model, got {type(model).__name__}.")
    if not isinstance(center, Mapping) or not center:
        raise ValueError("center must be a non-empty dict {site name: value} (w*, e.g. from "
                         f"slt.find_center), got {type(center).__name__}.")
    # user grids are checked before anything is traced or compiled
    grids = {name: None if values is None else checked_grid(name, values,
                                                            allow_zero=name == "gammas")
             for name, values in (("step_sizes", step_sizes), ("nbetas", nbetas),
                                  ("gammas", gammas))}

    t0 = time.perf_counter()
    target = SweepTarget.of(model, center, model_args, model_kwargs, minibatch=minibatch,
                            init_loss_batches=init_loss_batches)
    eps_grid, nbeta_grid, gamma_grid, curvature = settings_grid(
        grids["step_sizes"], grids["nbetas"], grids["gammas"], target.num_observations,
        lambda: top_curvature(target, model_args, model_kwargs))
    eps, nbeta, gamma = (a.ravel() for a in np.meshgrid(eps_grid, nbeta_grid, gamma_grid,
                                                        indexing="ij"))
    stats = run_sweep(target, eps, nbeta, gamma, model_args, model_kwargs,
                      num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
                      thinning=thinning, control_variate=control_variate,
                      preconditioner=preconditioner, minibatch=minibatch, seed=seed)
    t1 = time.perf_counter()
    runs = Runs(stats, eps_grid, nbeta_grid, gamma_grid, target.init_loss, target.num_params)
    attrs = dict(
        num_chains=num_chains, num_warmup=num_warmup, num_samples=num_samples,
        thinning=thinning, control_variate=int(control_variate), minibatch=minibatch,
        seed=seed, num_observations=target.num_observations, num_params=target.num_params,
        init_loss=target.init_loss, curvature=curvature, sweep_seconds=t1 - t0)
    sweep, recommended, reasons = judged_sweep(runs, criteria, attrs)
    seconds = {"sweep": t1 - t0, "judge": time.perf_counter() - t1}
    return Calibration(recommended, reasons, sweep, seconds, runs=runs, criteria=criteria)
