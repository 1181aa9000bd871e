"""The frozen part of a network, computed once for a restricted posterior.

When only some components w_C of the network are sampled, everything upstream of them is fixed at
w*, so it can be computed once per token array instead of at every step and every draw:

- the residual stream x^L before the first layer L that the components change
  (:func:`upstream_residual`);
- for one sampled head L:H, its input a = LN_L(x^L) and ``rest`` = m(w*) − out_{L,H}(w*), where
  m = x^L + attn_L (+ mlp_L(x^L) with a parallel residual) is everything layer L writes that does
  not read its attention's output (:meth:`~numpyro_slt.nn.transformer.Transformer.attention_stream`)
  (:class:`HeadCache`). No other head of layer L depends on the head's weights c, so
  x^{L+1}(c) = finish_L(rest + out_{L,H}(a; c)) exactly, finish_L adding the MLP of a sequential
  block (the residual-stream identity of :mod:`~numpyro_slt.nn.components`);
- for one sampled MLP L.mlp, the stream y it reads and ``rest``, everything else layer L
  writes (:class:`MLPCache`): x^{L+1}(c) = rest + mlp_L(y; c), with y = rest = x^L + attn_L for
  a sequential block and y = x^L, rest = x^L + attn_L for a parallel one (y is cached before
  the MLP's LayerNorm, which the network applies);
- for a head of the *last* layer also the projected unembedding R (below), unless that layer
  ends with a sequential MLP (which reads the head's output, so the logits are not affine in it).

:func:`frozen_cache` chooses among them; :func:`cached_residual` computes one sequence's final
residual stream from its row of the cache, :func:`cached_losses` its per-token losses (over
chunks of positions) and :func:`cached_logits` its logits.

**Projected unembedding.** For a last-layer head the final residual stream of a position is
x = r + z W_O, with r the frozen ``rest`` and z the head's mixed values ([d_head],
:meth:`HeadWeights.mixed_values <numpyro_slt.nn.heads.HeadWeights.mixed_values>`). Write
c(x) = x − mean_d(x) (centring over d_model) and LN_final(x) = g ⊙ c(x)/σ(x) + b with
σ(x)² = mean_d(c(x)²) + eps. Since c is linear, c(x) = c(r) + z c(W_O), and

    logits = c(x) W' / σ(x) + β,        W' = diag(g) W_U,   β = b W_U + b_U,
    c(x) W' = R + z (c(W_O) W'),        R = c(r) W'   (cached once per position),

so a row of logits costs d_head·vocab multiply-adds instead of d_model·vocab, and its backward
pass likewise; σ(x) needs only d_model-sized vectors. Without layer norm, logits =
R + z (W_O W_U) + b_U with R = r W_U. The identity is exact; only float rounding differs from
the plain path. R holds vocab floats per position (:func:`projected_bytes`), so it is built
automatically only within :data:`PROJECTED_CACHE_MAX_BYTES`.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Iterable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._tokens import checked_tokens
from .components import canonical_components, parse_component
from .heads import HeadWeights
from .transformer import AttentionOnlyTransformer, _next_token_nll

__all__ = ["HeadCache", "MLPCache", "mlp_cache", "first_layer", "upstream_residual", "head_cache",
           "frozen_cache",
           "cached_logits", "cached_losses", "cached_residual", "can_project", "check_cache",
           "PROJECTED_CACHE_MAX_BYTES", "projected_bytes",
           "unembedding_factors", "project_rest", "logits_from_projection"]

PROJECTED_CACHE_MAX_BYTES = 2**30
"""Largest projected cache R (float32, positions × vocab) built automatically: 1 GiB."""


def first_layer(network: AttentionOnlyTransformer, components: Iterable[str] | None) -> int:
    """L, the first layer whose input x^L depends on the sampled ``components``: 0 for the whole
    network, ``"embed"`` or ``"pos"``; l for a head ``"l:h"`` or ``"layer l"``; ``n_layers`` for
    ``"unembed"``. Everything upstream of x^L is frozen, so x^L can be computed once."""
    if components is None:
        return 0
    layers = []
    for name in canonical_components(network.config, components):
        spec = parse_component(name, network.config)
        layers.append({"embed": 0, "pos": 0, "unembed": network.config.n_layers}
                      .get(spec.kind, spec.layer))
    return min(layers)


class HeadCache(eqx.Module):
    """The frozen part of the network around one sampled head L:H, per model input position:
    ``normed`` a = LN_L(x^L) and ``rest`` = x^{L+1}(w*) − out_{L,H}(w*) (module docstring).
    Each step and each observable evaluation then runs one head, the layers after L and the
    unembedding.

    ``projected`` (only for a head of the last layer, else None) is R = c(rest) W', the rest's
    logits before LN_final's division by σ: with it a row of logits costs d_head·vocab instead of
    d_model·vocab multiply-adds. It exists only when the last layer has no sequential MLP.
    """

    normed: Float[Array, "sequences positions d_model"]
    rest: Float[Array, "sequences positions d_model"]
    layer: int = eqx.field(static=True)
    head: int = eqx.field(static=True)
    projected: Float[Array, "sequences positions vocab"] | None = None

    @property
    def component(self) -> str:
        return f"{self.layer}:{self.head}"


class MLPCache(eqx.Module):
    """The frozen part of the network around one sampled MLP L.mlp, per model input position:
    ``stream`` y, what the MLP reads, and ``rest``, the rest of x^{L+1} (module docstring); for
    a sequential block the two are the same array and ``rest`` is None. Each step and each
    observable evaluation then runs the MLP, the layers after L and the unembedding."""

    stream: Float[Array, "sequences positions d_model"]
    rest: Float[Array, "sequences positions d_model"] | None
    layer: int = eqx.field(static=True)

    @property
    def component(self) -> str:
        return f"{self.layer}.mlp"

    def residual(self, network: AttentionOnlyTransformer) -> Float[Array, "positions d_model"]:
        """x^{L+1} = rest + mlp_L(y) of one sequence's row, with ``network``'s MLP weights."""
        rest = self.stream if self.rest is None else self.rest
        return rest + network.mlp_output(self.layer, self.stream)


def upstream_residual(
    network: AttentionOnlyTransformer,
    tokens: Int[Array, "sequences context"],
    components: Iterable[str],
    *,
    chunk: int = 256,
) -> Float[Array, "sequences positions d_model"]:
    """The frozen residual stream x^L (L = :func:`first_layer`) of the model inputs
    ``tokens[:, :-1]``, computed once in chunks of sequences."""
    tokens = checked_tokens("tokens", tokens, network.config)
    layer = first_layer(network, components)
    if layer == 0:
        raise ValueError(f"components {list(components)} change the embedding or layer 0: "
                         "nothing upstream is frozen, so there is nothing to cache.")
    chunks, size = _chunked_inputs(tokens, chunk)
    residual = _upstream(network, chunks, layer)
    return residual.reshape(-1, *residual.shape[2:])[:size]


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

    :param project: also cache the projected unembedding R (a head of the last layer only);
        None: when the head is in the last layer and R takes at most
        :data:`PROJECTED_CACHE_MAX_BYTES`. R makes forward passes (observables) cheaper but not
        SGLD steps, whose backward pass through R costs more than it saves, so the default is
        False.
    """
    spec = parse_component(component, network.config)
    if spec.kind != "head":
        raise ValueError(f"head_cache needs one head 'L:H', got {component!r}")
    tokens = checked_tokens("tokens", tokens, network.config)
    projectable = can_project(network, spec.layer)
    if project and not projectable:
        raise ValueError(f"project=True needs a head of the last layer "
                         f"{network.config.n_layers - 1} with no sequential MLP after it, got "
                         f"{component!r}; pass project=None.")
    if project is None:
        project = projectable and projected_bytes(network, tokens.shape[0], tokens.shape[1] - 1) \
            <= PROJECTED_CACHE_MAX_BYTES
    chunks, size = _chunked_inputs(tokens, chunk)
    normed, rest = _head_cache(network, chunks, spec.layer, jnp.int32(spec.head))
    rest = rest.reshape(-1, *rest.shape[2:])[:size]
    return HeadCache(normed.reshape(-1, *normed.shape[2:])[:size], rest, spec.layer, spec.head,
                     project_rest(network, rest) if project else None)


