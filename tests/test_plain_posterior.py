"""SG-MCMC on ordinary NumPyro models (no temper, no localize) against NUTS.

The known answer is NUTS's posterior on the same model and data. Agreement is judged within Monte
Carlo error: for every coordinate, the difference of the posterior means is below four standard
errors (sd / √ESS from both runs), and the relative difference of the standard deviations is below
four times its standard error (1 / √(2·ESS) from both runs) plus the step size's known bias
budget (a few percent, docs/posterior.md).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS

import numpyro_slt as slt

pytestmark = pytest.mark.slow

SD_BIAS = 0.03  # relative bias of the standard deviations allowed for the finite step size


def logistic_regression(x, y=None, batch_size=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w + b),
                       obs=None if y is None else y[idx])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", sigma.shape[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        numpyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def _logistic_data(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    logits = x @ np.array([1.0, -0.5, 0.25, 0.0]) - 0.3
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


SCHOOLS_Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _columns(mcmc, transform=None):
    """Draws grouped by chain, every scalar coordinate a column: name → (chains, draws)."""
    samples = {k: np.asarray(v, np.float64)
               for k, v in mcmc.get_samples(group_by_chain=True).items()}
    if transform is not None:
        samples = transform(samples)
    columns = {}
    for name, value in samples.items():
        flat = value.reshape(value.shape[0], value.shape[1], -1)
        for j in range(flat.shape[-1]):
            columns[f"{name}[{j}]" if flat.shape[-1] > 1 else name] = flat[..., j]
    return columns


def agreement(reference, draws):
    """Per coordinate: (mean difference in standard errors, relative sd difference, allowed sd
    difference, ESS of ``draws``)."""
    rows = {}
    for name, ref in reference.items():
        got = draws[name]
        ess_ref, ess_got = effective_sample_size(ref), effective_sample_size(got)
        sd_ref, sd_got = ref.std(), got.std()
        mean_se = np.sqrt(sd_ref**2 / ess_ref + sd_got**2 / ess_got)
        sd_se = np.sqrt(1.0 / (2 * ess_ref) + 1.0 / (2 * ess_got))
        rows[name] = (abs(got.mean() - ref.mean()) / mean_se, abs(sd_got / sd_ref - 1.0),
                      4.0 * sd_se + SD_BIAS, float(ess_got))
    return rows


def _assert_agree(reference, draws):
    """Means and standard deviations of every coordinate agree within Monte Carlo error."""
    rows = agreement(reference, draws)
    too_few = {name: round(row[3]) for name, row in rows.items() if row[3] < 100}
    assert not too_few, f"ESS too small for a comparison: {too_few}"
    failures = [f"{name}: mean off by {z:.1f} se, sd by {rel:.1%} (allowed {allowed:.1%})"
                for name, (z, rel, allowed, _) in rows.items() if z > 4.0 or rel > allowed]
    assert not failures, "; ".join(failures)


def _nuts(model, *args, **kwargs):
    mcmc = MCMC(NUTS(model, target_accept_prob=0.9), num_warmup=500, num_samples=1500,
                num_chains=2, chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), *args, **kwargs)
    return mcmc


def _log_tau(samples):
    samples = dict(samples)
    samples["tau"] = np.log(samples["tau"])  # the heavy-tailed tau compared on the log scale
    return samples


# (kernel, settings) at the documented step sizes (docs/posterior.md). Minibatch noise widens the
# posterior by about η·(N²/B)·Var_i[∇ℓ_i] / (2α) relative to the injected noise (SGHMC with
# friction α; SGLD is α = 1 at η = ε/2), so SGHMC keeps a high friction on the regression.
LOGISTIC_KERNELS = {
    "SGLD": lambda model: slt.SGLD(model, 1e-5),
    "SGHMC": lambda model: slt.SGHMC(model, 2.5e-6, friction=0.5),
    "SGNHT": lambda model: slt.SGNHT(model, 5e-6, diffusion=0.5),
}
SCHOOLS_KERNELS = {
    "SGLD": lambda model: slt.SGLD(model, 0.02),
    "SGHMC": lambda model: slt.SGHMC(model, 0.01, friction=0.2),
    "SGNHT": lambda model: slt.SGNHT(model, 0.005, diffusion=0.1),
}


@pytest.fixture(scope="module")
def logistic():
    x, y = _logistic_data()
    return x, y, _columns(_nuts(logistic_regression, x, y))


@pytest.fixture(scope="module")
def schools():
    return _columns(_nuts(eight_schools, SCHOOLS_SIGMA, SCHOOLS_Y), _log_tau)


@pytest.mark.parametrize("kernel", sorted(LOGISTIC_KERNELS))
def test_logistic_regression_with_subsampled_plate_matches_nuts(logistic, kernel):
    x, y, reference = logistic
    mcmc = MCMC(LOGISTIC_KERNELS[kernel](logistic_regression), num_warmup=2_000,
                num_samples=20_000, num_chains=4, thinning=20, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), x, y, batch_size=5_000)
    _assert_agree(reference, _columns(mcmc))


@pytest.mark.parametrize("kernel", sorted(SCHOOLS_KERNELS))
def test_eight_schools_matches_nuts(schools, kernel):
    mcmc = MCMC(SCHOOLS_KERNELS[kernel](eight_schools), num_warmup=5_000, num_samples=200_000,
                num_chains=4, thinning=50, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), SCHOOLS_SIGMA, SCHOOLS_Y)
    _assert_agree(schools, _columns(mcmc, _log_tau))
