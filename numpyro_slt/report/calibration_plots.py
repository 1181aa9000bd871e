"""The figure of a calibration sweep: λ̂ against ε, the recommendation and the rejections."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._draw import _TAB10, _save

__all__ = ["plot_calibration"]

#: Shade of each rejection (the first criterion a setting fails), in the order of the criteria.
REJECTION_COLOURS = {
    "diverged": "#d62728", "mala": "#ff7f0e", "dips": "#8c564b", "drift": "#bcbd22",
    "escape": "#e377c2", "rhat": "#9467bd", "ess": "#17becf", "precision": "#7f7f7f",
    "unstable": "#1f77b4", "unjudged": "#c7c7c7",
}


def plot_calibration(sweep: xr.Dataset, recommended: Mapping[str, float] | None = None,
                     path: str | os.PathLike | None = None, *,
                     reference: float | None = None, title: str | None = None) -> Figure:
    """λ̂ ± one standard error against ε (log axis): one panel per (γ, nβ), rows γ, columns nβ.
    Each rejected ε is shaded in the colour of the first criterion it fails and labelled with
    every criterion it fails; the recommended setting is a star. ``reference`` (a known λ) is
    drawn as a dashed line. Saves a PNG at ``path`` when given; returns the Figure."""
    for name in ("llc_mean", "llc_se", "verdict", "rejected_by"):
        if name not in sweep:
            raise ValueError(f"sweep must be the sweep of a Calibration (it lacks {name!r})")
    eps = np.asarray(sweep.step_size.values, dtype=float)
    nbetas, gammas = sweep.nbeta.values, sweep.gamma.values
    fig = Figure(figsize=(3.3 * len(nbetas) + 0.4, 2.7 * len(gammas) + 0.9),
                 layout="constrained")
    axes = fig.subplots(len(gammas), len(nbetas), squeeze=False, sharex=True)
    low, high = _y_limits(sweep, reference)
    edges = _log_edges(eps)
    used = []
    for row, gamma in enumerate(gammas):
        for col, nbeta in enumerate(nbetas):
            ax = axes[row, col]
            cell = sweep.sel(nbeta=nbeta, gamma=gamma)
            verdicts = [str(v) for v in cell.verdict.values]
            rejected = [str(v) for v in cell.rejected_by.values]
            for i, verdict in enumerate(verdicts):
                if verdict == "ok":
                    continue
                colour = REJECTION_COLOURS.get(verdict, "#c7c7c7")
                used.append(verdict)
                ax.axvspan(edges[i], edges[i + 1], color=colour, alpha=0.22, lw=0)
                ax.text(eps[i], high, rejected[i].replace(",", "\n"), ha="center", va="top",
                        fontsize=6, color="#333333", parse_math=False, linespacing=0.95)
            llc = np.asarray(cell.llc_mean.values, dtype=float)
            se = np.asarray(cell.llc_se.values, dtype=float)
            ok = np.array([v == "ok" for v in verdicts])
            shown = np.clip(llc, low, high)
            ax.errorbar(eps, shown, yerr=np.where(np.isfinite(se), se, 0.0), color=_TAB10[col],
                        lw=1.0, marker="", capsize=2)
            ax.scatter(eps[ok], shown[ok], color=_TAB10[col], s=18, zorder=3)
            ax.scatter(eps[~ok], shown[~ok], facecolor="white", edgecolor=_TAB10[col], s=18,
                       zorder=3)
            if reference is not None:
                ax.axhline(reference, color="black", ls="--", lw=0.8)
            if recommended is not None and np.isclose(nbeta, recommended["nbeta"]) and \
                    np.isclose(gamma, recommended["gamma"]):
                i = int(np.argmin(np.abs(np.log(eps / recommended["step_size"]))))
                ax.scatter([eps[i]], [shown[i]], marker="*", s=160, color="gold",
                           edgecolor="black", zorder=4)
                ax.annotate(f"recommended\nλ̂ = {llc[i]:.3g}", (eps[i], shown[i]),
                            xytext=(6, -22), textcoords="offset points", fontsize=7.5)
            ax.set_xscale("log")
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(low, high * 1.04)
            ax.set_title(f"nβ = {nbeta:.4g}, γ = {gamma:.4g}", fontsize=9)
            if row == len(gammas) - 1:
                ax.set_xlabel("step size ε")
            if col == 0:
                ax.set_ylabel("λ̂ ± se")
            ax.tick_params(labelsize=7.5)
    handles = [Patch(color=REJECTION_COLOURS[code], alpha=0.5, label=code)
               for code in REJECTION_COLOURS if code in used]
    if reference is not None:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", ls="--", lw=0.8, label="known λ"))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=7.5, title="rejected by (first failed criterion)",
                   title_fontsize=7.5)
    fig.suptitle(title or "Calibration sweep: λ̂ against the step size", fontsize=10)
    if path is not None:
        _save(fig, path)
    return fig


def _log_edges(eps: np.ndarray) -> np.ndarray:
    """Band edges between neighbouring step sizes (geometric midpoints), half a step beyond the
    ends; one factor of 2 around a lone step size."""
    if eps.size == 1:
        return np.array([eps[0] / np.sqrt(2), eps[0] * np.sqrt(2)])
    mids = np.sqrt(eps[1:] * eps[:-1])
    return np.concatenate([[eps[0] ** 2 / mids[0]], mids, [eps[-1] ** 2 / mids[-1]]])


def _y_limits(sweep: xr.Dataset, reference: float | None) -> tuple[float, float]:
    """0 (or the lowest estimate) up to 1.5 × the largest accepted estimate, or, with none
    accepted, 1.5 × the median estimate: settings far above are drawn at the top."""
    llc = np.asarray(sweep.llc_mean.values, dtype=float)
    se = np.nan_to_num(np.asarray(sweep.llc_se.values, dtype=float))
    ok = (np.asarray(sweep.verdict.values) == "ok") & np.isfinite(llc)
    finite = np.isfinite(llc)
    if ok.any():
        top = float(np.max(llc[ok] + se[ok]))
    elif finite.any():
        top = float(np.median(llc[finite]))
    else:
        top = 1.0
    if reference is not None:
        top = max(top, float(reference))
    bottom = min(0.0, float(np.min(llc[finite])) if finite.any() else 0.0)
    bottom = max(bottom, -top)
    return bottom, 1.5 * top if top > 0 else 1.0
