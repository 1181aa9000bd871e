"""The general transformer: every architecture against an independent NumPy forward pass, the
chunked cross-entropy, components of every kind, and the restricted fast paths with MLPs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

import numpyro_slt as slt
from numpyro_slt.nn import (
    Transformer,
    TransformerConfig,
    component_names,
    get_component,
    load_default,
    parse_component,
    restricted_posterior,
    set_component,
)
from numpyro_slt.nn.caches import MLPCache, cached_logits, frozen_cache, head_cache
from numpyro_slt.nn.components import canonical_components
from numpyro_slt.nn.posterior import language_model, parameter_sites

SMALL = dict(n_layers=2, n_heads=3, d_model=12, d_head=4, n_ctx=10, d_vocab=17)
ARCHITECTURES = {
    "attn_only_ln": dict(layer_norm=True),
    "attn_only_plain": dict(),
    "gpt2_like": dict(layer_norm=True, d_mlp=20, act_fn="gelu_tanh", tied_embeddings=True,
                      unembed_bias=False),
    "neox_like": dict(layer_norm=True, d_mlp=16, positional="rotary", rotary_dim=2,
                      parallel_residual=True, unembed_bias=False),
    "rotary_full_relu_nobias": dict(layer_norm=True, d_mlp=8, act_fn="relu", positional="rotary",
                                    attn_bias=False, mlp_bias=False),
    "sequential_rotary_gelu": dict(layer_norm=True, d_mlp=8, positional="rotary",
                                   rotary_base=500.0),
}


def random_network(seed: int = 0, **arch) -> Transformer:
    """A network with every parameter random (LayerNorm scales and biases too, so that a wrong
    mapping cannot hide behind ones and zeros)."""
    config = TransformerConfig(**SMALL, **arch)
    rng = np.random.default_rng(seed)
    params = {f: rng.normal(0.0, 0.4, shape).astype(np.float32)
              for f, shape in config.present_shapes().items()}
    for f in ("ln_w", "ln2_w", "ln_final_w"):
        if f in params:
            params[f] = 1.0 + 0.3 * params[f]
    return Transformer.from_parameters(config, params)


def reference_losses(net: Transformer, tokens: np.ndarray) -> np.ndarray:
    """Per-token losses by a plain float64 NumPy forward pass written from the formulas, one head
    at a time (independent of the einsum-batched implementation)."""
    c = net.config
    p = {f: np.asarray(v, np.float64) for f, v in _params(net).items()}
    S = len(tokens)

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + c.ln_eps) * w + b

    def act(x):
        if c.act_fn == "relu":
            return np.maximum(x, 0)
        if c.act_fn == "gelu_tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        from scipy.special import erf
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    def rotate(x):
        r = c.head_rotary_dim
        if r == 0:
            return x
        out = x.copy()
        for s in range(S):
            for i in range(r // 2):
                theta = s * c.rotary_base ** (-2 * i / r)
                a, b = x[s, i], x[s, i + r // 2]
                out[s, i] = a * math.cos(theta) - b * math.sin(theta)
                out[s, i + r // 2] = b * math.cos(theta) + a * math.sin(theta)
        return out

    x = p["W_E"][tokens] + (p["W_pos"][:S] if "W_pos" in p else 0)
    for l in range(c.n_layers):
        a = ln(x, p["ln_w"][l], p["ln_b"][l]) if c.layer_norm else x
        attn = np.zeros_like(x) + (p["b_O"][l] if "b_O" in p else 0)
        for h in range(c.n_heads):
            q, k, v = (a @ p[W][l, h] + (p[b][l, h] if b in p else 0)
                       for W, b in (("W_Q", "b_Q"), ("W_K", "b_K"), ("W_V", "b_V")))
            q, k = rotate(q), rotate(k)
            scores = q @ k.T / math.sqrt(c.d_head)
            scores[np.triu_indices(S, 1)] = -np.inf
            A = np.exp(scores - scores.max(-1, keepdims=True))
            A /= A.sum(-1, keepdims=True)
            attn += A @ v @ p["W_O"][l, h]

        def mlp(y, l=l):
            y = ln(y, p["ln2_w"][l], p["ln2_b"][l]) if c.layer_norm else y
            hidden = act(y @ p["W_in"][l] + (p["b_in"][l] if "b_in" in p else 0))
            return hidden @ p["W_out"][l] + (p["b_out"][l] if "b_out" in p else 0)

        if c.d_mlp is None:
            x = x + attn
        elif c.parallel_residual:
            x = x + attn + mlp(x)
        else:
            x = x + attn
            x = x + mlp(x)
    if c.layer_norm:
        x = ln(x, p["ln_final_w"], p["ln_final_b"])
    logits = x @ (p["W_E"].T if c.tied_embeddings else p["W_U"]) + p.get("b_U", 0)
    logits = logits[:-1]
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return lse - logits[np.arange(S - 1), tokens[1:]]


def _params(net):
    return {f: getattr(net, f) for f in net.config.present_shapes()}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_matches_the_reference_forward_pass(arch):
    net = random_network(1, **ARCHITECTURES[arch])
    tokens = np.random.default_rng(2).integers(0, SMALL["d_vocab"], SMALL["n_ctx"])
    got = np.asarray(net.token_losses(jnp.asarray(tokens)))
    np.testing.assert_allclose(got, reference_losses(net, tokens), rtol=1e-5, atol=1e-6)
    assert net.config.n_params == sum(int(np.prod(s)) for s in net.config.present_shapes().values())
    # the residual-stream identities hold with MLPs too
    assert float(slt.nn.check_head_decomposition(net, jnp.asarray(tokens))) < 1e-4
    cache = net.run_with_cache(jnp.asarray(tokens))
    assert (cache.mlp_out is None) == (net.config.d_mlp is None)


def test_the_default_model_gives_the_reference_losses():
    network, tokenizer, _ = load_default()
    ids = np.asarray(tokenizer.encode("def add(a, b):\n    return a + b  # sum")
                     .ids[: network.config.n_ctx])
    np.testing.assert_allclose(np.asarray(network.token_losses(jnp.asarray(ids))),
                               reference_losses(network, ids), rtol=1e-5, atol=1e-6)


def test_chunked_cross_entropy_equals_the_plain_one_with_its_gradient():
    net = random_network(3, **ARCHITECTURES["neox_like"])
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, SMALL["d_vocab"], (3, 10)))

    def total(n, chunk):
        return jnp.sum(jax.vmap(lambda t: n.token_losses(t, chunk=chunk))(tokens))

    whole, grad_whole = jax.value_and_grad(total)(net, None)
    chunked, grad_chunked = jax.value_and_grad(total)(net, 4)  # 9 positions: 3 chunks, padded
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grad_chunked), jax.tree.leaves(grad_whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunked_cross_entropy_memory_grows_with_the_chunk_not_the_vocabulary():
    config = TransformerConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, n_ctx=128,
                               d_vocab=50_304)
    net = Transformer(config, key=jax.random.key(0))
    tokens = jnp.zeros((4, 128), jnp.int32)

    def temp_bytes(chunk):
        def loss(n):
            return jnp.mean(jax.vmap(lambda t: n.token_losses(t, chunk=chunk))(tokens))
        compiled = jax.jit(jax.grad(loss)).lower(net).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = 4 * 4 * 127 * config.d_vocab  # one batch × positions × vocabulary array
    whole, chunked = temp_bytes(127), temp_bytes(8)
    assert whole > logits_bytes  # the unchunked program holds the logits (and their gradient)
    assert chunked < logits_bytes / 4  # chunks of 8 positions: 16× fewer logits at a time


def test_component_names_of_every_kind_and_devinterp_aliases():
    net = random_network(0, **ARCHITECTURES["gpt2_like"])
    c = net.config
    names = component_names(c)
    assert names[:4] == ["embed", "pos", "layer 0", "0.attn"]
    assert "0.mlp" in names and names[-1] == "unembed"
    for alias, canonical in [("l0h1", "0:1"), ("L1H2", "1:2"), ("l0 attn", "0.attn"),
                             ("l1 mlp", "1.mlp"), ("l1", "layer 1"), ("0.mlp", "0.mlp"),
                             ("1 . attn", "1.attn")]:
        assert parse_component(alias, c).name == canonical
    with pytest.raises(ValueError, match="components=None"):
        parse_component("full", c)
    with pytest.raises(ValueError, match="overlapping"):
        canonical_components(c, ["0:1", "0.attn"])
    with pytest.raises(ValueError, match="overlapping"):
        canonical_components(c, ["0.mlp", "layer 0"])
    assert canonical_components(c, ["0:1", "0.mlp", "1.attn"]) == ("0:1", "0.mlp", "1.attn")
    # tied: the shared matrix is the embedding's; the unembedding keeps its LayerNorm only
    assert list(get_component(net, "unembed")) == ["ln_final_w", "ln_final_b"]
    assert list(get_component(net, "0.mlp")) == ["W_in", "b_in", "W_out", "b_out"]
    assert list(get_component(net, "0.attn"))[-1] == "b_O"  # the LayerNorms are the block's
    assert list(get_component(net, "layer 0"))[-4:] == ["ln_w", "ln_b", "ln2_w", "ln2_b"]
    rotary = random_network(0, **ARCHITECTURES["neox_like"])
    assert "pos" not in component_names(rotary.config)
    with pytest.raises(ValueError, match="rotary"):
        parse_component("pos", rotary.config)
    attn_only = random_network(0)
    with pytest.raises(ValueError, match="no MLP"):
        parse_component("0.mlp", attn_only.config)
    nobias = random_network(0, **ARCHITECTURES["rotary_full_relu_nobias"])
    assert list(get_component(nobias, "1:0")) == ["W_Q", "W_K", "W_V", "W_O"]


def test_set_component_of_an_mlp_changes_only_that_mlp():
    net = random_network(5, **ARCHITECTURES["gpt2_like"])
    zero = {k: jnp.zeros_like(v) for k, v in get_component(net, "1.mlp").items()}
    edited = set_component(net, "1.mlp", zero)
    assert not np.any(np.asarray(edited.W_in[1])) and np.array_equal(edited.W_in[0], net.W_in[0])
    np.testing.assert_array_equal(edited.W_Q, net.W_Q)


FAST_CASES = [("gpt2_like", "1:2", "head_offset"), ("gpt2_like", "0:0", "head_offset"),
              ("gpt2_like", "1.mlp", "upstream"), ("gpt2_like", "0.mlp", "upstream"),
              ("gpt2_like", "1.attn", "upstream"), ("neox_like", "1.mlp", "upstream"),
              ("gpt2_like", "unembed", "upstream"), ("neox_like", "1:1", "head_offset"),
              ("neox_like", "0:2", "head_offset"), ("neox_like", "0.mlp", "upstream"),
              ("rotary_full_relu_nobias", "1:0", "head_offset")]


@pytest.mark.parametrize(("arch", "component", "form"), FAST_CASES)
def test_fast_paths_give_the_plain_energy_and_gradient(arch, component, form):
    net = random_network(6, **ARCHITECTURES[arch])
    tokens = jnp.asarray(np.random.default_rng(7).integers(0, SMALL["d_vocab"], (6, 10)))
    trained = parameter_sites(net, [component])
    point = {k: v + 0.05 * jax.random.normal(jax.random.key(i), v.shape)
             for i, (k, v) in enumerate(trained.items())}

    def localized(model, center):
        return slt.localize(slt.temper(model, 20.0), center, 50.0)

    plain = localized(language_model(net, [component]), trained)
    rp = restricted_posterior(net, component, tokens, None)
    assert rp.form == form
    if component.endswith(".mlp"):  # the MLP's own cache: its input stream and the rest
        assert isinstance(rp.model_args[1], MLPCache)
        assert (rp.model_args[1].rest is None) == (not net.config.parallel_residual)
    if form == "head_offset":
        own = {f"head.{k.split('.', 1)[1]}": v - trained[k] for k, v in point.items()}
    else:
        own = point
    fast = localized(rp.model, rp.center)

    def energy_plain(pt):
        return log_density(plain, (tokens,), {}, pt)[0]

    def energy_fast(pt):
        return log_density(fast, rp.model_args, {}, pt)[0]

    np.testing.assert_allclose(energy_fast(own), energy_plain(point), rtol=1e-5)
    g_plain, g_fast = jax.grad(energy_plain)(point), jax.grad(energy_fast)(own)
    for k in point:
        fast_key = f"head.{k.split('.', 1)[1]}" if form == "head_offset" else k
        np.testing.assert_allclose(g_fast[fast_key], g_plain[k], rtol=2e-4, atol=2e-4)


def test_the_projected_unembedding_only_where_the_logits_are_affine_in_the_head():
    tokens = jnp.asarray(np.random.default_rng(8).integers(0, SMALL["d_vocab"], (4, 10)))
    sequential = random_network(0, **ARCHITECTURES["gpt2_like"])
    with pytest.raises(ValueError, match="sequential MLP"):
        head_cache(sequential, tokens, "1:0", project=True)
    assert head_cache(sequential, tokens, "1:0", project=None).projected is None
    parallel = random_network(0, **ARCHITECTURES["neox_like"])
    cache = head_cache(parallel, tokens, "1:0", project=True)
    assert cache.projected is not None
    # the projected logits are the plain ones
    plain = frozen_cache(parallel, tokens, ["1:0"])
    for i in range(2):
        row = jax.tree.map(lambda u, i=i: u[i], cache)
        plain_row = jax.tree.map(lambda u, i=i: u[i], plain)
        np.testing.assert_allclose(cached_logits(parallel, row, 1),
                                   cached_logits(parallel, plain_row, 1), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cached_logits(parallel, row, 1), parallel(tokens[i, :-1]),
                                   rtol=1e-4, atol=1e-5)


def test_bad_architectures_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="act_fn"):
        TransformerConfig(d_mlp=8, act_fn="swish")
    with pytest.raises(ValueError, match="rotary_dim"):
        TransformerConfig(positional="rotary", d_head=8, rotary_dim=3)
    with pytest.raises(ValueError, match="positional='rotary'"):
        TransformerConfig(rotary_dim=4)
    with pytest.raises(ValueError, match="parallel_residual needs an MLP"):
        TransformerConfig(parallel_residual=True)
    config = TransformerConfig(**SMALL, d_mlp=8)
    params = {f: np.zeros(s, np.float32) for f, s in config.present_shapes().items()}
    with pytest.raises(ValueError, match=r"missing \['W_in'\]"):
        Transformer.from_parameters(config, {k: v for k, v in params.items() if k != "W_in"})
    with pytest.raises(ValueError, match="W_out has shape"):
        Transformer.from_parameters(config, {**params, "W_out": np.zeros((2, 8, 3))})
    with pytest.raises(ValueError, match="exactly one of key"):
        Transformer(config)


@pytest.mark.parametrize(("arch", "component"), [("gpt2_like", "1.mlp"), ("neox_like", "0.mlp"),
                                                  ("neox_like", "1:2")])
def test_observables_on_the_fast_path_equal_the_plain_ones(arch, component):
    from numpyro_slt.nn.observables import evaluate_observables

    net = random_network(9, **ARCHITECTURES[arch])
    rng = np.random.default_rng(10)
    probes = {"a": rng.integers(0, SMALL["d_vocab"], (3, 10)),
              "b": rng.integers(0, SMALL["d_vocab"], (2, 6))}
    eval_tokens = rng.integers(0, SMALL["d_vocab"], (4, 10))
    draws = {k: np.asarray(v) + 0.05 * rng.normal(size=(2, 3, *v.shape))
             for k, v in parameter_sites(net, [component]).items()}
    fast, plain = (evaluate_observables(net, draws, probes, eval_tokens, [component],
                                        fast_path=flag, token_chunk=1) for flag in (True, False))
    for name in ("token_loss", "phi", "sampling_loss"):
        np.testing.assert_allclose(fast[name].values, plain[name].values, rtol=1e-5, atol=1e-6)