def mlp_cache(
    network: AttentionOnlyTransformer,
    tokens: Int[Array, "sequences context"],
    component: str,
    *,
    chunk: int = 256,
) -> MLPCache:
    """The :class:`MLPCache` of MLP ``component`` (``"L.mlp"``) for the model inputs
    ``tokens[:, :-1]``, computed once in chunks of sequences."""
    spec = parse_component(component, network.config)
    if spec.kind != "mlp":
        raise ValueError(f"mlp_cache needs one MLP 'L.mlp', got {component!r}")
    tokens = checked_tokens("tokens", tokens, network.config)
    chunks, size = _chunked_inputs(tokens, chunk)
    stream, rest = _mlp_cache(network, chunks, spec.layer)

    def rows(x):
        return None if x is None else x.reshape(-1, *x.shape[2:])[:size]

    return MLPCache(rows(stream), rows(rest), spec.layer)


def frozen_cache(
    network: AttentionOnlyTransformer,
    tokens: Int[Array, "sequences context"],
    components: Iterable[str] | None,
    *,
    chunk: int = 256,
    project: bool | None = False,
) -> HeadCache | Float[Array, "sequences positions d_model"] | None:
    """What can be cached for ``components``: a :class:`HeadCache` for a single head (with R as
    :func:`head_cache`'s ``project`` says), an :class:`MLPCache` for a single MLP, the frozen
    residual stream x^L
    (:func:`upstream_residual`) when everything upstream of a layer L > 0 is frozen, and None
    when nothing can be cached (the whole network, the embedding, or a component set reaching
    into layer 0 other than one head)."""
    if components is None:
        return None
    names = canonical_components(network.config, components)
    kind = parse_component(names[0], network.config).kind if len(names) == 1 else None
    if kind == "head":
        return head_cache(network, tokens, names[0], chunk=chunk, project=project)
    if kind == "mlp":
        return mlp_cache(network, tokens, names[0], chunk=chunk)
    if first_layer(network, names) > 0:
        return upstream_residual(network, tokens, names, chunk=chunk)
    return None


