"""What the transforms and the SGLD kernel make of NumPyro's other model statements (issue 15):
deterministic sites, factor terms, local latent variables, observed sites of different sizes, a
flat prior (γ = 0), improper priors, and restriction to elements of a site."""

from functools import partial

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from numpyro.infer import MCMC
from numpyro.infer.util import potential_energy

import numpyro_slt as slt
from numpyro_slt._arviz import posterior_group
from numpyro_slt.kernels import _model
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data
from numpyro_slt.theory import regular_learning_coefficient


def _run(kernel, *args, num_warmup=100, num_samples=200, num_chains=2, seed=0, **kwargs):
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), *args, **kwargs)
    return mcmc


def _discretised_covariance(hessian, eps):
    """Stationary covariance of full-batch SGLD on U = ½ wᵀHw: 1/(k(1 − εk/4)) per eigenvalue."""
    k, vecs = np.linalg.eigh(hessian)
    return vecs @ np.diag(1.0 / (k * (1.0 - eps * k / 4.0))) @ vecs.T


def _discretised_llc(likelihood_hessian, gamma, eps):
    """E[nβ·(L_n − L_n(w*))] = ½ tr(H_L Σ) for the Gaussian SGLD chain, Σ as above."""
    cov = _discretised_covariance(likelihood_hessian + gamma * np.eye(len(likelihood_hessian)),
                                  eps)
    return 0.5 * float(np.trace(likelihood_hessian @ cov))


@pytest.fixture(scope="module")
def data():
    return make_linear_data(n=2_000, d=2, seed=5)


# -- 1. numpyro.deterministic sites -------------------------------------------------------------


def _model_with_deterministics(x, y, batch_size=None):
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([x.shape[1]]).to_event(1))
    numpyro.deterministic("w_norm", jnp.linalg.norm(w))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        mean = numpyro.deterministic("mean", x[idx] @ w)
        numpyro.sample("y", dist.Normal(mean, 1.0), obs=y[idx])


def test_deterministic_sites_are_kept_with_the_draws_and_in_arviz(data):
    x, y = data
    center = {"w": least_squares(x, y)}
    posterior = slt.localize(slt.temper(partial(_model_with_deterministics, batch_size=50),
                                        100.0), center, 10.0)
    mcmc = _run(slt.SGLD(posterior, 1e-4), x, y, num_warmup=10, num_samples=30)
    draws = mcmc.get_samples()
    assert set(draws) == {"w", "w_norm", "mean"}
    np.testing.assert_allclose(draws["w_norm"], np.linalg.norm(draws["w"], axis=-1), rtol=1e-5)
    # inside the subsampled plate: the fixed evaluation batch, the same 50 items at every draw
    batch = np.asarray(_model.fixed_batch(2_000, 50))
    np.testing.assert_allclose(draws["mean"], draws["w"] @ np.asarray(x[batch]).T, rtol=1e-4,
                               atol=1e-5)
    idata = posterior_group(az.from_numpyro(mcmc))
    assert idata["w_norm"].shape == (2, 30) and idata["mean"].shape == (2, 30, 50)
    np.testing.assert_array_equal(idata["w_norm"], mcmc.get_samples(True)["w_norm"])
    # keep_draws=False still keeps nothing: its postprocess (what MCMC applies) returns {}
    keeping_nothing = slt.SGLD(posterior, 1e-4, keep_draws=False).postprocess_fn((x, y), {})
    assert keeping_nothing({"w": center["w"]}) == {}


def test_sites_frozen_by_restrict_are_not_kept():
    def model():
        a = numpyro.sample("a", dist.Normal(0, 1).expand([3]).to_event(1))
        b = numpyro.sample("b", dist.Normal(0, 1))
        numpyro.deterministic("total", a.sum() + b)
        numpyro.sample("y", dist.Normal(a.sum() + b, 1), obs=jnp.zeros(4))

    center = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(0.5)}
    restricted = slt.restrict(slt.localize(model, center, 10.0), ["b"])
    draws = _run(slt.SGLD(restricted, 1e-3), num_warmup=0, num_samples=5).get_samples()
    assert set(draws) == {"b", "total"}
    np.testing.assert_allclose(draws["total"], 6.0 + draws["b"], rtol=1e-6)


