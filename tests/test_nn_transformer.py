"""Tests of numpyro_slt.nn: the attention-only transformer and its component addressing."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_slt import nn

SMALL = nn.TransformerConfig(n_layers=2, n_heads=8, d_model=32, d_head=8, n_ctx=16, d_vocab=50)
SMALL_LN = dataclasses.replace(SMALL, layer_norm=True)


def _model(config=SMALL, seed=0):
    model = nn.AttentionOnlyTransformer(config, key=jax.random.key(seed))
    # Non-zero biases and LayerNorm parameters, so that tests also exercise them.
    rng = np.random.default_rng(seed)
    params = nn.named_parameters(model)
    new = {
        f: np.asarray(x) + 0.05 * rng.standard_normal(x.shape, dtype=np.float32)
        for f, x in params.items()
        if f.startswith(("b_", "ln_"))
    }
    return nn.replace_parameters(model, new)


def _tokens(seq=16, seed=1, vocab=50):
    return jax.random.randint(jax.random.key(seed), (seq,), 0, vocab)


@pytest.fixture(scope="module", params=[SMALL, SMALL_LN], ids=["no_ln", "ln"])
def model(request):
    return _model(request.param)


def test_shapes(model):
    c = model.config
    t = _tokens()
    assert model(t).shape == (16, c.d_vocab)
    assert model.token_losses(t).shape == (15,)
    assert model.attention_patterns(t).shape == (c.n_layers, c.n_heads, 16, 16)
    assert nn.head_outputs(model, t).shape == (c.n_layers, c.n_heads, 16, c.d_model)
    # shorter sequences and vmap over a batch
    assert model(t[:5]).shape == (5, c.d_vocab)
    batch = jnp.stack([_tokens(seed=s) for s in range(3)])
    assert jax.jit(jax.vmap(model.token_losses))(batch).shape == (3, 15)


def test_deterministic_init():
    a = nn.AttentionOnlyTransformer(SMALL, key=jax.random.key(3))
    b = nn.AttentionOnlyTransformer(SMALL, key=jax.random.key(3))
    c = nn.AttentionOnlyTransformer(SMALL, key=jax.random.key(4))
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    assert all(jnp.array_equal(x, y) for x, y in pairs)
    assert not jnp.array_equal(a.W_Q, c.W_Q)


def test_causality(model):
    t = _tokens()
    t2 = t.at[10].set((t[10] + 7) % model.config.d_vocab)
    l1, l2 = model(t), model(t2)
    np.testing.assert_array_equal(l1[:10], l2[:10])
    assert not np.allclose(l1[10:], l2[10:])
    np.testing.assert_array_equal(model.token_losses(t)[:9], model.token_losses(t2)[:9])


def test_token_losses_match_direct_cross_entropy(model):
    t = _tokens()
    logits = np.asarray(model(t), dtype=np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    direct = -np.log(p[np.arange(15), np.asarray(t[1:])])
    np.testing.assert_allclose(model.token_losses(t), direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nn.cross_entropy_from_logits(model(t), t), direct, rtol=1e-5)
    np.testing.assert_allclose(model.loss(t), direct.mean(), rtol=1e-5)
    jitted = jax.jit(lambda m, x: m.token_losses(x))(model, t)
    np.testing.assert_allclose(jitted, direct, rtol=1e-5, atol=1e-5)


def test_token_losses_stable_for_huge_logits():
    m = _model()
    m = eqx.tree_at(lambda x: x.W_U, m, m.W_U * 1e4)
    assert np.all(np.isfinite(m.token_losses(_tokens())))


def test_attention_patterns_rows_sum_to_one_and_causal(model):
    t = _tokens()
    a = np.asarray(model.attention_patterns(t))
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
    upper = np.triu(np.ones((16, 16), bool), k=1)
    assert np.all(a[..., upper] == 0.0)
    assert np.all(a >= 0.0)
    np.testing.assert_allclose(a, model.run_with_cache(t).patterns, rtol=1e-5, atol=1e-6)


def test_get_set_round_trip(model):
    for name in nn.component_names(model.config):
        values = nn.get_component(model, name)
        again = nn.set_component(model, name, values)
        for x, y in zip(jax.tree.leaves(model), jax.tree.leaves(again), strict=True):
            np.testing.assert_array_equal(x, y)


def test_set_head_changes_only_that_head(model):
    c = model.config
    head = nn.get_component(model, "1:6")
    assert set(head) == {"W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"}
    assert head["W_Q"].shape == (c.d_model, c.d_head)
    assert head["W_O"].shape == (c.d_head, c.d_model)
    np.testing.assert_array_equal(head["W_V"], model.W_V[1, 6])
    new = {k: v + 1.0 for k, v in head.items()}
    changed = nn.set_component(model, "1:6", new)
    for k, v in nn.get_component(changed, "1:6").items():
        np.testing.assert_array_equal(v, new[k])
    before, after = nn.named_parameters(model), nn.named_parameters(changed)
    assert before.keys() == after.keys()
    for f in before:
        diff = np.array(before[f] != after[f])
        if f in head:
            assert diff[1, 6].all()
            diff[1, 6] = False
        assert not diff.any(), f"set_component('1:6') changed {f} outside head 1:6"
    # the model output changes, and the original model is untouched
    t = _tokens()
    assert not np.allclose(model(t), changed(t))
    np.testing.assert_array_equal(model.W_Q[1, 6], head["W_Q"])


def test_set_component_errors():
    m = _model()
    head = nn.get_component(m, "0:1")
    with pytest.raises(ValueError, match=r"shape \(32, 7\), expected \(32, 8\)"):
        nn.set_component(m, "0:1", {**head, "W_Q": jnp.zeros((32, 7))})
    with pytest.raises(ValueError, match="lack"):
        nn.set_component(m, "0:1", {"W_Q": head["W_Q"]})
    with pytest.raises(ValueError, match="no parameter"):
        nn.set_component(m, "0:1", {**head, "W_E": m.W_E})
    partial = nn.set_component(m, "0:1", {"W_Q": jnp.zeros((32, 8))}, partial=True)
    assert np.all(partial.W_Q[0, 1] == 0) and np.array_equal(partial.W_K, m.W_K)


def test_component_names_and_parsing():
    names = nn.component_names(SMALL)
    assert names[:3] == ["embed", "pos", "layer 0"]
    assert names[-1] == "unembed"
    assert len(names) == 2 + 2 * (1 + 8) + 1
    assert nn.component_names(SMALL, heads_only=True)[:2] == ["0:0", "0:1"]
    assert nn.parse_component("1:6", SMALL) == nn.ComponentSpec("head", 1, 6)
    assert nn.parse_component("1", SMALL) == nn.parse_component("layer 1", SMALL)
    assert nn.parse_component(" Layer 1 ", SMALL).name == "layer 1"
    layer = nn.get_component(_model(), "layer 1")
    assert layer["W_Q"].shape == (8, 32, 8) and layer["b_O"].shape == (32,)
    assert set(nn.get_component(_model(SMALL_LN), "unembed")) == {
        "W_U",
        "b_U",
        "ln_final_w",
        "ln_final_b",
    }


@pytest.mark.parametrize("bad", ["2:0", "0:8", "head 3", "layer 2", "embedding", ""])
def test_unknown_component_lists_valid_names(bad):
    with pytest.raises(ValueError, match="unknown component") as err:
        nn.parse_component(bad, SMALL)
    msg = str(err.value)
    for name in ["embed", "pos", "unembed", "layer 0", "1:7"]:
        assert repr(name) in msg
    with pytest.raises(ValueError, match="valid names"):
        nn.get_component(_model(), bad)


def test_set_components_and_mask():
    m = _model()
    heads = nn.get_components(m, ["0:1", "1:6"])
    assert list(heads) == ["0:1", "1:6"]
    zeroed = {n: {k: jnp.zeros_like(v) for k, v in d.items()} for n, d in heads.items()}
    m2 = nn.set_components(m, zeroed)
    assert np.all(m2.W_O[0, 1] == 0) and np.all(m2.W_O[1, 6] == 0)
    with pytest.raises(ValueError, match="overlapping"):
        nn.set_components(m, {"layer 1": nn.get_component(m, "layer 1"), "1:6": heads["1:6"]})
    mask = nn.component_mask(m, ["1:6", "embed"])
    n_sel = sum(int(x.sum()) for x in jax.tree.leaves(mask))
    assert n_sel == nn.component_size(SMALL, "1:6") + nn.component_size(SMALL, "embed")
    assert nn.component_size(SMALL, "1:6") == 4 * 32 * 8 + 3 * 8
    assert bool(mask.W_Q[1, 6].all()) and not bool(mask.W_Q[1, 5].any())


def test_set_component_is_differentiable():
    m, t = _model(), _tokens()

    def loss(values):
        return nn.set_component(m, "1:6", values).loss(t)

    head = nn.get_component(m, "1:6")
    g = jax.jit(jax.grad(loss))(head)
    full = jax.jit(jax.grad(lambda mm: mm.loss(t)))(m)
    np.testing.assert_allclose(g["W_V"], full.W_V[1, 6], rtol=1e-5, atol=1e-7)


def test_head_outputs_sum_to_layer_output(model):
    t = _tokens()
    assert float(nn.check_head_decomposition(model, t)) < 1e-5
    cache = model.run_with_cache(t)
    ho = nn.head_outputs(model, t)
    for l in range(model.config.n_layers):
        layer_out = model.apply_layer(l, cache.resid[l])
        np.testing.assert_allclose(
            cache.resid[l] + ho[l].sum(0) + model.b_O[l], layer_out, rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(cache.logits, model(t), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(nn.get_activation(model, t, "1:6", cache=cache), ho[1, 6])
    np.testing.assert_allclose(
        nn.get_activation(model, t, "layer 0"), ho[0].sum(0) + model.b_O[0], rtol=1e-5, atol=1e-6
    )
    assert nn.get_activation(model, t, "unembed").shape == (16, model.config.d_vocab)


def test_zeroing_a_head_removes_its_output():
    m, t = _model(), _tokens()
    head = nn.get_component(m, "0:3")
    ablated = nn.set_component(m, "0:3", {**head, "W_O": jnp.zeros_like(head["W_O"])})
    assert np.all(nn.head_outputs(ablated, t)[0, 3] == 0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_layers", 0, "n_layers must be >= 1"),
        ("n_heads", -1, "n_heads must be >= 1"),
        ("d_model", 0, "d_model"),
        ("d_head", 2.5, "d_head must be a positive int"),
        ("n_ctx", True, "n_ctx must be a positive int"),
        ("d_vocab", 1, "d_vocab must be >= 2"),
        ("layer_norm", 1, "layer_norm must be True or False"),
        ("ln_eps", 0.0, "ln_eps"),
        ("init_std", -0.1, "init_std"),
    ],
)
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        nn.TransformerConfig(**{field: value})


def test_config_round_trip_and_frozen():
    c = nn.TransformerConfig(d_model=64, layer_norm=True)
    assert nn.TransformerConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown TransformerConfig field"):
        nn.TransformerConfig.from_dict({**c.to_dict(), "n_mlp": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_layers = 3  # type: ignore[misc]


def test_bad_tokens():
    m = _model()
    with pytest.raises(ValueError, match="exceeds the context"):
        m(_tokens(seq=17))
    with pytest.raises(ValueError, match="token ids"):
        m(jnp.array([0, 50]))
    with pytest.raises(ValueError, match="token ids"):
        m(jnp.array([-1, 3]))
    with pytest.raises(ValueError, match="integer dtype"):
        m(jnp.zeros(4))
    with pytest.raises(ValueError, match="1-D"):
        m(jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="too short"):
        m.token_losses(jnp.array([3]))


def test_default_config_is_paper_shape():
    c = nn.TransformerConfig()
    assert (c.n_layers, c.n_heads, c.d_model, c.d_head, c.n_ctx, c.d_vocab) == (
        2,
        8,
        256,
        32,
        1024,
        5000,
    )
    assert c.layer_norm is False
    model = jax.eval_shape(lambda k: nn.AttentionOnlyTransformer(c, key=k), jax.random.key(0))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model))
    assert n == c.n_params
    assert 2_500_000 < n < 3_500_000
    embed_unembed = 2 * 5000 * 256
    attention = sum(nn.component_size(c, f"layer {l}") for l in range(2))
    assert attention == 2 * (4 * 8 * 256 * 32 + 3 * 8 * 32 + 256)
    assert n == embed_unembed + attention + 1024 * 256 + 5000
    assert nn.parameter_count(nn.AttentionOnlyTransformer(SMALL, key=jax.random.key(0))) == (
        SMALL.n_params
    )
