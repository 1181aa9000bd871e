"""Low-rank structure of a response matrix: PCA by the SVD of the centred matrix.

For a response matrix X[t, C] (tokens or probes × components), centre every component's column over
the rows, X_c = X − mean_t X, and take the SVD X_c = U·S·Vᵀ. Then

- ``explained_variance_ratio[k]`` = S_k² / Σ_j S_j²;
- ``loadings[C, k]`` = V[C, k]: which components move together along principal component k;
- ``scores[t, k]`` = U[t, k]·S_k: which tokens (data patterns) drive it.

Signs of singular vectors are arbitrary; each PC is oriented so that its largest-magnitude loading
is positive, which makes the output deterministic. :func:`per_layer_pca` does this separately for
the heads of each layer (components named ``"L:H"``), as in Baker et al. (2025).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["response_pca", "per_layer_pca"]


def response_pca(matrix: xr.DataArray, n_components: int | None = None,
                 row_dim: str = "token") -> xr.Dataset:
    """PCA of ``matrix`` with dims (row_dim, component). See the module docstring."""
    if set(matrix.dims) != {row_dim, "component"}:
        raise ValueError(f"matrix must have dims ({row_dim!r}, 'component'), got {matrix.dims}")
    values = matrix.transpose(row_dim, "component").values.astype(np.float64)
    rows, columns = values.shape
    if rows < 2 or columns < 1:
        raise ValueError(f"matrix needs at least 2 rows and 1 component, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("matrix holds NaN or Inf")
    rank = min(rows, columns)
    n_components = rank if n_components is None else int(n_components)
    if not 1 <= n_components <= rank:
        raise ValueError(f"n_components must lie in [1, {rank}], got {n_components}")
    centred = values - values.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(len(s)), np.argmax(np.abs(vt), axis=1)])
    signs[signs == 0] = 1.0
    u, vt = u * signs, vt * signs[:, None]
    total = np.sum(s**2)
    ratio = s**2 / total if total > 0 else np.zeros_like(s)
    keep = slice(0, n_components)
    pcs = np.arange(1, n_components + 1)
    return xr.Dataset(
        {
            "explained_variance_ratio": ("pc", ratio[keep]),
            "singular_values": ("pc", s[keep]),
            "loadings": (("component", "pc"), vt[keep].T),
            "scores": ((row_dim, "pc"), (u * s)[:, keep]),
        },
        coords={"pc": pcs, "component": matrix.coords.get("component", np.arange(columns)),
                row_dim: matrix.coords.get(row_dim, np.arange(rows))},
        attrs={"method": "SVD of the column-centred matrix"},
    )


def per_layer_pca(matrix: xr.DataArray, n_components: int | None = None,
                  row_dim: str = "token") -> dict[str, xr.Dataset]:
    """:func:`response_pca` of the heads of each layer; heads are components named ``"L:H"``."""
    names = [str(c) for c in matrix.coords["component"].values]
    layers: dict[str, list[str]] = {}
    for name in names:
        if ":" in name:
            layers.setdefault(name.split(":")[0], []).append(name)
    if not layers:
        raise ValueError(f"no head components named 'L:H' among {names}")
    result = {}
    for layer, heads in layers.items():
        sub = matrix.sel(component=heads)
        k = None if n_components is None else min(n_components, len(heads), sub.sizes[row_dim])
        result[layer] = response_pca(sub, k, row_dim)
    return result
