"""The norms of the three terms of the SGLD step (likelihood drift, localization drift, noise),
WBIC, and states saved before those fields existed."""

import pickle
from functools import partial
from typing import NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt._arviz import sample_stats
from numpyro_slt.checkpoint import load_draws, sample_checkpointed
from numpyro_slt.kernels import sgld as sgld_module
from numpyro_slt.kernels._steps import normal_like
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data

NORMS = ("drift_norm", "localization_norm", "noise_norm")


# -- one step by hand --------------------------------------------------------------------------


def tiny_model(x, y):
    """y ~ N(x·w, s): a real site and a positive one (localized in log s)."""
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    s = numpyro.sample("s", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(x @ w, s), obs=y)


def _tiny_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 2)).astype(np.float32)
    y = (x @ np.array([0.5, -1.0]) + 1.2 * rng.normal(size=30)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.parametrize("preconditioner", [None, (0.9, 1e-2)], ids=["identity", "rmsprop"])
def test_norms_equal_a_hand_computed_step(preconditioner):
    x, y = _tiny_data()
    nbeta, gamma, eps = 20.0, 3.0, 1e-3
    center = {"w": jnp.array([0.5, -1.0]), "s": jnp.array(1.2)}
    posterior = slt.localize(slt.temper(tiny_model, nbeta), center, gamma)
    kernel = slt.SGLD(posterior, eps, preconditioner=None if preconditioner is None
                      else slt.rmsprop(*preconditioner))
    u_star = {"w": center["w"], "s": jnp.log(center["s"])}  # unconstrained center
    z0 = {"w": u_star["w"] + jnp.array([0.3, -0.2]), "s": u_star["s"] + 0.25}
    state0 = kernel.init(jax.random.PRNGKey(1), 0, z0, (x, y), {})
    state1 = kernel.sample(state0, (x, y), {})

    def loss(u):  # L_n in unconstrained coordinates, written out
        sigma = jnp.exp(u["s"])
        return jnp.mean(0.5 * ((y - x @ u["w"]) / sigma) ** 2 + jnp.log(sigma)
                        + 0.5 * jnp.log(2 * jnp.pi))

    g_lik = jax.tree.map(lambda g: nbeta * g, jax.grad(loss)(z0))
    g_loc = {k: gamma * (z0[k] - u_star[k]) for k in z0}
    grad = {k: g_lik[k] + g_loc[k] for k in z0}
    for k in z0:
        np.testing.assert_allclose(state0.z_grad[k], grad[k], rtol=1e-4, atol=1e-5)
    if preconditioner is None:
        metric = {k: jnp.ones_like(v) for k, v in z0.items()}
    else:
        alpha, delta = preconditioner
        metric = {k: 1.0 / (delta + jnp.sqrt((1 - alpha) * g**2)) for k, g in grad.items()}
    # the noise of this step, read off the move itself: z1 − z0 + (ε/2)·G⊙∇U(z0), and drawn
    # again from the step's key (the kernel splits the state's key into next, noise, batch)
    noise = {k: state1.z[k] - z0[k] + 0.5 * eps * metric[k] * grad[k] for k in z0}
    xi = normal_like(jax.random.split(state0.rng_key, 3)[1], z0)
    for k in z0:
        np.testing.assert_allclose(noise[k], jnp.sqrt(eps * metric[k]) * xi[k], rtol=1e-4,
                                   atol=1e-7)

    def tree_norm(tree):
        return float(jnp.sqrt(sum(jnp.sum(v**2) for v in tree.values())))

    expected = {
        "drift_norm": tree_norm({k: 0.5 * eps * metric[k] * g_lik[k] for k in z0}),
        "localization_norm": tree_norm({k: 0.5 * eps * metric[k] * g_loc[k] for k in z0}),
        "noise_norm": tree_norm(noise),
    }
    for name, value in expected.items():
        assert float(getattr(state1, name)) == pytest.approx(value, rel=1e-4), name
        assert float(getattr(state0, name)) == 0.0  # no move produced the first state
    assert float(state1.num_observations) == 30.0
    # √(εG)⊙ξ with ξ ~ N(0, I): its norm is about √(ε·ΣG) (three coordinates, loose bounds)
    scale = np.sqrt(eps * sum(float(jnp.sum(g)) for g in metric.values()))
    assert 0.05 * scale < expected["noise_norm"] < 4 * scale


def test_a_model_that_is_not_localized_has_no_localization_term():
    """Without ``localize`` the prior is the model's own: its gradient counts in the drift."""
    x, y = _tiny_data()
    kernel = slt.SGLD(slt.temper(tiny_model, 20.0), 1e-3)
    state = kernel.init(jax.random.PRNGKey(1), 0, None, (x, y), {})
    state = kernel.sample(state, (x, y), {})
    assert float(state.localization_norm) == 0.0
    assert float(state.drift_norm) > 0 and float(state.noise_norm) > 0


# -- in MCMC, ArviZ and the chain report -------------------------------------------------------


@pytest.fixture(scope="module")
def linear_run():
    x, y = make_linear_data(n=2_000, d=3, seed=1)
    n = x.shape[0]
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=128), n / np.log(n)),
                             {"w": least_squares(x, y)}, 10.0)
    mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=50, num_samples=150, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y, extra_fields=("z_grad",))
    return mcmc, posterior, (x, y)


