"""Bayesian influence functions and the loss kernel: covariances of losses over posterior draws.

Notation of docs/formulas.md. For training items i (samples or tokens) with loss ℓ_i and query
observables φ_q (a test token's loss, a component observable), over the pooled draws of all chains
of the localized, tempered posterior,

    BIF(i, q) = −Cov[ℓ_i, φ_q] = −(E[ℓ_i φ_q] − E[ℓ_i]·E[φ_q])
    K(i, j)   =  Cov[ℓ_i, ℓ_j]                    (the loss kernel; BIF with φ = ℓ_j is −K)

The estimator is the one of the susceptibilities with other observables; covariances are
population moments (divide by the number of draws). BIF(i, q) < 0 means that up-weighting item i
lowers the posterior mean of φ_q (i helps q); > 0 means it raises it. Items are processed in
chunks, so memory grows with (items + queries) × draws, never items × queries × draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .._arviz import posterior_group

__all__ = ["bif", "loss_kernel"]

_SAMPLES = ("chain", "draw")


def bif(
    train_losses: Any,
    query: xr.DataArray | str | None = None,
    *,
    item_dim: str | None = None,
    query_dim: str | None = None,
    chunk_size: int = 1024,
) -> xr.DataArray:
    """Bayesian influence of every training item on every query: BIF(i, q) = −Cov[ℓ_i, φ_q].

    :param train_losses: ℓ_i at each draw, an ``xarray.DataArray`` with dims (chain, draw, item),
        or ArviZ data (``InferenceData`` or ``DataTree``) whose posterior group holds it (then
        ``query`` names the posterior variables, see below).
    :param query: φ_q at the same draws: a DataArray with dims (chain, draw[, query]), or, with
        ArviZ data, the name of a posterior variable. With ArviZ data ``train_losses`` is read
        from the variable ``"token_loss"`` unless ``query`` is a pair (train name, query name).
        ``None`` uses the training losses themselves as queries (then BIF = −K).
    :param item_dim: the dimension of ``train_losses`` that indexes the items; needed only when it
        has more than one dimension besides chain and draw.
    :param query_dim: likewise for ``query``.
    :param chunk_size: items per chunk of the covariance (memory: chunk × queries + draws ×
        (chunk + queries) floats).
    :return: DataArray ``bif`` with dims (item, query) (the names of the input dims), float64.
    """
    train, queries = _inputs(train_losses, query)
    train, item_dim = _checked("train_losses", train, item_dim)
    if queries is None:
        queries, query_dim = train.rename({item_dim: f"{item_dim}_query"}), f"{item_dim}_query"
    else:
        if "chain" in queries.dims and "draw" in queries.dims and queries.ndim == 2:
            queries = queries.expand_dims(query=[queries.name or "query"], axis=-1)
        queries, query_dim = _checked("query", queries, query_dim)
        if query_dim == item_dim:
            queries = queries.rename({query_dim: f"{query_dim}_query"})
            query_dim = f"{query_dim}_query"
    if (train.sizes["chain"], train.sizes["draw"]) != (queries.sizes["chain"],
                                                        queries.sizes["draw"]):
        raise ValueError(
            f"train_losses and query must share chain and draw sizes; got "
            f"{(train.sizes['chain'], train.sizes['draw'])} and "
            f"{(queries.sizes['chain'], queries.sizes['draw'])}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    covariance = _covariance(_matrix(train, item_dim), _matrix(queries, query_dim), chunk_size)
    coords = {item_dim: train[item_dim].values, query_dim: queries[query_dim].values}
    return xr.DataArray(-covariance, dims=(item_dim, query_dim), coords=coords, name="bif",
                        attrs={"definition": "BIF(i, q) = -Cov[l_i, phi_q] over pooled draws "
                               "(population moments)", "draws": _pooled(train)})


def loss_kernel(train_losses: Any, *, item_dim: str | None = None,
                chunk_size: int = 1024) -> xr.DataArray:
    """The loss kernel K(i, j) = Cov[ℓ_i, ℓ_j] over the pooled draws (dims item, item_query)."""
    kernel = -bif(train_losses, None, item_dim=item_dim, chunk_size=chunk_size)
    kernel.attrs["definition"] = "K(i, j) = Cov[l_i, l_j] over pooled draws (population moments)"
    return kernel.rename("loss_kernel")


def _inputs(train_losses: Any, query: Any) -> tuple[xr.DataArray, xr.DataArray | None]:
    """The two DataArrays, read from the posterior group when given ArviZ data."""
    if isinstance(train_losses, xr.DataArray):
        if isinstance(query, str | tuple):
            raise TypeError("query names a posterior variable only when train_losses is ArviZ "
                            "data; pass a DataArray")
        if query is not None and not isinstance(query, xr.DataArray):
            raise TypeError(f"query must be an xarray.DataArray, got {type(query).__name__}")
        return train_losses, query
    try:
        posterior = posterior_group(train_losses)
    except TypeError:
        raise TypeError("train_losses must be an xarray.DataArray with dims (chain, draw, item) "
                        f"or ArviZ data, got {type(train_losses).__name__}") from None
    train_name, query_name = (query if isinstance(query, tuple) else ("token_loss", query))
    for name in (train_name, query_name):
        if name is not None and name not in posterior:
            raise ValueError(f"the posterior group has no variable {name!r}; it has "
                             f"{sorted(posterior.data_vars)}")
    return posterior[train_name], None if query_name is None else posterior[query_name]


def _checked(name: str, array: xr.DataArray, dim: str | None) -> tuple[xr.DataArray, str]:
    """The array with one item dimension besides chain and draw, finite, and that dim's name."""
    missing = set(_SAMPLES) - set(array.dims)
    if missing:
        raise ValueError(f"{name} lacks the dims {sorted(missing)}; it has {array.dims}")
    others = [d for d in array.dims if d not in _SAMPLES]
    if dim is None:
        if len(others) != 1:
            argument = "item_dim" if name == "train_losses" else "query_dim"
            raise ValueError(f"{name} has the dims {others} besides chain and draw; say which "
                             f"indexes the items with {argument}=, or stack the others into one")
        dim = others[0]
    elif dim not in others:
        raise ValueError(f"{name} has no dimension {dim!r}; it has {array.dims}")
    elif len(others) > 1:
        raise ValueError(f"{name} has the dims {others} besides chain and draw; stack them into "
                         f"{dim!r} first (DataArray.stack)")
    if array.sizes[dim] == 0:
        raise ValueError(f"{name} has no items along {dim!r}")
    if _pooled(array) < 2:
        raise ValueError(f"{name} holds {_pooled(array)} draw(s); a covariance needs at least 2")
    if not np.all(np.isfinite(array.values)):
        raise ValueError(f"{name} holds NaN or Inf; check the run for divergences")
    if dim not in array.coords:
        array = array.assign_coords({dim: np.arange(array.sizes[dim])})
    return array, dim


def _pooled(array: xr.DataArray) -> int:
    return int(array.sizes["chain"] * array.sizes["draw"])


def _matrix(array: xr.DataArray, dim: str) -> np.ndarray:
    """(pooled draws, items) in float64, centred: the moments cancel, so float32 is not enough."""
    values = array.transpose("chain", "draw", dim).values.reshape(_pooled(array), -1)
    values = values.astype(np.float64)
    return values - values.mean(axis=0)


def _covariance(items: np.ndarray, queries: np.ndarray, chunk_size: int) -> np.ndarray:
    """Population covariance (items × queries) of two centred (draws × ·) matrices, by chunks."""
    draws = items.shape[0]
    out = np.empty((items.shape[1], queries.shape[1]))
    for start in range(0, items.shape[1], chunk_size):
        stop = start + chunk_size
        out[start:stop] = items[:, start:stop].T @ queries / draws
    return out