def can_project(network: AttentionOnlyTransformer, layer: int) -> bool:
    """Whether the logits are affine in the output of a head of ``layer`` given the frozen rest,
    so that the projected unembedding R applies: the last layer, with no sequential MLP."""
    return layer == network.config.n_layers - 1 and not network.sequential_mlp


def cached_residual(
    network: AttentionOnlyTransformer,
    cached: HeadCache | Float[Array, "positions d_model"],
    layer: int,
    head: HeadWeights | None = None,
) -> Float[Array, "positions d_model"]:
    """The final residual stream x^{n_layers} of one sequence from its row of
    :func:`frozen_cache`: for a :class:`HeadCache`, x^{L+1} = finish_L(rest + out(a; ``head``))
    (the network's own head when ``head`` is None), then layers L+1..; for x^L, layers
    ``layer``.. of ``network``."""
    if isinstance(cached, MLPCache):
        return network.residual_from(cached.layer + 1, cached.residual(network))
    if not isinstance(cached, HeadCache):
        return network.residual_from(layer, cached)
    if head is None:
        head = HeadWeights.of(network, cached.component)
    out = head.output(cached.normed, network.rotary(cached.normed.shape[0]))
    resid = network.finish_layer(cached.layer, cached.rest + out)
    return network.residual_from(cached.layer + 1, resid)


def cached_logits(
    network: AttentionOnlyTransformer,
    cached: HeadCache | Float[Array, "positions d_model"],
    layer: int,
    head: HeadWeights | None = None,
) -> Float[Array, "positions vocab"]:
    """Logits of one sequence from its row of :func:`frozen_cache`: the unembedding of
    :func:`cached_residual`, or through R when the row carries it."""
    if isinstance(cached, HeadCache) and cached.projected is not None:
        head = HeadWeights.of(network, cached.component) if head is None else head
        values = head.mixed_values(cached.normed, network.rotary(cached.normed.shape[0]))
        return logits_from_projection(network, cached.rest, cached.projected, values, head.W_O)
    return network.unembed(cached_residual(network, cached, layer, head))


