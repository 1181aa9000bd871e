"""Bad input gets a ValueError naming the argument; NaN in sampling is reported, never hidden."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data


@pytest.fixture(scope="module")
def data():
    return make_linear_data(n=1_000, d=3, seed=5)


def _posterior(x, y, batch_size=100):
    model = partial(linear_model, batch_size=batch_size)
    return slt.localize(slt.temper(model, 200.0), {"w": least_squares(x, y)}, 10.0)


def _run(kernel, x, y, num_chains=2, num_samples=50):
    mcmc = MCMC(kernel, num_warmup=0, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    return mcmc


@pytest.mark.parametrize("step_size", [0.0, -1e-3, float("nan"), float("inf"), "small", None])
def test_step_size_must_be_positive(data, step_size):
    with pytest.raises(ValueError, match="step_size"):
        slt.SGLD(_posterior(*data), step_size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"minibatch": "sometimes"}, "minibatch"),
        ({"init_loss": float("nan")}, "init_loss"),
        ({"init_loss_batches": 0}, "init_loss_batches"),
        ({"init_loss_batches": 2.5}, "init_loss_batches"),
    ],
)
def test_kernel_options_are_checked(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        slt.SGLD(_posterior(*data), 1e-4, **kwargs)


@pytest.mark.parametrize(("alpha", "delta"), [(1.5, 1e-5), (0.0, 1e-5), (0.99, 0.0)])
def test_rmsprop_arguments_are_checked(alpha, delta):
    with pytest.raises(ValueError, match="alpha|delta"):
        slt.rmsprop(alpha, delta)


def test_subsample_larger_than_data_names_the_plate(data):
    x, y = data
    with pytest.raises(ValueError, match=r"plate 'data' asks for subsample_size=5000.*size=1000"):
        _run(slt.SGLD(_posterior(x, y, batch_size=5_000), 1e-4), x, y)


def test_model_without_observed_sites(data):
    def prior_only(x, y):
        numpyro.sample("w", dist.Normal(0, 1).expand([3]).to_event(1))

    model = slt.localize(prior_only, {"w": jnp.zeros(3)}, 1.0)
    with pytest.raises(ValueError, match="no observed sites"):
        _run(slt.SGLD(model, 1e-4), *data)


def test_center_missing_a_site_or_with_wrong_shape(data):
    x, y = data
    model = partial(linear_model, batch_size=100)
    with pytest.raises(ValueError, match="center misses the latent site 'w'"):
        _run(slt.SGLD(slt.localize(model, {"v": jnp.zeros(3)}, 1.0), 1e-4), x, y)
    with pytest.raises(ValueError, match=r"center\['w'\] has shape \(2,\)"):
        _run(slt.SGLD(slt.localize(model, {"w": jnp.zeros(2)}, 1.0), 1e-4), x, y)


def test_init_params_with_wrong_sites(data):
    x, y = data
    mcmc = MCMC(slt.SGLD(_posterior(x, y), 1e-4), num_warmup=0, num_samples=5,
                progress_bar=False)
    with pytest.raises(ValueError, match="init_params"):
        mcmc.run(jax.random.PRNGKey(0), x, y, init_params={"v": jnp.zeros(3)})


def test_tempered_sites_of_different_sizes_ask_for_n():
    """The plain posterior of sites of different sizes just works (β = 1, n = 40, the total);
    tempering them needs n (tests/test_model_semantics.py checks the sampled moments)."""
    def two_sites():
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("a", 10):
            numpyro.sample("ya", dist.Normal(mu, 1), obs=jnp.zeros(10))
        with numpyro.plate("b", 30):
            numpyro.sample("yb", dist.Normal(mu, 1), obs=jnp.ones(30))

    model = slt.localize(two_sites, {"mu": jnp.array(0.0)}, 1.0)
    mcmc = MCMC(slt.SGLD(model, 1e-3), num_warmup=0, num_samples=5, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    assert np.all(mcmc.get_extra_fields()["num_observations"] == 40)
    tempered = slt.localize(slt.temper(two_sites, 4.0), {"mu": jnp.array(0.0)}, 1.0)
    with pytest.raises(ValueError, match=r"slt.temper\(model, nbeta, n=40\)"):
        MCMC(slt.SGLD(tempered, 1e-3), num_warmup=0, num_samples=5,
             progress_bar=False).run(jax.random.PRNGKey(0))


def test_divergence_is_reported_with_chain_and_step(data):
    x, y = data
    mcmc = _run(slt.SGLD(_posterior(x, y), 5.0), x, y, num_samples=200)
    fields = mcmc.get_extra_fields(group_by_chain=True)
    assert np.all(fields["diverged_at"][:, -1] > 0)
    with pytest.raises(FloatingPointError, match=r"chain 0 at step \d+.*reduce step_size"):
        slt.llc(mcmc)


def test_exploding_loss_counts_as_divergence(data):
    """A finite but exploded loss (excess above max_excess_loss) is flagged with its step."""
    x, y = data
    calm = _run(slt.SGLD(_posterior(x, y), 1e-4), x, y, num_samples=50)
    fields = calm.get_extra_fields(group_by_chain=True)
    excess = np.asarray(fields["loss"]) - float(slt.llc(calm)["init_loss"])
    assert np.all(np.asarray(fields["diverged_at"]) == -1)
    threshold = 0.5 * float(excess.max(axis=1).min())  # every chain passes it at some step
    assert threshold > 0
    mcmc = _run(slt.SGLD(_posterior(x, y), 1e-4, max_excess_loss=threshold), x, y,
                num_samples=50)
    first = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverged_at"])[:, -1]
    assert np.all(first >= 1), first
    with pytest.raises(FloatingPointError, match=r"exploding loss\): chain 0 at step \d+"):
        slt.llc(mcmc)
    for bad in (0.0, -1.0, float("inf"), "big", True):
        with pytest.raises(ValueError, match="max_excess_loss"):
            slt.SGLD(_posterior(x, y), 1e-4, max_excess_loss=bad)


def test_diverged_chain_can_be_dropped_with_a_warning(data):
    x, y = data
    mcmc = _run(slt.SGLD(_posterior(x, y), 1e-4), x, y, num_chains=3, num_samples=100)
    stats = slt._arviz.sample_stats(mcmc)
    # Make chain 1 blow up at draw 40 (step 40), as a NaN gradient would.
    mean = stats["mean_excess_loss"].values.copy()
    mean[1, 40:] = np.nan
    diverged_at = stats["diverged_at"].values.copy()
    diverged_at[1, 40:] = 40
    stats = stats.assign(mean_excess_loss=(("chain", "draw"), mean),
                         diverged_at=(("chain", "draw"), diverged_at))
    with pytest.raises(FloatingPointError, match="chain 1 at step 40"):
        slt.llc(stats)
    with pytest.warns(UserWarning, match="dropping diverged chains: chain 1 at step 40"):
        result = slt.llc(stats, on_divergence="drop")
    assert list(result.chain.values) == [0, 2] and np.isfinite(result.llc_mean.item())


def test_llc_input_errors(data):
    x, y = data
    mcmc = _run(slt.SGLD(_posterior(x, y), 1e-4), x, y)
    with pytest.raises(ValueError, match="burn_in"):
        slt.llc(mcmc, burn_in=50)
    with pytest.raises(ValueError, match="burn_in"):
        slt.llc(mcmc, burn_in=-1)
    with pytest.raises(ValueError, match="on_divergence"):
        slt.llc(mcmc, on_divergence="ignore")
    with pytest.raises(TypeError, match="source must be"):
        slt.llc({"loss": [1.0]})
    with pytest.raises(ValueError, match="has not run"):
        slt.llc(MCMC(slt.SGLD(_posterior(x, y), 1e-4), num_warmup=0, num_samples=5))
    with pytest.raises(ValueError, match="lacks the SGLD statistics"):
        slt.llc(xr.Dataset({"loss": (("chain", "draw"), np.ones((2, 5)))}))


def test_runs_with_different_settings_cannot_be_mixed(data):
    x, y = data
    a = slt._arviz.sample_stats(_run(slt.SGLD(_posterior(x, y), 1e-4), x, y))
    other = slt.localize(slt.temper(partial(linear_model, batch_size=100), 400.0),
                         {"w": least_squares(x, y)}, 10.0)
    b = slt._arviz.sample_stats(_run(slt.SGLD(other, 1e-4), x, y))
    mixed = xr.concat([a, b], dim="chain")
    with pytest.raises(ValueError, match="nbeta differs"):
        slt.llc(mixed)
