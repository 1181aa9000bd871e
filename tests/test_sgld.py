"""The SGLD kernel: its update rule, its state, and its life inside numpyro.infer.MCMC."""

import os
import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.kernels import _model
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data
from numpyro_slt.utils import reuse_loop_compilation


def _posterior(x, y, batch_size=500, nbeta=None, gamma=10.0):
    n = x.shape[0]
    nbeta = n / np.log(n) if nbeta is None else nbeta
    model = partial(linear_model, batch_size=batch_size)
    return slt.localize(slt.temper(model, nbeta), {"w": least_squares(x, y)}, gamma)


def _run(kernel, x, y, *, seed=0, num_warmup=50, num_samples=200, num_chains=2,
         chain_method="vectorized", thinning=1, **run_kwargs):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=chain_method, thinning=thinning, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), x, y, **run_kwargs)
    return mcmc


@pytest.fixture(scope="module")
def small_data():
    return make_linear_data(n=2_000, d=3, seed=1)


def test_stationary_moments_match_discretised_langevin_closed_form():
    """Full-batch SGLD on a Gaussian target U(w) = ½(w − μ)ᵀH(w − μ) is the AR(1) chain
    w' = w − (ε/2)H(w − μ) + √ε ξ, whose stationary covariance in H's eigenbasis is
    1 / (k (1 − εk/4)) per eigenvalue k; its mean is μ."""
    x, y = make_linear_data(n=400, d=2, seed=3)
    n, nbeta, gamma, eps = 400, 400.0, 50.0, 2e-3
    w_star = least_squares(x, y)
    posterior = slt.localize(slt.temper(linear_model, nbeta), {"w": w_star}, gamma)
    hessian = nbeta * np.asarray(x.T @ x) / n + gamma * np.eye(2)
    k, vecs = np.linalg.eigh(hessian)
    cov = vecs @ np.diag(1.0 / (k * (1.0 - eps * k / 4.0))) @ vecs.T
    mcmc = _run(slt.SGLD(posterior, eps), x, y, num_warmup=200, num_samples=40_000, num_chains=4)
    draws = np.asarray(mcmc.get_samples()["w"], dtype=np.float64)
    assert np.all(np.abs(draws.mean(0) - np.asarray(w_star)) < 4 * np.sqrt(np.diag(cov) / 2_000))
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.06, atol=0.06 * np.abs(cov).max())
    # The convention matters: BlackJAX's h = ε/2 would give half this variance.
    assert np.cov(draws.T)[0, 0] > 0.8 * cov[0, 0]


def test_rmsprop_preconditioned_chain_targets_the_same_gaussian():
    x, y = make_linear_data(n=400, d=2, seed=3)
    nbeta, gamma = 400.0, 50.0
    posterior = slt.localize(slt.temper(linear_model, nbeta), {"w": least_squares(x, y)}, gamma)
    hessian = nbeta * np.asarray(x.T @ x) / 400 + gamma * np.eye(2)
    kernel = slt.SGLD(posterior, 2e-4, preconditioner=slt.rmsprop(alpha=0.9999, delta=1e-3))
    mcmc = _run(kernel, x, y, num_warmup=5_000, num_samples=40_000, num_chains=4)
    draws = np.asarray(mcmc.get_samples()["w"], dtype=np.float64)
    target = np.linalg.inv(hessian)
    np.testing.assert_allclose(np.cov(draws.T), target, rtol=0.1, atol=0.1 * target.max())


