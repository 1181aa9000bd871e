"""The NumPyro model of a language model: latent parameters, observed next tokens.

For an attention-only transformer f_w and token sequences t ([sequences, context]) the model is

    w ~ prior                                   (one latent site per sampled parameter array)
    for each sequence s in plate("sequences", N, subsample_size=B):
        t[s, i+1] ~ Categorical(logits = f_w(t[s, :i+1]))   for i = 0 .. context − 2

so ℓ_xy(w) = −log p(y | x, w) is the next-token cross-entropy and n counts predicted tokens,
N·(context − 1). Wrapped in :func:`numpyro_slt.temper` and :func:`numpyro_slt.localize` (with
:func:`parameter_sites` as the center) it is the localized tempered posterior of DESIGN.md; with
``components`` only those components' parameters are latent and the rest of the network stays at its
trained value, which is the weight-restricted posterior.

Site names: a whole-network site is the parameter's field name (``"W_Q"``); a component site is
``"<component>.<field>"`` (``"1:6.W_Q"``, ``"embed.W_E"``): no ``/``, which ArviZ 1.x
(xarray ``DataTree``) and netCDF reserve for paths.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int

from .components import get_component, named_parameters, parse_component, replace_parameters
from .components import set_component as _set_component
from .projected import (
    PROJECTED_CACHE_MAX_BYTES,
    logits_from_projection,
    project_rest,
    projected_bytes,
)
from .transformer import AttentionOnlyTransformer, attention_head, attention_values

__all__ = ["language_model", "parameter_sites", "network_at", "first_layer", "upstream_residual",
           "HeadCache", "head_cache", "frozen_cache", "logits_from_cache", "logits_at",
           "head_offset_model", "head_offset_center", "head_weights_from_offsets"]


def parameter_sites(
    network: AttentionOnlyTransformer, components: Iterable[str] | None = None
) -> dict[str, Float[Array, "*shape"]]:
    """The latent site values of the model at the network's parameters: the center w* for
    :func:`numpyro_slt.localize`. Whole network when ``components`` is None."""
    if components is None:
        return dict(named_parameters(network))
    sites: dict[str, jnp.ndarray] = {}
    for name in _canonical(network, components):
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
    for name in _canonical(network, components):
        prefix = f"{name}."
        part = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
        network = _set_component(network, name, part)
    return network


def first_layer(network: AttentionOnlyTransformer, components: Iterable[str] | None) -> int:
    """L, the first layer whose input x^L depends on the sampled ``components``: 0 for the whole
    network, ``"embed"`` or ``"pos"``; l for a head ``"l:h"`` or ``"layer l"``; ``n_layers`` for
    ``"unembed"``. Everything upstream of x^L is frozen, so x^L can be computed once."""
    if components is None:
        return 0
    layers = []
    for name in _canonical(network, components):
        spec = parse_component(name, network.config)
        layers.append({"embed": 0, "pos": 0, "unembed": network.config.n_layers}
                      .get(spec.kind, spec.layer))
    return min(layers)


def upstream_residual(
    network: AttentionOnlyTransformer,
    tokens: Int[Array, "sequences context"],
    components: Iterable[str],
    *,
    chunk: int = 256,
) -> Float[Array, "sequences positions d_model"]:
    """The frozen residual stream x^L (L = :func:`first_layer`) of the model inputs
    ``tokens[:, :-1]``, computed once in chunks of sequences: the cache of the restricted fast
    path (pass it to the model of :func:`language_model` as ``upstream``)."""
    tokens = _check_tokens(tokens, network)
    layer = first_layer(network, components)
    if layer == 0:
        raise ValueError(f"components {list(components)} change the embedding or layer 0: "
                         "nothing upstream is frozen, so there is nothing to cache.")
    chunks, size = _chunked_inputs(tokens, chunk)
    residual = _upstream(network, chunks, layer)
    return residual.reshape(-1, *residual.shape[2:])[:size]


class HeadCache(eqx.Module):
    """The frozen part of the network around one sampled head L:H, per model input position.

    ``normed`` is the head's input a = LN_L(x^L) and ``rest`` = x^{L+1}(w*) − out_{L,H}(w*), the
    layer's output without this head. Nothing upstream of the head and no other head of layer L
    depends on the head's weights c, so x^{L+1}(c) = rest + out_{L,H}(a; c) exactly (the
    residual-stream identity of :mod:`~numpyro_slt.nn.components`): each step and each
    observable evaluation runs one head, the layers after L and the unembedding.

    ``projected`` (only for a head of the last layer, else None) is R = c(rest) W', the rest's
    logits before LN_final's division by σ (:mod:`~numpyro_slt.nn.projected`): with it a row of
    logits costs d_head·vocab instead of d_model·vocab multiply-adds.
    """

    normed: Float[Array, "sequences positions d_model"]
    rest: Float[Array, "sequences positions d_model"]
    layer: int = eqx.field(static=True)
    head: int = eqx.field(static=True)
    projected: Float[Array, "sequences positions vocab"] | None = None

    @property
    def component(self) -> str:
        return f"{self.layer}:{self.head}"


def head_cache(
    network: AttentionOnlyTransformer,
    tokens: Int[Array, "sequences context"],
    component: str,
    *,
    chunk: int = 256,
    project: bool | None = False,
) -> HeadCache:
    """The :class:`HeadCache` of head ``component`` (``"L:H"``) for the model inputs
    ``tokens[:, :-1]``, computed once in chunks of sequences.

    :param project: also cache the projection R of the rest onto the vocabulary (a head of the
        last layer only; :mod:`~numpyro_slt.nn.projected`); None: when the head is in the last
        layer and R takes at most :data:`~numpyro_slt.nn.projected.PROJECTED_CACHE_MAX_BYTES`.
        It speeds up forward passes (observables: 34 → 23.6 ms a draw on the default model) but
        not SGLD steps, whose backward pass through R costs more than it saves (7.0 → 9.1 ms a
        step), so the default is False.
    """
    spec = parse_component(component, network.config)
    if spec.kind != "head":
        raise ValueError(f"head_cache needs one head 'L:H', got {component!r}")
    tokens = _check_tokens(tokens, network)
    last = spec.layer == network.config.n_layers - 1
    if project and not last:
        raise ValueError(f"project=True needs a head of the last layer "
                         f"{network.config.n_layers - 1}, got {component!r}; pass project=None.")
    if project is None:
        project = last and projected_bytes(network, tokens.shape[0], tokens.shape[1] - 1) \
            <= PROJECTED_CACHE_MAX_BYTES
    chunks, size = _chunked_inputs(tokens, chunk)
    normed, rest = _head_cache(network, chunks, spec.layer, jnp.int32(spec.head))
    rest = rest.reshape(-1, *rest.shape[2:])[:size]
    return HeadCache(normed.reshape(-1, *normed.shape[2:])[:size], rest, spec.layer, spec.head,
                     project_rest(network, rest) if project else None)


@eqx.filter_jit
def _head_cache(network: AttentionOnlyTransformer, chunks, layer: int, head: Array):
    """(a, rest) of every sequence; ``head`` is traced, so all heads of a layer share one
    program."""

    def one(seq):
        resid = _residual_before(network, seq, layer)
        normed = network.normed_input(layer, resid)
        rest = network.apply_layer(layer, resid) - network.head_output(layer, head, normed)
        return normed, rest

    return jax.lax.map(jax.vmap(one), chunks)


def frozen_cache(
    network: AttentionOnlyTransformer,
    tokens: Int[Array, "sequences context"],
    components: Iterable[str] | None,
    *,
    chunk: int = 256,
    project: bool | None = False,
) -> HeadCache | Float[Array, "sequences positions d_model"] | None:
    """What the restricted fast path caches for ``components``: a :class:`HeadCache` for a single
    head (with the projected unembedding as :func:`head_cache`'s ``project`` says), the frozen
    residual stream x^L (:func:`upstream_residual`) when everything upstream of
    a layer L > 0 is frozen, and None when nothing can be cached (the whole network, the
    embedding, or a component set reaching into layer 0 other than one head). Pass it to the
    model of :func:`language_model` as ``upstream``."""
    if components is None:
        return None
    names = _canonical(network, components)
    if len(names) == 1 and parse_component(names[0], network.config).kind == "head":
        return head_cache(network, tokens, names[0], chunk=chunk, project=project)
    if first_layer(network, names) > 0:
        return upstream_residual(network, tokens, names, chunk=chunk)
    return None


def logits_from_cache(
    network: AttentionOnlyTransformer,
    cached: HeadCache | Float[Array, "positions d_model"],
    layer: int,
) -> Float[Array, "positions vocab"]:
    """Logits of one sequence from its cached frozen part (one row of :func:`frozen_cache`):
    for a :class:`HeadCache`, rest + out_{L,H}(a) then layers L+1.. and the unembedding; for x^L,
    layers ``layer``.. and the unembedding."""
    if isinstance(cached, HeadCache):
        return _head_logits(network, cached, get_component(network, cached.component))
    return network.unembed(network.residual_from(layer, cached))


def _head_logits(network: AttentionOnlyTransformer, cached: HeadCache,
                 weights: Mapping[str, Array]) -> Float[Array, "positions vocab"]:
    """Logits of one sequence (one row of a :class:`HeadCache`) with the head's weights
    ``weights`` (field name → array): from x^{L+1} = rest + attention_head(a; weights), then
    layers L+1.. and the unembedding; through the projected unembedding when the row carries R.
    """
    if cached.projected is None:
        head_out = attention_head(cached.normed, **weights)
        return network.unembed(network.residual_from(cached.layer + 1, cached.rest + head_out))
    values = attention_values(cached.normed, **{k: v for k, v in weights.items() if k != "W_O"})
    return logits_from_projection(network, cached.rest, cached.projected, values,
                                  weights["W_O"])


def logits_at(
    network: AttentionOnlyTransformer,
    values: Mapping[str, Array],
    components: tuple[str, ...] | None,
    inputs: Int[Array, " positions"] | None = None,
    cached: HeadCache | Float[Array, "positions d_model"] | None = None,
) -> Float[Array, "positions vocab"]:
    """Logits of one sequence with the sampled site ``values`` (:func:`parameter_sites` names)
    put in for ``components``: from the model ``inputs`` when ``cached`` is None, else from the
    sequence's row of :func:`frozen_cache`.

    With a :class:`HeadCache` the sampled head's weights are used as they are,
    x^{L+1} = rest + attention_head(a; c), so the computation does not depend on which head of
    layer L is sampled: every head of a layer lowers to the same XLA program, which JAX's
    persistent compilation cache then compiles once per layer.
    """
    if isinstance(cached, HeadCache):
        prefix = f"{cached.component}."
        weights = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
        return _head_logits(network, cached, weights)
    current = network_at(network, values, components)
    if cached is None:
        return current(inputs)
    return logits_from_cache(current, cached, first_layer(network, components))


def _chunked_inputs(tokens, chunk: int):
    """Model inputs ``tokens[:, :-1]`` padded to whole chunks: ([chunks, chunk, S−1], rows)."""
    inputs = np.asarray(tokens)[:, :-1]
    pad = -len(inputs) % chunk
    padded = np.concatenate([inputs, np.repeat(inputs[-1:], pad, axis=0)]).reshape(
        -1, chunk, inputs.shape[1])
    return jnp.asarray(padded), len(inputs)


@eqx.filter_jit
def _upstream(network: AttentionOnlyTransformer, chunks, layer: int):
    """x^layer of every sequence, mapped over chunks (compiled once per network shape, chunk
    shape and layer: the network is an argument, not a constant)."""

    return jax.lax.map(jax.vmap(lambda seq: _residual_before(network, seq, layer)), chunks)


def _residual_before(network: AttentionOnlyTransformer, seq, layer: int):
    """x^layer of one input sequence: the embedding, then layers 0 .. layer − 1."""
    resid = network.embed(seq)
    for l in range(layer):
        resid = network.apply_layer(l, resid)
    return resid


def language_model(
    network: AttentionOnlyTransformer,
    components: Iterable[str] | None = None,
    batch_size: int | None = None,
    prior_scale: float = 1.0,
) -> Callable[[Int[Array, "sequences context"]], None]:
    """A NumPyro model ``model(tokens)`` for next-token prediction with ``network``.

    :param network: the trained network; its parameters not selected stay fixed.
    :param components: names of the components to sample (``"1:6"``, ``"embed"``, ``"layer 0"``,
        …); None samples every parameter. Unknown names raise a ValueError listing valid ones.
    :param batch_size: sequences per minibatch (the plate's ``subsample_size``); None uses all.
    :param prior_scale: standard deviation of the placeholder N(0, s²) priors, which
        :func:`numpyro_slt.localize` replaces.

    The model is ``model(tokens, upstream=None)``. With ``upstream`` =
    :func:`frozen_cache` ``(network, tokens, components)`` (the restricted fast path) the
    frozen part of the network is not recomputed: for one head each step runs that head, the
    layers after it and the unembedding on the cached :class:`HeadCache` of the minibatch's
    sequences; otherwise only layers L.. and the unembedding on the cached x^L
    (:func:`upstream_residual`). Both give the same losses and gradients up to float rounding.
    """
    if components is not None:
        components = _canonical(network, components)
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    shapes = {name: value.shape for name, value in parameter_sites(network, components).items()}
    layer = first_layer(network, components)

    def model(tokens: Int[Array, "sequences context"],
              upstream: HeadCache | Float[Array, "sequences positions d_model"] | None = None
              ) -> None:
        tokens = _check_tokens(tokens, network)
        if upstream is not None:
            _check_upstream(upstream, tokens, network, layer, components)
        values = {
            name: numpyro.sample(name, dist.Normal(0.0, prior_scale).expand(shape)
                                 .to_event(len(shape)))
            for name, shape in shapes.items()
        }
        sequences = numpyro.plate("sequences", tokens.shape[0], subsample_size=batch_size, dim=-2)
        with sequences as idx:
            rows = idx.reshape(-1)
            batch = tokens[rows]
            if upstream is None:
                logits = jax.vmap(network_at(network, values, components))(batch[:, :-1])
            else:
                logits = jax.vmap(lambda cached: logits_at(network, values, components,
                                                           cached=cached))(
                    jax.tree.map(lambda u: u[rows], upstream))
            numpyro.sample("next_token", dist.Categorical(logits=logits), obs=batch[:, 1:])

    model.network = network
    model.components = components
    return model


HEAD_SITE_PREFIX = "head."


def head_offset_model(
    network: AttentionOnlyTransformer,
    layer: int,
    batch_size: int | None = None,
    prior_scale: float = 1.0,
) -> Callable[..., None]:
    """The weight-restricted model of any one head of layer ``layer``, sampled as the offset
    δ = c − c* of the head's weights c from its trained weights c*:

        δ ~ prior;   t[s, i+1] ~ Categorical(logits = f(rest + attention_head(a; c* + δ)))

    with a = LN_L(x^L) and rest the layer's output without the head, both from the head's
    :class:`HeadCache` (the fast path of :func:`language_model`). It is
    ``model(tokens, upstream, center)`` with ``upstream = head_cache(network, tokens, "L:H")``
    and ``center = get_component(network, "L:H")`` (c*, keyed by field name); its sites are
    ``"head.W_Q"``, …, ``"head.b_V"``. Localized at δ* = 0 (:func:`head_offset_center`) it is
    :func:`language_model` ``(network, ["L:H"])`` localized at c*, translated by −c*: the same
    losses at corresponding points, so the same LLC and observables.

    Why: the head's identity is data, not code, so all heads of a layer lower to one XLA
    program, and with JAX's persistent compilation cache a study compiles once per layer
    instead of once per head.
    """
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not 0 <= int(layer) < network.config.n_layers:
        raise ValueError(f"layer must lie in [0, {network.config.n_layers}), got {layer!r}")
    layer = int(layer)
    shapes = {f"{HEAD_SITE_PREFIX}{field}": value.shape
              for field, value in get_component(network, f"{layer}:0").items()}

    def model(tokens: Int[Array, "sequences context"], upstream: HeadCache,
              center: Mapping[str, Float[Array, "*shape"]]) -> None:
        tokens = _check_tokens(tokens, network)
        if not isinstance(upstream, HeadCache) or upstream.layer != layer:
            raise ValueError(f"upstream must be the HeadCache of a head of layer {layer} "
                             "(head_cache(network, tokens, 'L:H')), got "
                             f"{type(upstream).__name__}.")
        _check_upstream(upstream, tokens, network, layer, (upstream.component,))
        fields = {name[len(HEAD_SITE_PREFIX):] for name in shapes}
        if set(center) != fields:
            raise ValueError(f"center must hold the head's trained weights {sorted(fields)} "
                             f"(get_component(network, 'L:H')), got {sorted(center)}.")
        offsets = {
            name: numpyro.sample(name, dist.Normal(0.0, prior_scale).expand(shape)
                                 .to_event(len(shape)))
            for name, shape in shapes.items()
        }
        weights = {field: center[field] + offsets[HEAD_SITE_PREFIX + field] for field in fields}
        sequences = numpyro.plate("sequences", tokens.shape[0], subsample_size=batch_size, dim=-2)
        with sequences as idx:
            rows = idx.reshape(-1)
            batch = tokens[rows]
            values = jax.vmap(lambda row: _head_logits(network, row, weights))(
                jax.tree.map(lambda u: u[rows], upstream))
            numpyro.sample("next_token", dist.Categorical(logits=values), obs=batch[:, 1:])

    model.network = network
    model.layer = layer
    return model


def head_offset_center(network: AttentionOnlyTransformer, layer: int
                       ) -> dict[str, Float[Array, "*shape"]]:
    """δ* = 0 for every site of :func:`head_offset_model`: its localization center."""
    return {f"{HEAD_SITE_PREFIX}{field}": jnp.zeros_like(value)
            for field, value in get_component(network, f"{int(layer)}:0").items()}


def head_weights_from_offsets(
    center: Mapping[str, Array], offsets: Mapping[str, Array], component: str
) -> dict[str, Array]:
    """Draws of :func:`head_offset_model` (``"head.W_Q"`` → δ) as draws of
    :func:`language_model` for ``component`` (``"L:H.W_Q"`` → c* + δ): the names and values
    :func:`~numpyro_slt.nn.observables.evaluate_observables` expects."""
    return {f"{component}.{name[len(HEAD_SITE_PREFIX):]}":
            center[name[len(HEAD_SITE_PREFIX):]] + value for name, value in offsets.items()}


def _canonical(network: AttentionOnlyTransformer, components: Iterable[str]) -> tuple[str, ...]:
    if isinstance(components, str):
        components = (components,)
    names = tuple(parse_component(name, network.config).name for name in components)
    if not names:
        raise ValueError("components must name at least one component, or be None for all")
    if len(set(names)) != len(names):
        raise ValueError(f"components {list(names)} name a component twice")
    return names


def _check_upstream(upstream, tokens, network: AttentionOnlyTransformer, layer: int,
                    components: tuple[str, ...] | None = None) -> None:
    expected = (tokens.shape[0], tokens.shape[1] - 1, network.config.d_model)
    if isinstance(upstream, HeadCache):
        if components != (upstream.component,):
            raise ValueError(f"upstream is the HeadCache of head {upstream.component!r} but the "
                             f"model samples {components}; pass frozen_cache(network, tokens, "
                             "components) of the same components.")
        projected = (*expected[:2], network.config.d_vocab)
        for name, want in (("normed", expected), ("rest", expected), ("projected", projected)):
            array = getattr(upstream, name)
            if array is not None and tuple(array.shape) != want:
                raise ValueError(f"upstream.{name} has shape {tuple(array.shape)}, expected "
                                 f"{want}: pass frozen_cache(network, tokens, components) of the "
                                 "same tokens.")
        if upstream.projected is not None and upstream.layer != network.config.n_layers - 1:
            raise ValueError(f"upstream.projected is set for head {upstream.component!r}, but the "
                             "projected unembedding holds only for a head of the last layer.")
        return
    if layer == 0:
        raise ValueError("upstream was given but the sampled components change the embedding or "
                         "layer 0; sample with upstream=None.")
    if tuple(upstream.shape) != expected:
        raise ValueError(f"upstream has shape {tuple(upstream.shape)}, expected {expected}: pass "
                         "upstream_residual(network, tokens, components) of the same tokens.")


def _check_tokens(tokens, network: AttentionOnlyTransformer):
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(
            f"tokens must have shape (sequences, context), got {tuple(tokens.shape)}; stack the "
            "input_ids of a dataset into one 2-D integer array"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    sequences, context = tokens.shape
    if sequences == 0:
        raise ValueError("tokens holds no sequences; pass a non-empty dataset")
    if context < 2:
        raise ValueError(f"sequences need at least 2 tokens to predict one, got context {context}")
    if context > network.config.n_ctx:
        raise ValueError(
            f"sequences have {context} tokens but the network's context is "
            f"{network.config.n_ctx}; cut them to n_ctx tokens"
        )
    if not isinstance(tokens, jax.core.Tracer):
        concrete = np.asarray(tokens)  # checked once, when the model is traced
        low, high = int(concrete.min()), int(concrete.max())
        if low < 0 or high >= network.config.d_vocab:
            raise ValueError(
                f"token ids must lie in [0, {network.config.d_vocab - 1}] (the vocabulary), got "
                f"ids from {low} to {high}; re-tokenize with the network's tokenizer"
            )
    return tokens
