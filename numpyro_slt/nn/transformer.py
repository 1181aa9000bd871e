"""An attention-only transformer language model in Equinox.

For one sequence of tokens t_1..t_S (S <= n_ctx) the model computes, with residual stream x:

    x⁰_s = W_E[t_s] + W_pos[s]
    for each layer l:
        a = LN_l(xˡ)                                   (identity when layer_norm is off)
        q_h = a W_Q[l,h] + b_Q[l,h],  k_h = a W_K[l,h] + b_K[l,h],  v_h = a W_V[l,h] + b_V[l,h]
        A_h = softmax( q_h k_hᵀ / √d_head + M )        M_qk = 0 if k <= q else −∞  (causal)
        out_h = A_h v_h W_O[l,h]                       (head h's write to the residual stream)
        xˡ⁺¹ = xˡ + Σ_h out_h + b_O[l]
    logits = LN_final(x^L) W_U + b_U

and the per-token loss is the next-token cross-entropy ℓ_s = −log softmax(logits_s)[t_{s+1}]
= logsumexp(logits_s) − logits_s[t_{s+1}] for s = 1..S−1.

All per-head weights are stored with a leading ``[layer, head]`` axis pair (``W_Q[l, h]`` is head
``l:h``), so a head is an index into the arrays, and attention over all heads is one einsum.
"""

# ruff: noqa: F722  (jaxtyping shape strings are not forward references)

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._tokens import check_sequence
from .config import TransformerConfig

__all__ = ["ActivationCache", "AttentionOnlyTransformer", "attention_head", "attention_values",
           "cross_entropy_from_logits"]


class ActivationCache(eqx.Module):
    """Activations of one forward pass over one sequence (see :meth:`run_with_cache`).

    Attributes:
        embed: token embeddings W_E[t_s], ``[seq, d_model]``.
        pos: positional embeddings W_pos[s], ``[seq, d_model]``.
        resid: residual stream before each layer and after the last, ``[n_layers + 1, seq,
            d_model]``; ``resid[0] = embed + pos`` and ``resid[l + 1] = resid[l] + attn_out[l]``.
        patterns: attention patterns A, ``[n_layers, n_heads, query, key]``.
        head_out: each head's write to the residual stream A_h v_h W_O[l,h],
            ``[n_layers, n_heads, seq, d_model]``.
        attn_out: the layer's total write Σ_h head_out[l, h] + b_O[l], ``[n_layers, seq, d_model]``.
        logits: ``[seq, d_vocab]``.
    """

    embed: Float[Array, "seq d_model"]
    pos: Float[Array, "seq d_model"]
    resid: Float[Array, "layer_plus_1 seq d_model"]
    patterns: Float[Array, "layer head query key"]
    head_out: Float[Array, "layer head seq d_model"]
    attn_out: Float[Array, "layer seq d_model"]
    logits: Float[Array, "seq vocab"]


def cross_entropy_from_logits(
    logits: Float[Array, "seq vocab"], tokens: Int[Array, " seq"]
) -> Float[Array, " seq-1"]:
    """Next-token cross-entropy ℓ_s = logsumexp(logits_s) − logits_s[t_{s+1}], s = 1..S−1.

    This is −log softmax(logits_s)[t_{s+1}] computed stably (logsumexp subtracts the row maximum).
    """
    return _next_token_nll(logits[:-1], tokens[1:])


def _next_token_nll(
    logits: Float[Array, "n vocab"], targets: Int[Array, " n"]
) -> Float[Array, " n"]:
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return lse - picked


def _layer_norm(x: Float[Array, "seq d"], w: Float[Array, " d"], b: Float[Array, " d"], eps: float):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * w + b


def attention_values(
    normed: Float[Array, "seq d_model"],
    *,
    W_Q: Float[Array, "d_model d_head"],
    W_K: Float[Array, "d_model d_head"],
    W_V: Float[Array, "d_model d_head"],
    b_Q: Float[Array, " d_head"],
    b_K: Float[Array, " d_head"],
    b_V: Float[Array, " d_head"],
) -> Float[Array, "seq d_head"]:
    """z = softmax(causal(q kᵀ/√d_head)) v, one causal attention head's mixed values before its
    output matrix W_O, from its input a = LN_l(x^l): q = a W_Q + b_Q, k = a W_K + b_K,
    v = a W_V + b_V."""
    q = normed @ W_Q + b_Q
    k = normed @ W_K + b_K
    v = normed @ W_V + b_V
    scores = (q @ k.T) * (1.0 / math.sqrt(W_Q.shape[-1]))
    seq = normed.shape[0]
    scores = jnp.where(jnp.tril(jnp.ones((seq, seq), dtype=bool)), scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1) @ v