def cached_losses(
    network: AttentionOnlyTransformer,
    cached: HeadCache | Float[Array, "positions d_model"],
    layer: int,
    targets: Int[Array, " positions"],
    head: HeadWeights | None = None,
) -> Float[Array, " positions"]:
    """Per-token losses ℓ_s = −log softmax(logits_s)[targets_s] of one sequence from its row of
    :func:`frozen_cache`, over chunks of positions
    (:meth:`~numpyro_slt.nn.transformer.Transformer.losses_from_residual`); through R when the
    row carries it (R already holds every position's logits)."""
    if isinstance(cached, HeadCache) and cached.projected is not None:
        return _next_token_nll(cached_logits(network, cached, layer, head), targets)
    return network.losses_from_residual(cached_residual(network, cached, layer, head), targets)


def check_cache(cache, tokens, network: AttentionOnlyTransformer,
                components: tuple[str, ...] | None) -> None:
    """ValueError unless ``cache`` is :func:`frozen_cache` ``(network, tokens, components)`` in
    kind and shape (the cached values themselves are not recomputed)."""
    expected = (tokens.shape[0], tokens.shape[1] - 1, network.config.d_model)
    if isinstance(cache, MLPCache):
        if components != (cache.component,):
            raise ValueError(f"upstream is the MLPCache of {cache.component!r} but the model "
                             f"samples {components}; pass frozen_cache(network, tokens, "
                             "components) of the same components.")
        for name in ("stream", "rest"):
            array = getattr(cache, name)
            if array is not None and tuple(array.shape) != expected:
                raise ValueError(f"upstream.{name} has shape {tuple(array.shape)}, expected "
                                 f"{expected}: pass frozen_cache(network, tokens, components) "
                                 "of the same tokens.")
        if (cache.rest is None) != network.sequential_mlp:
            raise ValueError("upstream does not match the network's residual order (sequential "
                             "or parallel); pass frozen_cache(network, tokens, components).")
        return
    if isinstance(cache, HeadCache):
        if components != (cache.component,):
            raise ValueError(f"upstream is the HeadCache of head {cache.component!r} but the "
                             f"model samples {components}; pass frozen_cache(network, tokens, "
                             "components) of the same components.")
        projected = (*expected[:2], network.config.d_vocab)
        if cache.projected is not None and not can_project(network, cache.layer):
            raise ValueError(f"upstream.projected is set for head {cache.component!r}, but the "
                             "projected unembedding holds only for a head of the last layer "
                             "with no sequential MLP after it.")
        for name, want in (("normed", expected), ("rest", expected), ("projected", projected)):
            array = getattr(cache, name)
            if array is not None and tuple(array.shape) != want:
                raise ValueError(f"upstream.{name} has shape {tuple(array.shape)}, expected "
                                 f"{want}: pass frozen_cache(network, tokens, components) of the "
                                 "same tokens.")
        return
    if first_layer(network, components) == 0:
        raise ValueError("upstream was given but the sampled components change the embedding or "
                         "layer 0; sample with upstream=None.")
    if tuple(cache.shape) != expected:
        raise ValueError(f"upstream has shape {tuple(cache.shape)}, expected {expected}: pass "
                         "upstream_residual(network, tokens, components) of the same tokens.")


# ---------------------------------------------------------------------------- building the caches


def _chunked_inputs(tokens, chunk: int):
    """Model inputs ``tokens[:, :-1]`` padded to whole chunks: ([chunks, chunk, S−1], rows)."""
    inputs = np.asarray(tokens)[:, :-1]
    pad = -len(inputs) % chunk
    padded = np.concatenate([inputs, np.repeat(inputs[-1:], pad, axis=0)]).reshape(
        -1, chunk, inputs.shape[1])
    return jnp.asarray(padded), len(inputs)


