"""The NumPyro posterior of an Equinox language model, with temper, localize, SGLD and llc."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.kernels import _model
from numpyro_slt.nn import (
    AttentionOnlyTransformer,
    TransformerConfig,
    get_component,
    named_parameters,
)
from numpyro_slt.nn.posterior import language_model, network_at, parameter_sites

CONFIG = TransformerConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, n_ctx=16, d_vocab=12)


def _tokens(num_sequences=64, seed=0):
    """Sequences whose second half repeats the first: learnable structure."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, CONFIG.d_vocab, size=(num_sequences, 8))
    return jnp.asarray(np.concatenate([first, first], axis=1), jnp.int32)


@pytest.fixture(scope="module")
def trained():
    """A small network trained for a few hundred Adam steps, so that w* is near a minimum."""
    tokens = _tokens()
    network = AttentionOnlyTransformer(CONFIG, key=jax.random.PRNGKey(0))
    optimizer = optax.adam(3e-2)
    params = named_parameters(network)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        def loss(p):
            return jnp.mean(jax.vmap(replace(p).token_losses)(tokens))

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    def replace(p):
        return network_at(network, p)

    for _ in range(300):
        params, state, value = step(params, state)
    return network_at(network, params), tokens, float(value)


def test_gradient_equals_direct_tempered_localized_loss(trained):
    network, tokens, _ = trained
    nbeta, gamma = 50.0, 30.0
    center = parameter_sites(network)
    posterior = slt.localize(slt.temper(language_model(network, batch_size=16), nbeta), center,
                             gamma)
    info = _model.inspect_model(posterior, (tokens,), {})
    assert info.subsampled_plates == {"sequences": (64, 16)}
    indices = {"sequences": jnp.arange(5, 21)}
    shifted = jax.tree.map(lambda x: x + 0.01, center)

    def direct(values):
        losses = jax.vmap(network_at(network, values).token_losses)(tokens[5:21])
        prior = sum(jnp.sum((values[k] - center[k]) ** 2) for k in values)
        return nbeta * jnp.mean(losses) + 0.5 * gamma * prior

    grad = jax.grad(lambda z: _model.energy_and_loss(info, (tokens,), {}, z, indices)[0])(shifted)
    expected = jax.grad(direct)(shifted)
    for name in center:
        np.testing.assert_allclose(grad[name], expected[name], rtol=2e-3, atol=1e-4)
    # n counts predicted tokens: sequences × (context − 1)
    tr = jax.tree.map(lambda x: x, _model._trace(posterior, (tokens,), {})[0])
    assert tr["next_token"]["infer"]["slt_n"] == 64 * 15


def test_restricted_run_moves_only_the_selected_component(trained):
    network, tokens, _ = trained
    components = ["1:0"]
    center = parameter_sites(network, components)
    assert set(center) == {f"1:0.{f}" for f in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")}
    posterior = slt.localize(slt.temper(language_model(network, components, batch_size=16),
                                        100.0), center, 100.0)
    mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=0, num_samples=20, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0), tokens)
    draws = mcmc.get_samples()
    assert set(draws) == set(center)
    last = {k: v[-1] for k, v in draws.items()}
    assert not np.allclose(last["1:0.W_Q"], center["1:0.W_Q"])
    moved = network_at(network, last, components)
    before, after = named_parameters(network), named_parameters(moved)
    for field in before:
        changed = np.asarray(before[field] != after[field])
        if field in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"):
            outside = changed.copy()
            outside[1, 0] = False
            assert not outside.any(), field
        else:
            assert not changed.any(), field
    np.testing.assert_array_equal(get_component(moved, "1:1")["W_Q"],
                                  get_component(network, "1:1")["W_Q"])


@pytest.mark.parametrize("components", [None, ["1:0"]], ids=["full", "head-1:0"])
def test_llc_of_a_trained_network_end_to_end(trained, components):
    network, tokens, _ = trained
    center = parameter_sites(network, components)
    n = tokens.shape[0] * (tokens.shape[1] - 1)
    posterior = slt.localize(slt.temper(language_model(network, components, batch_size=16),
                                        n / np.log(n)), center, 100.0)
    kernel = slt.SGLD(posterior, 1e-4, control_variate=True, keep_draws=components is not None)
    mcmc = MCMC(kernel, num_warmup=50, num_samples=300, num_chains=2,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), tokens)
    result = slt.llc(mcmc)
    assert np.isfinite(result.llc_mean.item()) and result.llc_mean.item() > 0
    assert np.isfinite(result.loss_rhat.item())
    if components is None:
        assert mcmc.get_samples() == {}


