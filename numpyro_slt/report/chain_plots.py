"""Figures of the sampling runs: SGLD loss traces per chain, the norms of the SGLD step's three
terms, and the LLC per component."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._draw import (
    _TAB10,
    _check_dims,
    _format_stat,
    _grid,
    _layer,
    _layer_colour,
    _layer_handles,
    _names,
    _save,
    _text_safe,
)

__all__ = ["plot_loss_traces", "plot_step_norms", "plot_llc"]

_STEP_NORMS = (("drift_norm", "likelihood drift  ‖(ε/2)·G⊙nβ∇L_B‖"),
               ("localization_norm", "localization drift  ‖(ε/2)·G⊙γ(w − w*)‖"),
               ("noise_norm", "noise  ‖√(εG)⊙ξ‖"))


def plot_loss_traces(loss: xr.DataArray, ess: xr.DataArray, rhat: xr.DataArray,
                     path: str | os.PathLike, *, title: str = "SGLD loss traces") -> Path:
    """One panel per component with one loss line per chain, titled with its ESS and R̂.

    ``loss`` has dims (component, chain, draw); ``ess`` and ``rhat`` have dims (component,) and
    may hold NaN (shown as "n/a"). Titles of components with R̂ > 1.1 are red.
    """
    loss = _check_dims(loss, "loss", ("component", "chain", "draw"))
    ess = _check_dims(ess, "ess", ("component",))
    rhat = _check_dims(rhat, "rhat", ("component",))
    components = _names(loss, "component")
    for name, stat in (("ess", ess), ("rhat", rhat)):
        if stat.sizes["component"] != len(components):
            raise ValueError(f"{name} has {stat.sizes['component']} components, loss has "
                             f"{len(components)}")
    if "component" in ess.coords and "component" in loss.coords:
        ess = ess.sel(component=loss.coords["component"].values)
    if "component" in rhat.coords and "component" in loss.coords:
        rhat = rhat.sel(component=loss.coords["component"].values)
    chains = _names(loss, "chain")
    draws = loss.coords["draw"].values if "draw" in loss.coords else np.arange(loss.sizes["draw"])
    ncols = min(5, len(components))
    nrows = -(-len(components) // ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.1 * nrows + 0.6), layout="constrained")
    axes = _grid(fig, len(components), ncols)
    for i, (ax, name) in enumerate(zip(axes, components, strict=True)):
        for j in range(len(chains)):
            ax.plot(draws, loss.values[i, j], lw=0.7, color=_TAB10[j % 10],
                    label=f"chain {chains[j]}")
        r = float(rhat.values[i])
        ax.set_title(f"{name}  ESS {_format_stat(float(ess.values[i]), '.0f')}  "
                     f"R̂ {_format_stat(r, '.2f')}", fontsize=9, parse_math=False,
                     color="red" if np.isfinite(r) and r > 1.1 else "black")
        ax.tick_params(labelsize=7)
        if i + ncols >= len(components):
            ax.set_xlabel("draw", fontsize=8)
        if i % ncols == 0:
            ax.set_ylabel("loss", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(chains), 8),
               fontsize=8, frameon=False)
    fig.suptitle(title, parse_math=False)
    return _save(fig, path)


def plot_step_norms(source: Any, path: str | os.PathLike, *,
                    title: str = "SGLD step norms") -> Path:
    """Trace plots of the norms of the three terms of each kept SGLD step (docs/formulas.md,
    "Step norms"): likelihood drift, localization drift and noise, one panel each, one line per
    chain, on a log scale when the values are positive. The title of each panel gives its median.

    :param source: a run with the kernel's step norms: a finished ``MCMC`` with
        :class:`~numpyro_slt.SGLD`, a ``CheckpointedRun``, ArviZ data or the ``sample_stats``
        Dataset.
    """
    from .._arviz import sample_stats

    stats = sample_stats(source)
    missing = [name for name, _ in _STEP_NORMS if name not in stats]
    if missing:
        raise ValueError(f"source lacks the step norms {missing}: sample with numpyro_slt.SGLD "
                         "of this version (it records drift_norm, localization_norm and "
                         "noise_norm)")
    chains = _names(stats, "chain")
    draws = stats.coords["draw"].values if "draw" in stats.coords else np.arange(
        stats.sizes["draw"])
    fig = Figure(figsize=(11.0, 3.2), layout="constrained")
    axes = _grid(fig, len(_STEP_NORMS), len(_STEP_NORMS))
    for ax, (name, label) in zip(axes, _STEP_NORMS, strict=True):
        values = np.asarray(stats[name].transpose("chain", "draw", ...), dtype=float)
        for j in range(len(chains)):
            ax.plot(draws, values[j], lw=0.7, color=_TAB10[j % 10], label=f"chain {chains[j]}")
        finite = values[np.isfinite(values)]
        if finite.size and np.all(finite > 0):
            ax.set_yscale("log")
        median = float(np.median(finite)) if finite.size else float("nan")
        ax.set_title(f"{label}\nmedian {_format_stat(median, '.3g')}", fontsize=9,
                     parse_math=False)
        ax.set_xlabel("draw", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("norm", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(chains), 8),
               fontsize=8, frameon=False)
    fig.suptitle(title, parse_math=False)
    return _save(fig, path)


def plot_llc(llc_mean: xr.DataArray, llc_std: xr.DataArray, path: str | os.PathLike, *,
             title: str = "Local learning coefficient per component") -> Path:
    """Bars of the LLC per component with ±std error bars; heads coloured by layer.

    ``llc_mean`` and ``llc_std`` have dims (component,).
    """
    mean = _check_dims(llc_mean, "llc_mean", ("component",))
    std = _check_dims(llc_std, "llc_std", ("component",))
    if std.sizes["component"] != mean.sizes["component"]:
        raise ValueError(f"llc_std has {std.sizes['component']} components, llc_mean has "
                         f"{mean.sizes['component']}")
    if "component" in std.coords and "component" in mean.coords:
        std = std.sel(component=mean.coords["component"].values)
    components = _names(mean, "component")
    x = np.arange(len(components))
    fig = Figure(figsize=(max(6.0, 0.45 * len(components) + 2.0), 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(x, mean.values, yerr=np.nan_to_num(std.values.astype(np.float64)), capsize=3,
           color=[_layer_colour(_layer(c)) for c in components], edgecolor="black", lw=0.5,
           error_kw={"lw": 0.8})
    ax.set_xticks(x, components, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(components) - 0.3)
    ax.set_xlabel("component")
    ax.set_ylabel("LLC  λ̂  (mean ± std)")
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=_layer_handles(components), fontsize=8)
    _text_safe(ax.get_xticklabels())
    ax.set_title(title, parse_math=False)
    return _save(fig, path)
