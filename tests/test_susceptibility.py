"""Susceptibility estimators: exact identities on the same draws; a closed-form Gaussian case."""


import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.estimators.susceptibility import response_matrix, susceptibilities
from numpyro_slt.known_models import least_squares, make_linear_data


def _synthetic(seed=0, components=3, chains=2, draws=50, tokens=7):
    rng = np.random.default_rng(seed)
    dims = ("component", "chain", "draw")
    coords = {"component": [f"0:{c}" for c in range(components)]}
    phi = xr.DataArray(rng.normal(size=(components, chains, draws)), dims=dims, coords=coords)
    loss = xr.DataArray(rng.normal(size=(components, chains, draws)), dims=dims, coords=coords)
    token_losses = xr.DataArray(rng.normal(size=(components, chains, draws, tokens)),
                                dims=(*dims, "token"), coords=coords)
    token_losses = token_losses + 0.5 * phi  # some real covariance
    return phi, loss, token_losses


def test_per_token_contributions_average_exactly_to_the_global_value():
    phi, loss, token_losses = _synthetic()
    probe = xr.DataArray(["code"] * 3 + ["legal"] * 4, dims="token")
    result = susceptibilities(phi, loss, token_losses, probe=probe)
    for name, tokens in (("code", slice(0, 3)), ("legal", slice(3, 7))):
        direct = -xr.cov(phi, (token_losses - loss).isel(token=tokens).mean("token"),
                         dim=("chain", "draw"), ddof=0)
        np.testing.assert_allclose(result["global"].sel(probe=name), direct, rtol=1e-12)
        np.testing.assert_allclose(result["per_token"].isel(token=tokens).mean("token"),
                                   result["global"].sel(probe=name), rtol=1e-12)
    np.testing.assert_allclose(result["standardized"].mean("token"), 0.0, atol=1e-12)
    assert response_matrix(result).dims == ("token", "component")


def test_centring_conventions_differ_by_the_stated_identity():
    phi, loss, token_losses = _synthetic(seed=1)
    full_excess = xr.DataArray(np.random.default_rng(2).normal(size=7), dims="token")
    covariance = susceptibilities(phi, loss, token_losses)
    full = susceptibilities(phi, loss, token_losses, centring="full_chain",
                            full_chain_excess=full_excess)
    restricted_excess = (token_losses - loss).mean(("chain", "draw"))
    difference = covariance["per_token"] - full["per_token"]
    expected = phi.mean(("chain", "draw")) * (restricted_excess - full_excess)
    np.testing.assert_allclose(difference, expected, rtol=1e-10, atol=1e-12)


def test_phi_shifted_by_a_constant_changes_nothing():
    phi, loss, token_losses = _synthetic(seed=3)
    a = susceptibilities(phi, loss, token_losses)
    b = susceptibilities(phi + 5.0, loss, token_losses)
    np.testing.assert_allclose(a["per_token"], b["per_token"], rtol=1e-9, atol=1e-12)


def test_bad_inputs():
    phi, loss, token_losses = _synthetic()
    with pytest.raises(ValueError, match="token"):
        susceptibilities(phi, loss, token_losses.isel(token=slice(0, 0)))
    with pytest.raises(ValueError, match="chain and draw"):
        susceptibilities(phi, loss, token_losses.isel(draw=slice(0, 10)))
    with pytest.raises(ValueError, match="full_chain_excess"):
        susceptibilities(phi, loss, token_losses, centring="full_chain")
    with pytest.raises(ValueError, match="centring"):
        susceptibilities(phi, loss, token_losses, centring="other")
    bad = token_losses.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        susceptibilities(phi, loss, bad)


