"""Drawing pieces shared by the report figures: colours, input checks, grids, legends, saving.

Components are named ``"L:H"`` for head H of layer L (``"0:3"``), or anything else (``"embed"``,
``"unembed"``); heads are coloured by layer, other components grey. Every figure is saved as one
PNG at :data:`DPI`, replacing the file atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .._io import atomic_write

DPI = 110
_TAB10 = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
_LAYER_COLOURS = [c for i, c in enumerate(_TAB10) if i != 7]  # tab10 without its grey
_OTHER_COLOUR = "#8c8c8c"


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


def _grid(fig: Figure, n: int, ncols: int):
    """``n`` axes on a grid of ``ncols`` columns; unused cells are hidden."""
    nrows = -(-n // ncols)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n]


def _format_stat(value: float, fmt: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, fmt)
