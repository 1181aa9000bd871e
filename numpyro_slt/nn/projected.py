"""The unembedding seen from one head of the last layer, projected once onto the vocabulary.

When the sampled component is one head L:H of the *last* layer, the final residual stream of a
position is x = r + z W_O, with r the frozen rest of the layer's output (the ``rest`` of a
:class:`~numpyro_slt.nn.posterior.HeadCache`) and z = softmax(causal(q kᵀ/√d_head)) v the head's
mixed values ([d_head], :func:`~numpyro_slt.nn.transformer.attention_values`). Write c(·) for
centring over d_model (c(x) = x − mean_d(x)) and LN_final(x) = g ⊙ c(x)/σ(x) + b with
σ(x)² = mean_d(c(x)²) + eps. Since c is linear, c(x) = c(r) + z c(W_O) (rows of W_O centred), and

    logits = c(x) W' / σ(x) + β,        W' = diag(g) W_U,   β = b W_U + b_U,
    c(x) W' = R + z (c(W_O) W'),        R = c(r) W'   (cached once per position),

so a row of logits costs d_head·vocab multiply-adds instead of d_model·vocab, and its backward
pass likewise; σ(x) needs only d_model-sized vectors. Without layer norm, logits =
R + z (W_O W_U) + b_U with R = r W_U. The identity is exact; only float rounding differs from
the plain path.

The price is memory: R holds vocab floats per position (``projected_bytes``), so callers use it
only within a budget (:data:`PROJECTED_CACHE_MAX_BYTES`).
"""

# ruff: noqa: F722

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .transformer import AttentionOnlyTransformer

__all__ = ["PROJECTED_CACHE_MAX_BYTES", "projected_bytes", "unembedding_factors", "project_rest",
           "logits_from_projection"]

PROJECTED_CACHE_MAX_BYTES = 2**30
"""Largest projected cache R (float32, positions × vocab) built automatically: 1 GiB."""


def projected_bytes(network: AttentionOnlyTransformer, sequences: int, positions: int) -> int:
    """Bytes of the float32 cache R of ``sequences`` × ``positions`` positions."""
    return 4 * sequences * positions * network.config.d_vocab


def unembedding_factors(network: AttentionOnlyTransformer
                        ) -> tuple[Float[Array, "d_model vocab"], Float[Array, " vocab"]]:
    """(W', β): W' = diag(g) W_U and β = b W_U + b_U with LN_final's scale g and shift b;
    (W_U, b_U) without layer norm."""
    if not network.config.layer_norm:
        return network.W_U, network.b_U
    return (network.ln_final_w[:, None] * network.W_U,
            network.ln_final_b @ network.W_U + network.b_U)


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
