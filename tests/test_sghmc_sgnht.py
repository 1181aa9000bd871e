"""The SGHMC and SGNHT kernels, and the options every kernel shares (noise level, bounding box,
RMSProp settings, the chains' starts): exact identities, known answers and life in MCMC."""

from functools import partial

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import MCMC, init_to_uniform

import numpyro_slt as slt
from numpyro_slt import SGHMC, SGNHT, SGHMCState, SGNHTState
from numpyro_slt.checkpoint import sample_checkpointed
from numpyro_slt.known_models import (
    crossing_model,
    least_squares,
    linear_model,
    make_crossing_data,
    make_linear_data,
    make_rrr_data,
    rrr_model,
)
from numpyro_slt.theory import (
    normal_crossing_expected_excess,
    normal_crossing_learning_coefficient,
    rrr_learning_coefficient,
)

KERNELS = {"SGLD": slt.SGLD, "SGHMC": SGHMC, "SGNHT": SGNHT}


def _posterior(x, y, batch_size=128, nbeta=300.0, gamma=10.0):
    model = partial(linear_model, batch_size=batch_size)
    return slt.localize(slt.temper(model, nbeta), {"w": least_squares(x, y)}, gamma)


def _run(kernel, *args, seed=0, num_warmup=20, num_samples=100, num_chains=2, thinning=1):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", thinning=thinning, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args)
    return mcmc


@pytest.fixture(scope="module")
def small_data():
    return make_linear_data(n=2_000, d=3, seed=1)


def test_exports():
    assert slt.SGHMC is SGHMC and slt.SGNHT is SGNHT
    assert slt.kernels.SGHMC is SGHMC and slt.kernels.SGNHTState is SGNHTState
    assert {"SGHMC", "SGHMCState", "SGNHT", "SGNHTState"} <= set(slt.__all__)
    assert SGHMCState._fields == (*slt.SGLDState._fields, "momentum")
    assert SGNHTState._fields == (*slt.SGLDState._fields, "momentum", "thermostat")


def test_sghmc_with_friction_one_is_sgld_at_twice_the_step(small_data):
    """α = 1: v = −η∇U + √(2η)ξ and w ← w + v, i.e. SGLD with ε = 2η; same key, same draws."""
    x, y = small_data
    post = _posterior(x, y)
    hmc = _run(SGHMC(post, 5e-5, friction=1.0, control_variate=True), x, y)
    sgld = _run(slt.SGLD(post, 1e-4, control_variate=True), x, y)
    np.testing.assert_allclose(hmc.get_samples()["w"], sgld.get_samples()["w"], rtol=1e-5,
                               atol=1e-6)
    a, b = hmc.get_extra_fields(), sgld.get_extra_fields()
    for name in ("loss", "mala_accept", "drift_norm", "localization_norm"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-3, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(slt.llc(hmc).llc_per_chain, slt.llc(sgld).llc_per_chain,
                               rtol=1e-3)


@pytest.mark.parametrize("name", ["SGHMC", "SGNHT"])
def test_linear_gaussian_moments_and_llc_are_exact(name):
    """Full-batch linear regression: the posterior is N(w*, H⁻¹) with H = nβ·XᵀX/n + γI, and
    λ = ½·tr(nβ·XᵀX/n · H⁻¹). The discretisation bias at ηk ≈ 0.01 is 0.2% (discrete Lyapunov
    equation of the SGHMC recursion), far inside the 5% asked."""
    x, y = make_linear_data(n=400, d=2, seed=3)
    nbeta, gamma = 400.0, 50.0
    w_star = least_squares(x, y)
    post = slt.localize(slt.temper(linear_model, nbeta), {"w": w_star}, gamma)
    a = np.asarray(x.T @ x, np.float64) / 400
    hessian = nbeta * a + gamma * np.eye(2)
    cov = np.linalg.inv(hessian)
    kernel = KERNELS[name](post, 2e-5)
    mcmc = _run(kernel, x, y, num_warmup=1_000, num_samples=10_000, num_chains=4)
    draws = np.asarray(mcmc.get_samples()["w"], np.float64)
    assert np.all(np.abs(draws.mean(0) - np.asarray(w_star)) < 0.05 * np.sqrt(np.diag(cov)) * 4)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.05, atol=0.05 * cov.max())
    exact = 0.5 * np.trace(nbeta * a @ cov)
    assert slt.llc(mcmc).llc_mean.item() == pytest.approx(exact, rel=0.05)


