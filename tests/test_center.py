"""slt.find_center: MAP and maximum-likelihood centers against closed forms, the AutoDelta path,
the minimum check's warning, argument errors, and the center inside localize + SGLD."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoDelta

import numpyro_slt
import numpyro_slt as slt
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data


@pytest.fixture(scope="module")
def data():
    return make_linear_data(n=400, d=3, seed=2)


def ridge_model(x, y, prior_scale):
    w = numpyro.sample("w", dist.Normal(0.0, prior_scale).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(x @ w, 1.0), obs=y)


def scale_model(x, y):
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([x.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=64) as idx:
        numpyro.sample("y", dist.Normal(x[idx] @ w, sigma), obs=y[idx])


def _no_warning():
    return warnings.catch_warnings(record=False, action="error", category=UserWarning)


def test_mle_of_a_linear_regression_is_least_squares_on_the_full_batch(data):
    """The plate subsamples 50 of 400 rows; the center is still the full-data least squares."""
    x, y = data
    with _no_warning():
        center = numpyro_slt.find_center(linear_model, x, y, method="mle", batch_size=50)
    assert set(center) == {"w"} and center["w"].shape == (3,)
    expected = jnp.linalg.lstsq(x, y)[0]
    np.testing.assert_allclose(center["w"], expected, atol=1e-4)


def test_map_with_a_gaussian_prior_is_ridge_regression(data):
    """log p(w) + Σ log p(y|x,w) with w ~ N(0, s²I), unit noise: w* = (XᵀX + I/s²)⁻¹Xᵀy."""
    x, y = data
    s = 0.05  # a strong prior, so that ridge and least squares differ visibly
    with _no_warning():
        center = numpyro_slt.find_center(ridge_model, x, y, s)
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ridge = np.linalg.solve(xn.T @ xn + np.eye(3) / s**2, xn.T @ yn)
    assert np.abs(ridge - np.asarray(least_squares(x, y))).max() > 0.1
    np.testing.assert_allclose(center["w"], ridge, atol=1e-4)
    # MLE ignores the prior
    mle = numpyro_slt.find_center(ridge_model, x, y, s, method="mle")
    np.testing.assert_allclose(mle["w"], least_squares(x, y), atol=1e-4)


def test_positive_site_comes_back_constrained_at_its_mle(data):
    """MLE of a Normal's σ is √(mean squared residual) of the least-squares fit; the HalfNormal
    site is returned as σ > 0 (constrained), a scalar like the site."""
    x, y = data
    with _no_warning():
        center = numpyro_slt.find_center(scale_model, x, y, method="mle")
    assert center["sigma"].shape == ()
    w = least_squares(x, y)
    sigma = float(jnp.sqrt(jnp.mean((y - x @ w) ** 2)))
    assert float(center["sigma"]) > 0
    np.testing.assert_allclose(center["w"], w, atol=1e-4)
    np.testing.assert_allclose(center["sigma"], sigma, rtol=1e-4)


def test_center_plugs_into_localize_and_sgld(data):
    x, y = data
    center = numpyro_slt.find_center(linear_model, x, y, method="mle", lbfgs_steps=0,
                                     batch_size=50)
    posterior = slt.localize(slt.temper(linear_model, 50.0), center, 100.0)
    mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=10, num_samples=50, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y, batch_size=50)
    draws = mcmc.get_samples()["w"]
    assert draws.shape == (100, 3) and bool(jnp.all(jnp.isfinite(draws)))
    assert float(jnp.abs(draws.mean(0) - center["w"]).max()) < 0.2


def test_warning_names_the_site_that_is_not_at_a_minimum(data):
    x, y = data
    with pytest.warns(UserWarning, match=r"site 'sigma'.*gradient norm .*raise num_steps"):
        numpyro_slt.find_center(scale_model, x, y, method="mle", num_steps=2, lbfgs_steps=0,
                                init={"w": least_squares(x, y), "sigma": jnp.asarray(3.0)})


def test_autodelta_result_returns_its_median(data):
    x, y = data
    guide = AutoDelta(ridge_model)
    svi = SVI(ridge_model, guide, numpyro.optim.Adam(0.05), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 1_000, x, y, 1.0, progress_bar=False)
    center = numpyro_slt.find_center(ridge_model, x, y, 1.0, guide=guide,
                                     guide_params=result, tolerance=1e-1)
    median = guide.median(result.params)
    assert set(center) == {"w"}
    np.testing.assert_allclose(center["w"], median["w"], rtol=1e-6, atol=1e-6)
    same = numpyro_slt.find_center(ridge_model, x, y, 1.0, guide=guide,
                                   guide_params=result.params, tolerance=1e-1)
    np.testing.assert_allclose(same["w"], median["w"], rtol=1e-6, atol=1e-6)


def _no_latent(x, y):
    numpyro.sample("y", dist.Normal(x.sum(-1), 1.0), obs=y)


@pytest.mark.parametrize(
    "model, kwargs, name",
    [
        (linear_model, {"method": "mode"}, "method"),
        (linear_model, {"num_steps": 0}, "num_steps"),
        (linear_model, {"num_steps": 2.5}, "num_steps"),
        (linear_model, {"learning_rate": -1e-2}, "learning_rate"),
        (linear_model, {"lbfgs_steps": -1}, "lbfgs_steps"),
        (linear_model, {"tolerance": 0.0}, "tolerance"),
        (linear_model, {"init": {"v": jnp.zeros(3)}}, "init"),
        (linear_model, {"init": {"w": jnp.zeros(2)}}, "init"),
        (linear_model, {"init": [0.0, 0.0, 0.0]}, "init"),
        (linear_model, {"guide": "autodelta", "guide_params": {}}, "guide"),
        (linear_model, {"guide": AutoDelta(linear_model)}, "guide_params"),
        (_no_latent, {}, "latent"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(data, model, kwargs, name):
    x, y = data
    with pytest.raises(ValueError, match=name):
        numpyro_slt.find_center(model, x, y, **kwargs)