def test_gradient_and_loss_equal_the_direct_tempered_localized_potential(small_data):
    x, y = small_data
    nbeta, gamma = 123.0, 7.0
    center = {"w": least_squares(x, y)}
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=64), nbeta), center,
                             gamma)
    info = _model.inspect_model(posterior, (x, y), {})
    indices = {"data": jnp.arange(100, 164)}
    w = center["w"] + jnp.array([0.1, -0.2, 0.3])

    def direct(w):
        xb, yb = x[100:164], y[100:164]
        loss = jnp.mean(0.5 * (yb - xb @ w) ** 2 + 0.5 * jnp.log(2 * jnp.pi))
        return nbeta * loss + 0.5 * gamma * jnp.sum((w - center["w"]) ** 2), loss

    def kernel_energy(w):
        return _model.energy_and_loss(info, (x, y), {}, {"w": w}, indices)

    (energy, loss), grad = jax.value_and_grad(kernel_energy, has_aux=True)(w)
    (direct_energy, direct_loss), direct_grad = jax.value_and_grad(direct, has_aux=True)(w)
    np.testing.assert_allclose(grad, direct_grad, rtol=1e-4)
    np.testing.assert_allclose(loss, direct_loss, rtol=1e-5)
    # U differs from the direct form only by the Gaussian's normalising constant.
    np.testing.assert_allclose(energy - direct_energy, -1.5 * jnp.log(gamma / (2 * jnp.pi)),
                               atol=1e-3)


def test_state_fields_and_reference_loss(small_data):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    mcmc = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=100)
    fields = mcmc.get_extra_fields(group_by_chain=True)
    for name in ("loss", "mean_excess_loss", "mean_count", "init_loss", "nbeta", "grad_norm",
                 "distance", "mala_accept", "diverging", "diverged_at", "i"):
        assert fields[name].shape == (2, 100), name
    w_star = least_squares(x, y)
    full_loss = jnp.mean(0.5 * (y - x @ w_star) ** 2 + 0.5 * jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(fields["init_loss"], full_loss, rtol=1e-5)
    assert np.all(fields["mean_count"][:, -1] == 100) and np.all(fields["i"][:, -1] == 150)
    assert np.all((fields["mala_accept"] >= 0) & (fields["mala_accept"] <= 1))
    assert np.all(fields["distance"] > 0) and not np.any(fields["diverging"])
    # The running mean is the mean of the per-step losses.
    loss = np.asarray(fields["loss"], np.float64)
    np.testing.assert_allclose(fields["mean_excess_loss"][:, -1],
                               loss.mean(1) - float(full_loss), rtol=1e-3, atol=1e-6)


def test_chunked_and_batched_reference_loss_agree(small_data):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=300)  # 2,000 = 6 chunks of 300 and one of 200
    full = slt.SGLD(posterior, 1e-4)
    mcmc = _run(full, x, y, num_samples=10, num_warmup=0)
    w_star = least_squares(x, y)
    exact = jnp.mean(0.5 * (y - x @ w_star) ** 2 + 0.5 * jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(mcmc.get_extra_fields()["init_loss"][0], exact, rtol=1e-5)
    sampled = _run(slt.SGLD(posterior, 1e-4, init_loss_batches=40), x, y, num_samples=10)
    np.testing.assert_allclose(sampled.get_extra_fields()["init_loss"][0], exact, rtol=0.05)
    given = _run(slt.SGLD(posterior, 1e-4, init_loss=1.25), x, y, num_samples=10)
    assert np.all(given.get_extra_fields()["init_loss"] == 1.25)


def test_thinning_keeps_the_loss_of_every_step(small_data):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    every = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=400)
    thinned = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=400, thinning=10)
    assert thinned.get_samples(group_by_chain=True)["w"].shape == (2, 40, 3)
    a, b = slt.llc(every), slt.llc(thinned)
    np.testing.assert_allclose(a.llc_per_chain, b.llc_per_chain, rtol=1e-4)
    # the thinned trace holds the mean over each window of 10 steps
    window = a.loss_trace.values.reshape(2, 40, 10).mean(-1)
    np.testing.assert_allclose(b.loss_trace, window, rtol=1e-5)


def test_burn_in_discards_leading_draws_exactly(small_data):
    x, y = small_data
    mcmc = _run(slt.SGLD(_posterior(x, y, batch_size=128), 1e-4), x, y, num_samples=300)
    full = slt.llc(mcmc)
    later = slt.llc(mcmc, burn_in=100)
    np.testing.assert_allclose(later.llc_per_chain, full.llc_trace[:, 100:].mean("draw"),
                               rtol=1e-4)
    assert later.llc_trace.shape == (2, 200)