@pytest.mark.arviz
def test_norms_reach_extra_fields_arviz_and_the_chain_report(linear_run, tmp_path):
    mcmc, _, _ = linear_run
    fields = mcmc.get_extra_fields(group_by_chain=True)
    for name in NORMS:
        assert fields[name].shape == (2, 150), name
        assert np.all(np.isfinite(fields[name])) and np.all(fields[name] > 0), name
    assert np.all(fields["num_observations"] == 2_000)
    # the noise dominates a well-chosen step; the drift is of order √(ε·curvature) smaller
    assert np.median(fields["noise_norm"] / fields["drift_norm"]) > 2
    stats = sample_stats(az.from_numpyro(mcmc))  # InferenceData or DataTree, by ArviZ line
    for name in (*NORMS, "num_observations"):
        np.testing.assert_array_equal(stats[name], fields[name], err_msg=name)
    report = slt.check_chains(mcmc)
    ratio = np.median(fields["noise_norm"] / fields["drift_norm"], axis=1)
    np.testing.assert_allclose(report.table.noise_drift, ratio, rtol=1e-6)
    assert "noise/drift" in str(report) and "localization/drift" in str(report)
    from numpyro_slt.report.plots import plot_step_norms

    png = plot_step_norms(mcmc, tmp_path / "norms.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="step norms"):
        plot_step_norms(stats.drop_vars("noise_norm"), tmp_path / "bad.png")


def test_each_kept_draw_carries_the_norms_of_its_own_step(linear_run):
    """The noise of the move into draw k, rebuilt from draws k − 1 and k and the gradient at
    k − 1, has the recorded norm; with thinning a draw keeps its own step's values."""
    mcmc, posterior, args = linear_run
    eps = 1e-4
    w = np.asarray(mcmc.get_samples(group_by_chain=True)["w"], np.float64)
    fields = mcmc.get_extra_fields(group_by_chain=True)
    grad = np.asarray(fields["z_grad"]["w"], np.float64)
    noise = w[:, 1:] - w[:, :-1] + 0.5 * eps * grad[:, :-1]
    np.testing.assert_allclose(np.linalg.norm(noise, axis=-1), fields["noise_norm"][:, 1:],
                               rtol=2e-3)
    thinned = MCMC(slt.SGLD(posterior, eps), num_warmup=50, num_samples=150, num_chains=2,
                   chain_method="vectorized", thinning=5, progress_bar=False)
    thinned.run(jax.random.PRNGKey(0), *args)
    kept = thinned.get_extra_fields(group_by_chain=True)
    np.testing.assert_array_equal(thinned.get_samples(group_by_chain=True)["w"],
                                  mcmc.get_samples(group_by_chain=True)["w"][:, 4::5])
    for name in NORMS:
        np.testing.assert_array_equal(kept[name], fields[name][:, 4::5], err_msg=name)


class _NoNorms(slt.SGLD):
    """The kernel with the norms switched off: the draws must not notice."""

    def _step_norms(self, state, metric, z_new):
        zero = jnp.zeros(())
        return zero, zero, zero


@pytest.mark.parametrize("options", [{}, {"preconditioner": slt.rmsprop(),
                                          "control_variate": True}],
                         ids=["plain", "rmsprop+control_variate"])
def test_draws_and_llc_do_not_depend_on_the_norms(linear_run, options):
    _, posterior, args = linear_run
    runs = []
    for kernel_class in (slt.SGLD, _NoNorms):
        mcmc = MCMC(kernel_class(posterior, 1e-4, **options), num_warmup=20, num_samples=60,
                    num_chains=2, chain_method="vectorized", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(2), *args)
        runs.append(mcmc)
    with_norms, without = runs
    np.testing.assert_array_equal(with_norms.get_samples()["w"], without.get_samples()["w"])
    for name in ("loss", "mean_excess_loss", "grad_norm", "mala_accept"):
        np.testing.assert_array_equal(with_norms.get_extra_fields()[name],
                                      without.get_extra_fields()[name], err_msg=name)
    np.testing.assert_array_equal(slt.llc(with_norms).llc_per_chain,
                                  slt.llc(without).llc_per_chain)
    assert np.all(without.get_extra_fields()["noise_norm"] == 0)


# -- states saved before the norms existed -----------------------------------------------------

OLD_FIELDS = ("i", "z", "z_grad", "potential_energy", "loss", "mean_excess_loss", "mean_count",
              "init_loss", "nbeta", "grad_norm", "distance", "mala_accept", "diverging",
              "diverged_at", "precond_state", "rng_key")


def _old_pickle(state, monkeypatch) -> bytes:
    """``state`` pickled as the previous version wrote it: an ``SGLDState`` of 16 fields."""
    old = NamedTuple("SGLDState", [(name, object) for name in OLD_FIELDS])
    old.__module__ = "numpyro_slt.kernels.sgld"
    with monkeypatch.context() as patch:
        patch.setattr(sgld_module, "SGLDState", old)
        data = pickle.dumps({"state": old(*(getattr(state, k) for k in OLD_FIELDS)),
                             "segments": 1})
    return data


class _Stop(Exception):
    pass


def test_a_checkpoint_written_before_the_norms_resumes(tmp_path, monkeypatch):
    assert sgld_module.SGLDState._fields[:16] == OLD_FIELDS  # old fields keep their places
    x, y = make_linear_data(n=2_000, d=3, seed=7)
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=100), 300.0),
                             {"w": least_squares(x, y)}, 10.0)
    settings = dict(num_warmup=20, num_samples=120, num_chains=2, chain_method="vectorized",
                    checkpoint_every=40, progress_bar=False)

    def stop(segments):
        raise _Stop

    with pytest.raises(_Stop):
        sample_checkpointed(slt.SGLD(posterior, 1e-4), jax.random.PRNGKey(3), x, y,
                            directory=tmp_path, on_segment=stop, **settings)
    # make the folder look as the previous version left it: no new fields anywhere
    with open(tmp_path / "checkpoint.pkl", "rb") as handle:
        state = pickle.load(handle)["state"]
    (tmp_path / "checkpoint.pkl").write_bytes(_old_pickle(state, monkeypatch))
    segment = tmp_path / "segment_00000.npz"
    with np.load(segment) as data:
        arrays = {k: data[k] for k in data.files if k.split("/")[-1] not in
                  (*NORMS, "num_observations")}
    np.savez(segment, **arrays)
    with open(tmp_path / "checkpoint.pkl", "rb") as handle:
        restored = pickle.load(handle)["state"]
    assert type(restored) is slt.SGLDState and restored.drift_norm is None
    filled = slt.kernels.upgrade_state(restored)
    assert filled.noise_norm.shape == restored.loss.shape and np.all(filled.noise_norm == 0)
    assert np.all(np.isnan(filled.num_observations))

    resumed = sample_checkpointed(slt.SGLD(posterior, 1e-4), jax.random.PRNGKey(3), x, y,
                                  directory=tmp_path, resume=True, **settings)
    whole = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=20, num_samples=120, num_chains=2,
                 chain_method="vectorized", progress_bar=False)
    whole.run(jax.random.PRNGKey(3), x, y)
    np.testing.assert_array_equal(resumed.get_samples(group_by_chain=True)["w"],
                                  whole.get_samples(group_by_chain=True)["w"])
    np.testing.assert_array_equal(slt.llc(resumed).llc_per_chain, slt.llc(whole).llc_per_chain)
    _, stats = load_draws(tmp_path)
    reference = whole.get_extra_fields(group_by_chain=True)
    for name in NORMS:  # NaN in the old segment, the uninterrupted run's values after it
        assert np.all(np.isnan(stats[name][:, :40])), name
        np.testing.assert_array_equal(stats[name][:, 40:], reference[name][:, 40:], err_msg=name)
    assert np.isnan(slt.check_chains(resumed).table.noise_drift).sum() == 0
    # n/log n for n = 2,000 is 263.1; the run has nβ = 300
    with pytest.raises(ValueError, match=r"nβ = n/log n = 263\.1.*nβ = 300"):
        slt.wbic(resumed)