def test_bad_tokens_and_components(trained):
    network, tokens, _ = trained
    model = language_model(network)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\]"):
        _model.inspect_model(model, (tokens + 5,), {})
    with pytest.raises(ValueError, match="context is 16"):
        _model.inspect_model(model, (jnp.zeros((4, 20), jnp.int32),), {})
    with pytest.raises(ValueError, match="no sequences"):
        _model.inspect_model(model, (jnp.zeros((0, 8), jnp.int32),), {})
    with pytest.raises(ValueError, match="shape \\(sequences, context\\)"):
        _model.inspect_model(model, (jnp.zeros(8, jnp.int32),), {})
    with pytest.raises(ValueError, match="1:7"):
        language_model(network, ["1:7"])
    with pytest.raises(ValueError, match="batch_size"):
        language_model(network, batch_size=0)


@pytest.mark.parametrize("components", [["1:1"], ["0:1"], ["unembed"], ["1:0", "unembed"]])
def test_restricted_fast_path_gives_the_same_energy_gradient_and_llc(trained, components):
    from numpyro_slt.nn.caches import HeadCache, first_layer, frozen_cache

    network, tokens, _ = trained
    center = parameter_sites(network, components)
    posterior = slt.localize(slt.temper(language_model(network, components, batch_size=16),
                                        30.0), center, 100.0)
    upstream = frozen_cache(network, tokens, components, chunk=24)
    if len(components) == 1 and ":" in components[0]:  # one head: its input and the rest
        assert isinstance(upstream, HeadCache) and upstream.component == components[0]
        assert upstream.normed.shape == upstream.rest.shape == (64, 15, CONFIG.d_model)
    else:  # the residual stream x^L
        assert upstream.shape == (64, 15, CONFIG.d_model)
    assert first_layer(network, components) == min(
        {"1:1": 1, "1:0": 1, "0:1": 0, "unembed": 2}[c] for c in components)
    shifted = jax.tree.map(lambda x: x + 0.02, center)
    indices = {"sequences": jnp.arange(3, 19)}
    plain_info = _model.inspect_model(posterior, (tokens,), {})
    fast_info = _model.inspect_model(posterior, (tokens, upstream), {})

    def energy(info, args):
        return lambda z: _model.energy_and_loss(info, args, {}, z, indices)[0]

    plain = jax.value_and_grad(energy(plain_info, (tokens,)))(shifted)
    fast = jax.value_and_grad(energy(fast_info, (tokens, upstream)))(shifted)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    for name in center:
        scale = float(np.abs(plain[1][name]).max())  # float32 rounding, relative to the scale
        np.testing.assert_allclose(fast[1][name], plain[1][name], rtol=1e-4, atol=1e-5 * scale)

    if components in (["1:1"], ["unembed"]):  # one full run per cache kind

        def run(*args):
            mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=0, num_samples=30, num_chains=2,
                        progress_bar=False, chain_method="vectorized")
            mcmc.run(jax.random.PRNGKey(3), *args)
            return slt.llc(mcmc)["llc_per_chain"].values

        np.testing.assert_allclose(run(tokens, upstream), run(tokens), rtol=1e-3)


def test_fast_path_refuses_what_it_cannot_cache(trained):
    from numpyro_slt.nn.caches import frozen_cache, head_cache, upstream_residual

    network, tokens, _ = trained
    with pytest.raises(ValueError, match="nothing upstream is frozen"):
        upstream_residual(network, tokens, ["0:1"])
    model = language_model(network, ["1:0"], batch_size=8)
    posterior = slt.localize(slt.temper(model, 30.0), parameter_sites(network, ["1:0"]), 100.0)
    wrong = upstream_residual(network, tokens[:10], ["1:0"])
    with pytest.raises(ValueError, match="upstream has shape"):
        _model.inspect_model(posterior, (tokens, wrong), {})
    other_head = head_cache(network, tokens, "1:1")
    with pytest.raises(ValueError, match="HeadCache of head '1:1' but the model samples"):
        _model.inspect_model(posterior, (tokens, other_head), {})
    short = head_cache(network, tokens[:10], "1:0")
    with pytest.raises(ValueError, match="upstream.normed has shape"):
        _model.inspect_model(posterior, (tokens, short), {})
    with pytest.raises(ValueError, match="one head"):
        head_cache(network, tokens, "embed")
    assert frozen_cache(network, tokens, None) is None
    assert frozen_cache(network, tokens, ["embed"]) is None


