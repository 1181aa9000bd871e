"""temper, localize and restrict: the log density they produce, and their errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density, potential_energy

import numpyro_slt as slt
from numpyro_slt.known_models import linear_model


def _trace(model, *args, **kwargs):
    return handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)


def test_temper_total_is_minus_nbeta_times_mean_loss(linear_data):
    x, y = linear_data
    w = jnp.arange(5.0) / 5
    nbeta = 37.0
    tempered = slt.temper(linear_model, nbeta)
    mean_loss = jnp.mean(0.5 * (y - x @ w) ** 2 + 0.5 * jnp.log(2 * jnp.pi))
    prior = dist.Normal(0.0, 10.0).log_prob(w).sum()
    full = log_density(tempered, (x, y), {}, {"w": w})[0]
    np.testing.assert_allclose(full - prior, -nbeta * mean_loss, rtol=1e-5)


def test_temper_counts_full_plate_size_under_subsampling(linear_data):
    x, y = linear_data
    tr = _trace(slt.temper(linear_model, 30.0), x, y, batch_size=100)
    site = tr["y"]
    assert site["infer"]["slt_n"] == x.shape[0]
    # NumPyro's N/B subsample scale times beta = nbeta / n.
    np.testing.assert_allclose(site["scale"], (x.shape[0] / 100) * 30.0 / x.shape[0])


def test_temper_counts_tokens_of_sequences_times_positions():
    tokens = jnp.zeros((50, 16), dtype=jnp.int32)

    def lm(tokens):
        logits = numpyro.sample("logits", dist.Normal(0, 1).expand([4]).to_event(1))
        with numpyro.plate("seq", tokens.shape[0], subsample_size=10) as idx:
            with numpyro.plate("pos", tokens.shape[1]):
                numpyro.sample("tok", dist.Categorical(logits=logits), obs=tokens[idx])

    site = _trace(slt.temper(lm, 5.0), tokens)["tok"]
    assert site["infer"]["slt_n"] == 50 * 16

    def lm_no_position_plate(tokens):
        logits = numpyro.sample("logits", dist.Normal(0, 1).expand([4]).to_event(1))
        with numpyro.plate("seq", tokens.shape[0], subsample_size=10, dim=-2) as idx:
            fn = dist.Categorical(logits=jnp.broadcast_to(logits, (10, 16, 4)))
            numpyro.sample("tok", fn, obs=tokens[idx])

    assert _trace(slt.temper(lm_no_position_plate, 5.0), tokens)["tok"]["infer"]["slt_n"] == 800


def test_temper_explicit_n_and_several_sites():
    def two_sites():
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        with numpyro.plate("a", 10):
            numpyro.sample("ya", dist.Normal(mu, 1), obs=jnp.zeros(10))
        with numpyro.plate("b", 30):
            numpyro.sample("yb", dist.Normal(mu, 1), obs=jnp.ones(30))

    tr = _trace(slt.temper(two_sites, 4.0, n=40))
    assert tr["ya"]["scale"] == pytest.approx(0.1) and tr["yb"]["scale"] == pytest.approx(0.1)
    assert tr["ya"]["infer"]["slt_site_n"] == 10 and tr["yb"]["infer"]["slt_site_n"] == 30
    # without n, sites of different sizes make β = nβ/n ambiguous: an error naming them
    with pytest.raises(ValueError, match=r"'ya': 10, 'yb': 30.*n=40"):
        _trace(slt.temper(two_sites, 4.0))


def test_factor_sites_are_refused_unless_declared_prior_or_likelihood():
    def model():
        mu = numpyro.sample("mu", dist.Normal(0, 1))
        numpyro.factor("penalty", -(mu**2))
        numpyro.sample("y", dist.Normal(mu, 1), obs=1.0)

    with pytest.raises(ValueError, match=r"factor site 'penalty'.*factors=\{'penalty': n_s\}"):
        _trace(slt.temper(model, 3.0))
    tr = _trace(slt.temper(model, 3.0, factors="prior"))
    assert "slt_nbeta" not in tr["penalty"]["infer"] and tr["penalty"].get("scale") is None
    assert tr["y"]["scale"] == pytest.approx(3.0)
    # a likelihood factor of 1 observation shares the site's n = 1: both scaled by nβ/n = 3
    tr = _trace(slt.temper(model, 3.0, factors={"penalty": 1}))
    assert tr["penalty"]["scale"] == pytest.approx(3.0)
    assert tr["penalty"]["infer"]["slt_factor"] == "likelihood"
    with pytest.raises(ValueError, match=r"\['typo'\].*not numpyro.factor sites"):
        _trace(slt.temper(model, 3.0, factors={"penalty": "prior", "typo": 2}))


def test_localize_prior_is_gaussian_around_center(linear_data):
    x, y = linear_data
    center = {"w": jnp.linspace(-1, 1, 5)}
    gamma = 250.0
    model = slt.localize(linear_model, center, gamma)
    w = center["w"] + 0.01 * jnp.arange(5.0)
    prior_term = _trace(model, x, y)["w"]["fn"].log_prob(w)
    expected = -0.5 * gamma * jnp.sum((w - center["w"]) ** 2) + 2.5 * jnp.log(gamma / (2 * jnp.pi))
    np.testing.assert_allclose(prior_term, expected, rtol=1e-5)


def test_localize_constrained_site_is_gaussian_in_unconstrained_coordinates():
    def model():
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(0.0, scale), obs=jnp.array([0.5, -1.0]))

    gamma = 40.0
    center = {"scale": jnp.array(2.0)}
    localized = slt.localize(model, center, gamma)
    unconstrained = jnp.log(2.0) + 0.3
    energy = potential_energy(localized, (), {}, {"scale": unconstrained})
    likelihood = -dist.Normal(0.0, jnp.exp(unconstrained)).log_prob(jnp.array([0.5, -1.0])).sum()
    expected = likelihood + 0.5 * gamma * 0.3**2 - 0.5 * jnp.log(gamma / (2 * jnp.pi))
    np.testing.assert_allclose(energy, expected, rtol=1e-5)


def test_localize_gamma_zero_is_flat(linear_data):
    x, y = linear_data
    model = slt.localize(linear_model, {"w": jnp.zeros(5)}, 0.0)
    tr = _trace(handlers.substitute(model, {"w": jnp.ones(5)}), x, y)
    assert float(tr["w"]["fn"].log_prob(jnp.ones(5))) == 0.0
    # a draw from the flat prior (what reading the model and starting a chain need) is the center
    center = jnp.linspace(-1.0, 1.0, 5)
    tr = _trace(slt.localize(linear_model, {"w": center}, 0.0), x, y)
    assert isinstance(tr["w"]["fn"], slt.handlers.FlatPrior)
    np.testing.assert_array_equal(tr["w"]["value"], center)


def test_transforms_compose_with_numpyro_handlers(linear_data):
    x, y = linear_data
    center = {"w": jnp.zeros(5)}
    model = slt.localize(slt.temper(linear_model, 10.0), center, 1.0)
    conditioned = handlers.condition(model, {"w": jnp.ones(5)})
    tr = _trace(conditioned, x, y)
    assert tr["w"]["is_observed"] and jnp.all(tr["w"]["value"] == 1.0)
    # substitute + trace + seed around the posterior work as with any model
    tr = _trace(handlers.substitute(model, {"w": jnp.full(5, 0.5)}), x, y)
    assert jnp.all(tr["w"]["value"] == 0.5)


def test_restrict_freezes_other_sites_at_center():
    def model():
        a = numpyro.sample("a", dist.Normal(0, 1).expand([3]).to_event(1))
        b = numpyro.sample("b", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(a.sum() + b, 1), obs=0.0)

    center = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(0.5)}
    restricted = slt.restrict(slt.localize(model, center, 10.0), ["b"])
    tr = _trace(restricted)
    assert tr["a"]["type"] == "deterministic" and jnp.all(tr["a"]["value"] == center["a"])
    assert tr["b"]["type"] == "sample"
    explicit = _trace(slt.restrict(model, "b", values={"a": jnp.zeros(3)}))
    assert jnp.all(explicit["a"]["value"] == 0.0)


def test_restrict_to_a_mask_samples_the_selected_elements_under_the_conditional_prior():
    def model():
        w = numpyro.sample("w", dist.Normal(0, 1).expand([2, 2]).to_event(2))
        numpyro.sample("y", dist.Normal(w.sum(), 1), obs=0.5)

    center = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    mask = np.array([[True, False], [False, True]])
    gamma = 9.0
    restricted = slt.restrict(slt.localize(model, center, gamma), {"w": mask})
    free = jnp.array([1.5, 3.0])
    tr = _trace(handlers.substitute(restricted, {"w.free": free}))
    assert tr["w.free"]["type"] == "sample" and tr["w"]["type"] == "deterministic"
    np.testing.assert_array_equal(tr["w"]["value"], [[1.5, 2.0], [3.0, 3.0]])
    assert tr["w.free"]["infer"]["slt_gamma"] == gamma
    np.testing.assert_array_equal(tr["w.free"]["infer"]["slt_center"].value, [1.0, 4.0])
    # U = likelihood + the Gaussian of the 2 free elements (the frozen ones add a constant)
    energy = potential_energy(restricted, (), {}, {"w.free": free})
    likelihood = -dist.Normal(1.5 + 2.0 + 3.0 + 3.0, 1).log_prob(0.5)
    gaussian = 0.5 * gamma * (0.5**2 + 1.0**2) - 2 * 0.5 * jnp.log(gamma / (2 * jnp.pi))
    frozen = -2 * 0.5 * jnp.log(gamma / (2 * jnp.pi))
    np.testing.assert_allclose(energy, likelihood + gaussian + frozen, rtol=1e-5)
    # mixed with a whole site, and the full weight rebuilt from draws
    assert restricted.full_value("w", jnp.zeros((3, 2)), center["w"]).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="not a masked site"):
        slt.restrict(model, {"w": True}).full_value("w", free, center["w"])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: slt.temper(linear_model, 0.0), "nbeta"),
        (lambda: slt.temper(linear_model, -3.0), "nbeta"),
        (lambda: slt.temper(linear_model, float("nan")), "nbeta"),
        (lambda: slt.temper(linear_model, "big"), "nbeta"),
        (lambda: slt.temper(linear_model, 1.0, n=0), "n must"),
        (lambda: slt.localize(linear_model, {"w": jnp.zeros(5)}, -1.0), "gamma"),
        (lambda: slt.localize(linear_model, {}, 1.0), "center"),
        (lambda: slt.restrict(linear_model, []), "sites"),
        (lambda: slt.temper(linear_model, 1.0, factors="likelihood"), "factors"),
        (lambda: slt.temper(linear_model, 1.0, factors={"f": 0}), r"factors\['f'\]"),
    ],
)
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_center_errors_name_the_site(linear_data):
    x, y = linear_data
    with pytest.raises(ValueError, match=r"center misses the latent site 'w'"):
        _trace(slt.localize(linear_model, {"v": jnp.zeros(5)}, 1.0), x, y)
    with pytest.raises(ValueError, match=r"center\['w'\] has shape \(4,\).*\(5,\)"):
        _trace(slt.localize(linear_model, {"w": jnp.zeros(4)}, 1.0), x, y)
    with pytest.raises(ValueError, match=r"\['typo'\].*not latent sites"):
        _trace(slt.localize(linear_model, {"w": jnp.zeros(5), "typo": 1.0}, 1.0), x, y)
    with pytest.raises(ValueError, match=r"\['v'\] are not latent sites.*\['w'\]"):
        _trace(slt.restrict(linear_model, ["v"], values={"w": jnp.zeros(5)}), x, y)
    with pytest.raises(ValueError, match="Apply restrict outside localize"):
        _trace(slt.restrict(linear_model, ["v"]), x, y)


def test_jit_of_tempered_localized_density(linear_data):
    x, y = linear_data
    model = slt.localize(slt.temper(linear_model, 10.0), {"w": jnp.zeros(5)}, 1.0)
    f = jax.jit(lambda w: log_density(model, (x, y), {}, {"w": w})[0])
    assert jnp.isfinite(f(jnp.ones(5)))

