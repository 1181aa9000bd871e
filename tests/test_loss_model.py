"""slt.loss_model: a loss function as a NumPyro model whose tempered potential is nβ·L_n(w)."""

from functools import partial

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data

N, D, BATCH = 2_000, 3, 100
NBETA = N / np.log(N)


@pytest.fixture(scope="module")
def data():
    x, y = make_linear_data(n=N, d=D, seed=3)
    return x, y, least_squares(x, y)


def _run(model, nbeta, center, *args, sites=None, step_size=1e-4):
    posterior = slt.localize(slt.temper(model, nbeta), center, 10.0)
    if sites is not None:
        posterior = slt.restrict(posterior, sites)
    mcmc = MCMC(slt.SGLD(posterior, step_size, control_variate=True), num_warmup=100,
                num_samples=300, num_chains=2, chain_method="vectorized",
                progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), *args)
    return mcmc


@pytest.mark.slow
def test_squared_error_losses_give_the_gaussian_models_draws_and_llc(data):
    """ℓ = ½(y − x·w)² is the Gaussian NLL (σ = 1) minus ½·log 2π: the same posterior at the
    same nβ. The mean squared error (y − x·w)² is twice that, so it needs nβ / 2 (the
    F.mse_loss trap of docs/devinterp.md); per batch (mean over the minibatch) it is the same
    model again. Both loss models reproduce the Gaussian model's draws and its λ̂."""
    x, y, w = data
    reference = _run(partial(linear_model, batch_size=BATCH), NBETA, {"w": w}, x, y)
    half_squared = slt.loss_model(lambda p, s: 0.5 * (s[1] - s[0] @ p["w"]) ** 2, {"w": w},
                                  (x, y), batch_size=BATCH)
    mse_per_batch = slt.loss_model(lambda p, b: jnp.mean((b["y"] - b["x"] @ p["w"]) ** 2),
                                   {"w": w}, {"x": x, "y": y}, per_sample=False,
                                   batch_size=BATCH)
    expected = slt.llc(reference)
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    for model, nbeta, scale in [(half_squared, NBETA, 1.0), (mse_per_batch, NBETA / 2, 2.0)]:
        run = _run(model, nbeta, model.center)
        np.testing.assert_allclose(run.get_samples()["w"], reference.get_samples()["w"],
                                   rtol=0, atol=1e-5)
        result = slt.llc(run)
        assert result.llc_mean.item() == pytest.approx(expected.llc_mean.item(), rel=1e-4)
        # L_n of the loss model is the Gaussian NLL minus its constant, times the scale
        assert result.init_loss.item() == pytest.approx(
            scale * (expected.init_loss.item() - half_log_2pi), rel=1e-5)
    assert 0.75 < expected.llc_mean.item() < 3.0  # a sane estimate, near d/2 = 1.5


def test_temper_counts_every_sample_and_the_loss_is_the_minibatch_mean(data):
    x, y, w = data
    model = slt.loss_model(lambda p, s: (s[1] - s[0] @ p["w"]) ** 2, {"w": w}, (x, y),
                           batch_size=BATCH)
    substituted = handlers.substitute(slt.temper(model, 7.0), data={"w": w})
    trace = handlers.trace(handlers.seed(substituted, 0)).get_trace()
    site = trace["loss"]
    assert slt.handlers.is_likelihood_site(site)
    assert site["infer"]["slt_n"] == N
    assert site["fn"].batch_shape == (BATCH,)
    idx = trace["data"]["value"]
    # temper's β = nβ / n times the plate's N / B: the minibatch's unbiased nβ·L_B(w)
    expected = 7.0 * jnp.mean((y[idx] - x[idx] @ w) ** 2)
    total = -jnp.sum(site["scale"] * site["fn"].log_prob(site["value"]))
    assert float(total) == pytest.approx(float(expected), rel=1e-5)


