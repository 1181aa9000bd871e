"""Figures of the PCA of a response matrix: component loadings, token scores by pattern, and the
explained variance.

A PCA entry is an xarray Dataset with ``explained_variance_ratio`` (pc) and ``loadings``
(component, pc), ``pc`` numbered from 1; a figure over several entries takes a dict label → entry,
the label being a layer (``"0"``) or anything else (``"all"``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._validate import positive_int
from ._draw import (
    _LAYER_COLOURS,
    _TAB10,
    _check_dims,
    _grid,
    _layer,
    _layer_colour,
    _layer_handles,
    _names,
    _save,
    _text_safe,
)

__all__ = ["plot_pca_loadings", "plot_token_scores", "plot_explained_variance"]

_ROLE_MARKERS = ["*", "D", "s", "^", "v", "P", "X", "p"]
_PATTERN_ORDER = ["word start", "word part", "induction", "spacing", "left delimiter",
                  "right delimiter", "formatting", "numeric", "other"]


def _check_pcas(pcas: object) -> dict[str, xr.Dataset]:
    if not isinstance(pcas, Mapping) or not pcas:
        raise ValueError("pcas must be a non-empty dict mapping a label to a PCA Dataset")
    for label, ds in pcas.items():
        if not isinstance(ds, xr.Dataset):
            raise ValueError(f"pcas[{label!r}] must be an xarray.Dataset, got {type(ds).__name__}")
        for var, dims in (("explained_variance_ratio", ("pc",)),
                          ("loadings", ("component", "pc"))):
            if var not in ds:
                raise ValueError(f"pcas[{label!r}] has no variable {var!r}")
            _check_dims(ds[var], f"pcas[{label!r}].{var}", dims)
    return {str(k): v for k, v in pcas.items()}


def _check_pcs(pcs: object) -> tuple[int, int]:
    """``pcs`` as two 1-based PC numbers."""
    if not (isinstance(pcs, Sequence) and len(pcs) == 2):
        raise ValueError(f"pcs must be two PC numbers (1-based), got {pcs!r}")
    try:
        return positive_int("pcs[0]", pcs[0]), positive_int("pcs[1]", pcs[1])
    except ValueError as err:
        raise ValueError(f"pcs must be two PC numbers (1-based), got {pcs!r}") from err


def _pc_values(data: xr.DataArray, pc: int, what: str, required: bool) -> np.ndarray | None:
    """The slice of ``data`` at PC ``pc``; None (or a ValueError when ``required``) if absent."""
    available = [int(p) for p in data.coords["pc"].values] if "pc" in data.coords else []
    if pc not in available:
        if required:
            raise ValueError(f"{what} has no PC {pc}; available: {available}")
        return None
    return data.sel(pc=pc).values.astype(np.float64)


def _pc_label(pc: int, ratio: xr.DataArray | None) -> str:
    if ratio is None or "pc" not in ratio.coords or pc not in ratio.coords["pc"].values:
        return f"PC{pc}"
    return f"PC{pc} ({100 * float(ratio.sel(pc=pc)):.1f}%)"


def _entry_label(label: str) -> str:
    """A PCA entry's display name: "layer 0" for "0", else the label itself."""
    return f"layer {label}" if label.isdigit() else label