@pytest.mark.parametrize("chain_method", ["sequential", "parallel"])
def test_chain_methods_agree_with_vectorized(small_data, chain_method):
    assert jax.device_count() >= 2
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    reference = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=100)
    other = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=100, chain_method=chain_method)
    # the same seed gives the same draws, bit for bit, whatever the chain method
    np.testing.assert_array_equal(other.get_samples()["w"], reference.get_samples()["w"])
    # the recorded loss is a reduction that XLA may sum in another order under vmap (jax 0.12
    # does: 1e-6 relative), so the LLC agrees to float rounding, not bit for bit
    np.testing.assert_allclose(slt.llc(other).llc_per_chain, slt.llc(reference).llc_per_chain,
                               rtol=1e-5)
    fields = other.get_extra_fields()
    assert np.all(fields["init_loss"] == reference.get_extra_fields()["init_loss"])


def test_seed_reproduces_exactly_and_chains_are_independent(small_data):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    first = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=500, num_chains=4)
    again = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=500, num_chains=4)
    other_seed = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=500, num_chains=4, seed=1)
    w = np.asarray(first.get_samples(group_by_chain=True)["w"])
    assert np.array_equal(w, np.asarray(again.get_samples(group_by_chain=True)["w"]))
    assert not np.allclose(w, np.asarray(other_seed.get_samples(group_by_chain=True)["w"]))
    # Loss traces of different chains (and of seed s chain c+1 vs seed s+1 chain c) are
    # uncorrelated.
    loss = np.asarray(first.get_extra_fields(group_by_chain=True)["loss"])
    loss_other = np.asarray(other_seed.get_extra_fields(group_by_chain=True)["loss"])
    pairs = [(loss[c], loss[c + 1]) for c in range(3)] + [(loss[c + 1], loss_other[c])
                                                          for c in range(3)]
    for a, b in pairs:
        assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(500)


def test_continuing_from_post_warmup_state(small_data):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    kernel = slt.SGLD(posterior, 1e-4)
    mcmc = MCMC(kernel, num_warmup=50, num_samples=100, num_chains=1, progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(0), x, y)
    assert int(mcmc.post_warmup_state.i) == 50
    mcmc.run(jax.random.PRNGKey(1), x, y)
    fields = mcmc.get_extra_fields()
    assert fields["i"][0] == 51 and fields["mean_count"][-1] == 100
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, x, y)
    fields = mcmc.get_extra_fields()
    assert fields["i"][0] == 151 and fields["mean_count"][-1] == 200


def test_extra_fields_samples_summary_and_progress_bar(small_data, capsys):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=10, num_samples=30, progress_bar=True)
    mcmc.run(jax.random.PRNGKey(0), x, y, extra_fields=("potential_energy", "z_grad"))
    fields = mcmc.get_extra_fields()
    assert fields["potential_energy"].shape == (30,) and fields["z_grad"]["w"].shape == (30, 3)
    assert mcmc.get_samples()["w"].shape == (30, 3)
    mcmc.print_summary()
    out = capsys.readouterr()
    assert "w[0]" in out.out
    assert mcmc.sampler.get_diagnostics_str(mcmc.last_state).startswith("loss ")


def test_constrained_sites_are_sampled_unconstrained_and_returned_constrained():
    data = jnp.asarray(np.random.default_rng(0).normal(0.0, 2.0, size=500), jnp.float32)

    def model(data):
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("data", data.shape[0], subsample_size=100) as idx:
            numpyro.sample("obs", dist.Normal(0.0, scale), obs=data[idx])

    center = {"scale": jnp.sqrt(jnp.mean(data**2))}  # the maximum-likelihood scale
    posterior = slt.localize(slt.temper(model, 500.0), center, 1.0)
    kernel = slt.SGLD(posterior, 1e-4, control_variate=True)
    mcmc = MCMC(kernel, num_warmup=200, num_samples=4_000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), data)
    scale = mcmc.get_samples()["scale"]
    assert np.all(scale > 0) and abs(float(scale.mean()) - float(center["scale"])) < 0.2
    with pytest.warns(UserWarning, match="one chain"):
        result = slt.llc(mcmc)
    assert result.llc_mean.item() == pytest.approx(0.5, rel=0.3) and np.isnan(result.llc_std)


