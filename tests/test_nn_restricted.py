"""restricted_posterior: each cached form is the plain restricted posterior in other coordinates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

import numpyro_slt as slt
from numpyro_slt.nn import (
    AttentionOnlyTransformer,
    HeadWeights,
    TransformerConfig,
    restricted_posterior,
)
from numpyro_slt.nn._tokens import checked_tokens
from numpyro_slt.nn.posterior import language_model, parameter_sites

CONFIG = TransformerConfig(n_layers=2, n_heads=2, d_model=8, d_head=4, n_ctx=8, d_vocab=10)
HEAD_SITES = ["head.W_Q", "head.W_K", "head.W_V", "head.W_O", "head.b_Q", "head.b_K", "head.b_V"]


@pytest.fixture(scope="module")
def setup():
    network = AttentionOnlyTransformer(CONFIG, key=jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (12, 8), 0, CONFIG.d_vocab)
    return network, tokens


def _localized(model, center):
    return slt.localize(slt.temper(model, 20.0), center, 50.0)


@pytest.mark.parametrize(("component", "form"), [("1:1", "head_offset"), ("0:0", "head_offset"),
                                                 ("unembed", "upstream"), ("embed", "plain")])
def test_each_form_is_the_plain_posterior_at_corresponding_points(setup, component, form):
    network, tokens = setup
    rp = restricted_posterior(network, component, tokens, None)
    assert rp.form == form and rp.component == component
    trained = parameter_sites(network, [component])
    plain = _localized(language_model(network, [component]), trained)
    # a point near w*, in the plain coordinates and in the model's own
    point = {k: v + 0.03 * jax.random.normal(jax.random.PRNGKey(i), v.shape)
             for i, (k, v) in enumerate(trained.items())}
    if form == "head_offset":
        assert list(rp.center) == HEAD_SITES  # names and order of the latent sites
        assert all(not np.any(v) for v in rp.center.values())
        assert isinstance(rp.trained, HeadWeights) and len(rp.model_args) == 3
        own = {f"head.{k.split('.', 1)[1]}": v - trained[k] for k, v in point.items()}
    else:
        assert list(rp.center) == list(trained)
        for k, v in rp.center.items():
            np.testing.assert_array_equal(v, trained[k])
        own = point
        assert len(rp.model_args) == 2 and (rp.model_args[1] is None) == (form == "plain")
    # the component's weights: at the center exactly w*, elsewhere the plain point
    at_center = rp.component_weights(rp.center)
    assert list(at_center) == list(trained)
    for k, v in at_center.items():
        assert v.shape == trained[k].shape and v.dtype == trained[k].dtype
        np.testing.assert_array_equal(v, trained[k])
    for k, v in rp.component_weights(own).items():
        np.testing.assert_allclose(v, point[k], rtol=1e-6, atol=1e-7)
    # the same localized tempered log density
    restricted = _localized(rp.model, rp.center)
    expected = log_density(plain, (tokens,), {}, point)[0]
    got = log_density(restricted, rp.model_args, {}, own)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    # fast_path=False: the plain model on the tokens
    slow = restricted_posterior(network, component, tokens, None, fast_path=False)
    assert slow.form == "plain" and slow.model_args[1] is None and slow.trained is None
    assert list(slow.center) == list(trained)
    assert slow.component_weights(point) is point
    np.testing.assert_array_equal(log_density(_localized(slow.model, slow.center),
                                              slow.model_args, {}, point)[0], expected)


def test_draws_with_leading_axes_and_the_batch_size(setup):
    network, tokens = setup
    rp = restricted_posterior(network, "1:0", tokens, 4)
    from numpyro_slt.kernels import _model

    info = _model.inspect_model(_localized(rp.model, rp.center), rp.model_args, {})
    assert info.subsampled_plates == {"sequences": (12, 4)}
    draws = {k: np.ones((2, 3, *v.shape), np.float32) for k, v in rp.center.items()}
    weights = rp.component_weights(draws)
    trained = parameter_sites(network, ["1:0"])
    assert list(weights) == list(trained)
    for k, v in weights.items():
        assert v.shape == (2, 3, *trained[k].shape)
        np.testing.assert_allclose(v[1, 2], trained[k] + 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        restricted_posterior(network, "1:0", tokens, 0)
    with pytest.raises(ValueError, match="unknown component"):
        restricted_posterior(network, "2:0", tokens, 4)


def test_head_weights_round_trip(setup):
    network, _ = setup
    head = HeadWeights.of(network, "1:1")
    sites = head.sites("1:1")
    assert list(sites) == [f"1:1.{f}" for f in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")]
    back = HeadWeights.from_sites({**sites, "other.W_E": jnp.zeros(3)}, "1:1")
    assert all(a is b for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(head), strict=True))
    with pytest.raises(ValueError, match=r"1:1\.b_V"):
        HeadWeights.from_sites({k: v for k, v in sites.items() if k != "1:1.b_V"}, "1:1")
    with pytest.raises(ValueError, match="one head"):
        HeadWeights.of(network, "unembed")


def test_traced_tokens_are_checked_by_shape_and_dtype_only(setup):
    _, tokens = setup
    # under jit the ids are unknown: an out-of-range id is not (cannot be) reported
    out = jax.jit(lambda t: checked_tokens("tokens", t, CONFIG))(tokens + 100)
    assert out.shape == tokens.shape
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 9\]"):
        checked_tokens("tokens", tokens + 100, CONFIG)
    with pytest.raises(ValueError, match="integer dtype"):
        jax.jit(lambda t: checked_tokens("tokens", t, CONFIG))(tokens.astype(jnp.float32))
    with pytest.raises(ValueError, match="context is 8"):
        jax.jit(lambda t: checked_tokens("tokens", t, CONFIG))(jnp.zeros((2, 9), jnp.int32))
    with pytest.raises(ValueError, match="no sequences"):
        checked_tokens("tokens", np.zeros((0, 4), np.int32), CONFIG)
