"""Susceptibilities and per-token contributions: pure functions of observables at the draws.

Notation of docs/formulas.md. For a component C sampled with the weight-restricted posterior, at
every kept draw w = (u*, c) the caller evaluates

- φ_C(w) = L_q(u*, c) − L_q(w*), the observable localized on C (``phi``: chain, draw);
- L_q(w), the loss on a fixed evaluation set of the sampling distribution (``sampling_loss``);
- ℓ_xy(w) for every probe token (x, y) (``token_losses``: chain, draw, token).

With X_xy = ℓ_xy − L_q and expectations E_r over the pooled draws of all chains,

    per-token          χ^C_xy = −Cov_r[φ_C, X_xy] = −E_r[φ_C X_xy] + E_r[φ_C]·E_r[X_xy]
    global             χ_C(q′) = mean over the tokens of q′ of χ^C_xy = −Cov_r[φ_C, mean X]
    standardized       χ̃^C_xy = χ^C_xy − mean over all probe tokens of χ^C_xy
    full-chain centring (devinterp 2.x, App. C.4): −E_r[φ_C X_xy] + E_r[φ_C]·E_full[X_xy],

which differs from the covariance by exactly E_r[φ_C]·(E_full[X_xy] − E_r[X_xy]). Covariances are
population moments (divide by the number of draws), so these identities hold exactly on the same
draws. χ^C_xy < 0 means C expresses (helps predict) y in context x; > 0 means C suppresses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import xarray as xr

from .._arviz import posterior_group

__all__ = ["susceptibilities", "response_matrix", "split_half_reliability"]

Centring = Literal["covariance", "full_chain"]


def susceptibilities(
    phi: Any,
    sampling_loss: xr.DataArray | None = None,
    token_losses: xr.DataArray | None = None,
    *,
    probe: xr.DataArray | None = None,
    centring: Centring = "covariance",
    full_chain_excess: xr.DataArray | None = None,
) -> xr.Dataset:
    """Per-token and global susceptibilities of the components in ``phi``.

    :param phi: φ_C at each draw, dims (component, chain, draw) or (chain, draw); or the ArviZ
        data (``InferenceData`` or ``DataTree``) of a run whose posterior group holds the
        observables ``phi``, ``sampling_loss`` and ``token_loss`` (as written by
        :func:`numpyro_slt.nn.observables.add_observables`), in which case the probe labels are
        its ``token_probe`` coordinate and the other two arguments must be left out.
    :param sampling_loss: L_q at the same draws, same dims as ``phi``.
    :param token_losses: ℓ_xy at the same draws, dims (…, chain, draw, token).
    :param probe: optional label of each token's probe distribution (dim token); the global
        susceptibility is reported per probe (dim probe), otherwise over all tokens.
    :param centring: ``"covariance"`` (default) or ``"full_chain"`` (devinterp 2.x); the latter
        needs ``full_chain_excess``, the mean of ℓ_xy − L_q under an unrestricted chain (dim token,
        optionally also component).
    :return: Dataset with ``per_token`` (component, token), ``standardized`` (component, token),
        ``global`` (component[, probe]) and ``phi_mean`` (component).
    """
    if not isinstance(phi, xr.DataArray):
        phi, sampling_loss, token_losses, probe = _from_arviz(phi, sampling_loss, token_losses,
                                                              probe)
    phi, sampling_loss, token_losses = _align(phi, sampling_loss, token_losses)
    if centring not in ("covariance", "full_chain"):
        raise ValueError(f"centring must be 'covariance' or 'full_chain', got {centring!r}")
    if centring == "full_chain" and full_chain_excess is None:
        raise ValueError("centring='full_chain' needs full_chain_excess: the mean of ℓ − L_q per "
                         "token under an unrestricted (full-weight) chain")
    samples = ("chain", "draw")
    excess = token_losses - sampling_loss
    phi_mean = phi.mean(samples)
    cross = (phi * excess).mean(samples)
    if centring == "covariance":
        per_token = -(cross - phi_mean * excess.mean(samples))
    else:
        full = full_chain_excess
        if not isinstance(full, xr.DataArray):
            raise TypeError("full_chain_excess must be an xarray.DataArray with a token dim")
        if not np.all(np.isfinite(full.values)):
            raise ValueError("full_chain_excess holds NaN or Inf; check the unrestricted run")
        if "token" not in full.dims or full.sizes["token"] != excess.sizes["token"]:
            raise ValueError(
                f"full_chain_excess must have a token dimension of size {excess.sizes['token']}"
            )
        per_token = -(cross - phi_mean * full)
    standardized = per_token - per_token.mean("token")
    if probe is None:
        global_ = per_token.mean("token")
    else:
        if probe.sizes.get("token") != per_token.sizes["token"]:
            raise ValueError("probe must label every token (dim token of the same size)")
        global_ = per_token.groupby(probe.rename("probe")).mean("token")
    return xr.Dataset(
        {"per_token": per_token, "standardized": standardized, "global": global_,
         "phi_mean": phi_mean},
        attrs={"centring": centring,
               "definition": "chi_xy = -Cov_r[phi_C, l_xy - L_q] (population moments)"},
    )


def response_matrix(result: xr.Dataset, *, standardized: bool = True) -> xr.DataArray:
    """The per-token response matrix X[token, component] (standardized by default)."""
    name = "standardized" if standardized else "per_token"
    return result[name].transpose("token", "component")


def _from_arviz(data: Any, sampling_loss, token_losses, probe):
    """(phi, sampling_loss, token_loss, probe) from the posterior group of ArviZ data."""
    if sampling_loss is not None or token_losses is not None:
        raise TypeError("pass either ArviZ data alone or the three DataArrays phi, "
                        "sampling_loss and token_losses")
    try:
        posterior = posterior_group(data)
    except TypeError:
        raise TypeError("phi must be an xarray.DataArray or ArviZ data (InferenceData or "
                        f"DataTree), got {type(data).__name__}") from None
    missing = [v for v in ("phi", "sampling_loss", "token_loss") if v not in posterior]
    if missing:
        raise ValueError(f"the posterior group lacks the observables {missing}; evaluate them "
                         "with numpyro_slt.nn.observables and add_observables")
    if probe is None and "token_probe" in posterior.coords:
        probe = posterior["token_probe"]
    return posterior["phi"], posterior["sampling_loss"], posterior["token_loss"], probe


def _align(phi: xr.DataArray, sampling_loss: xr.DataArray,
           token_losses: xr.DataArray) -> tuple[xr.DataArray, ...]:
    arrays = {"phi": phi, "sampling_loss": sampling_loss, "token_losses": token_losses}
    for name, array in arrays.items():
        if not isinstance(array, xr.DataArray):
            raise TypeError(f"{name} must be an xarray.DataArray with named dims")
        missing = {"chain", "draw"} - set(array.dims)
        if missing:
            raise ValueError(f"{name} lacks the dims {sorted(missing)}; it has {array.dims}")
    if "token" not in token_losses.dims or token_losses.sizes["token"] == 0:
        raise ValueError("token_losses needs a non-empty 'token' dimension (the probe tokens)")
    if "component" not in phi.dims:
        phi = phi.expand_dims(component=["C"])
        sampling_loss = sampling_loss.expand_dims(component=["C"])
        if "component" not in token_losses.dims:
            token_losses = token_losses.expand_dims(component=["C"])
    shapes = _sizes(arrays := {"phi": phi, "sampling_loss": sampling_loss,
                               "token_losses": token_losses})
    if len({(s["chain"], s["draw"]) for s in shapes.values()}) != 1:
        raise ValueError(f"phi, sampling_loss and token_losses must share chain and draw sizes; "
                         f"got { {k: (s['chain'], s['draw']) for k, s in shapes.items()} }")
    try:  # the same labels on shared dims: xarray would otherwise silently intersect them
        phi, sampling_loss, token_losses = xr.align(phi, sampling_loss, token_losses,
                                                    join="exact")
    except ValueError as err:
        raise ValueError(f"phi, sampling_loss and token_losses must carry the same chain, draw "
                         f"and component labels: {err}") from None
    for name, array in arrays.items():
        if not np.all(np.isfinite(array.values)):
            raise ValueError(f"{name} holds NaN or Inf; check the run for divergences")
    # moments in float64: E[φX] − E[φ]E[X] cancels, and observables often arrive as float32
    return tuple(a.astype(np.float64) for a in (phi, sampling_loss, token_losses))


def _sizes(arrays: Mapping[str, xr.DataArray]) -> dict[str, Mapping[str, int]]:
    return {name: array.sizes for name, array in arrays.items()}


def split_half_reliability(phi: xr.DataArray, sampling_loss: xr.DataArray,
                           token_losses: xr.DataArray) -> xr.DataArray:
    """How reproducible the per-token susceptibilities are: the correlation, over tokens, of the
    standardized χ̃^C_xy estimated from the first half of the chains with the one estimated from
    the second half (per component; needs at least 2 chains).

    The two halves share no draws, so their noise is independent: r ≈ 1 means the per-token
    pattern is signal, r ≈ 0 means it is Monte Carlo noise (sample more, or thin more when the
    draws are autocorrelated).
    """
    phi, sampling_loss, token_losses = _align(phi, sampling_loss, token_losses)
    chains = phi.sizes["chain"]
    if chains < 2:
        raise ValueError(f"split-half reliability needs at least 2 chains, got {chains}")
    halves = [slice(0, chains // 2), slice(chains // 2, chains)]
    first, second = (
        susceptibilities(phi.isel(chain=h), sampling_loss.isel(chain=h),
                         token_losses.isel(chain=h))["standardized"]
        for h in halves
    )
    a = first - first.mean("token")
    b = second - second.mean("token")
    denominator = np.sqrt((a**2).sum("token") * (b**2).sum("token"))
    return ((a * b).sum("token") / denominator.where(denominator > 0)).rename("split_half_r")
