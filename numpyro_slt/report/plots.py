"""Figures for the report: SGLD loss traces, LLC bars, response heatmaps, PCA panels, top tokens.

Every function takes xarray inputs with named dims, writes one PNG at ``path`` (parent folders are
created; the file is replaced atomically) and returns its :class:`~pathlib.Path`. Figures are built
on :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so they work headless and
from threads. Components are named ``"L:H"`` for head H of layer L (``"0:3"``), or anything else
(``"embed"``, ``"unembed"``); heads are coloured by layer, other components grey.
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
from matplotlib.patches import Patch

from .._io import atomic_write

__all__ = [
    "plot_loss_traces",
    "plot_llc",
    "plot_response_heatmap",
    "plot_pca_loadings",
    "plot_token_scores",
    "plot_top_tokens",
    "plot_explained_variance",
]

DPI = 110
_TAB10 = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
_LAYER_COLOURS = [c for i, c in enumerate(_TAB10) if i != 7]  # tab10 without its grey
_OTHER_COLOUR = "#8c8c8c"
_ROLE_MARKERS = ["*", "D", "s", "^", "v", "P", "X", "p"]
_PATTERN_ORDER = ["word start", "word part", "induction", "spacing", "left delimiter",
                  "right delimiter", "formatting", "numeric", "other"]
_MANY_ROWS = 60  # above this many rows a heatmap drops its row tick labels


# ----------------------------------------------------------------------------- helpers


def _check_dims(array: object, name: str, dims: tuple[str, ...]) -> xr.DataArray:
    """``array`` as a DataArray transposed to ``dims``, or a ValueError naming ``name``."""
    if not isinstance(array, xr.DataArray):
        raise ValueError(f"{name} must be an xarray.DataArray, got {type(array).__name__}")
    if set(array.dims) != set(dims) or array.ndim != len(dims):
        raise ValueError(f"{name} must have dims ({', '.join(dims)}), got {array.dims}")
    return array.transpose(*dims)


def _names(array: xr.DataArray | xr.Dataset, dim: str) -> list[str]:
    """The labels along ``dim`` as strings (positions when there is no coordinate)."""
    if dim in array.coords:
        return [str(v) for v in array.coords[dim].values]
    return [str(i) for i in range(array.sizes[dim])]


def _layer(component: str) -> str | None:
    """The layer of a head ``"L:H"``; None for other components."""
    return component.split(":", 1)[0] if ":" in component else None


def _layer_colour(layer: str | None) -> str:
    if layer is None:
        return _OTHER_COLOUR
    index = int(layer) if layer.isdigit() else sum(map(ord, layer))
    return _LAYER_COLOURS[index % len(_LAYER_COLOURS)]


def _layer_handles(components: Sequence[str]) -> list[Patch]:
    """Legend patches: one per layer present (sorted), then "other" when non-heads are present."""
    layers = {_layer(c) for c in components}
    heads = sorted((x for x in layers if x is not None), key=lambda x: (not x.isdigit(),
                                                                       x.zfill(8)))
    handles = [Patch(color=_layer_colour(x), label=f"layer {x}") for x in heads]
    if None in layers:
        handles.append(Patch(color=_OTHER_COLOUR, label="other"))
    return handles


def _text_safe(artist_texts) -> None:
    """Turn mathtext off on texts that show user strings (a ``$`` must stay a ``$``)."""
    for text in artist_texts:
        text.set_parse_math(False)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: fig.savefig(stream, format="png", dpi=DPI), "wb")
    return path


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
    if not (isinstance(pcs, Sequence) and len(pcs) == 2 and all(int(p) >= 1 for p in pcs)):
        raise ValueError(f"pcs must be two PC numbers (1-based), got {pcs!r}")
    return int(pcs[0]), int(pcs[1])


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


def _grid(fig: Figure, n: int, ncols: int):
    """``n`` axes on a grid of ``ncols`` columns; unused cells are hidden."""
    nrows = -(-n // ncols)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _entry_label(label: str) -> str:
    """A PCA entry's display name: "layer 0" for "0", else the label itself."""
    return f"layer {label}" if label.isdigit() else label


def _format_stat(value: float, fmt: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, fmt)


# ----------------------------------------------------------------------------- figures


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
