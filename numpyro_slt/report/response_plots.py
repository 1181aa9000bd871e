"""Figures of a response (susceptibility) matrix itself: its heatmap, and the tokens a component
most expresses or suppresses drawn as a table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._draw import _check_dims, _names, _save, _text_safe

__all__ = ["plot_response_heatmap", "plot_top_tokens"]

_MANY_ROWS = 60  # above this many rows a heatmap drops its row tick labels


def plot_response_heatmap(matrix: xr.DataArray, path: str | os.PathLike, *,
                          row_dim: str = "probe",
                          title: str = "Response (susceptibility) matrix") -> Path:
    """Heatmap of ``matrix`` (dims (row_dim, component)) on a diverging colormap centred at 0.

    With more than 60 rows the row tick labels are dropped; if a ``probe`` coordinate lies along
    ``row_dim`` the rows are then sorted by it and the probe groups are separated and labelled.
    """
    matrix = _check_dims(matrix, "matrix", (row_dim, "component"))
    components = _names(matrix, "component")
    rows = matrix.sizes[row_dim]
    many = rows > _MANY_ROWS
    groups: list[tuple[str, int, int]] = []  # (probe, first row, end row)
    group = "token_probe" if "token_probe" in matrix.coords else "probe"
    if many and group in matrix.coords and matrix.coords[group].dims == (row_dim,):
        probes = np.asarray([str(p) for p in matrix.coords[group].values])
        order = np.argsort(probes, kind="stable")
        matrix, probes = matrix.isel({row_dim: order}), probes[order]
        starts = np.flatnonzero(np.r_[True, probes[1:] != probes[:-1]])
        ends = np.r_[starts[1:], rows]
        groups = [(probes[s], int(s), int(e)) for s, e in zip(starts, ends, strict=True)]
    values = matrix.values.astype(np.float64)
    finite = np.abs(values[np.isfinite(values)])
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    height = 7.0 if many else min(12.0, 0.28 * rows + 2.2)
    fig = Figure(figsize=(max(6.0, 0.38 * len(components) + 3.0), height), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit,
                      interpolation=None if many else "nearest")
    fig.colorbar(image, ax=ax, label="response", shrink=0.9)
    ax.set_xticks(np.arange(len(components)), components, rotation=90, fontsize=8)
    ax.set_xlabel("component")
    if not many:
        ax.set_yticks(np.arange(rows), _names(matrix, row_dim), fontsize=8)
    elif groups and len(groups) <= 40:
        for _, start, _ in groups[1:]:
            ax.axhline(start - 0.5, color="black", lw=0.6)
        ax.set_yticks([(s + e - 1) / 2 for _, s, e in groups], [g for g, _, _ in groups],
                      fontsize=7)
    else:
        ax.set_yticks([])
    _text_safe(ax.get_xticklabels() + ax.get_yticklabels())
    ax.set_ylabel(f"{row_dim} ({rows})" if many else row_dim)
    ax.set_title(title, parse_math=False)
    return _save(fig, path)


def _visible(text: str) -> str:
    """Newlines and tabs as visible symbols (⏎, →); other control characters (which fonts lack,
    e.g. from random-token probes) as ``\\xNN`` escapes."""
    text = text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎").replace("\t", "→")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def plot_top_tokens(rows: list[dict], path: str | os.PathLike, *,
                    title: str = "Top tokens per component") -> Path:
    """A table of (context, predicted token) pairs as an image, grouped by component.

    Each row dict has "component", "direction" ("expresses" or "suppresses"), "value" (float),
    "context" (the preceding text) and "token". The context is grey, truncated from the left to
    40 characters; the token is bold, coloured by direction and boxed so that its spaces show.
    Newlines and tabs are drawn as ⏎ and →; ``$`` is drawn as is.
    """
    if not isinstance(rows, Sequence) or isinstance(rows, str):
        raise ValueError(f"rows must be a list of dicts, got {type(rows).__name__}")
    keys = ("component", "direction", "value", "context", "token")
    grouped: dict[str, list[dict]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or any(k not in row for k in keys):
            raise ValueError(f"rows[{i}] must be a dict with keys {keys}, got {row!r}")
        if row["direction"] not in ("expresses", "suppresses"):
            raise ValueError(f"rows[{i}]['direction'] must be 'expresses' or 'suppresses', "
                             f"got {row['direction']!r}")
        grouped.setdefault(str(row["component"]), []).append(row)
    lines = sum(len(g) + 1 for g in grouped.values()) or 1
    line_h = 0.22  # inches
    height = line_h * (lines + 1.5) + 0.4
    fig = Figure(figsize=(9.0, height))
    step = line_h / height
    y = 1.0 - 0.2 / height
    fig.text(0.02, y, title, fontsize=12, fontweight="bold", va="top", parse_math=False)
    y -= 1.5 * step
    common = {"family": "monospace", "fontsize": 9, "va": "top", "parse_math": False,
              "usetex": False}
    colours = {"expresses": "#1a7f37", "suppresses": "#c62828"}
    if not grouped:
        fig.text(0.02, y, "(no rows)", color="0.4", **common)
    for component, group in grouped.items():
        fig.text(0.02, y, f"component {component}", fontweight="bold", **common)
        y -= step
        for row in group:
            colour = colours[row["direction"]]
            context = _visible(str(row["context"]))
            if len(context) > 40:
                context = "…" + context[-39:]
            fig.text(0.04, y, row["direction"], color=colour, **common)
            fig.text(0.16, y, f"{float(row['value']):+.4g}", **common)
            fig.text(0.62, y, context, color="0.45", ha="right", **common)
            fig.text(0.625, y, _visible(str(row["token"])), color=colour, fontweight="bold",
                     bbox={"boxstyle": "square,pad=0.1", "fc": "#f2f2f2", "ec": "none"},
                     **common)
            y -= step
    return _save(fig, path)
