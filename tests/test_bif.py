"""slt.bif and slt.loss_kernel: the closed form of a Gaussian posterior, an SGLD run, bad input.

Known answer (docs/formulas.md): for w ~ N(μ, Σ) and ℓ_i(w) = ½(y_i − x_iᵀw)² with residual
r_i = y_i − x_iᵀμ, Cov[ℓ_i, ℓ_j] = r_i r_j·x_iᵀΣx_j + ½(x_iᵀΣx_j)² exactly.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt._arviz import from_groups
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data


def _closed_form_kernel(x: np.ndarray, y: np.ndarray, mu: np.ndarray, sigma: np.ndarray):
    residual = y - x @ mu
    inner = x @ sigma @ x.T
    return np.outer(residual, residual) * inner + 0.5 * inner**2


def _losses(draws: np.ndarray, x: np.ndarray, y: np.ndarray) -> xr.DataArray:
    """ℓ_i at draws (chain, draw, d) → DataArray (chain, draw, item)."""
    values = 0.5 * (y - np.einsum("cdk,ik->cdi", draws, x)) ** 2
    return xr.DataArray(values, dims=("chain", "draw", "item"))


def _batch_se(losses: xr.DataArray, batches: int = 20) -> np.ndarray:
    """Standard error of the kernel from independent batches of draws."""
    pooled = losses.stack(s=("chain", "draw")).transpose("s", "item").values
    parts = np.array_split(pooled, batches)
    kernels = [np.cov(p.T, bias=True) for p in parts]
    return np.std(kernels, axis=0, ddof=1) / np.sqrt(batches)


def test_loss_kernel_matches_the_gaussian_closed_form_on_exact_draws():
    rng = np.random.default_rng(0)
    d, items = 3, 6
    x, y = rng.normal(size=(items, d)), rng.normal(size=items)
    mu = rng.normal(size=d)
    a = rng.normal(size=(d, d))
    sigma = 0.2 * (a @ a.T + np.eye(d))
    draws = rng.multivariate_normal(mu, sigma, size=(4, 50_000))
    losses = _losses(draws, x, y)
    kernel = slt.loss_kernel(losses)
    expected = _closed_form_kernel(x, y, mu, sigma)
    assert kernel.dims == ("item", "item_query")
    assert np.all(np.abs(kernel.values - expected) <= 4 * _batch_se(losses) + 1e-12)
    influence = slt.bif(losses, losses.isel(item=[0, 2]).rename(item="query"))
    np.testing.assert_allclose(influence.values, -kernel.values[:, [0, 2]], rtol=1e-12)


def test_bif_of_an_sgld_run_matches_the_tempered_localized_posterior():
    """The localized tempered posterior of a linear regression is N(μ, Σ) with
    Σ⁻¹ = (nβ/n)·XᵀX + γI and μ = Σ·((nβ/n)·Xᵀy + γw*)."""
    n, d, nbeta, gamma = 2_000, 2, 200.0, 20.0
    x, y = make_linear_data(n=n, d=d, seed=3)
    center = {"w": least_squares(x, y)}
    posterior = slt.localize(slt.temper(linear_model, nbeta), center, gamma)
    mcmc = MCMC(slt.SGLD(posterior, 1e-3), num_warmup=500, num_samples=4_000, num_chains=4,
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    draws = np.asarray(mcmc.get_samples(group_by_chain=True)["w"], dtype=np.float64)
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    precision = nbeta / n * xs.T @ xs + gamma * np.eye(d)
    sigma = np.linalg.inv(precision)
    mu = sigma @ (nbeta / n * xs.T @ ys + gamma * np.asarray(center["w"], np.float64))
    chosen = [0, 1, 2, 3, 4, 5, 6, 7]
    losses = _losses(draws, xs[chosen], ys[chosen])
    kernel = slt.loss_kernel(losses)
    expected = _closed_form_kernel(xs[chosen], ys[chosen], mu, sigma)
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    # SGLD's discretisation bias (≈ εΛ/4 ≈ 3% of Σ here) and autocorrelated draws
    assert np.max(np.abs(kernel.values - expected) / scale) < 0.12


def test_chunks_and_arviz_input_give_the_same_numbers():
    rng = np.random.default_rng(1)
    losses = xr.DataArray(rng.normal(size=(2, 300, 50)), dims=("chain", "draw", "token"))
    phi = xr.DataArray(rng.normal(size=(2, 300)) + losses.values[..., 3], dims=("chain", "draw"),
                       name="phi")
    whole = slt.bif(losses, phi)
    chunked = slt.bif(losses, phi, chunk_size=7)
    np.testing.assert_allclose(whole.values, chunked.values, rtol=1e-12, atol=1e-15)
    assert whole.dims == ("token", "query") and whole.sizes == {"token": 50, "query": 1}
    assert int(whole.argmin("token")[0]) == 3  # the token φ follows helps it most
    data = from_groups(xr.Dataset({"token_loss": losses, "phi": phi}),
                       xr.Dataset({"loss": phi}))
    np.testing.assert_array_equal(slt.bif(data, "phi").values, whole.values)
    np.testing.assert_array_equal(slt.bif(data, ("token_loss", "phi")).values, whole.values)


def test_bad_input_names_the_argument():
    losses = xr.DataArray(np.ones((2, 10, 4)), dims=("chain", "draw", "item"))
    with pytest.raises(ValueError, match="train_losses lacks the dims"):
        slt.bif(losses.isel(chain=0))
    with_nan = losses.copy()
    with_nan[0, 3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        slt.bif(with_nan)
    with pytest.raises(ValueError, match="share chain and draw"):
        slt.bif(losses, losses.isel(draw=slice(0, 5)).rename(item="q"))
    with pytest.raises(ValueError, match="item_dim"):
        slt.bif(losses.expand_dims(extra=2, axis=-1))
    with pytest.raises(ValueError, match="chunk_size"):
        slt.bif(losses, chunk_size=0)
    with pytest.raises(TypeError, match="train_losses must be"):
        slt.bif(np.ones((2, 10, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        slt.bif(losses.isel(chain=[0], draw=[0]))