def test_untempered_model_is_sampled_at_beta_one(small_data):
    x, y = small_data
    model = slt.localize(partial(linear_model, batch_size=128), {"w": least_squares(x, y)}, 1.0)
    kernel = slt.SGLD(model, 1e-5)
    mcmc = _run(kernel, x, y, num_samples=20)
    assert kernel.info.nbeta == x.shape[0]
    assert np.all(mcmc.get_extra_fields()["nbeta"] == x.shape[0])


def test_restricted_llc_equals_llc_of_lower_dimensional_model():
    """Restricting to w1 (frozen w2 = w2*) is the model with only w1 latent: same draws."""
    x, y = make_linear_data(n=20_000, d=5, seed=2)
    w_star = least_squares(x, y)
    n = x.shape[0]
    nbeta = n / np.log(n)

    def split_model(x, y):
        w1 = numpyro.sample("w1", dist.Normal(0, 10).expand([2]).to_event(1))
        w2 = numpyro.sample("w2", dist.Normal(0, 10).expand([3]).to_event(1))
        with numpyro.plate("data", n, subsample_size=500) as idx:
            numpyro.sample("y", dist.Normal(x[idx, :2] @ w1 + x[idx, 2:] @ w2, 1.0), obs=y[idx])

    def small_model(x, y):
        w1 = numpyro.sample("w1", dist.Normal(0, 10).expand([2]).to_event(1))
        with numpyro.plate("data", n, subsample_size=500) as idx:
            mean = x[idx, :2] @ w1 + x[idx, 2:] @ w_star[2:]
            numpyro.sample("y", dist.Normal(mean, 1.0), obs=y[idx])

    center = {"w1": w_star[:2], "w2": w_star[2:]}
    restricted = slt.restrict(slt.localize(slt.temper(split_model, nbeta), center, 10.0), ["w1"])
    lower = slt.localize(slt.temper(small_model, nbeta), {"w1": w_star[:2]}, 10.0)
    results = []
    for model in (restricted, lower):
        mcmc = _run(slt.SGLD(model, 1e-5, control_variate=True), x, y, num_warmup=500,
                    num_samples=4_000, num_chains=4)
        assert set(mcmc.get_samples()) == {"w1"}
        results.append(slt.llc(mcmc))
    np.testing.assert_allclose(results[0].llc_per_chain, results[1].llc_per_chain, rtol=1e-3)
    # λ = d/2 = 1 for the 2 free coordinates; chains spread by about 0.15 (seeds 0-5 gave
    # means 0.96-1.10), so the mean of 4 is held to 3 standard errors and at most 0.2
    per_chain = results[0].llc_per_chain.values
    standard_error = per_chain.std(ddof=1) / np.sqrt(per_chain.size)
    assert abs(results[0].llc_mean.item() - 1.0) < min(0.2, 3 * standard_error)


def test_parallel_chains_in_a_fresh_process_with_two_host_devices(tmp_path):
    """chain_method='parallel' as a user runs it: numpyro.set_host_device_count first."""
    script = tmp_path / "parallel.py"
    script.write_text(textwrap.dedent(
        """
        import numpyro
        numpyro.set_host_device_count(2)
        import jax
        from functools import partial
        from numpyro.infer import MCMC
        import numpyro_slt as slt
        from numpyro_slt.known_models import make_linear_data, linear_model, least_squares
        x, y = make_linear_data(n=2000, d=3)
        post = slt.localize(slt.temper(partial(linear_model, batch_size=100), 300.0),
                            {"w": least_squares(x, y)}, 10.0)
        m = MCMC(slt.SGLD(post, 1e-4), num_warmup=10, num_samples=50, num_chains=2,
                 chain_method="parallel", progress_bar=False)
        m.run(jax.random.PRNGKey(0), x, y)
        assert jax.device_count() == 2
        print("llc", float(slt.llc(m).llc_mean))
        """
    ))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "llc" in done.stdout