@pytest.mark.parametrize("component", ["1:1", "0:1"])
def test_head_offset_model_is_the_head_posterior_translated(trained, component):
    """head_offset_model at δ equals language_model at c* + δ (energy, gradient, L_n(w*), LLC),
    and two heads of one layer lower to the same program (the head is data)."""
    from numpyro_slt.nn.caches import head_cache
    from numpyro_slt.nn.posterior import (
        head_offset_center,
        head_offset_model,
        head_weights_from_offsets,
    )

    network, tokens, _ = trained
    layer = int(component[0])
    center = parameter_sites(network, [component])
    plain = slt.localize(slt.temper(language_model(network, [component], batch_size=16), 30.0),
                         center, 100.0)
    offset = slt.localize(slt.temper(head_offset_model(network, layer, batch_size=16), 30.0),
                          head_offset_center(network, layer), 100.0)
    trained_weights = get_component(network, component)
    args = (tokens, head_cache(network, tokens, component), trained_weights)
    delta = jax.tree.map(lambda x: 0.02 * jnp.ones_like(x), head_offset_center(network, layer))
    as_plain = head_weights_from_offsets(trained_weights, delta, component)
    assert set(as_plain) == set(center)
    indices = {"sequences": jnp.arange(3, 19)}

    def energy(posterior, model_args):
        info = _model.inspect_model(posterior, model_args, {})
        return jax.value_and_grad(lambda z: _model.energy_and_loss(info, model_args, {}, z,
                                                                   indices)[0])

    e_plain, g_plain = energy(plain, (tokens,))(as_plain)
    e_offset, g_offset = energy(offset, args)(delta)
    np.testing.assert_allclose(e_offset, e_plain, rtol=1e-5)
    for name, grad in g_offset.items():
        target = g_plain[f"{component}.{name.split('.', 1)[1]}"]
        np.testing.assert_allclose(grad, target, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(target).max()))

    def run(posterior, *model_args):
        mcmc = MCMC(slt.SGLD(posterior, 1e-4), num_warmup=0, num_samples=30, num_chains=2,
                    progress_bar=False, chain_method="vectorized")
        mcmc.run(jax.random.PRNGKey(3), *model_args)
        return slt.llc(mcmc)

    a, b = run(offset, *args), run(plain, tokens)
    np.testing.assert_allclose(float(a["init_loss"]), float(b["init_loss"]), rtol=1e-5)
    np.testing.assert_allclose(a["llc_per_chain"].values, b["llc_per_chain"].values, rtol=1e-3)

    def lowered(head):
        name = f"{layer}:{head}"
        model_args = (tokens, head_cache(network, tokens, name), get_component(network, name))
        info = _model.inspect_model(offset, model_args, {})
        fn = jax.jit(lambda z, data: _model.energy_and_loss(info, data, {}, z, indices)[0])
        return fn.lower(delta, model_args).as_text(debug_info=False)

    assert lowered(0) == lowered(1)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_projected_unembedding_gives_the_plain_logits_and_gradients(layer_norm):
    """A last-layer head's logits through R = c(rest) W' equal the plain forward pass (with and
    without layer norm); so do the offset model's energy and gradient; a layer-0 head refuses."""
    from numpyro_slt.nn.caches import head_cache
    from numpyro_slt.nn.posterior import head_offset_center, head_offset_model, logits_at

    config = TransformerConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=16,
                               d_vocab=40, layer_norm=layer_norm)
    network = AttentionOnlyTransformer(config, key=jax.random.PRNGKey(4))
    if layer_norm:  # non-trivial LN_final scale and shift, so that W' and β matter
        network = eqx.tree_at(lambda n: (n.ln_final_w, n.ln_final_b), network,
                              (1.0 + 0.3 * jax.random.normal(jax.random.PRNGKey(5), (16,)),
                               0.2 * jnp.ones(16)))
    tokens = jax.random.randint(jax.random.PRNGKey(6), (12, 10), 0, 40)
    plain = head_cache(network, tokens, "1:1")
    projected = head_cache(network, tokens, "1:1", project=True)
    assert plain.projected is None and projected.projected.shape == (12, 9, 40)
    assert head_cache(network, tokens, "1:1", project=None).projected is not None
    values = jax.tree.map(lambda x: x + 0.05, parameter_sites(network, ["1:1"]))
    moved = jax.vmap(network_at(network, values, ["1:1"]))(tokens[:, :-1])
    for cache in (plain, projected):
        logits = jax.vmap(lambda row, c=cache: logits_at(network, values, ("1:1",), cached=row))(
            cache)
        np.testing.assert_allclose(logits, moved, rtol=1e-5, atol=1e-5)

    posterior = slt.localize(slt.temper(head_offset_model(network, 1, batch_size=6), 30.0),
                             head_offset_center(network, 1), 100.0)
    delta = jax.tree.map(lambda x: 0.03 * jnp.ones_like(x), head_offset_center(network, 1))
    indices = {"sequences": jnp.arange(2, 8)}

    def energy(cache):
        args = (tokens, cache, get_component(network, "1:1"))
        info = _model.inspect_model(posterior, args, {})
        return jax.value_and_grad(lambda z: _model.energy_and_loss(info, args, {}, z,
                                                                   indices)[0])(delta)

    (e_plain, g_plain), (e_proj, g_proj) = energy(plain), energy(projected)
    np.testing.assert_allclose(e_proj, e_plain, rtol=1e-5)
    for name, grad in g_plain.items():
        np.testing.assert_allclose(g_proj[name], grad, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(grad).max()))
    with pytest.raises(ValueError, match="last layer"):
        head_cache(network, tokens, "0:1", project=True)
    assert head_cache(network, tokens, "0:1", project=None).projected is None

