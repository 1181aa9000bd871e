"""ArviZ conversion on both ArviZ lines: InferenceData (0.2x) and DataTree (1.x)."""

from functools import partial

import arviz as az
import jax
import numpy as np
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data

pytestmark = pytest.mark.arviz


@pytest.fixture(scope="module")
def finished_run():
    x, y = make_linear_data(n=2_000, d=3, seed=4)
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=100), 300.0),
                             {"w": least_squares(x, y)}, 10.0)
    mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=20, num_samples=200, num_chains=2,
                chain_method="vectorized", thinning=2, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    return mcmc


def test_from_numpyro_puts_sgld_statistics_in_sample_stats(finished_run):
    data = az.from_numpyro(finished_run)
    stats = data["sample_stats"]
    if isinstance(data, xr.DataTree):
        stats = stats.to_dataset()
    for name in ("loss", "mean_excess_loss", "mean_count", "init_loss", "nbeta", "mala_accept",
                 "diverging"):
        assert name in stats and stats[name].shape == (2, 100), name
    np.testing.assert_array_equal(stats["loss"], finished_run.get_extra_fields(
        group_by_chain=True)["loss"])
    posterior = data["posterior"]
    assert posterior["w"].shape == (2, 100, 3)


def test_llc_is_the_same_from_mcmc_and_from_arviz(finished_run):
    from_mcmc = slt.llc(finished_run)
    data = az.from_numpyro(finished_run)
    from_arviz = slt.llc(data)
    np.testing.assert_allclose(from_arviz.llc_per_chain, from_mcmc.llc_per_chain, rtol=1e-12)
    assert from_arviz.loss_ess.item() == pytest.approx(from_mcmc.loss_ess.item())
    stats = data["sample_stats"]
    stats = stats.to_dataset() if isinstance(stats, xr.DataTree) else stats
    np.testing.assert_allclose(slt.llc(stats).llc_mean, from_mcmc.llc_mean)


def test_arviz_log_likelihood_uses_a_fixed_evaluation_batch(finished_run):
    data = az.from_numpyro(finished_run, log_likelihood=True)
    log_lik = data["log_likelihood"]["y"]
    assert log_lik.shape == (2, 100, 100)  # chain, draw, the 100-point evaluation batch
    again = az.from_numpyro(finished_run, log_likelihood=True)["log_likelihood"]["y"]
    np.testing.assert_array_equal(np.asarray(log_lik), np.asarray(again))
    assert np.all(np.isfinite(np.asarray(log_lik)))


def test_arviz_summary_works(finished_run):
    data = az.from_numpyro(finished_run)
    summary = az.summary(data, var_names=["w"])
    assert len(summary) == 3
    result = slt.llc(data)
    assert np.isfinite(result.loss_rhat.item()) and result.loss_ess.item() > 10