@pytest.mark.slow
def test_linear_gaussian_susceptibility_matches_closed_form():
    """Restricted to c = (w0, w1) of a linear regression the SGLD chain is a Gaussian AR(1) with
    covariance Σ (exact, including the discretisation: 1/(k(1 − εk/4)) per eigenvalue k of the
    restricted Hessian H = nβ·A_cc + γI). With δ = c − c*, φ = ½δᵀA_ccδ and
    ℓ_t = ½(r_t − x_t·δ)² + const, Gaussian moments give
    χ_t = −Cov[φ, ℓ_t − L_q] = −½·x_tᵀΣA_ccΣx_t + ½·tr(A_ccΣA_ccΣ)."""
    x, y = make_linear_data(n=400, d=3, seed=11)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n, nbeta, gamma, eps = 400, 400.0, 50.0, 1e-3
    w_star = np.asarray(least_squares(x, y), np.float64)

    center = {"w": np.asarray(w_star, np.float32)}

    def restricted_model(x, y):
        c = numpyro.sample("c", dist.Normal(0, 10).expand([2]).to_event(1))
        w = jax.numpy.concatenate([c, center["w"][2:]])
        numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)

    restricted = slt.localize(slt.temper(restricted_model, nbeta), {"c": center["w"][:2]}, gamma)
    mcmc = MCMC(slt.SGLD(restricted, eps), num_warmup=500, num_samples=100_000, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x.astype(np.float32), y.astype(np.float32))
    c = np.asarray(mcmc.get_samples(group_by_chain=True)["c"], np.float64)

    a = x.T @ x / n
    a_cc = a[:2, :2]
    k, vecs = np.linalg.eigh(nbeta * a_cc + gamma * np.eye(2))
    sigma = vecs @ np.diag(1.0 / (k * (1.0 - eps * k / 4.0))) @ vecs.T
    probe_rng = np.random.default_rng(12)
    x_probe = 2.0 * probe_rng.normal(size=(20, 3))
    y_probe = x_probe @ w_star + probe_rng.normal(size=20)

    def losses(w_c):
        w = np.concatenate([w_c, np.broadcast_to(w_star[2:], (*w_c.shape[:-1], 1))], axis=-1)
        sampling = 0.5 * np.mean((y[None, None] - np.einsum("cdi,ni->cdn", w, x)) ** 2, -1)
        tokens = 0.5 * (y_probe - np.einsum("cdi,ti->cdt", w, x_probe)) ** 2
        return sampling, tokens

    sampling, tokens = losses(c)
    sampling_star = 0.5 * np.mean((y - x @ w_star) ** 2)
    dims = ("chain", "draw")
    result = susceptibilities(
        xr.DataArray(sampling - sampling_star, dims=dims), xr.DataArray(sampling, dims=dims),
        xr.DataArray(tokens, dims=(*dims, "token")))
    m = sigma @ a_cc @ sigma
    expected = (-0.5 * np.einsum("ti,ij,tj->t", x_probe[:, :2], m, x_probe[:, :2])
                + 0.5 * np.trace(a_cc @ sigma @ a_cc @ sigma))
    estimate = result["per_token"].sel(component="C").values
    print("relative error of the mean:", estimate.mean() / expected.mean() - 1)
    np.testing.assert_allclose(estimate.mean(), expected.mean(), rtol=0.05)
    # Monte Carlo error of each token's estimate from batch means: 40 batches of 10,000 steps
    # (the chain's correlation time is a few steps), each batch's own covariance estimate
    batches = 10
    cut = lambda a: a.reshape(4 * batches, -1, *a.shape[2:])  # noqa: E731
    phi_b = cut(sampling - sampling_star)
    excess_b = cut(tokens - sampling[..., None])  # ℓ_t − L_q
    per_batch = -np.mean((phi_b - phi_b.mean(1, keepdims=True))[..., None]
                         * (excess_b - excess_b.mean(1, keepdims=True)), axis=1)
    standard_error = per_batch.std(axis=0, ddof=1) / np.sqrt(len(per_batch))
    z = (estimate - expected) / standard_error
    print("z-scores of the per-token estimates:", np.round(z, 2))
    # 20 tokens: |z| < 4.5 holds for all with probability > 0.9998 if the estimator is unbiased
    assert np.all(np.abs(z) < 4.5), z
    # and the Monte Carlo error is small enough for that to be a sharp check (< 15% of |χ|)
    assert np.median(standard_error / np.abs(expected)) < 0.15


class _weight_sites(numpyro.primitives.Messenger):
    """Multiply the log-likelihood of each named site by a weight (which may be negative)."""

    def __init__(self, fn, weights):
        self.weights = weights
        super().__init__(fn)

    def process_message(self, msg):
        if msg["name"] in self.weights:
            msg["scale"] = self.weights[msg["name"]] * (1.0 if msg["scale"] is None
                                                        else msg["scale"])