# -- 2. numpyro.factor terms --------------------------------------------------------------------


def _half_in_a_factor(x, y):
    """Linear regression whose second half of the data enters as one numpyro.factor term."""
    half = x.shape[0] // 2
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", half):
        numpyro.sample("y", dist.Normal(x[:half] @ w, 1.0), obs=y[:half])
    numpyro.factor("half", dist.Normal(x[half:] @ w, 1.0).log_prob(y[half:]).sum())


def test_factor_term_is_refused_until_declared_then_tempered_into_the_llc(data):
    x, y = data
    n, gamma, eps = x.shape[0], 1.0, 3e-4
    nbeta = n / np.log(n)
    center = {"w": least_squares(x, y)}
    silent = slt.localize(slt.temper(_half_in_a_factor, nbeta), center, gamma)
    with pytest.raises(ValueError, match=r"factor site 'half'.*factors=\{'half': n_s\}"):
        _run(slt.SGLD(silent, eps), x, y)

    declared = slt.localize(slt.temper(_half_in_a_factor, nbeta, n=n, factors={"half": n // 2}),
                            center, gamma)
    # the factor is counted in L_n: the loss at w* is that of the all-observed model
    observed = slt.localize(slt.temper(linear_model, nbeta), center, gamma)
    info = _model.inspect_model(declared, (x, y), {})
    u = _model.unconstrain(info, center)
    full = _model.energy_and_loss(_model.inspect_model(observed, (x, y), {}), (x, y), {}, u, {})
    np.testing.assert_allclose(_model.energy_and_loss(info, (x, y), {}, u, {}), full, rtol=1e-5)

    mcmc = _run(slt.SGLD(declared, eps), x, y, num_warmup=300, num_samples=6_000, num_chains=4)
    llc = float(slt.llc(mcmc).llc_mean)
    hessian = nbeta * np.asarray(x.T @ x, np.float64) / n
    expected = _discretised_llc(hessian, gamma, eps)
    assert regular_learning_coefficient(2) == 1.0
    assert abs(expected - 1.0) < 0.03
    assert abs(llc - 1.0) < 0.1, llc  # 0.25 with the factor left untempered, outside L_n


# -- 3. latent sites inside a subsampled plate --------------------------------------------------


def _local_latent(x, y, batch_size=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(x[idx, 0] * w + z, 1.0), obs=y[idx])


def test_latent_site_in_a_subsampled_plate_is_refused(data):
    x, y = data
    message = (r"latent site 'z' lies inside the subsampled plate 'data'.*Marginalise it.*"
               r"do not subsample plate 'data'")
    with pytest.raises(ValueError, match=message):
        _model.inspect_model(partial(_local_latent, batch_size=100), (x, y), {})
    center = {"w": jnp.array(0.0), "z": jnp.zeros(100)}
    localized = slt.localize(partial(_local_latent, batch_size=100), center, 1.0)
    with pytest.raises(ValueError, match=message):
        _run(slt.SGLD(localized, 1e-4), x, y)
    # without subsampling, z is an ordinary (if large) latent site
    info = _model.inspect_model(_local_latent, (x, y), {})
    assert info.latent_sites == ("w", "z")


# -- 4. observed sites of different sizes -------------------------------------------------------


def _two_sizes(a, b):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    with numpyro.plate("a", a.shape[0]):
        numpyro.sample("ya", dist.Normal(mu[0], 1.0), obs=a)
    with numpyro.plate("b", b.shape[0]):
        numpyro.sample("yb", dist.Normal(mu[0] + mu[1], 1.0), obs=b)


def test_plain_posterior_of_sites_of_different_sizes_is_the_untempered_posterior():
    a, b = jnp.linspace(-1.0, 1.0, 10), jnp.linspace(0.0, 2.0, 30)
    info = _model.inspect_model(_two_sizes, (a, b), {})
    assert info.n == 40 and info.nbeta == 40  # β = 1; n the total count
    mu = jnp.array([0.3, -0.2])
    energy, loss = _model.energy_and_loss(info, (a, b), {}, {"mu": mu}, {})
    np.testing.assert_allclose(energy, potential_energy(_two_sizes, (a, b), {}, {"mu": mu}),
                               rtol=1e-6)
    nll = -(dist.Normal(mu[0], 1.0).log_prob(a).sum()
            + dist.Normal(mu[0] + mu[1], 1.0).log_prob(b).sum())
    np.testing.assert_allclose(loss, nll / 40, rtol=1e-6)
    # tempered, they need n; with it, every site gets the same β = nβ / n
    with pytest.raises(ValueError, match=r"'ya': 10, 'yb': 30.*slt.temper\(model, nbeta, n=40\)"):
        _model.inspect_model(slt.temper(_two_sizes, 8.0), (a, b), {})
    tempered = _model.inspect_model(slt.temper(_two_sizes, 8.0, n=40), (a, b), {})
    energy, loss = _model.energy_and_loss(tempered, (a, b), {}, {"mu": mu}, {})
    np.testing.assert_allclose(loss, nll / 40, rtol=1e-6)
    prior = -dist.Normal(0.0, 3.0).log_prob(mu).sum()
    np.testing.assert_allclose(energy, 8.0 * nll / 40 + prior, rtol=1e-5)


# -- 5. flat prior (γ = 0) and improper priors --------------------------------------------------


def test_gamma_zero_samples_the_tempered_posterior_without_localization():
    """At γ = 0 the target is exp(−nβ·L_n): Gaussian around the least-squares w with precision
    β·XᵀX; full-batch SGLD has the discretised covariance 1/(k(1 − εk/4)) (test_sgld.py)."""
    x, y = make_linear_data(n=400, d=2, seed=3)
    n, nbeta, eps = 400, 100.0, 2e-3
    w_star = least_squares(x, y)
    start = w_star + 0.05  # the flat prior's draw, where inspection and the chains start
    posterior = slt.localize(slt.temper(linear_model, nbeta), {"w": start}, 0.0)
    info = _model.inspect_model(posterior, (x, y), {})
    np.testing.assert_array_equal(info.centers["w"], start)
    mcmc = _run(slt.SGLD(posterior, eps), x, y, num_warmup=500, num_samples=20_000,
                num_chains=4)
    draws = np.asarray(mcmc.get_samples()["w"], np.float64)
    cov = _discretised_covariance(nbeta / n * np.asarray(x.T @ x, np.float64), eps)
    assert np.all(np.abs(draws.mean(0) - np.asarray(w_star)) < 5 * np.sqrt(np.diag(cov) / 4_000))
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.06, atol=0.06 * np.abs(cov).max())
    assert np.all(np.asarray(mcmc.get_extra_fields()["localization_norm"]) == 0.0)


def test_gamma_zero_on_a_constrained_site_is_flat_in_unconstrained_coordinates():
    def model():
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(0.0, scale), obs=jnp.array([0.5, -1.0]))

    flat = slt.localize(model, {"scale": jnp.array(2.0)}, 0.0)
    info = _model.inspect_model(flat, (), {})
    assert float(info.centers["scale"]) == 2.0
    u = jnp.log(2.0) + 0.3
    likelihood = -dist.Normal(0.0, jnp.exp(u)).log_prob(jnp.array([0.5, -1.0])).sum()
    np.testing.assert_allclose(potential_energy(flat, (), {}, {"scale": u}), likelihood,
                               rtol=1e-6)


