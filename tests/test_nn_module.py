"""A user's own Equinox language model: components as pytree paths, the plain restricted
posterior (checked against the Transformer's own model on the same weights), LLC and
susceptibilities from its draws."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import MCMC
from numpyro.infer.util import log_density

import numpyro_slt as slt
from numpyro_slt.nn import (
    Transformer,
    TransformerConfig,
    module_components,
    module_model,
    module_observables,
    module_sites,
)
from numpyro_slt.nn.posterior import language_model, parameter_sites

VOCAB = 12


class Bigram(eqx.Module):
    """A user's model: an embedding, a hidden layer and an output layer, next token from the
    current one (logits [seq, vocab] for tokens [seq])."""

    embedding: eqx.nn.Embedding
    layers: list

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(VOCAB, 8, key=k1)
        self.layers = [eqx.nn.Linear(8, 8, key=k2), eqx.nn.Linear(8, VOCAB, key=k3)]

    def __call__(self, tokens):
        x = jax.vmap(self.embedding)(tokens)
        x = jax.nn.tanh(jax.vmap(self.layers[0])(x))
        return jax.vmap(self.layers[1])(x)


@pytest.fixture(scope="module")
def bigram():
    model = Bigram(jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (32, 9)))
    return model, tokens


def test_paths_and_prefixes(bigram):
    model, _ = bigram
    assert module_components(model) == ["embedding.weight", "layers[0].weight",
                                        "layers[0].bias", "layers[1].weight", "layers[1].bias"]
    assert list(module_sites(model, ["layers[1]"])) == ["layers[1].weight", "layers[1].bias"]
    assert list(module_sites(model, "embedding")) == ["embedding.weight"]
    with pytest.raises(ValueError, match="names no array"):
        module_sites(model, ["layers[2]"])
    with pytest.raises(ValueError, match="overlap"):
        module_sites(model, ["layers[1]", "layers[1].bias"])


def test_likelihood_is_the_cross_entropy_of_the_logits(bigram):
    model, tokens = bigram
    center = module_sites(model, ["layers[1]"])
    lp = log_density(module_model(model, ["layers[1]"]), (tokens,), {}, center)[0]
    logits = jax.vmap(model)(tokens[:, :-1])
    expected = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None],
                                           axis=-1))
    prior = sum(jnp.sum(jax.scipy.stats.norm.logpdf(v)) for v in center.values())
    np.testing.assert_allclose(lp, expected + prior, rtol=1e-5)
    with pytest.raises(ValueError, match="d_vocab|vocabulary"):
        log_density(module_model(model), (tokens + VOCAB,), {}, module_sites(model))


def test_the_transformer_as_a_module_gives_its_own_posterior():
    config = TransformerConfig(n_layers=2, n_heads=2, d_model=8, d_head=4, n_ctx=8,
                               d_vocab=10, d_mlp=8, layer_norm=True)
    network = Transformer(config, key=jax.random.key(1))
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 10, (6, 8)))
    fields = ["W_in", "b_in", "W_out", "b_out"]
    generic = module_sites(network, fields)               # whole arrays, both layers
    point = {k: v + 0.05 * jax.random.normal(jax.random.key(i), v.shape)
             for i, (k, v) in enumerate(generic.items())}
    as_ours = {f"{l}.mlp.{k}": v[l] for l in range(2) for k, v in point.items()}
    assert set(as_ours) == set(parameter_sites(network, ["0.mlp", "1.mlp"]))
    got = log_density(slt.temper(module_model(network, fields), 5.0), (tokens,), {}, point)[0]
    want = log_density(slt.temper(language_model(network, ["0.mlp", "1.mlp"]), 5.0), (tokens,),
                       {}, as_ours)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
def test_llc_and_susceptibilities_of_a_users_module(bigram):
    model, tokens = bigram
    components = ["layers[1]"]
    center = module_sites(model, components)
    posterior = slt.localize(slt.temper(module_model(model, components, batch_size=8), 20.0),
                             center, 100.0)
    mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=50, num_samples=60, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(2), tokens)
    estimate = slt.llc(mcmc)
    assert np.isfinite(float(estimate["llc_mean"]))
    probes = {"a": np.asarray(tokens[:4]), "b": np.asarray(tokens[4:6, :5])}
    obs = module_observables(model, mcmc.get_samples(group_by_chain=True), probes, tokens[8:16])
    assert obs["token_loss"].shape == (2, 60, 4 * 8 + 2 * 4)
    at_center = module_observables(model, {k: v[None, None] for k, v in center.items()},
                                   probes, tokens[8:16])
    np.testing.assert_allclose(at_center["phi"].values, 0.0, atol=1e-6)
    chi = slt.susceptibilities(obs["phi"], obs["sampling_loss"], obs["token_loss"],
                               probe=obs["token_probe"])
    assert np.all(np.isfinite(chi["per_token"].values))
    assert set(chi["probe"].values) == {"a", "b"}