# -- WBIC --------------------------------------------------------------------------------------


def test_wbic_of_a_regular_model_is_n_ln_plus_half_d_log_n():
    """Linear regression, full batch, at nβ = n/log n: the localized tempered posterior is the
    Gaussian N(ŵ, (nβH + γI)⁻¹) (H = XᵀX/n), so WBIC − n·L_n(ŵ) = (n/2)·Σ_j h_j / k_j with
    k_j = nβ·h_j + γ, times the SGLD factor 1/(1 − εk_j/4) of the discretised chain; → (d/2)·log n
    as γ, ε → 0. Tolerances: the exact value within 4 standard errors (chains are independent,
    so the error of their mean is std/√chains; 4σ fails about once in 10⁴ runs), and the
    asymptotic (d/2)·log n within 10% of itself (here the exact value sits 0.3% above it)."""
    n, d, gamma, eps, chains = 2_000, 4, 1.0, 1e-4, 16
    x, y = make_linear_data(n=n, d=d, seed=0)
    w_hat = least_squares(x, y)
    nbeta = n / np.log(n)
    posterior = slt.localize(slt.temper(linear_model, nbeta), {"w": w_hat}, gamma)
    mcmc = MCMC(slt.SGLD(posterior, eps, keep_draws=False), num_warmup=1_000,
                num_samples=10_000, num_chains=chains, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), x, y)
    result = slt.wbic(mcmc)

    xd, yd = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n_loss = n * np.mean(0.5 * (yd - xd @ np.asarray(w_hat, np.float64)) ** 2
                         + 0.5 * np.log(2 * np.pi))
    assert float(result.n) == n and float(result.init_loss) * n == pytest.approx(n_loss,
                                                                                 rel=1e-6)
    h = np.linalg.eigvalsh(xd.T @ xd / n)
    k = nbeta * h + gamma
    exact = 0.5 * n * np.sum(h / (k * (1 - eps * k / 4)))
    excess = float(result.wbic_mean) - n_loss
    se = float(result.wbic_std) / np.sqrt(chains)
    assert abs(excess - exact) < 4 * se, (excess, exact, se)
    assert excess == pytest.approx(d / 2 * np.log(n), rel=0.10)
    assert float(result.wbic_mean) == pytest.approx(n_loss + d / 2 * np.log(n), rel=1e-3)
    # WBIC = n·L_n(w*) + λ̂·log n at nβ = n/log n
    assert float(result.wbic_mean) - n * float(result.init_loss) == pytest.approx(
        float(result.llc_mean) * np.log(n), rel=1e-6)

    # The step norms of the same chain against their stationary means: w − ŵ has covariance
    # 1/(k_j(1 − εk_j/4)) along H's eigenvectors, so E‖(ε/2)·nβH(w − ŵ)‖² = (ε/2)²·Σ (nβh_j)²·v_j,
    # E‖(ε/2)·γ(w − ŵ)‖² = (ε/2)²·γ²·Σ v_j and E‖√ε·ξ‖² = ε·d. The drift's squared norm has
    # about d degrees of freedom and an autocorrelation time near 2/(εk) = 76 steps, so its mean
    # over 160,000 steps has a relative error near 1.5%: 6% is 4 of them.
    fields = mcmc.get_extra_fields()
    variance = 1.0 / (k * (1 - eps * k / 4))
    means = {"drift_norm": (eps / 2) ** 2 * np.sum((nbeta * h) ** 2 * variance),
             "localization_norm": (eps / 2) ** 2 * gamma**2 * np.sum(variance),
             "noise_norm": eps * d}
    for name, expected in means.items():
        observed = np.mean(np.asarray(fields[name], np.float64) ** 2)
        assert observed == pytest.approx(expected, rel=0.06), name
    # noise/drift ≈ 2/√(ε·k̄) (docs/formulas.md), the localization being weak here
    ratio = np.sqrt(np.mean(np.asarray(fields["noise_norm"], np.float64) ** 2)
                    / np.mean(np.asarray(fields["drift_norm"], np.float64) ** 2))
    assert ratio == pytest.approx(2 / np.sqrt(eps * np.mean(k)), rel=0.06)