@pytest.mark.slow
def test_linear_response_finite_difference_matches_the_covariance():
    """χ = (1/nβ)·∂_h E_h[φ] at h = 0 equals −Cov_0[φ, ΔL]: sample the posteriors of
    q_h = (1 − h)q + h q′ at h = ±0.01 (with the same random numbers, so that their noise cancels)
    and compare the central difference of E_h[φ] with the
    covariance estimate from the h = 0 chain, within Monte Carlo error. (For this Gaussian the
    exact values are −1.112e-5 and −1.098e-5; a probe set whose optimum differs from w* would need
    a much smaller h, because the posterior mean then moves at first order in h.)"""
    rng = np.random.default_rng(21)
    n, m, nbeta, gamma, eps, h = 400, 200, 400.0, 20.0, 2e-4, 0.01
    x = rng.normal(size=(n, 2))
    w0 = np.array([0.7, -0.4])
    y = x @ w0 + rng.normal(size=n)
    x_probe = rng.normal(size=(m, 2)) * np.array([2.5, 0.5]) + np.array([1.0, 0.0])
    y_probe = x_probe @ w0 + rng.normal(size=m)
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]

    def model(x, y, x_probe, y_probe):
        w = numpyro.sample("w", dist.Normal(0, 10).expand([2]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)
        with numpyro.plate("probe", x_probe.shape[0]):
            numpyro.sample("y_probe", dist.Normal(x_probe @ w, 1.0), obs=y_probe)

    args = tuple(np.asarray(a, np.float32) for a in (x, y, x_probe, y_probe))

    def draws_at(weight):
        # U = nβ·((1 − h)·L_q + h·L_q′) with L_q, L_q′ the mean losses of the two sites: each
        # site's sum divided by its size, then tempered with n = 1 (β = nβ)
        weighted = _weight_sites(model, {"y": (1.0 - weight) / n, "y_probe": weight / m})
        posterior = slt.localize(slt.temper(weighted, nbeta, n=1),
                                 {"w": w_star.astype(np.float32)}, gamma)
        mcmc = MCMC(slt.SGLD(posterior, eps), num_warmup=2_000, num_samples=200_000,
                    num_chains=4, chain_method="vectorized", thinning=4, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), *args)
        return np.asarray(mcmc.get_samples(group_by_chain=True)["w"], np.float64)

    def loss(w, xs, ys):
        return 0.5 * np.mean((ys - np.einsum("cdi,ni->cdn", w, xs)) ** 2, axis=-1)

    loss_star = 0.5 * np.mean((y - x @ w_star) ** 2)
    phi_mean = {}
    for weight in (-h, h):
        w = draws_at(weight)
        phi_mean[weight] = float(np.mean(loss(w, x, y) - loss_star))
    finite_difference = (phi_mean[h] - phi_mean[-h]) / (2 * h * nbeta)

    w = draws_at(0.0)
    sampling = loss(w, x, y)
    tokens = 0.5 * (y_probe - np.einsum("cdi,ti->cdt", w, x_probe)) ** 2
    dims = ("chain", "draw")
    chi = susceptibilities(xr.DataArray(sampling - loss_star, dims=dims),
                           xr.DataArray(sampling, dims=dims),
                           xr.DataArray(tokens, dims=(*dims, "token")))["global"].item()
    assert chi < 0  # q′ sharpens the posterior along the directions φ measures
    print("finite difference", finite_difference, "covariance", chi)
    assert finite_difference == pytest.approx(chi, rel=0.15)


def test_split_half_reliability_separates_signal_from_noise():
    from numpyro_slt.estimators.susceptibility import split_half_reliability

    rng = np.random.default_rng(3)
    chains, draws, tokens = 4, 4000, 60
    phi = rng.normal(size=(chains, draws))
    slope = rng.normal(size=tokens)  # token t covaries with phi through slope[t]
    signal = phi[..., None] * slope + rng.normal(size=(chains, draws, tokens))
    noise = rng.normal(size=(chains, draws, tokens))
    dims = ("chain", "draw")
    as_xr = [xr.DataArray(phi, dims=dims), xr.DataArray(np.zeros((chains, draws)), dims=dims)]
    strong = split_half_reliability(*as_xr, xr.DataArray(signal, dims=(*dims, "token")))
    none = split_half_reliability(*as_xr, xr.DataArray(noise, dims=(*dims, "token")))
    assert float(strong.squeeze()) > 0.95
    assert abs(float(none.squeeze())) < 0.3
    with pytest.raises(ValueError, match="2 chains"):
        split_half_reliability(as_xr[0].isel(chain=[0]), as_xr[1].isel(chain=[0]),
                               xr.DataArray(noise[:1], dims=(*dims, "token")))