def test_mala_estimate_equals_its_long_form():
    """a = −ΔU_trapezoid + log q(z|z') − log q(z'|z) collapses to (ε/8)·Σ G(g² − g'²)."""
    from numpyro_slt.kernels._steps import mala_acceptance as _mala_acceptance
    from numpyro_slt.kernels._steps import weighted_sq_norm as _weighted_sq_norm

    rng = np.random.default_rng(0)
    z, z_new, g = (rng.normal(size=7) for _ in range(3))
    g_new = 3.0 * rng.normal(size=7)
    metric = rng.uniform(0.5, 2.0, size=7)
    eps = 0.1
    d = z_new - z
    forward = d + 0.5 * eps * metric * g
    backward = -d + 0.5 * eps * metric * g_new
    log_q_ratio = np.sum((forward**2 - backward**2) / (2 * eps * metric))
    a = log_q_ratio - 0.5 * np.sum((g + g_new) * d)
    assert -5 < a < 0  # a proper test of the formula, not of min(1, ·)
    short = _mala_acceptance(_weighted_sq_norm(metric, g), _weighted_sq_norm(metric, g_new), eps)
    np.testing.assert_allclose(short, min(1.0, np.exp(a)), rtol=1e-5)


def test_keep_draws_false_keeps_only_statistics(small_data):
    x, y = small_data
    posterior = _posterior(x, y, batch_size=128)
    kept = _run(slt.SGLD(posterior, 1e-4), x, y, num_samples=100)
    light = _run(slt.SGLD(posterior, 1e-4, keep_draws=False), x, y, num_samples=100)
    assert light.get_samples() == {}
    np.testing.assert_array_equal(light.get_extra_fields()["loss"], kept.get_extra_fields()["loss"])
    np.testing.assert_allclose(slt.llc(light).llc_per_chain, slt.llc(kept).llc_per_chain)


def _loop_compiles(run) -> int:
    """How many times ``run()`` compiles NumPyro's sampling loop."""
    import logging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler, logger = Collect(), logging.getLogger("jax")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with jax.log_compiles(True):
            run()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return sum("compilation of jit(_fori_collect_loop)" in m for m in messages)


def test_reuse_loop_compilation_compiles_sequential_chains_once(small_data):
    """NumPyro 0.22 compiles the loop again for every chain and every run (numpyro#2171);
    inside reuse_loop_compilation() it compiles once, with the same draws."""
    x, y = small_data
    kernel = slt.SGLD(_posterior(x, y, batch_size=128), 1e-4)
    mcmc = MCMC(kernel, num_warmup=0, num_samples=50, num_chains=3, chain_method="sequential",
                progress_bar=False)
    plain = _loop_compiles(lambda: mcmc.run(jax.random.PRNGKey(0), x, y))
    draws = mcmc.get_samples()["w"]
    with reuse_loop_compilation():
        reused = _loop_compiles(lambda: [mcmc.run(jax.random.PRNGKey(0), x, y)
                                         for _ in range(2)])
    assert reused == 1 <= plain, (plain, reused)  # NumPyro 0.22: plain == 3
    np.testing.assert_array_equal(mcmc.get_samples()["w"], draws)