def _regular():
    x, y = make_linear_data(n=20_000, d=3)
    n = x.shape[0]
    post = slt.localize(slt.temper(linear_model, n / np.log(n)), {"w": least_squares(x, y)},
                        10.0)
    return post, (x, y), 1.5, dict(step_size=2e-6), dict(num_samples=5_000, num_chains=4)


def _reduced_rank():
    x, y, center = make_rrr_data(5, 5, 3, 1, n=20_000)
    n = x.shape[0]
    post = slt.localize(slt.temper(partial(rrr_model, h=3, batch_size=500), n / np.log(n)),
                        center, 10.0)
    options = dict(step_size=1e-6, control_variate=True)
    return (post, (x, y), rrr_learning_coefficient(5, 5, 3, 1), options,
            dict(num_samples=6_000, num_chains=4))


def _crossing():
    x, y = make_crossing_data(n=1_000)
    nbeta = 10_000.0
    post = slt.localize(slt.temper(partial(crossing_model, powers=(1,)), nbeta),
                        {"w": jnp.zeros(1)}, 1.0)
    exact = normal_crossing_expected_excess((1,), 0.5 * float(jnp.mean(x**2)), nbeta, 1.0)
    assert exact == pytest.approx(normal_crossing_learning_coefficient((1,))[0], rel=0.01)
    return post, (x, y), exact, dict(step_size=5e-6), dict(num_samples=5_000, num_chains=8)


# per kernel, the settings that differ from the case's: with minibatches SGHMC's friction 0.5
# keeps the extra heat of the gradient noise, η·Var(∇U_B)/(2α), to a few percent at a step
# that explores the flat directions in 6,000 draws (η = 1e-6 with α = 0.3 gave −13%: not yet
# there); SGNHT's thermostat absorbs that noise, from a start ζ₀ = A = 0.1 large against it
KNOWN = {"regular": _regular, "reduced-rank": _reduced_rank, "normal-crossing": _crossing}
KERNEL_OPTIONS = {"SGHMC": {"reduced-rank": dict(friction=0.5, step_size=5e-6)},
                  "SGNHT": {"reduced-rank": dict(diffusion=0.1)}}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(KNOWN))
@pytest.mark.parametrize("name", ["SGHMC", "SGNHT"])
def test_known_answer_llcs_within_ten_percent(name, case):
    post, args, expected, options, budget = KNOWN[case]()
    kernel = KERNELS[name](post, **{**options, **KERNEL_OPTIONS[name].get(case, {})})
    mcmc = _run(kernel, *args, num_warmup=500, **budget)
    assert slt.llc(mcmc).llc_mean.item() == pytest.approx(expected, rel=0.10)


@pytest.mark.parametrize("name", ["SGHMC", "SGNHT"])
def test_fields_arviz_thinning_and_keep_draws(small_data, name):
    """The statistics and their conversion; thinning changes nothing in the LLC (the loss
    statistics are the shared base's, so one kernel checks it; keep_draws is SGLD's test)."""
    x, y = small_data
    post = _posterior(x, y)
    every = _run(KERNELS[name](post, 5e-5), x, y, num_samples=200)
    if name == "SGHMC":
        thinned = _run(KERNELS[name](post, 5e-5), x, y, num_samples=200, thinning=10)
        np.testing.assert_allclose(slt.llc(thinned).llc_per_chain,
                                   slt.llc(every).llc_per_chain, rtol=1e-4)
    data = az.from_numpyro(every)
    stats = data["sample_stats"]
    for field in ("loss", "mean_excess_loss", "mean_count", "init_loss", "mala_accept",
                  "diverged_at", "noise_norm"):
        assert stats[field].shape == (2, 200), field
    mala = np.asarray(stats["mala_accept"])
    assert np.all((mala > 0.5) & (mala <= 1.0))
    assert ("thermostat" in stats) == (name == "SGNHT")
    assert slt.llc(data).llc_mean.item() == pytest.approx(slt.llc(every).llc_mean.item())
    state = every.last_state
    assert state.momentum["w"].shape == (2, 3) and np.all(np.isfinite(state.momentum["w"]))