@pytest.mark.arviz
def test_wbic_accepts_the_sources_of_llc_and_checks_nbeta_and_n(linear_run):
    mcmc, _, _ = linear_run
    result = slt.wbic(mcmc)
    stats = mcmc.get_extra_fields(group_by_chain=True)
    expected = 2_000 * (slt.llc(mcmc).llc_per_chain.values / float(stats["nbeta"][0, 0])
                        + float(stats["init_loss"][0, 0]))
    np.testing.assert_allclose(result.wbic_per_chain, expected, rtol=1e-12)
    assert result.wbic_trace.shape == (2, 150)
    data = az.from_numpyro(mcmc)
    for source in (data, sample_stats(data)):
        np.testing.assert_allclose(slt.wbic(source).wbic_per_chain, result.wbic_per_chain,
                                   rtol=1e-12)
    # a run without the recorded n (an older version) needs n=
    old = sample_stats(data).drop_vars("num_observations")
    with pytest.raises(ValueError, match="pass wbic"):
        slt.wbic(old)
    np.testing.assert_allclose(slt.wbic(old, n=2_000).wbic_mean, result.wbic_mean)
    with pytest.raises(ValueError, match="records n = 2000"):
        slt.wbic(mcmc, n=1_000)
    with pytest.raises(ValueError, match="n must be"):
        slt.wbic(old, n=0)