def test_jit_model_args_gives_the_same_run(small_data):
    """MCMC(jit_model_args=True) traces the data; the kernel reads sites from its init."""
    x, y = small_data
    kernel = slt.SGLD(_posterior(x, y, batch_size=128), 1e-4)
    runs = []
    for jit_model_args in (False, True):
        mcmc = MCMC(kernel, num_warmup=10, num_samples=50, num_chains=2,
                    chain_method="vectorized", progress_bar=False, jit_model_args=jit_model_args)
        mcmc.run(jax.random.PRNGKey(0), x, y)
        runs.append(mcmc)
    np.testing.assert_allclose(runs[1].get_samples()["w"], runs[0].get_samples()["w"],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(slt.llc(runs[1]).llc_per_chain, slt.llc(runs[0]).llc_per_chain,
                               rtol=1e-4)


def test_python_scalars_in_model_arguments_stay_static(small_data):
    """The init and L_n(w*) programs take the data as arguments (not baked-in constants); a
    Python int passed to the model (here the minibatch size, which must be static) still is
    one, and the run equals the one with the int bound in advance."""
    x, y = small_data
    n = x.shape[0]
    center = {"w": least_squares(x, y)}
    free = slt.localize(slt.temper(linear_model, n / np.log(n)), center, 10.0)
    by_kwarg = _run(slt.SGLD(free, 1e-4), x, y, num_samples=30, batch_size=128)
    bound = _run(slt.SGLD(_posterior(x, y, batch_size=128), 1e-4), x, y, num_samples=30)
    np.testing.assert_array_equal(by_kwarg.get_samples()["w"], bound.get_samples()["w"])


def test_use_compilation_cache_keeps_programs_on_disk(tmp_path):
    """In a fresh process (toggling JAX's cache inside a long test session is what crashed
    jaxlib 0.10.2): use_compilation_cache makes JAX write compiled programs to the folder even
    after other programs were compiled, compilation_cache_for_run puts the old setting back,
    and the environment variable set to 'off' disables it."""
    script = textwrap.dedent(f"""
        import os
        import jax, jax.numpy as jnp
        import numpyro_slt as slt
        from numpyro_slt.utils import compilation_cache_for_run, use_compilation_cache
        jax.jit(lambda x: x + 1)(jnp.ones(3)).block_until_ready()  # compiled before
        folder = {str(tmp_path / "cache")!r}
        with compilation_cache_for_run(folder, min_compile_seconds=0) as path:
            assert str(path) == folder, path
            jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
        assert os.listdir(folder), "nothing written"
        assert not jax.config.jax_compilation_cache_dir, "setting not restored"
        os.environ["NUMPYRO_SLT_COMPILATION_CACHE"] = "off"
        assert use_compilation_cache() is None
        try:
            use_compilation_cache(folder, min_compile_seconds=-1)
        except ValueError as err:
            assert "min_compile_seconds" in str(err)
        else:
            raise AssertionError("no error for min_compile_seconds=-1")
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMPYRO_SLT_COMPILATION_CACHE"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_model_inspection_is_abstract_and_falls_back_when_values_are_needed():
    """The kernel reads a model's structure from an abstract trace (nothing computed: a host
    callback in the model does not run); a model that branches on its data's values, or whose
    support depends on the data, is traced concretely instead, with the same facts."""
    x = jnp.linspace(0.5, 2.0, 50)
    calls = []

    def plain(x):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        jax.debug.callback(lambda: calls.append(1))
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=x)

    def branching(x):
        scale = 2.0 if float(jnp.max(x)) > 1.0 else 1.0  # needs the concrete data
        w = numpyro.sample("w", dist.Normal(0.0, scale))
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=x)

    def data_support(x):
        w = numpyro.sample("w", dist.Uniform(0.0, jnp.max(x)))  # support bounds from the data
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=x)

    info = _model.inspect_model(plain, (x,), {})
    assert calls == [] and info.latent_sites == ("w",) and info.nbeta == 50.0
    for model in (branching, data_support):
        info = _model.inspect_model(model, (x,), {})
        assert info.latent_sites == ("w",) and info.likelihood_sites == ("y",)
    upper = _model.inspect_model(data_support, (x,), {}).supports["w"].upper_bound
    assert not isinstance(upper, jax.core.Tracer) and float(upper) == 2.0
    # and the kernel samples it (the branching model needs concrete data, which the kernel's
    # compiled programs do not have: they take the data as arguments)
    center = {"w": jnp.asarray(1.0)}
    for model in (data_support,):
        mcmc = MCMC(slt.SGLD(slt.localize(slt.temper(model, 20.0), center, 100.0), 1e-3),
                    num_warmup=0, num_samples=20, progress_bar=False)
        mcmc.run(jax.random.PRNGKey(0), x)
        assert np.all(np.isfinite(mcmc.get_samples()["w"]))