def test_divergence_is_detected_and_reported(small_data):
    x, y = small_data
    mcmc = _run(SGNHT(_posterior(x, y), 1.0), x, y, num_warmup=0, num_samples=20)
    assert np.all(mcmc.get_extra_fields()["diverged_at"][-1] >= 0)
    with pytest.raises(FloatingPointError, match="diverged"):
        slt.llc(mcmc)


def test_a_checkpointed_sgnht_run_resumes_to_the_same_draws(tmp_path, small_data):
    """Interrupted after its first segment and resumed, a run has the draws of one MCMC run."""
    x, y = small_data
    settings = dict(num_warmup=10, num_samples=60, num_chains=2, chain_method="vectorized",
                    checkpoint_every=30, progress_bar=False)

    class Stop(Exception):
        pass

    def stop(segments):
        if segments == 1:
            raise Stop

    kernel = SGNHT(_posterior(x, y), 5e-5)
    whole = _run(kernel, x, y, seed=3, num_warmup=10, num_samples=60)
    with pytest.raises(Stop):
        sample_checkpointed(kernel, jax.random.PRNGKey(3), x, y, directory=tmp_path / "cut",
                            on_segment=stop, **settings)
    resumed = sample_checkpointed(kernel, jax.random.PRNGKey(3), x, y,
                                  directory=tmp_path / "cut", resume=True, **settings)
    assert isinstance(resumed.last_state, SGNHTState)
    np.testing.assert_array_equal(resumed.get_samples(group_by_chain=True)["w"],
                                  whole.get_samples(group_by_chain=True)["w"])
    np.testing.assert_array_equal(resumed.get_extra_fields(group_by_chain=True)["thermostat"],
                                  whole.get_extra_fields(group_by_chain=True)["thermostat"])


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(friction=0.0), "friction"), (dict(friction=1.5), "friction"),
    (dict(friction="x"), "friction"), (dict(step_size=0.0), "step_size"),
    (dict(step_size=-1.0), "step_size"), (dict(noise_level=-1.0), "noise_level"),
    (dict(noise_level=float("nan")), "noise_level"), (dict(bounding_box=-0.1), "bounding_box"),
    (dict(bounding_box=0.0), "bounding_box"),
])
def test_bad_sghmc_arguments_name_the_argument(small_data, kwargs, match):
    arguments = {"step_size": 1e-4, **kwargs}
    with pytest.raises(ValueError, match=match):
        SGHMC(_posterior(*small_data), arguments.pop("step_size"), **arguments)


@pytest.mark.parametrize(("call", "match"), [
    (lambda post: SGNHT(post, 1e-4, diffusion=0.0), "diffusion"),
    (lambda post: SGNHT(post, 1e-4, diffusion=-1.0), "diffusion"),
    (lambda post: SGNHT(post, 0.0), "step_size"),
    (lambda post: SGNHT(post, 1e-4, bounding_box=-1.0), "bounding_box"),
    (lambda post: slt.SGLD(post, 1e-4, noise_level=-0.5), "noise_level"),
    (lambda post: slt.rmsprop(alpha=0.0), "alpha"),
    (lambda post: slt.rmsprop(alpha=1.5), "alpha"),
    (lambda post: slt.rmsprop(statistics="loss"), "statistics"),
])
def test_bad_option_values_name_the_argument(small_data, call, match):
    with pytest.raises(ValueError, match=match):
        call(_posterior(*small_data))


# -- options shared by the three kernels -------------------------------------------------------


def _one_step(kernel, x, y, z0):
    state0 = kernel.init(jax.random.PRNGKey(1), 0, z0, (x, y), {})
    return state0, kernel.sample(state0, (x, y), {})


@pytest.mark.parametrize("name", list(KERNELS))
def test_noise_level_zero_is_the_pure_drift(small_data, name):
    """σ = 0: SGLD moves to w − (ε/2)∇U(w) exactly; the momentum kernels to w + v' with
    v' = (1 − α)v − η∇U (SGHMC) or (1 − ζ)v − η∇U (SGNHT)."""
    x, y = small_data
    kernel = KERNELS[name](_posterior(x, y, batch_size=None), 1e-4, noise_level=0.0)
    z0 = {"w": least_squares(x, y) + jnp.array([0.05, -0.02, 0.03])}
    state0, state1 = _one_step(kernel, x, y, z0)
    g = state0.z_grad["w"]
    if name == "SGLD":
        expected = z0["w"] - 0.5 * 1e-4 * g
    else:
        friction = 0.1 if name == "SGHMC" else state0.thermostat
        expected = z0["w"] + ((1.0 - friction) * state0.momentum["w"] - 1e-4 * g)
    np.testing.assert_allclose(state1.z["w"], expected, rtol=0, atol=1e-7)
    if name == "SGLD":
        np.testing.assert_array_equal(state1.z["w"], expected)
    assert float(state1.noise_norm) < 1e-6


