"""check_chains flags untrustworthy chains and says what to change (issue 16's list included)."""

import inspect
import re
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt._arviz import from_groups, sample_stats
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def data():
    return make_linear_data(n=2_000, d=3, seed=8)


def _run(data, step_size, gamma=10.0, num_samples=1_000, thinning=1):
    x, y = data
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=200), 300.0),
                             {"w": least_squares(x, y)}, gamma)
    mcmc = MCMC(slt.SGLD(posterior, step_size, control_variate=True), num_warmup=200,
                num_samples=num_samples, num_chains=2, chain_method="vectorized",
                thinning=thinning, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    return mcmc


@pytest.fixture(scope="module")
def healthy(data):  # long enough that the parameters mix too (ESS > 250, R-hat < 1.02)
    return _run(data, 5e-4, num_samples=4_000, thinning=2)


@pytest.fixture(scope="module")
def short(data):  # the same chains, 1,000 draws: the LLC trace mixes, the parameters do not
    return _run(data, 5e-4)


@pytest.fixture(scope="module")
def large_step(data):
    return _run(data, 1.2e-2)


def _check(source, **kwargs):
    """check_chains, with the rule that step-size advice never contradicts itself."""
    report = slt.check_chains(source, **kwargs)
    text = str(report)
    assert not ("reduce step_size" in text and "raise step_size" in text), text
    return report


def _draws_dataset(mcmc):
    w = np.asarray(mcmc.get_samples(group_by_chain=True)["w"])
    return xr.Dataset({"w": (("chain", "draw", "w_dim_0"), w)})


def test_a_healthy_run_passes(healthy):
    report = _check(healthy)
    assert report.ok, str(report)
    assert "OK: no problem found" in str(report)
    assert set(report.table.data_vars) == {"llc", "mala_accept", "drift_z", "escape",
                                           "noise_drift", "localization_drift"}
    assert list(report.parameters.site.values) == ["w"]
    assert report.llc_se_source == "the LLC trace's ESS"


def test_too_large_a_step_is_flagged(large_step):
    report = _check(large_step)
    assert not report.ok
    assert any("MALA acceptance" in p and "reduce step_size" in p for p in report.problems)


def test_drift_escape_and_divergence_are_flagged(short):
    stats = sample_stats(short)
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
    problems = _check(drifting).problems
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
        report = _check(broken)
    assert any("diverged (chain 0 at step 500)" in p for p in report.problems)


# -- issue 16, bullet 1: no "OK" while the parameters mix badly or the trace's ESS overstates

def test_parameters_that_mix_badly_are_flagged_from_mcmc_and_arviz(short):
    trace_only = slt.check_chains(sample_stats(short))
    assert trace_only.ess > 500 and trace_only.rhat < 1.01  # the LLC trace alone looks fine
    for source in (short, from_groups(_draws_dataset(short), sample_stats(short))):
        report = _check(source)
        assert not report.ok
        assert any(p.startswith("site 'w' mixes badly") and "run longer" in p
                   for p in report.problems), str(report)
        assert float(report.parameters.sel(site="w").ess) < 100
        assert "site w: worst R-hat" in str(report)


def test_large_sites_are_judged_by_their_first_coordinates_and_norm(short):
    w = np.asarray(short.get_samples(group_by_chain=True)["w"])
    wide = np.concatenate([w] * 10, axis=2)  # 30 coordinates
    source = from_groups(xr.Dataset({"w": (("chain", "draw", "k"), wide)}), sample_stats(short))
    report = _check(source, site_coords=4)
    assert report.parameters.sel(site="w").ess_at.item() in {"w[0]", "w[1]", "w[2]", "w[3]",
                                                              "‖w‖"}


def test_precision_comes_from_the_spread_between_chains_when_the_ess_is_not_credible(healthy):
    stats = sample_stats(healthy)
    nbeta = float(stats["nbeta"].values.flat[0])
    mean = stats["mean_excess_loss"].values.astype(float)
    mean[0] -= 0.25 / nbeta  # the chains settle 0.5 apart: each step's excess moved by ±0.25/nβ
    mean[1] += 0.25 / nbeta
    shifted = stats.assign(mean_excess_loss=(("chain", "draw"), mean))
    report = _check(shifted)
    per_chain = report.table.llc.values
    between = np.std(per_chain, ddof=1) / np.sqrt(2)
    assert report.rhat < 1.05 and report.ess > 1_000  # the old report said OK here
    assert any("ESS" in p and "not credible" in p and f"{between:.3g}" in p
               for p in report.problems), str(report)
    assert report.llc_se_source == "the spread between chains"
    assert report.llc_se == pytest.approx(between)
    assert "standard error from the spread between chains" in str(report)


# -- bullet 2: a negative LLC is flagged with its likely cause

def _schools(y, sigma):
    theta = numpyro.sample("theta", dist.Normal(0, 1).expand([8]).to_event(1))
    with numpyro.plate("schools", 8):
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


SIGMA = jnp.array([15.0, 10, 16, 11, 9, 11, 10, 18]) / 10
Y = jnp.array([28.0, 8, -3, 7, -1, 1, 18, 12]) / 10


def _schools_run(center, step_size, num_samples, thinning):
    posterior = slt.localize(slt.temper(_schools, 8.0), {"theta": center}, 1.0)
    mcmc = MCMC(slt.SGLD(posterior, step_size), num_warmup=500, num_samples=num_samples,
                num_chains=2, chain_method="vectorized", thinning=thinning, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), Y, SIGMA)
    return mcmc


