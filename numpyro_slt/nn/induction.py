"""Mechanistic scores of induction and previous-token heads (Olsson et al. 2022).

The probe is a batch of sequences of ``L`` random tokens repeated twice,
``t = (r_0, …, r_{L-1}, r_0, …, r_{L-1})`` of length 2L, with every r_j drawn uniformly from
``[vocab_low, vocab_high)`` (:func:`numpyro_slt.data.synthetic.repeated_random_tokens` with a
JAX key, the generator of the study's induction probe too). Indices below are 0-based
positions in that sequence.

With ``A[l, h, q, k]`` the attention of head ``l:h`` from query position q to key position k
(each row sums to one, causal) and a batch of B sequences:

- **induction score** of head l:h: the attention from a position of the second copy to the
  token that followed the earlier occurrence of the current token,

      induction[l, h] = 1/(B·L) Σ_b Σ_{q=L}^{2L-1} A_b[l, h, q, q − L + 1];

  (position q holds r_{q−L}; its earlier occurrence is at q − L, the token after it at q − L + 1);
- **previous-token score** of head l:h: the attention to the immediately preceding position,

      previous[l, h] = 1/(B·(2L−1)) Σ_b Σ_{q=1}^{2L-1} A_b[l, h, q, q − 1];

- **copy losses**: with ℓ_s = −log p(t_{s+1} | t_0..t_s) the next-token loss at position s,

      loss_first  = mean over s = 0..L−2 of ℓ_s   (predicting r_1..r_{L-1}, first copy),
      loss_second = mean over s = L..2L−2 of ℓ_s  (predicting r_1..r_{L-1}, second copy).

  Random tokens are unpredictable the first time (loss ≈ log of the range size for a model
  that learned nothing else), so ``loss_second ≪ loss_first`` is the behavioural signature of
  in-context copying.

- **copy ablation** of head l:h: the share of the in-context copying gain that the head carries,
  measured causally by mean ablation. Replace the head's output out_{l,h} (module doc of
  :mod:`~numpyro_slt.nn.transformer`) at every position s by its mean over the B sequences,
  ō_{l,h}[s] = 1/B Σ_b out_{l,h}[b, s], run the rest of the network unchanged and take

      copy_ablation[l, h] = (loss_second^{ablated l:h} − loss_second) / (loss_first − loss_second);

  0 means the head plays no part in copying, 1 that ablating it undoes the whole gain (values
  above 1 are possible when an upstream head is needed for more than copying).

Olsson et al. define an induction head by two properties: it attends to the token after the
earlier occurrence of the current token (prefix matching, the induction score) and it copies
that token into the prediction. The induction score sees only the first; the copy ablation tests
the second through the head's effect on the loss. A head with a high induction score and a
copy ablation near zero attends like an induction head but does not carry the copying.

A head that implements induction has an induction score near one; a uniform head over the
causal prefix scores ≈ (1/L)·Σ 1/(q+1) over the second half, i.e.
about ``log 2 / L``.
"""

# ruff: noqa: F722  (jaxtyping shape strings are not forward references)

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._validate import token_array
from ..data.synthetic import repeated_random_tokens
from .transformer import AttentionOnlyTransformer

__all__ = [
    "copy_ablation",
    "copy_losses",
    "default_probe_length",
    "induction_scores",
    "previous_token_scores",
    "score_from_patterns",
    "score_table",
]


def score_from_patterns(
    patterns: Float[Array, "... layer head query key"], length: int
) -> tuple[Float[Array, "layer head"], Float[Array, "layer head"]]:
    """Induction and previous-token scores from attention patterns on repeated sequences.

    ``patterns`` is ``[layer, head, 2L, 2L]`` or batched ``[batch, layer, head, 2L, 2L]`` (any
    number of leading axes, averaged over) of sequences made of a length-``L`` segment repeated
    twice. Returns ``(induction, previous)``, each ``[layer, head]``:

        induction[l, h] = mean_{q = L..2L−1} A[l, h, q, q − L + 1]
        previous[l, h]  = mean_{q = 1..2L−1} A[l, h, q, q − 1]

    (means also over the leading batch axes).
    """
    patterns = jnp.asarray(patterns)
    length = int(length)
    if patterns.ndim < 4:
        raise ValueError(
            f"patterns must be [..., layer, head, query, key], got shape {patterns.shape}."
        )
    seq = 2 * length
    if patterns.shape[-1] != seq or patterns.shape[-2] != seq:
        raise ValueError(
            f"patterns have {patterns.shape[-2]} queries and {patterns.shape[-1]} keys; "
            f"sequences of a length-{length} segment repeated twice need {seq} of each."
        )
    q_ind = np.arange(length, seq)
    q_prev = np.arange(1, seq)
    ind = patterns[..., q_ind, q_ind - length + 1]  # [..., layer, head, L]
    prev = patterns[..., q_prev, q_prev - 1]  # [..., layer, head, 2L-1]
    lead = tuple(range(patterns.ndim - 4))
    induction = jnp.mean(ind, axis=lead + (ind.ndim - 1,))
    previous = jnp.mean(prev, axis=lead + (prev.ndim - 1,))
    return induction, previous