def attention_head(
    normed: Float[Array, "seq d_model"],
    *,
    W_Q: Float[Array, "d_model d_head"],
    W_K: Float[Array, "d_model d_head"],
    W_V: Float[Array, "d_model d_head"],
    W_O: Float[Array, "d_head d_model"],
    b_Q: Float[Array, " d_head"],
    b_K: Float[Array, " d_head"],
    b_V: Float[Array, " d_head"],
) -> Float[Array, "seq d_model"]:
    """One causal attention head's write to the residual stream from its input a = LN_l(x^l):
    out = z W_O with z = :func:`attention_values` (a). The weights are arguments (the fields of
    a head component, :mod:`.components`), so the same code serves the trained network and a
    sampled head."""
    return attention_values(normed, W_Q=W_Q, W_K=W_K, W_V=W_V, b_Q=b_Q, b_K=b_K,
                            b_V=b_V) @ W_O


class AttentionOnlyTransformer(eqx.Module):
    """Attention-only transformer (no MLPs), causal, with a learned positional embedding.

    The forward pass is given in the module docstring: attention of head h in layer l is
    ``softmax(Q Kᵀ / √d_head + causal mask) V W_O`` and the residual stream after layer l is the sum
    of the embeddings and of every earlier head's output (plus the output biases).

    Methods act on ONE sequence; ``jax.vmap`` them over a batch, e.g.
    ``jax.vmap(model.token_losses)(batch)``.

    Parameters (field: shape):
        W_E: ``[d_vocab, d_model]``; W_pos: ``[n_ctx, d_model]``;
        W_Q, W_K, W_V: ``[n_layers, n_heads, d_model, d_head]``; W_O: ``[n_layers, n_heads, d_head,
        d_model]``; b_Q, b_K, b_V: ``[n_layers, n_heads, d_head]``; b_O: ``[n_layers, d_model]``;
        ln_w, ln_b: ``[n_layers, d_model]`` or ``None``; ln_final_w, ln_final_b: ``[d_model]`` or
        ``None`` (present iff ``config.layer_norm``); W_U: ``[d_model, d_vocab]``;
        b_U: ``[d_vocab]``.
    """

    W_E: Float[Array, "vocab d_model"]
    W_pos: Float[Array, "ctx d_model"]
    W_Q: Float[Array, "layer head d_model d_head"]
    W_K: Float[Array, "layer head d_model d_head"]
    W_V: Float[Array, "layer head d_model d_head"]
    W_O: Float[Array, "layer head d_head d_model"]
    b_Q: Float[Array, "layer head d_head"]
    b_K: Float[Array, "layer head d_head"]
    b_V: Float[Array, "layer head d_head"]
    b_O: Float[Array, "layer d_model"]
    ln_w: Float[Array, "layer d_model"] | None
    ln_b: Float[Array, "layer d_model"] | None
    ln_final_w: Float[Array, " d_model"] | None
    ln_final_b: Float[Array, " d_model"] | None
    W_U: Float[Array, "d_model vocab"]
    b_U: Float[Array, " vocab"]
    config: TransformerConfig = eqx.field(static=True)

    def __init__(self, config: TransformerConfig | None = None, *, key: PRNGKeyArray):
        """Initialise deterministically from ``key``.

        Weight matrices ~ N(0, config.weight_std²), biases 0, LayerNorm scales 1 and shifts 0.
        """
        config = TransformerConfig() if config is None else config
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        c = config
        std = c.weight_std
        all_shapes = c.parameter_shapes()
        shapes = {f: all_shapes[f] for f in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")}
        # One draw for all weight matrices (one compiled sampler instead of one per shape).
        sizes = [math.prod(shape) for shape in shapes.values()]
        flat = std * jax.random.normal(key, (sum(sizes),), dtype=jnp.float32)
        pieces = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
        w = {f: p.reshape(shape) for (f, shape), p in zip(shapes.items(), pieces, strict=True)}

        self.config = c
        self.W_E, self.W_pos, self.W_U = w["W_E"], w["W_pos"], w["W_U"]
        self.W_Q, self.W_K, self.W_V, self.W_O = w["W_Q"], w["W_K"], w["W_V"], w["W_O"]
        self.b_Q = jnp.zeros(all_shapes["b_Q"], jnp.float32)
        self.b_K = jnp.zeros(all_shapes["b_K"], jnp.float32)
        self.b_V = jnp.zeros(all_shapes["b_V"], jnp.float32)
        self.b_O = jnp.zeros(all_shapes["b_O"], jnp.float32)
        if c.layer_norm:
            self.ln_w = jnp.ones(all_shapes["ln_w"], jnp.float32)
            self.ln_b = jnp.zeros(all_shapes["ln_b"], jnp.float32)
            self.ln_final_w = jnp.ones(all_shapes["ln_final_w"], jnp.float32)
            self.ln_final_b = jnp.zeros(all_shapes["ln_final_b"], jnp.float32)
        else:
            self.ln_w = self.ln_b = self.ln_final_w = self.ln_final_b = None
        self.b_U = jnp.zeros(all_shapes["b_U"], jnp.float32)

    # ------------------------------------------------------------------ building blocks

    def check_tokens(self, tokens: Int[Array, " seq"], *, min_len: int = 1) -> None:
        """Raise ValueError for a bad token sequence.

        Checks rank, integer dtype and length (``min_len <= seq <= n_ctx``) always, and the id
        range ``0 <= t < d_vocab`` when the values are concrete (outside ``jit``); under ``jit``
        an out-of-range id would silently be clipped by the embedding gather.
        """
        check_sequence("tokens", tokens, self.config, min_length=min_len)

    def embed(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq d_model"]:
        """Initial residual stream x⁰_s = W_E[t_s] + W_pos[s]."""
        return self.W_E[tokens] + self.W_pos[: tokens.shape[0]]

    def _attention(self, layer: int, resid: Float[Array, "seq d_model"], per_head: bool):
        c = self.config
        if c.layer_norm:
            a = _layer_norm(resid, self.ln_w[layer], self.ln_b[layer], c.ln_eps)
        else:
            a = resid
        q = jnp.einsum("sd,hde->hse", a, self.W_Q[layer]) + self.b_Q[layer][:, None, :]
        k = jnp.einsum("sd,hde->hse", a, self.W_K[layer]) + self.b_K[layer][:, None, :]
        v = jnp.einsum("sd,hde->hse", a, self.W_V[layer]) + self.b_V[layer][:, None, :]
        scores = jnp.einsum("hqe,hke->hqk", q, k) * (1.0 / math.sqrt(c.d_head))
        seq = resid.shape[0]
        causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
        scores = jnp.where(causal, scores, -jnp.inf)
        pattern = jax.nn.softmax(scores, axis=-1)
        z = jnp.einsum("hqk,hke->hqe", pattern, v)
        if per_head:
            head_out = jnp.einsum("hse,hed->hsd", z, self.W_O[layer])
            attn_out = head_out.sum(axis=0) + self.b_O[layer]
        else:
            head_out = None
            attn_out = jnp.einsum("hse,hed->sd", z, self.W_O[layer]) + self.b_O[layer]
        return attn_out, pattern, head_out

    def apply_layer(
        self, layer: int, resid: Float[Array, "seq d_model"]
    ) -> Float[Array, "seq d_model"]:
        """One residual block: xˡ⁺¹ = xˡ + Σ_h A_h v_h W_O[l,h] + b_O[l].

        Exposed so that callers can cache the (frozen) residual stream before a layer and run
        only the downstream part of the network.
        """
        attn_out, _, _ = self._attention(layer, resid, per_head=False)
        return resid + attn_out

    def head_output(
        self, layer: int, head: int | Int[Array, ""], normed: Float[Array, "seq d_model"]
    ) -> Float[Array, "seq d_model"]:
        """What head ``layer:head`` alone writes to the residual stream,
        out_{l,h} = softmax(causal(q kᵀ/√d_head)) v W_O[l,h], from the layer's normalised input
        a = LN_l(x^l) (x^l itself without layer norm). Used by the restricted fast path, which
        caches a and the rest of the layer's output when only this head is sampled. ``head`` may
        be a traced integer (one compiled program for every head of a layer)."""
        return attention_head(
            normed, W_Q=self.W_Q[layer, head], W_K=self.W_K[layer, head],
            W_V=self.W_V[layer, head], W_O=self.W_O[layer, head], b_Q=self.b_Q[layer, head],
            b_K=self.b_K[layer, head], b_V=self.b_V[layer, head])

    def normed_input(self, layer: int, resid: Float[Array, "seq d_model"]
                     ) -> Float[Array, "seq d_model"]:
        """a = LN_l(x^l), the input of layer ``layer``'s heads (x^l without layer norm)."""
        c = self.config
        if not c.layer_norm:
            return resid
        return _layer_norm(resid, self.ln_w[layer], self.ln_b[layer], c.ln_eps)

    def unembed(self, resid: Float[Array, "seq d_model"]) -> Float[Array, "seq vocab"]:
        """logits = LN_final(x^L) W_U + b_U (no LayerNorm when ``layer_norm`` is off)."""
        c = self.config
        if c.layer_norm:
            resid = _layer_norm(resid, self.ln_final_w, self.ln_final_b, c.ln_eps)
        return resid @ self.W_U + self.b_U

    def residual_from(
        self, layer: int, resid: Float[Array, "seq d_model"]
    ) -> Float[Array, "seq d_model"]:
        """Run layers ``layer, ..., n_layers-1`` on ``resid`` (the stream before ``layer``)."""
        for l in range(layer, self.config.n_layers):
            resid = self.apply_layer(l, resid)
        return resid

    # ------------------------------------------------------------------ public forward passes

    def __call__(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq vocab"]:
        """Logits ``[seq, d_vocab]``; row s predicts token s+1 from tokens 1..s only."""
        self.check_tokens(tokens)
        return self.unembed(self.residual_from(0, self.embed(tokens)))

    def token_losses(self, tokens: Int[Array, " seq"]) -> Float[Array, " seq-1"]:
        """Per-token next-token loss ℓ_s = −log p(t_{s+1} | t_1..t_s, w), s = 1..S−1.

        Computed as logsumexp(logits_s) − logits_s[t_{s+1}] (a stable log-softmax); the last
        position's logits are not computed since they predict nothing.
        """
        self.check_tokens(tokens, min_len=2)
        resid = self.residual_from(0, self.embed(tokens))
        return _next_token_nll(self.unembed(resid[:-1]), tokens[1:])

    def loss(self, tokens: Int[Array, " seq"]) -> Float[Array, ""]:
        """Mean next-token loss of one sequence, mean_s ℓ_s."""
        return jnp.mean(self.token_losses(tokens))

    def run_with_cache(self, tokens: Int[Array, " seq"]) -> ActivationCache:
        """Forward pass that also returns every activation (see :class:`ActivationCache`).

        Costs more memory than :meth:`__call__` (per-head outputs are materialised).
        """
        self.check_tokens(tokens)
        embed = self.W_E[tokens]
        pos = self.W_pos[: tokens.shape[0]]
        resid = embed + pos
        resids, patterns, head_outs, attn_outs = [resid], [], [], []
        for l in range(self.config.n_layers):
            attn_out, pattern, head_out = self._attention(l, resid, per_head=True)
            resid = resid + attn_out
            resids.append(resid)
            patterns.append(pattern)
            head_outs.append(head_out)
            attn_outs.append(attn_out)
        return ActivationCache(
            embed=embed,
            pos=pos,
            resid=jnp.stack(resids),
            patterns=jnp.stack(patterns),
            head_out=jnp.stack(head_outs),
            attn_out=jnp.stack(attn_outs),
            logits=self.unembed(resid),
        )

    def attention_patterns(
        self, tokens: Int[Array, " seq"]
    ) -> Float[Array, "layer head query key"]:
        """Attention patterns A[l, h, q, k] = softmax_k(q·k/√d_head + causal mask).

        Each row sums to one and A[l, h, q, k] = 0 for k > q. Does not compute the logits.
        """
        self.check_tokens(tokens)
        resid = self.embed(tokens)
        patterns = []
        for l in range(self.config.n_layers):
            attn_out, pattern, _ = self._attention(l, resid, per_head=False)
            resid = resid + attn_out
            patterns.append(pattern)
        return jnp.stack(patterns)
