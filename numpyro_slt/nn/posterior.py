"""The NumPyro model of a language model: latent parameters, observed next tokens.

For a transformer f_w and token sequences t ([sequences, context]) the model is

    w ~ prior                                   (one latent site per sampled parameter array)
    for each sequence s in plate("sequences", N, subsample_size=B):
        t[s, i+1] ~ Categorical(logits = f_w(t[s, :i+1]))   for i = 0 .. context − 2

so ℓ_xy(w) = −log p(y | x, w) is the next-token cross-entropy and n counts predicted tokens,
N·(context − 1). The observed site's log-probability is −ℓ, computed over chunks of positions
(:class:`NextTokenLoss`), so no minibatch × positions × vocabulary logits array is held.
Wrapped in :func:`numpyro_slt.temper` and :func:`numpyro_slt.localize` (with
:func:`parameter_sites` as the center) it is the localized tempered posterior of
docs/formulas.md; with ``components`` only those components' parameters are latent and the rest
of the network stays at its trained value, which is the weight-restricted posterior.

Two factories build it: :func:`language_model` (any components, from the tokens or from a
:func:`~numpyro_slt.nn.caches.frozen_cache`) and :func:`head_offset_model` (one head as its
offset from the trained weights). They share the priors and the likelihood block; which of them a
study uses is decided by :func:`~numpyro_slt.nn.restricted.restricted_posterior`.

Site names: a whole-network site is the parameter's field name (``"W_Q"``); a component site is
``"<component>.<field>"`` (``"1:6.W_Q"``, ``"embed.W_E"``): no ``/``, which ArviZ 1.x
(xarray ``DataTree``) and netCDF reserve for paths.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int
from numpyro.distributions import constraints

from .._validate import nonnegative_int, positive_int
from ._tokens import checked_tokens
from .caches import HeadCache, cached_logits, cached_losses, check_cache, first_layer
from .components import (
    canonical_components,
    component_fields,
    get_component,
    named_parameters,
    replace_parameters,
    set_component,
)
from .heads import HeadWeights
from .transformer import AttentionOnlyTransformer

__all__ = ["language_model", "parameter_sites", "network_at", "logits_at", "losses_at",
           "head_offset_model", "head_offset_center", "head_weights_from_offsets",
           "NextTokenLoss", "OFFSET_PREFIX"]

OFFSET_PREFIX = "head"
"""Site prefix of :func:`head_offset_model`: its sites are ``"head.W_Q"``, …, ``"head.b_V"``."""


def parameter_sites(
    network: AttentionOnlyTransformer, components: Iterable[str] | None = None
) -> dict[str, Float[Array, "*shape"]]:
    """The latent site values of the model at the network's parameters: the center w* for
    :func:`numpyro_slt.localize`. Whole network when ``components`` is None."""
    if components is None:
        return dict(named_parameters(network))
    sites: dict[str, jnp.ndarray] = {}
    for name in canonical_components(network.config, components):
        for field, value in get_component(network, name).items():
            sites[f"{name}.{field}"] = value
    return sites


def network_at(
    network: AttentionOnlyTransformer,
    values: Mapping[str, Float[Array, "*shape"]],
    components: Iterable[str] | None = None,
) -> AttentionOnlyTransformer:
    """The network with the site ``values`` (as named by :func:`parameter_sites`) put in."""
    if components is None:
        return replace_parameters(network, values)
    for name in canonical_components(network.config, components):
        sites = {f: f"{name}.{f}" for f in component_fields(network.config, name)}
        network = set_component(network, name, {f: values[site] for f, site in sites.items()
                                                 if site in values})
    return network


def logits_at(
    network: AttentionOnlyTransformer,
    values: Mapping[str, Array],
    components: tuple[str, ...] | None,
    inputs: Int[Array, " positions"] | None = None,
    cached: HeadCache | Float[Array, "positions d_model"] | None = None,
) -> Float[Array, "positions vocab"]:
    """Logits of one sequence with the sampled site ``values`` (:func:`parameter_sites` names)
    put in for ``components``: from the model ``inputs`` when ``cached`` is None, else from the
    sequence's row of :func:`~numpyro_slt.nn.caches.frozen_cache`.

    With a :class:`~numpyro_slt.nn.caches.HeadCache` the sampled head's weights are used as they
    are, x^{L+1} = rest + out(a; c), so the computation does not depend on which head of layer L
    is sampled: every head of a layer lowers to the same XLA program.
    """
    if isinstance(cached, HeadCache):
        return cached_logits(network, cached, cached.layer,
                             HeadWeights.from_sites(values, cached.component))
    current = network_at(network, values, components)
    if cached is None:
        return current(inputs)
    return cached_logits(current, cached, first_layer(network, components))


def losses_at(
    network: AttentionOnlyTransformer,
    values: Mapping[str, Array],
    components: tuple[str, ...] | None,
    tokens: Int[Array, " context"],
    cached: HeadCache | Float[Array, "positions d_model"] | None = None,
) -> Float[Array, " positions"]:
    """Per-token losses ℓ_s of one sequence ``tokens`` with the sampled site ``values`` put in
    for ``components`` (as :func:`logits_at`, from ``tokens[:-1]`` or from the sequence's row of
    the frozen cache), over chunks of positions so that its logits are never held at once."""
    targets = tokens[1:]
    if isinstance(cached, HeadCache):
        return cached_losses(network, cached, cached.layer, targets,
                             HeadWeights.from_sites(values, cached.component))
    current = network_at(network, values, components)
    if cached is None:
        return current.token_losses(tokens)
    return cached_losses(current, cached, first_layer(network, components), targets)


def language_model(
    network: AttentionOnlyTransformer,
    components: Iterable[str] | None = None,
    batch_size: int | None = None,
    prior_scale: float = 1.0,
) -> Callable[[Int[Array, "sequences context"]], None]:
    """A NumPyro model ``model(tokens, upstream=None)`` for next-token prediction with ``network``.

    :param network: the trained network; its parameters not selected stay fixed.
    :param components: names of the components to sample (``"1:6"``, ``"embed"``, ``"layer 0"``,
        …); None samples every parameter. Unknown names raise a ValueError listing valid ones.
    :param batch_size: sequences per minibatch (the plate's ``subsample_size``); None uses all.
    :param prior_scale: standard deviation of the placeholder N(0, s²) priors, which
        :func:`numpyro_slt.localize` replaces.

    With ``upstream`` = :func:`~numpyro_slt.nn.caches.frozen_cache` ``(network, tokens,
    components)`` the frozen part of the network is not recomputed: for one head each step runs
    that head, the layers after it and the unembedding on the cached
    :class:`~numpyro_slt.nn.caches.HeadCache` of the minibatch's sequences; otherwise only
    layers L.. and the unembedding on the cached x^L. Both give the same losses and gradients up
    to float rounding.
    """
    if components is not None:
        components = canonical_components(network.config, components)
    batch_size = _batch_size(batch_size)
    shapes = {name: value.shape for name, value in parameter_sites(network, components).items()}

    def model(tokens: Int[Array, "sequences context"],
              upstream: HeadCache | Float[Array, "sequences positions d_model"] | None = None
              ) -> None:
        tokens = checked_tokens("tokens", tokens, network.config)
        if upstream is not None:
            check_cache(upstream, tokens, network, components)
        values = _latent_sites(shapes, prior_scale)

        def losses(rows, batch):
            if upstream is None:
                return jax.vmap(network_at(network, values, components).token_losses)(batch)
            return jax.vmap(lambda seq, cached: losses_at(network, values, components, seq,
                                                          cached=cached))(
                batch, jax.tree.map(lambda u: u[rows], upstream))

        _next_token_likelihood(tokens, batch_size, losses)

    model.network = network
    model.components = components
    return model


def head_offset_model(
    network: AttentionOnlyTransformer,
    layer: int,
    batch_size: int | None = None,
    prior_scale: float = 1.0,
) -> Callable[..., None]:
    """The weight-restricted model of any one head of layer ``layer``, sampled as the offset
    δ = c − c* of the head's weights c from its trained weights c*:

        δ ~ prior;   t[s, i+1] ~ Categorical(logits = f(rest + out(a; c* + δ)))

    with a = LN_L(x^L) and rest the layer's output without the head, both from the head's
    :class:`~numpyro_slt.nn.caches.HeadCache`. It is ``model(tokens, upstream, center)`` with
    ``upstream = head_cache(network, tokens, "L:H")`` and ``center`` = c*
    (:meth:`HeadWeights.of <numpyro_slt.nn.heads.HeadWeights.of>` ``(network, "L:H")`` or
    ``get_component(network, "L:H")``); its sites are ``"head.W_Q"``, …, ``"head.b_V"``.
    Localized at δ* = 0 (:func:`head_offset_center`) it is :func:`language_model`
    ``(network, ["L:H"])`` localized at c*, translated by −c*: the same losses at corresponding
    points, so the same LLC and observables.

    The head's identity is data, not code, so all heads of a layer lower to one XLA program and
    JAX's persistent compilation cache compiles it once per layer.
    """
    batch_size = _batch_size(batch_size)
    layer = nonnegative_int("layer", layer)
    if layer >= network.config.n_layers:
        raise ValueError(f"layer must lie in [0, {network.config.n_layers}), got {layer!r}")
    shapes = {name: value.shape for name, value in head_offset_center(network, layer).items()}

    def model(tokens: Int[Array, "sequences context"], upstream: HeadCache,
              center: HeadWeights | Mapping[str, Float[Array, "*shape"]]) -> None:
        tokens = checked_tokens("tokens", tokens, network.config)
        if not isinstance(upstream, HeadCache) or upstream.layer != layer:
            raise ValueError(f"upstream must be the HeadCache of a head of layer {layer} "
                             "(head_cache(network, tokens, 'L:H')), got "
                             f"{type(upstream).__name__}.")
        check_cache(upstream, tokens, network, (upstream.component,))
        center = HeadWeights.coerce(center)
        weights = center + HeadWeights.from_sites(_latent_sites(shapes, prior_scale),
                                                  OFFSET_PREFIX)

        def losses(rows, batch):
            return jax.vmap(lambda seq, row: cached_losses(network, row, layer, seq[1:],
                                                           weights))(
                batch, jax.tree.map(lambda u: u[rows], upstream))

        _next_token_likelihood(tokens, batch_size, losses)

    model.network = network
    model.layer = layer
    return model


def head_offset_center(network: AttentionOnlyTransformer, layer: int
                       ) -> dict[str, Float[Array, "*shape"]]:
    """δ* = 0 for every site of :func:`head_offset_model`: its localization center."""
    zeros = jax.tree.map(jnp.zeros_like, HeadWeights.of(network, f"{int(layer)}:0"))
    return zeros.sites(OFFSET_PREFIX)


def head_weights_from_offsets(
    center: HeadWeights | Mapping[str, Array], offsets: Mapping[str, Array], component: str
) -> dict[str, Array]:
    """Draws of :func:`head_offset_model` (``"head.W_Q"`` → δ, any leading axes) as draws of
    :func:`language_model` for ``component`` (``"L:H.W_Q"`` → c* + δ): the names and values
    :class:`~numpyro_slt.nn.observables.ObservableEvaluator` expects."""
    return (HeadWeights.coerce(center)
            + HeadWeights.from_sites(offsets, OFFSET_PREFIX)).sites(component)


# ---------------------------------------------------------------------------- shared blocks


def _batch_size(batch_size: int | None) -> int | None:
    return None if batch_size is None else positive_int("batch_size", batch_size)


def _latent_sites(shapes: Mapping[str, tuple[int, ...]], prior_scale: float
                  ) -> dict[str, Array]:
    """One latent site per entry of ``shapes`` with the placeholder prior N(0, prior_scale²)."""
    return {
        name: numpyro.sample(name, dist.Normal(0.0, prior_scale).expand(shape)
                             .to_event(len(shape)))
        for name, shape in shapes.items()
    }


class NextTokenLoss(dist.Distribution):
    """The categorical likelihood of observed next tokens, given their losses:
    log p(t[s, i+1] | t[s, :i+1], w) = −ℓ_{s,i}(w), with ℓ the next-token cross-entropy the
    network computed for exactly these observed tokens (in chunks of positions, so that the
    logits of a large vocabulary are never held at once; ``Categorical(logits)`` would need them
    all).

    Its ``log_prob`` is only defined at the observation the losses belong to: the site must be
    observed (``obs=tokens[:, 1:]``), and a value of another shape is a ValueError. It cannot be
    sampled: predictive draws of next tokens need the logits (``network(tokens)``).
    """

    arg_constraints = {"losses": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, losses: Float[Array, "batch positions"], *, validate_args=None):
        self.losses = losses
        super().__init__(batch_shape=jnp.shape(losses), validate_args=validate_args)

    def log_prob(self, value: Int[Array, "batch positions"]) -> Float[Array, "batch positions"]:
        if jnp.shape(value) != jnp.shape(self.losses):
            raise ValueError(f"NextTokenLoss.log_prob is defined at the observed next tokens "
                             f"(shape {jnp.shape(self.losses)}), got a value of shape "
                             f"{jnp.shape(value)}.")
        return -self.losses

    def sample(self, key, sample_shape=()):
        raise NotImplementedError("NextTokenLoss holds losses, not logits: it cannot be sampled. "
                                  "Draw next tokens from the network's logits, network(tokens).")


def _next_token_likelihood(
    tokens: Int[Array, "sequences context"],
    batch_size: int | None,
    losses: Callable[[Int[Array, " batch"], Int[Array, "batch context"]],
                     Float[Array, "batch positions"]],
) -> None:
    """The likelihood: a plate over the sequences (minibatches of ``batch_size`` rows) in which
    ``next_token`` t[s, 1:] is observed with log-probability −ℓ = −losses(rows, tokens[rows])
    (:class:`NextTokenLoss`)."""
    with numpyro.plate("sequences", tokens.shape[0], subsample_size=batch_size, dim=-2) as idx:
        rows = idx.reshape(-1)
        batch = tokens[rows]
        numpyro.sample("next_token", NextTokenLoss(losses(rows, batch)), obs=batch[:, 1:])