def _length_of(tokens: Int[Array, "num seq"]) -> int:
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] % 2 or tokens.shape[1] < 4:
        raise ValueError(
            "tokens must be [num, 2L] (segments of length L >= 2 repeated twice, see "
            f"numpyro_slt.data.synthetic.repeated_random_tokens), got shape {tokens.shape}."
        )
    return tokens.shape[1] // 2


@eqx.filter_jit
def _scores(network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"], length: int):
    patterns = jax.vmap(network.attention_patterns)(tokens)
    return score_from_patterns(patterns, length)


def _check(network: AttentionOnlyTransformer, tokens) -> jax.Array:
    """``tokens`` as int32 repeated sequences ``[num, 2L]`` of the network's vocabulary that
    fit its context."""
    _length_of(tokens)
    c = network.config
    return jnp.asarray(token_array("tokens", tokens, d_vocab=c.d_vocab, n_ctx=c.n_ctx))


def induction_scores(
    network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"]
) -> Float[Array, "layer head"]:
    """Induction score of every head on repeated sequences ``tokens`` ``[num, 2L]``.

    ``induction[l, h] = mean_{b, q = L..2L−1} A_b[l, h, q, q − L + 1]`` (see the module doc).
    """
    tokens = _check(network, tokens)
    return _scores(network, tokens, _length_of(tokens))[0]


def previous_token_scores(
    network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"]
) -> Float[Array, "layer head"]:
    """Previous-token score of every head: ``mean_{b, q = 1..2L−1} A_b[l, h, q, q − 1]``."""
    tokens = _check(network, tokens)
    return _scores(network, tokens, _length_of(tokens))[1]


@eqx.filter_jit
def _copy_losses(network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"], length: int):
    losses = jax.vmap(network.token_losses)(tokens)  # [num, 2L-1]; loss s predicts token s+1
    first = jnp.mean(losses[:, : length - 1])
    second = jnp.mean(losses[:, length : 2 * length - 1])
    return first, second


def copy_losses(
    network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"]
) -> tuple[float, float]:
    """``(loss_first, loss_second)``: mean next-token loss on the first and second copy.

    ``loss_first`` averages ℓ_s over s = 0..L−2 and ``loss_second`` over s = L..2L−2, so both
    predict the same tokens r_1..r_{L−1}, once unseen and once after they appeared earlier.
    """
    tokens = _check(network, tokens)
    first, second = _copy_losses(network, tokens, _length_of(tokens))
    return float(first), float(second)


def _losses_with_mean_head(network: AttentionOnlyTransformer, tokens: Int[Array, " seq"],
                           layer: Array, head: Array,
                           mean_out: Float[Array, "layer head seq d_model"]) -> Array:
    """ℓ_s of one sequence with head ``layer:head`` (traced ints) writing ``mean_out[layer,
    head]`` instead of its own output; every other head runs as usual."""
    c = network.config
    heads = jnp.arange(c.n_heads)
    resid = network.embed(tokens)
    for l in range(c.n_layers):
        normed = network.normed_input(l, resid)
        outs = jax.vmap(lambda h, l=l, normed=normed: network.head_output(l, h, normed))(heads)
        ablate = (heads == head) & (layer == l)
        outs = jnp.where(ablate[:, None, None], mean_out[l], outs)
        resid = network.apply_layer_from(l, resid, outs.sum(axis=0) + network.output_bias(l))
    return network.losses_from_residual(resid[:-1], tokens[1:])


@eqx.filter_jit
def _ablated_copy_losses(network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"],
                         length: int):
    c = network.config
    mean_out = jnp.mean(jax.vmap(network.run_with_cache)(tokens).head_out, axis=0)
    layers = jnp.repeat(jnp.arange(c.n_layers), c.n_heads)
    heads = jnp.tile(jnp.arange(c.n_heads), c.n_layers)

    def one_head(layer_head):
        layer, head = layer_head
        losses = jax.vmap(
            lambda t: _losses_with_mean_head(network, t, layer, head, mean_out))(tokens)
        return losses[:, length : 2 * length - 1].mean()

    second = jax.lax.map(one_head, (layers, heads))  # one head at a time bounds the memory
    return second.reshape(c.n_layers, c.n_heads)


def copy_ablation(
    network: AttentionOnlyTransformer, tokens: Int[Array, "num seq"]
) -> Float[Array, "layer head"]:
    """Share of the copying gain each head carries, by mean ablation (see the module doc):

        copy_ablation[l, h] = (loss_second^{ablated l:h} − loss_second) / (loss_first − loss_second)

    on the repeated sequences ``tokens`` ``[num, 2L]``, where head l:h's output is replaced by its
    mean over the ``num`` sequences at each position. Raises ValueError when the network does
    not copy at all (``loss_first − loss_second`` ≤ 0), since the share is then undefined.
    """
    tokens = _check(network, tokens)
    length = _length_of(tokens)
    first, second = _copy_losses(network, tokens, length)
    gain = float(first - second)
    if not gain > 0:
        raise ValueError(
            f"the network does not copy on these sequences (loss_first {float(first):.3f} <= "
            f"loss_second {float(second):.3f}), so no head carries a share of copying; "
            "copy_ablation needs a network with an induction circuit.")
    return (_ablated_copy_losses(network, tokens, length) - second) / gain


def default_probe_length(network: AttentionOnlyTransformer) -> int:
    """Segment length used when none is given: ``min(n_ctx // 2, 64)``."""
    return max(2, min(network.config.n_ctx // 2, 64))


def score_table(
    network: AttentionOnlyTransformer,
    key: PRNGKeyArray,
    *,
    num_sequences: int = 32,
    length: int | None = None,
    vocab_low: int = 0,
    vocab_high: int | None = None,
) -> dict[str, Any]:
    """Per-head induction and previous-token scores and the copy losses, as plain Python data.

    Draws ``num_sequences`` repeated random sequences (segment ``length``, default
    :func:`default_probe_length`; tokens in ``[vocab_low, vocab_high)``, default the whole
    vocabulary) from ``key`` and returns::

        {"length": L, "num_sequences": B, "vocab_low": …, "vocab_high": …,
         "loss_first": float, "loss_second": float,
         "induction": [[float]*n_heads]*n_layers, "previous_token": [[…]]…,
         "copy_ablation": [[float]*n_heads]*n_layers or None,
         "heads": [{"head": "l:h", "induction": float, "previous_token": float,
                    "copy_ablation": float or None}, …],
         "best_induction": {"head": "l:h", "score": float},        # over layers >= 1
         "best_previous_token": {"head": "l:h", "score": float}}   # over layer 0

    (for a one-layer network ``best_induction`` is taken over layer 0). ``copy_ablation`` is
    :func:`copy_ablation` on the same sequences, None when the network does not copy
    (``loss_first <= loss_second``).
    """
    c = network.config
    length = default_probe_length(network) if length is None else int(length)
    vocab_high = c.d_vocab if vocab_high is None else int(vocab_high)
    if 2 * length > c.n_ctx:
        raise ValueError(f"2·length = {2 * length} exceeds the context n_ctx={c.n_ctx}.")
    tokens = repeated_random_tokens(key, num_sequences, length, vocab_low, vocab_high)
    tokens = _check(network, tokens)
    induction, previous = _scores(network, tokens, length)
    first, second = _copy_losses(network, tokens, length)
    induction, previous = np.asarray(induction), np.asarray(previous)
    ablation = None
    if float(first) > float(second):
        ablation = np.asarray((_ablated_copy_losses(network, tokens, length) - second)
                              / (first - second))
    heads = [
        {"head": f"{l}:{h}", "induction": float(induction[l, h]),
         "previous_token": float(previous[l, h]),
         "copy_ablation": None if ablation is None else float(ablation[l, h])}
        for l in range(c.n_layers)
        for h in range(c.n_heads)
    ]
    first_ind = 1 if c.n_layers > 1 else 0
    l_i, h_i = np.unravel_index(np.argmax(induction[first_ind:]), induction[first_ind:].shape)
    h_p = int(np.argmax(previous[0]))
    return {
        "length": length,
        "num_sequences": int(num_sequences),
        "vocab_low": int(vocab_low),
        "vocab_high": vocab_high,
        "loss_first": float(first),
        "loss_second": float(second),
        "induction": induction.tolist(),
        "previous_token": previous.tolist(),
        "copy_ablation": None if ablation is None else ablation.tolist(),
        "heads": heads,
        "best_induction": {
            "head": f"{int(l_i) + first_ind}:{int(h_i)}",
            "score": float(induction[int(l_i) + first_ind, int(h_i)]),
        },
        "best_previous_token": {"head": f"0:{h_p}", "score": float(previous[0, h_p])},
    }