def _residual_before(network: AttentionOnlyTransformer, seq, layer: int):
    """x^layer of one input sequence: the embedding, then layers 0 .. layer − 1."""
    resid = network.embed(seq)
    for l in range(layer):
        resid = network.apply_layer(l, resid)
    return resid


@eqx.filter_jit
def _upstream(network: AttentionOnlyTransformer, chunks, layer: int):
    """x^layer of every sequence, mapped over chunks (compiled once per network shape, chunk
    shape and layer: the network is an argument, not a constant)."""
    return jax.lax.map(jax.vmap(lambda seq: _residual_before(network, seq, layer)), chunks)


@eqx.filter_jit
def _head_cache(network: AttentionOnlyTransformer, chunks, layer: int, head: Array):
    """(a, rest) of every sequence; ``head`` is traced, so all heads of a layer share one
    program."""

    def one(seq):
        resid = _residual_before(network, seq, layer)
        normed = network.normed_input(layer, resid)
        rest = network.attention_stream(layer, resid) - network.head_output(layer, head, normed)
        return normed, rest

    return jax.lax.map(jax.vmap(one), chunks)


@eqx.filter_jit
def _mlp_cache(network: AttentionOnlyTransformer, chunks, layer: int):
    """(y, rest) of every sequence: the stream MLP ``layer`` reads and the rest of x^{L+1}
    (None for a sequential block, where rest = y)."""

    def one(seq):
        resid = _residual_before(network, seq, layer)
        after_attention = resid + network.attention_output(layer, resid)
        if network.sequential_mlp:
            return after_attention, None
        return resid, after_attention

    return jax.lax.map(jax.vmap(one), chunks)


# ---------------------------------------------------------------------------- projected unembedding


def projected_bytes(network: AttentionOnlyTransformer, sequences: int, positions: int) -> int:
    """Bytes of the float32 cache R of ``sequences`` × ``positions`` positions."""
    return 4 * sequences * positions * network.config.d_vocab


def unembedding_factors(network: AttentionOnlyTransformer
                        ) -> tuple[Float[Array, "d_model vocab"], Float[Array, " vocab"]]:
    """(W', β): W' = diag(g) W_U and β = b W_U + b_U with LN_final's scale g and shift b;
    (W_U, b_U) without layer norm."""
    W_U = network.unembedding
    b_U = jnp.zeros(W_U.shape[1], W_U.dtype) if network.b_U is None else network.b_U
    if not network.config.layer_norm:
        return W_U, b_U
    return network.ln_final_w[:, None] * W_U, network.ln_final_b @ W_U + b_U


def _centre(x: Float[Array, "... d_model"], network: AttentionOnlyTransformer):
    if not network.config.layer_norm:
        return x
    return x - jnp.mean(x, axis=-1, keepdims=True)


@eqx.filter_jit
def project_rest(network: AttentionOnlyTransformer,
                 rest: Float[Array, "sequences positions d_model"]
                 ) -> Float[Array, "sequences positions vocab"]:
    """R = c(r) W' of every position, one sequence at a time (the network is an argument, so
    the program is shared by every head of the layer)."""
    w_prime, _ = unembedding_factors(network)
    return jax.lax.map(lambda seq: _centre(seq, network) @ w_prime, rest)


def logits_from_projection(
    network: AttentionOnlyTransformer,
    rest: Float[Array, "positions d_model"],
    projected: Float[Array, "positions vocab"],
    values: Float[Array, "positions d_head"],
    W_O: Float[Array, "d_head d_model"],
) -> Float[Array, "positions vocab"]:
    """logits = (R + z (c(W_O) W')) / σ(x) + β of one sequence, x = r + z W_O: the logits of
    the network with a last-layer head whose mixed values are z = ``values`` and whose output
    matrix is ``W_O``, from the head's frozen ``rest`` and its projection R = ``projected``."""
    w_prime, beta = unembedding_factors(network)
    centred_out = _centre(W_O, network)
    shifted = projected + values @ (centred_out @ w_prime)
    if not network.config.layer_norm:
        return shifted + beta
    centred = _centre(rest, network) + values @ centred_out
    inv_sigma = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True)
                              + network.config.ln_eps)
    return shifted * inv_sigma + beta
