"""check_chains flags untrustworthy chains and says what to change."""

from functools import partial

import jax
import numpy as np
import pytest
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt._arviz import sample_stats
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data


@pytest.fixture(scope="module")
def data():
    return make_linear_data(n=2_000, d=3, seed=8)


def _run(data, step_size, gamma=10.0, num_samples=1_000):
    x, y = data
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=200), 300.0),
                             {"w": least_squares(x, y)}, gamma)
    mcmc = MCMC(slt.SGLD(posterior, step_size, control_variate=True), num_warmup=200,
                num_samples=num_samples, num_chains=2, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    return mcmc


def test_a_healthy_run_passes(data):
    report = slt.check_chains(_run(data, 5e-4))
    assert report.ok, str(report)
    assert "OK: no problem found" in str(report)
    assert set(report.table.data_vars) == {"llc", "mala_accept", "drift_z", "escape"}


def test_too_large_a_step_is_flagged(data):
    report = slt.check_chains(_run(data, 1.2e-2))
    assert not report.ok
    assert any("MALA acceptance" in p and "reduce step_size" in p for p in report.problems)


def test_drift_escape_and_divergence_are_flagged(data):
    stats = sample_stats(_run(data, 5e-4))
    draws = stats.sizes["draw"]
    # chain 1's excess loss climbs steadily, and its distance from w* triples
    mean = stats["mean_excess_loss"].values.astype(float)
    count = stats["mean_count"].values.astype(float)
    steps = np.arange(1, draws + 1)
    mean[1] = np.cumsum(0.05 * steps / draws) / count[1]
    distance = stats["distance"].values.astype(float)
    distance[1] *= np.linspace(1, 5, draws)
    drifting = stats.assign(mean_excess_loss=(("chain", "draw"), mean),
                            distance=(("chain", "draw"), distance))
    problems = slt.check_chains(drifting).problems
    assert any(p.startswith("chain 1: the LLC trace still drifts") for p in problems)
    assert any(p.startswith("chain 1: the distance from w* grew") and "raise gamma" in p
               for p in problems)
    assert not any(p.startswith("chain 0") for p in problems)
    diverged_at = stats["diverged_at"].values.copy()
    diverged_at[0, 300:] = 500
    mean = stats["mean_excess_loss"].values.copy()
    mean[0, 300:] = np.nan
    broken = stats.assign(diverged_at=(("chain", "draw"), diverged_at),
                          mean_excess_loss=(("chain", "draw"), mean))
    with pytest.warns(UserWarning, match="dropping diverged chains"):
        report = slt.check_chains(broken)
    assert any("diverged (chain 0 at step 500)" in p for p in report.problems)