def test_improper_prior_is_named_with_what_to_do():
    def model():
        w = numpyro.sample("w", dist.ImproperUniform(constraints.real, (), (2,)))
        numpyro.sample("y", dist.Normal(w.sum(), 1.0), obs=jnp.zeros(3))

    with pytest.raises(ValueError, match=r"latent site 'w' \(ImproperUniform\).*localize"):
        _run(slt.SGLD(model, 1e-3), num_samples=5)


# -- 6. restriction to elements of a site -------------------------------------------------------


def test_mask_restriction_samples_only_the_selected_elements():
    x, y = make_linear_data(n=2_000, d=4, seed=6)
    n, gamma, eps = 2_000, 1.0, 3e-4
    nbeta = n / np.log(n)
    center = {"w": least_squares(x, y)}
    mask = np.array([True, False, True, False])
    restricted = slt.restrict(slt.localize(slt.temper(linear_model, nbeta), center, gamma),
                              {"w": mask})
    mcmc = _run(slt.SGLD(restricted, eps), x, y, num_warmup=300, num_samples=6_000,
                num_chains=4)
    draws = mcmc.get_samples()
    assert set(draws) == {"w.free"} and draws["w.free"].shape == (24_000, 2)
    llc = float(slt.llc(mcmc).llc_mean)
    assert abs(llc - regular_learning_coefficient(2)) < 0.1, llc  # k/2 of the 2 selected
    # the frozen elements stay at the center
    full = restricted.full_value("w", draws["w.free"][:3], center["w"])
    np.testing.assert_array_equal(full[:, ~mask], np.broadcast_to(center["w"][~mask], (3, 2)))
    np.testing.assert_array_equal(full[:, mask], draws["w.free"][:3])