def plot_pca_loadings(pcas: dict[str, xr.Dataset], path: str | os.PathLike, *,
                      highlight: dict[str, str] | None = None, pcs: tuple[int, int] = (1, 2),
                      title: str = "PCA loadings") -> Path:
    """One scatter panel per entry of ``pcas``: each component's loadings on two PCs.

    ``pcas`` maps a label (a layer, or "all") to a Dataset with ``explained_variance_ratio`` (pc)
    and ``loadings`` (component, pc). Points are annotated with their component and coloured by
    layer; if PC ``pcs[1]`` is missing, y = 0. ``highlight`` maps a component to a role label
    ("induction", ...): those get a role-specific marker with a black edge and a legend entry.
    """
    pcas = _check_pcas(pcas)
    px, py = _check_pcs(pcs)
    highlight = dict(highlight or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in highlight.items()):
        raise ValueError("highlight must map component names (str) to role labels (str)")
    roles = list(dict.fromkeys(highlight.values()))
    markers = {role: _ROLE_MARKERS[i % len(_ROLE_MARKERS)] for i, role in enumerate(roles)}
    ncols = min(3, len(pcas))
    nrows = -(-len(pcas) // ncols)
    fig = Figure(figsize=(4.8 * ncols, 4.2 * nrows + 0.5), layout="constrained")
    axes = _grid(fig, len(pcas), ncols)
    shown: list[str] = []
    for ax, (label, ds) in zip(axes, pcas.items(), strict=True):
        loadings = ds["loadings"]
        components = _names(ds, "component")
        x = _pc_values(loadings, px, f"pcas[{label!r}]", required=True)
        y = _pc_values(loadings, py, f"pcas[{label!r}]", required=False)
        ratio = ds["explained_variance_ratio"]
        if y is None:
            y = np.zeros_like(x)
        ax.axhline(0, color="0.7", lw=0.6, zorder=0)
        ax.axvline(0, color="0.7", lw=0.6, zorder=0)
        for name, xi, yi in zip(components, x, y, strict=True):
            colour = _layer_colour(_layer(name))
            role = highlight.get(name)
            if role is None:
                ax.scatter(xi, yi, s=36, color=colour, zorder=2)
            else:
                ax.scatter(xi, yi, s=130, color=colour, marker=markers[role],
                           edgecolors="black", linewidths=1.3, zorder=3)
            text = ax.annotate(name, (xi, yi), xytext=(4, 4), textcoords="offset points",
                               fontsize=8, fontweight="bold" if role else "normal")
            text.set_parse_math(False)
            shown.append(name)
        ax.margins(0.18)
        ax.set_xlabel(_pc_label(px, ratio))
        ax.set_ylabel(_pc_label(py, ratio) if py in ratio.coords["pc"].values
                      else f"PC{py} (not computed; 0)")
        ax.set_title(_entry_label(label), parse_math=False)
        ax.grid(alpha=0.25)
    handles: list = _layer_handles(shown)
    handles += [Line2D([], [], ls="", marker=markers[r], markersize=10, color="white",
                       markeredgecolor="black", markeredgewidth=1.3, label=r) for r in roles
                if any(highlight[c] == r for c in shown if c in highlight)]
    legend = fig.legend(handles=handles, loc="outside lower center",
                        ncols=min(len(handles), 6), fontsize=8, frameon=False)
    _text_safe(legend.get_texts())
    fig.suptitle(title, parse_math=False)
    return _save(fig, path)


def plot_token_scores(scores: xr.DataArray, labels: xr.DataArray, path: str | os.PathLike, *,
                      pcs: tuple[int, int] = (1, 2),
                      title: str = "Token scores by pattern") -> Path:
    """Scatter of each token's scores on two PCs, coloured by its pattern label.

    ``scores`` has dims (token, pc) with integer pc coords; ``labels`` (token,) holds strings such
    as "word start", "induction" or "other". If PC ``pcs[1]`` is missing, y = 0.
    """
    scores = _check_dims(scores, "scores", ("token", "pc"))
    labels = _check_dims(labels, "labels", ("token",))
    if labels.sizes["token"] != scores.sizes["token"]:
        raise ValueError(f"labels has {labels.sizes['token']} tokens, scores has "
                         f"{scores.sizes['token']}")
    px, py = _check_pcs(pcs)
    x = _pc_values(scores, px, "scores", required=True)
    y = _pc_values(scores, py, "scores", required=False)
    if y is None:
        y = np.zeros_like(x)
    names = np.asarray([str(v) for v in labels.values])
    present = set(names.tolist())
    order = [p for p in _PATTERN_ORDER if p in present] + sorted(present - set(_PATTERN_ORDER))
    palette = {p: _LAYER_COLOURS[i] for i, p in enumerate(_PATTERN_ORDER[:-1])}
    palette["other"] = "#c7c7c7"
    extra = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20b"].colors]
    for i, p in enumerate(o for o in order if o not in palette):
        palette[p] = extra[i % len(extra)]
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    alpha = 0.7 if len(names) < 500 else 0.4
    size = 14 if len(names) < 500 else 5
    for p in (["other"] if "other" in present else []) + [o for o in order if o != "other"]:
        mask = names == p
        ax.scatter(x[mask], y[mask], s=size, alpha=alpha, color=palette[p], linewidths=0)
    handles = [Line2D([], [], ls="", marker="o", color=palette[p],
                      label=f"{p} ({int((names == p).sum())})") for p in order]
    legend = ax.legend(handles=handles, fontsize=8, title="pattern", loc="best")
    _text_safe(legend.get_texts())
    ax.axhline(0, color="0.6", lw=0.5, zorder=0)
    ax.axvline(0, color="0.6", lw=0.5, zorder=0)
    ax.set_xlabel(f"PC{px} score")
    ax.set_ylabel(f"PC{py} score" if py in scores.coords["pc"].values
                  else f"PC{py} (not computed; 0)")
    ax.set_title(title, parse_math=False)
    ax.grid(alpha=0.25)
    return _save(fig, path)


def plot_explained_variance(pcas: dict[str, xr.Dataset], path: str | os.PathLike, *,
                            title: str = "Explained variance ratio") -> Path:
    """Grouped bars of the explained variance ratio of PC1..PC3 (or fewer) per entry of ``pcas``.

    ``pcas`` is as for :func:`plot_pca_loadings`.
    """
    pcas = _check_pcas(pcas)
    npc = min(3, max(ds.sizes["pc"] for ds in pcas.values()))
    width = 0.8 / npc
    fig = Figure(figsize=(max(5.0, 1.3 * len(pcas) + 2.5), 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(pcas))
    for k in range(1, npc + 1):
        heights = []
        for ds in pcas.values():
            ratio = ds["explained_variance_ratio"]
            has = "pc" in ratio.coords and k in ratio.coords["pc"].values
            heights.append(100 * float(ratio.sel(pc=k)) if has else np.nan)
        bars = ax.bar(x + (k - 1 - (npc - 1) / 2) * width, heights, width, label=f"PC{k}",
                      color=_TAB10[k - 1], edgecolor="black", lw=0.5)
        ax.bar_label(bars, labels=["" if np.isnan(h) else f"{h:.0f}" for h in heights],
                     fontsize=7, padding=1)
    ax.set_xticks(x, [_entry_label(label) for label in pcas], fontsize=9)
    _text_safe(ax.get_xticklabels())
    ax.set_xlabel("PCA")
    ax.set_ylabel("explained variance (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    ax.set_title(title, parse_math=False)
    return _save(fig, path)