@pytest.mark.parametrize("name", list(KERNELS))
def test_bounding_box_holds_every_draw(small_data, name):
    x, y = small_data
    box = 2e-3
    kernel = KERNELS[name](_posterior(x, y), 1e-4, bounding_box=box)
    mcmc = _run(kernel, x, y, num_warmup=0, num_samples=100)
    offset = np.asarray(mcmc.get_samples()["w"], np.float64) - np.asarray(least_squares(x, y))
    assert np.all(np.abs(offset) <= box * (1 + 1e-5))
    assert np.mean(np.abs(offset) > 0.99 * box) > 0.05  # the box is active, not idle


def test_rmsprop_alpha_one_is_the_constant_metric_one_over_delta(small_data):
    """v starts at 0 and α = 1 keeps it there (devinterp's convention): G = 1/δ, so the chain is
    plain SGLD at ε/δ (same key, same draws to float rounding)."""
    x, y = small_data
    post = _posterior(x, y)
    pre = _run(slt.SGLD(post, 1e-6, preconditioner=slt.rmsprop(alpha=1.0, delta=0.01)), x, y)
    plain = _run(slt.SGLD(post, 1e-4), x, y)
    assert np.all(np.asarray(pre.last_state.precond_state.v["w"]) == 0.0)
    np.testing.assert_allclose(pre.get_samples()["w"], plain.get_samples()["w"], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("statistics", ["potential", "likelihood"])
def test_rmsprop_statistics_come_from_the_chosen_gradient(small_data, statistics):
    """After one step v = (1 − α)·g² with g = ∇U (``"potential"``) or g = ∇U − γ(w − w*),
    the likelihood part alone (``"likelihood"``)."""
    x, y = small_data
    gamma, alpha = 10.0, 0.9
    kernel = slt.SGLD(_posterior(x, y, gamma=gamma), 1e-4,
                      preconditioner=slt.rmsprop(alpha, 1e-3, statistics=statistics))
    w_star = least_squares(x, y)
    z0 = {"w": w_star + jnp.array([0.5, -0.3, 0.2])}  # far enough that γ(w − w*) counts
    state0, state1 = _one_step(kernel, x, y, z0)
    g = state0.z_grad["w"]
    if statistics == "likelihood":
        g = g - gamma * (z0["w"] - w_star)
    np.testing.assert_allclose(state1.precond_state.v["w"], (1 - alpha) * g**2, rtol=1e-5)


def _plain_posterior():
    """A tempered model with no localization: no site has a center."""
    return slt.temper(partial(linear_model, batch_size=128), 300.0)


@pytest.mark.parametrize("name", list(KERNELS))
def test_chains_start_apart_on_sites_without_a_center(small_data, name):
    """Without init_params each chain draws its start with init_strategy and its own key;
    u* (init_strategy at PRNGKey(0)) and L_n(w*) stay shared. Localized sites start at their
    center (every other test of the kernels)."""
    x, y = small_data
    kernel = KERNELS[name](_plain_posterior(), 1e-5, init_strategy=init_to_uniform(radius=1))
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    state = kernel.init(keys, 0, None, (x, y), {})
    start = np.asarray(state.z["w"])
    assert len({tuple(row) for row in start.tolist()}) == 4 and np.all(np.abs(start) <= 1)
    reference, init_loss = kernel._reference
    assert not np.any(np.all(start == np.asarray(reference["w"]), axis=1))
    assert np.all(np.asarray(state.init_loss) == np.float32(init_loss))
    single = kernel.init(keys[2], 0, None, (x, y), {})
    np.testing.assert_allclose(single.z["w"], start[2], rtol=1e-6)
    if name == "SGHMC":  # and the chains run from there (the shared init, checked once)
        mcmc = _run(KERNELS[name](_plain_posterior(), 1e-5), x, y, num_warmup=0, num_samples=5,
                    num_chains=3)
        first = np.asarray(mcmc.get_samples(group_by_chain=True)["w"][:, 0, 0])
        assert len(set(first.tolist())) == 3