def test_all_true_mask_is_the_unrestricted_posterior():
    x, y = make_linear_data(n=500, d=2, seed=7)
    center = {"w": least_squares(x, y)}
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=100), 50.0), center,
                             10.0)
    whole = _run(slt.SGLD(posterior, 1e-3), x, y, num_warmup=20, num_samples=50)
    masked = _run(slt.SGLD(slt.restrict(posterior, {"w": np.ones(2, bool)}), 1e-3), x, y,
                  num_warmup=20, num_samples=50)
    np.testing.assert_allclose(masked.get_samples()["w.free"], whole.get_samples()["w"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slt.llc(masked).llc_per_chain, slt.llc(whole).llc_per_chain,
                               rtol=1e-4)
    assert posterior_group(az.from_numpyro(masked))["w.free"].shape == (2, 50, 2)


def test_bad_masks_are_refused_by_name():
    center = {"w": jnp.zeros(3)}

    def model():
        w = numpyro.sample("w", dist.Normal(0, 1).expand([3]).to_event(1))
        numpyro.sample("y", dist.Normal(w.sum(), 1), obs=0.0)

    def trace(restricted):
        return numpyro.handlers.trace(numpyro.handlers.seed(restricted, 0)).get_trace()

    localized = slt.localize(model, center, 1.0)
    with pytest.raises(ValueError, match=r"sites\['w'\] is a mask of shape \(2,\).*\(3,\)"):
        trace(slt.restrict(localized, {"w": np.array([True, False])}))
    with pytest.raises(ValueError, match=r"sites\['w'\] must be a boolean mask.*int64"):
        slt.restrict(localized, {"w": np.array([1, 0, 1])})
    with pytest.raises(ValueError, match=r"sites\['w'\] selects no element"):
        slt.restrict(localized, {"w": np.zeros(3, bool)})
    with pytest.raises(ValueError, match=r"sites\['w'\] must be True"):
        slt.restrict(localized, {"w": False})

    def in_plate():
        with numpyro.plate("units", 3):
            w = numpyro.sample("w", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(w.sum(), 1), obs=0.0)

    with pytest.raises(ValueError, match=r"'w' is inside plate\(s\) \['units'\]"):
        trace(slt.restrict(slt.localize(in_plate, center, 1.0), {"w": np.array([1, 0, 1]) > 0}))

    def simplex():
        p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
        numpyro.sample("y", dist.Categorical(p), obs=0)

    with pytest.raises(ValueError, match=r"'p' has support Simplex\(\): select the whole site"):
        trace(slt.restrict(slt.localize(simplex, {"p": jnp.ones(3) / 3}, 1.0),
                           {"p": np.array([True, False, True])}))