def test_a_negative_llc_is_flagged_with_its_cause():
    # eight schools localized at the prior mean, which is not a minimum of L_n
    report = _check(_schools_run(jnp.zeros(8), 0.03, 6_000, 6))
    assert report.table.llc.values.mean() < 0
    negative = [p for p in report.problems if p.startswith("negative LLC")]
    assert negative, str(report)
    assert "not a local minimum" in negative[0] and "raise gamma" in negative[0]
    assert "below L_n(w*)" in negative[0]


def test_one_negative_chain_is_flagged(healthy):
    stats = sample_stats(healthy)
    nbeta = float(stats["nbeta"].values.flat[0])
    mean = stats["mean_excess_loss"].values.astype(float)
    mean[1] -= 3.0 / nbeta  # chain 1's λ̂ drops from about 1.6 to about -1.4
    report = _check(stats.assign(mean_excess_loss=(("chain", "draw"), mean)))
    assert report.table.llc.values[1] < 0 < report.table.llc.values.mean()
    assert any(p.startswith("negative LLC") and "chain 1:" in p for p in report.problems)


# -- bullet 3: MALA >= 0.9 as the docs ask, and an exploding LLC reported as a divergence

def test_mala_below_the_docs_threshold_is_flagged(healthy):
    stats = sample_stats(healthy)
    mala = np.full(stats["mala_accept"].shape, 0.885)
    report = _check(stats.assign(mala_accept=(("chain", "draw"), mala)))
    assert sum("MALA acceptance 0.885 < 0.9" in p and "reduce step_size" in p
               for p in report.problems) == 2


def test_docs_state_the_thresholds_of_the_code():
    api = (DOCS / "api.md").read_text()
    section = api.split("## Chain health", 1)[1].split("\n## ", 1)[0]
    signature = re.search(r"slt\.check_chains\(source, \*, (.*?)\) -> ChainReport", section,
                          re.S).group(1)
    stated = dict(item.strip().split("=") for item in signature.replace("\n", " ").split(","))
    defaults = {name: p.default for name, p in
                inspect.signature(slt.check_chains).parameters.items() if name != "source"}
    assert set(stated) == set(defaults)
    for name, value in stated.items():
        assert (value == "None") if defaults[name] is None else float(value) == defaults[name]
    assert defaults["mala_min"] == 0.9
    assert "0.9 or above" in (DOCS / "quickstart.md").read_text()


def test_an_exploding_llc_is_reported_as_diverging(large_step):
    report = _check(large_step)
    assert max(report.table.llc.values) > 100  # d = 3: d/2 = 1.5
    assert any("diverges" in p and "d = 3 parameters" in p and "reduce step_size" in p
               for p in report.problems), str(report)
    stats_only = _check(sample_stats(large_step), num_params=3)
    assert any("diverges" in p for p in stats_only.problems)


def test_a_loss_excess_beyond_max_excess_loss_is_a_divergence(data):
    x, y = data
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=200), 300.0),
                             {"w": least_squares(x, y)}, 10.0)
    mcmc = MCMC(slt.SGLD(posterior, 1.2e-2, max_excess_loss=0.5), num_warmup=20,
                num_samples=100, num_chains=2, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    report = _check(mcmc)
    assert any("diverged" in p and "max_excess_loss" in p for p in report.problems)


# -- bullet 4: advice never contradicts itself; a well-mixed run at a small step is OK

def test_step_size_advice_is_decided_once(short):
    stats = sample_stats(short)
    mala = stats["mala_accept"].values.astype(float)
    mala[0], mala[1] = 0.5, 0.9995  # one chain steps too far, the other barely moves
    source = from_groups(_draws_dataset(short),
                         stats.assign(mala_accept=(("chain", "draw"), mala)))
    report = _check(source)  # the parameters mix badly, so a high MALA could be flagged
    text = str(report)
    assert "reduce step_size" in text and "raise step_size" not in text


def test_a_well_mixed_run_at_a_small_step_is_not_barely_moving():
    report = _check(_schools_run(Y, 0.01, 40_000, 20))
    assert np.all(report.table.mala_accept.values > 0.999)
    assert report.ok, str(report)


def test_a_high_mala_with_poor_mixing_is_flagged():
    report = _check(_schools_run(Y, 0.01, 2_000, 5))
    assert any("barely moves" in p and "raise step_size" in p for p in report.problems)


# -- bullet 5: a report, not an AttributeError, when every chain diverged

def _location(y):
    mu = numpyro.sample("mu", dist.Normal(0, 1))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, 1), obs=y)


def test_every_chain_diverged_prints_a_report():
    mc = MCMC(slt.SGLD(_location, 1e3), num_warmup=10, num_samples=50, num_chains=2,
              chain_method="vectorized", progress_bar=False)
    mc.run(jax.random.PRNGKey(0), jnp.zeros(10))
    report = _check(mc)
    text = str(report)
    assert not report.ok
    assert "every chain diverged" in text and "reduce step_size" in text
    assert "chain 0 at step" in text and "chain 1 at step" in text


# -- bullet 6: the step-size message uses the docs' step sizes

@pytest.mark.parametrize("bad", [0.0, -1e-5, float("nan"), float("inf")])
def test_step_size_message_follows_the_docs(bad):
    with pytest.raises(ValueError, match="step_size must be finite") as info:
        slt.SGLD(_location, bad)
    message = str(info.value)
    assert "1e-4 to 1e-3" not in message
    sizes = re.findall(r"1e-\d", message.split("; ", 1)[1])  # the advice, not the value given
    assert "1e-5" in sizes
    docs = "".join(p.read_text() for p in DOCS.glob("*.md"))
    for size in sizes:
        assert re.search(rf"SGLD\([^)]*{size}", docs), size