def test_a_site_without_localization_cannot_be_sampled(data):
    x, y, w = data
    model = slt.loss_model(lambda p, s: (s[1] - s[0] @ p["w"]) ** 2, {"w": w}, (x, y))
    mcmc = MCMC(slt.SGLD(slt.temper(model, NBETA), 1e-4), num_warmup=1, num_samples=2,
                progress_bar=False)
    with pytest.raises(ValueError, match=r"site 'w' .*slt\.localize\(model, model\.center"):
        mcmc.run(jax.random.PRNGKey(0))


def test_equinox_module_sites_restriction_and_arviz():
    x, y = make_linear_data(n=400, d=2, seed=1)
    fit = least_squares(jnp.column_stack([x, jnp.ones(len(x))]), y)  # weights and intercept
    linear = eqx.tree_at(lambda m: (m.weight, m.bias), eqx.nn.Linear(2, 1, key=jax.random.key(0)),
                         (fit[None, :2], fit[2:]))

    def loss(module, sample):
        inputs, target = sample
        return 0.5 * (module(inputs)[0] - target) ** 2

    model = slt.loss_model(loss, linear, (x, y), batch_size=50)
    assert model.sites == ("weight", "bias")
    rebuilt = model.params_of(model.center)
    assert isinstance(rebuilt, eqx.nn.Linear) and rebuilt.in_features == 2
    np.testing.assert_array_equal(rebuilt.weight, linear.weight)

    run = _run(model, 400.0, model.center, sites=["bias"], step_size=2e-4)
    assert set(run.get_samples()) == {"bias"}
    assert run.get_samples()["bias"].shape == (600, 1)
    result = slt.llc(az.from_numpyro(run))  # ArviZ replays the model for its log-likelihood
    # one regular parameter: λ = 1/2, a loose check that the restricted chain is sane
    assert 0.25 < result.llc_mean.item() < 0.9


def test_site_names_follow_the_pytree_paths():
    params = {"layer": {"w": jnp.zeros(2), "b": jnp.zeros(())}, "heads": [jnp.zeros(1)],
              "steps": 3}
    model = slt.loss_model(lambda p, s: jnp.sum(s), params, jnp.ones((5, 2)))
    assert sorted(model.sites) == ["heads.0", "layer.b", "layer.w"]
    assert model.params_of(model.center)["steps"] == 3
    with pytest.raises(ValueError, match="misses the sites"):
        model.params_of({"layer.w": jnp.zeros(2)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(data=(jnp.ones((5, 2)), jnp.ones(4))), "same leading size"),
        (dict(data=jnp.ones(())), "leading sample axis"),
        (dict(batch_size=6), r"batch_size must be None .*\[1, 5\]"),
        (dict(batch_size=0), "batch_size"),
        (dict(params={"w": 1.0}), "no floating-point array"),
        (dict(params={"loss": jnp.zeros(2)}), "'loss' for its likelihood"),
        (dict(params={"a.b": jnp.zeros(1), "a": {"b": jnp.zeros(1)}}), "several leaves"),
        (dict(per_sample="yes"), "per_sample must be True"),
        (dict(loss_fn="mse"), "loss_fn must be a callable"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    arguments = dict(loss_fn=lambda p, s: jnp.sum(s * p["w"]), params={"w": jnp.zeros(2)},
                     data=jnp.ones((5, 2)))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        slt.loss_model(arguments.pop("loss_fn"), arguments.pop("params"), arguments.pop("data"),
                       **arguments)


@pytest.mark.parametrize(
    ("per_sample", "loss_fn", "message"),
    [(True, lambda p, s: s * p["w"], "scalar per sample"),
     (False, lambda p, b: b @ p["w"], "the batch's mean loss")],
)
def test_a_loss_of_the_wrong_shape_says_which_kind_to_pass(per_sample, loss_fn, message):
    model = slt.loss_model(loss_fn, {"w": jnp.zeros(2)}, jnp.ones((5, 2)), per_sample=per_sample)
    substituted = handlers.substitute(model, data={"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match=message):
        handlers.trace(handlers.seed(substituted, 0)).get_trace()
