"""A decoder-only transformer language model in Equinox.

For one sequence of tokens t_1..t_S (S <= n_ctx) the model computes, with residual stream x:

    x⁰_s = W_E[t_s] + W_pos[s]                          (no W_pos with rotary positions)
    for each layer l:
        a = LN_l(xˡ)                                    (identity when layer_norm is off)
        q_h = a W_Q[l,h] + b_Q[l,h],  k_h = a W_K[l,h] + b_K[l,h],  v_h = a W_V[l,h] + b_V[l,h]
        (rotary: q_h, k_h ← rot_s(q_h), rot_s(k_h), a rotation by position s; see below)
        A_h = softmax( q_h k_hᵀ / √d_head + M )         M_qk = 0 if k <= q else −∞  (causal)
        out_h = A_h v_h W_O[l,h]                        (head h's write to the residual stream)
        attn = Σ_h out_h + b_O[l]
        mlp(y) = act(LN2_l(y) W_in[l] + b_in[l]) W_out[l] + b_out[l]      (with an MLP)
        attention-only:      xˡ⁺¹ = xˡ + attn
        sequential residual: m = xˡ + attn,  xˡ⁺¹ = m + mlp(m)
        parallel residual:   xˡ⁺¹ = xˡ + attn + mlp(xˡ)
    logits = LN_final(x^L) W_U + b_U                    (W_U = W_Eᵀ when the embedding is tied)

and the per-token loss is the next-token cross-entropy ℓ_s = −log softmax(logits_s)[t_{s+1}]
= logsumexp(logits_s) − logits_s[t_{s+1}] for s = 1..S−1, computed over chunks of positions so
that a large vocabulary never materialises a positions × vocabulary array at once
(:func:`chunked_token_losses`).

**Rotary positions** (GPT-NeoX's convention). The first r = ``rotary_dim`` coordinates of a query
or key at position s (counted from 0) are split in halves x = [x₁, x₂] and replaced by
x cos θ_s + [−x₂, x₁] sin θ_s, with θ_{s,i} = s·b^(−2i/r) for i = 0..r/2−1 repeated over both
halves (b = ``rotary_base``); the other d_head − r coordinates pass unchanged.

All per-head weights are stored with a leading ``[layer, head]`` axis pair (``W_Q[l, h]`` is head
``l:h``), so a head is an index into the arrays, and attention over all heads is one einsum.
Fields an architecture lacks (biases, LayerNorms, the MLP, W_pos, an untied W_U) are ``None``.
"""

# ruff: noqa: F722  (jaxtyping shape strings are not forward references)

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._tokens import check_sequence
from .config import TransformerConfig

__all__ = ["ActivationCache", "AttentionOnlyTransformer", "Transformer", "attention_head",
           "attention_values", "chunked_token_losses", "cross_entropy_from_logits",
           "LOGITS_CHUNK_FLOATS", "rotary_angles"]

LOGITS_CHUNK_FLOATS = 2**20
"""The per-token losses of a sequence are computed over chunks of at most this many logits
(positions × vocabulary, 4 MiB of float32) per sequence; a vocabulary of 1,024 then fits 1,024
positions in one chunk, one of 50,304 fits 20."""

Rotary = tuple[Float[Array, "seq rot"], Float[Array, "seq rot"]] | None
"""(cos θ, sin θ) of every position for the rotated query/key dimensions, or None."""


class ActivationCache(eqx.Module):
    """Activations of one forward pass over one sequence (see :meth:`run_with_cache`).

    Attributes:
        embed: token embeddings W_E[t_s], ``[seq, d_model]``.
        pos: positional embeddings W_pos[s], ``[seq, d_model]`` (zeros with rotary positions).
        resid: residual stream before each layer and after the last, ``[n_layers + 1, seq,
            d_model]``; ``resid[0] = embed + pos`` and ``resid[l + 1] = resid[l] + attn_out[l]
            (+ mlp_out[l])``.
        patterns: attention patterns A, ``[n_layers, n_heads, query, key]``.
        head_out: each head's write to the residual stream A_h v_h W_O[l,h],
            ``[n_layers, n_heads, seq, d_model]``.
        attn_out: the layer's attention write Σ_h head_out[l, h] + b_O[l],
            ``[n_layers, seq, d_model]``.
        mlp_out: the layer's MLP write, ``[n_layers, seq, d_model]``, or None without MLPs.
        logits: ``[seq, d_vocab]``.
    """

    embed: Float[Array, "seq d_model"]
    pos: Float[Array, "seq d_model"]
    resid: Float[Array, "layer_plus_1 seq d_model"]
    patterns: Float[Array, "layer head query key"]
    head_out: Float[Array, "layer head seq d_model"]
    attn_out: Float[Array, "layer seq d_model"]
    logits: Float[Array, "seq vocab"]
    mlp_out: Float[Array, "layer seq d_model"] | None = None


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


def chunked_token_losses(
    unembed: Callable[[Float[Array, "n d_model"]], Float[Array, "n vocab"]],
    resid: Float[Array, "n d_model"],
    targets: Int[Array, " n"],
    vocab: int,
    chunk: int | None = None,
) -> Float[Array, " n"]:
    """ℓ_i = logsumexp(unembed(x_i)) − unembed(x_i)[y_i] for rows x_i of ``resid``, over chunks
    of ``chunk`` rows (default: as many as fit :data:`LOGITS_CHUNK_FLOATS` logits).

    One chunk's logits exist at a time, in the forward pass and in the backward pass (each
    chunk's logits are recomputed there, ``jax.checkpoint``), so memory grows with the chunk,
    not with n × vocab. The logits are exact float32: the result equals the unchunked
    computation up to float rounding.
    """
    n = resid.shape[0]
    if chunk is None:
        chunk = max(1, LOGITS_CHUNK_FLOATS // vocab)
    if n <= chunk:
        return _next_token_nll(unembed(resid), targets)
    pad = -n % chunk
    rows = jnp.concatenate([resid, jnp.zeros((pad, resid.shape[1]), resid.dtype)])
    ids = jnp.concatenate([targets, jnp.zeros((pad,), targets.dtype)])

    @jax.checkpoint
    def one(args):
        x, y = args
        return _next_token_nll(unembed(x), y)

    losses = jax.lax.map(one, (rows.reshape(-1, chunk, rows.shape[1]), ids.reshape(-1, chunk)))
    return losses.reshape(-1)[:n]


def _layer_norm(x: Float[Array, "seq d"], w: Float[Array, " d"], b: Float[Array, " d"], eps: float):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mean
    var = jnp.mean(xc * xc, axis=-1, keepdims=True)
    return xc * jax.lax.rsqrt(var + eps) * w + b


def _activation(name: str) -> Callable[[Array], Array]:
    if name == "relu":
        return jax.nn.relu
    return lambda x: jax.nn.gelu(x, approximate=name == "gelu_tanh")


def rotary_angles(config: TransformerConfig, seq: int) -> Rotary:
    """(cos θ, sin θ), ``[seq, rotary_dim]`` each, θ_{s,i} = s·b^(−2i/r) repeated over both
    halves (module docstring); None with learned positions."""
    rot = config.head_rotary_dim
    if rot == 0:
        return None
    inv_freq = 1.0 / (config.rotary_base ** (np.arange(0, rot, 2, dtype=np.float32) / rot))
    angles = np.arange(seq, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return jnp.asarray(np.cos(angles)), jnp.asarray(np.sin(angles))


def _rotate(x: Float[Array, "... seq e"], rotary: Rotary) -> Float[Array, "... seq e"]:
    """x with its first rotary_dim coordinates rotated by position (module docstring)."""
    if rotary is None:
        return x
    cos, sin = rotary
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = jnp.concatenate([-x_rot[..., half:], x_rot[..., :half]], axis=-1)
    return jnp.concatenate([x_rot * cos + rotated * sin, x_pass], axis=-1)


def _plus(x: Array, bias: Array | None) -> Array:
    return x if bias is None else x + bias


def attention_values(
    normed: Float[Array, "seq d_model"],
    *,
    W_Q: Float[Array, "d_model d_head"],
    W_K: Float[Array, "d_model d_head"],
    W_V: Float[Array, "d_model d_head"],
    b_Q: Float[Array, " d_head"] | None,
    b_K: Float[Array, " d_head"] | None,
    b_V: Float[Array, " d_head"] | None,
    rotary: Rotary = None,
) -> Float[Array, "seq d_head"]:
    """z = softmax(causal(q kᵀ/√d_head)) v, one causal attention head's mixed values before its
    output matrix W_O, from its input a = LN_l(x^l): q = a W_Q + b_Q, k = a W_K + b_K,
    v = a W_V + b_V (a None bias is absent), q and k rotated by position when ``rotary`` is
    given (:func:`rotary_angles`)."""
    q = _rotate(_plus(normed @ W_Q, b_Q), rotary)
    k = _rotate(_plus(normed @ W_K, b_K), rotary)
    v = _plus(normed @ W_V, b_V)
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
    b_Q: Float[Array, " d_head"] | None,
    b_K: Float[Array, " d_head"] | None,
    b_V: Float[Array, " d_head"] | None,
    rotary: Rotary = None,
) -> Float[Array, "seq d_model"]:
    """One causal attention head's write to the residual stream from its input a = LN_l(x^l):
    out = z W_O with z = :func:`attention_values` (a). The weights are arguments (the fields of
    a head component, :mod:`.components`), so the same code serves the trained network and a
    sampled head."""
    return attention_values(normed, W_Q=W_Q, W_K=W_K, W_V=W_V, b_Q=b_Q, b_K=b_K,
                            b_V=b_V, rotary=rotary) @ W_O


class Transformer(eqx.Module):
    """Decoder-only transformer, causal: attention-only or with MLPs, learned or rotary
    positions, sequential or parallel residual, tied or untied unembedding (the architecture is
    its :class:`TransformerConfig`; the forward pass is given in the module docstring).

    Methods act on ONE sequence; ``jax.vmap`` them over a batch, e.g.
    ``jax.vmap(model.token_losses)(batch)``.

    Parameters (field: shape; None where the architecture has no such parameter):
        W_E: ``[d_vocab, d_model]``; W_pos: ``[n_ctx, d_model]`` (learned positions);
        W_Q, W_K, W_V: ``[n_layers, n_heads, d_model, d_head]``; W_O: ``[n_layers, n_heads,
        d_head, d_model]``; b_Q, b_K, b_V: ``[n_layers, n_heads, d_head]``; b_O: ``[n_layers,
        d_model]`` (attention biases); ln_w, ln_b: ``[n_layers, d_model]`` (the attention input's
        LayerNorm); ln_final_w, ln_final_b: ``[d_model]``; W_U: ``[d_model, d_vocab]``
        (untied); b_U: ``[d_vocab]``; ln2_w, ln2_b: ``[n_layers, d_model]`` (the MLP input's
        LayerNorm); W_in: ``[n_layers, d_model, d_mlp]``; b_in: ``[n_layers, d_mlp]``;
        W_out: ``[n_layers, d_mlp, d_model]``; b_out: ``[n_layers, d_model]``.
    """

    W_E: Float[Array, "vocab d_model"]
    W_pos: Float[Array, "ctx d_model"] | None
    W_Q: Float[Array, "layer head d_model d_head"]
    W_K: Float[Array, "layer head d_model d_head"]
    W_V: Float[Array, "layer head d_model d_head"]
    W_O: Float[Array, "layer head d_head d_model"]
    b_Q: Float[Array, "layer head d_head"] | None
    b_K: Float[Array, "layer head d_head"] | None
    b_V: Float[Array, "layer head d_head"] | None
    b_O: Float[Array, "layer d_model"] | None
    ln_w: Float[Array, "layer d_model"] | None
    ln_b: Float[Array, "layer d_model"] | None
    ln_final_w: Float[Array, " d_model"] | None
    ln_final_b: Float[Array, " d_model"] | None
    W_U: Float[Array, "d_model vocab"] | None
    b_U: Float[Array, " vocab"] | None
    ln2_w: Float[Array, "layer d_model"] | None
    ln2_b: Float[Array, "layer d_model"] | None
    W_in: Float[Array, "layer d_model d_mlp"] | None
    b_in: Float[Array, "layer d_mlp"] | None
    W_out: Float[Array, "layer d_mlp d_model"] | None
    b_out: Float[Array, "layer d_model"] | None
    config: TransformerConfig = eqx.field(static=True)

    def __init__(self, config: TransformerConfig | None = None, *,
                 key: PRNGKeyArray | None = None,
                 parameters: Mapping[str, ArrayLike] | None = None):
        """Initialise deterministically from ``key``, or take the given ``parameters``.

        With ``key``: weight matrices ~ N(0, config.weight_std²), biases 0, LayerNorm scales 1
        and shifts 0. With ``parameters`` (see :meth:`from_parameters`): exactly the arrays of
        ``config.present_shapes()``, stored as float32.
        """
        config = TransformerConfig() if config is None else config
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if (key is None) == (parameters is None):
            raise ValueError("pass exactly one of key= (random initialisation) and parameters= "
                             "(given arrays, Transformer.from_parameters).")
        values = (_initial_parameters(config, key) if parameters is None
                  else _checked_parameters(config, parameters))
        self.config = config
        for field in config.parameter_shapes():
            setattr(self, field, values.get(field))

    @classmethod
    def from_parameters(cls, config: TransformerConfig,
                        parameters: Mapping[str, ArrayLike]) -> Transformer:
        """The network of architecture ``config`` with the given weights: a mapping from every
        field name of ``config.present_shapes()`` to an array of that shape (converted to
        float32). A missing, unexpected or misshapen array is a ValueError naming it."""
        return cls(config, parameters=parameters)

    # ------------------------------------------------------------------ building blocks

    def check_tokens(self, tokens: Int[Array, " seq"], *, min_len: int = 1) -> None:
        """Raise ValueError for a bad token sequence.

        Checks rank, integer dtype and length (``min_len <= seq <= n_ctx``) always, and the id
        range ``0 <= t < d_vocab`` when the values are concrete (outside ``jit``); under ``jit``
        an out-of-range id would silently be clipped by the embedding gather.
        """
        check_sequence("tokens", tokens, self.config, min_length=min_len)

    def embed(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq d_model"]:
        """Initial residual stream x⁰_s = W_E[t_s] + W_pos[s] (W_E[t_s] with rotary positions)."""
        if self.W_pos is None:
            return self.W_E[tokens]
        return self.W_E[tokens] + self.W_pos[: tokens.shape[0]]

    def rotary(self, seq: int) -> Rotary:
        """(cos θ, sin θ) of positions 0..seq−1 (:func:`rotary_angles`), None without rotary."""
        return rotary_angles(self.config, seq)

    def _attention(self, layer: int, resid: Float[Array, "seq d_model"], per_head: bool):
        c = self.config
        a = self.normed_input(layer, resid)
        rotary = self.rotary(resid.shape[0])

        def project(W, b):
            x = jnp.einsum("sd,hde->hse", a, W[layer])
            return x if b is None else x + b[layer][:, None, :]

        q = _rotate(project(self.W_Q, self.b_Q), rotary)
        k = _rotate(project(self.W_K, self.b_K), rotary)
        v = project(self.W_V, self.b_V)
        scores = jnp.einsum("hqe,hke->hqk", q, k) * (1.0 / math.sqrt(c.d_head))
        seq = resid.shape[0]
        causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
        scores = jnp.where(causal, scores, -jnp.inf)
        pattern = jax.nn.softmax(scores, axis=-1)
        z = jnp.einsum("hqk,hke->hqe", pattern, v)
        b_O = None if self.b_O is None else self.b_O[layer]
        if per_head:
            head_out = jnp.einsum("hse,hed->hsd", z, self.W_O[layer])
            attn_out = _plus(head_out.sum(axis=0), b_O)
        else:
            head_out = None
            attn_out = _plus(jnp.einsum("hse,hed->sd", z, self.W_O[layer]), b_O)
        return attn_out, pattern, head_out

    def attention_output(self, layer: int, resid: Float[Array, "seq d_model"]
                         ) -> Float[Array, "seq d_model"]:
        """attn_l = Σ_h out_{l,h} + b_O[l], what layer ``layer``'s attention writes given x^l."""
        return self._attention(layer, resid, per_head=False)[0]

    def output_bias(self, layer: int) -> Float[Array, " d_model"] | float:
        """b_O[l], the attention's output bias shared by the layer's heads (0.0 without one)."""
        return 0.0 if self.b_O is None else self.b_O[layer]

    def mlp_output(self, layer: int, stream: Float[Array, "seq d_model"]
                   ) -> Float[Array, "seq d_model"]:
        """mlp(y) = act(LN2_l(y) W_in[l] + b_in[l]) W_out[l] + b_out[l], the MLP's write given
        the stream y it reads (ValueError for an attention-only model)."""
        if self.W_in is None:
            raise ValueError("this network has no MLPs (config.d_mlp is None).")
        return self.mlp_from_normed(layer, self.mlp_input(layer, stream))

    def mlp_input(self, layer: int, stream: Float[Array, "seq d_model"]
                  ) -> Float[Array, "seq d_model"]:
        """LN2_l(y), the MLP's normalised input (y itself without layer norm)."""
        if self.ln2_w is None:
            return stream
        return _layer_norm(stream, self.ln2_w[layer], self.ln2_b[layer], self.config.ln_eps)

    def mlp_from_normed(self, layer: int, normed: Float[Array, "seq d_model"]
                        ) -> Float[Array, "seq d_model"]:
        """act(a W_in[l] + b_in[l]) W_out[l] + b_out[l] from the MLP's normalised input a."""
        b_in = None if self.b_in is None else self.b_in[layer]
        b_out = None if self.b_out is None else self.b_out[layer]
        hidden = _activation(self.config.act_fn)(_plus(normed @ self.W_in[layer], b_in))
        return _plus(hidden @ self.W_out[layer], b_out)

    @property
    def sequential_mlp(self) -> bool:
        """True when each layer's MLP reads the stream after its attention (GPT-2's order)."""
        return self.config.d_mlp is not None and not self.config.parallel_residual

    def attention_stream(self, layer: int, resid: Float[Array, "seq d_model"],
                         attn_out: Float[Array, "seq d_model"] | None = None
                         ) -> Float[Array, "seq d_model"]:
        """xˡ + attn, plus mlp(xˡ) with a parallel residual: everything layer ``layer`` writes
        that its attention's output does not feed. ``attn_out`` overrides the layer's own
        attention write Σ_h out_h + b_O[l]. :meth:`finish_layer` of it is xˡ⁺¹."""
        if attn_out is None:
            attn_out = self.attention_output(layer, resid)
        stream = resid + attn_out
        if self.config.parallel_residual:
            stream = stream + self.mlp_output(layer, resid)
        return stream

    def finish_layer(self, layer: int, stream: Float[Array, "seq d_model"]
                     ) -> Float[Array, "seq d_model"]:
        """xˡ⁺¹ from :meth:`attention_stream` m: m + mlp(m) with a sequential MLP, else m."""
        if self.sequential_mlp:
            return stream + self.mlp_output(layer, stream)
        return stream

    def apply_layer(
        self, layer: int, resid: Float[Array, "seq d_model"]
    ) -> Float[Array, "seq d_model"]:
        """One block, xˡ → xˡ⁺¹ (module docstring).

        Exposed so that callers can cache the (frozen) residual stream before a layer and run
        only the downstream part of the network.
        """
        return self.finish_layer(layer, self.attention_stream(layer, resid))

    def head_output(
        self, layer: int, head: int | Int[Array, ""], normed: Float[Array, "seq d_model"]
    ) -> Float[Array, "seq d_model"]:
        """What head ``layer:head`` alone writes to the residual stream,
        out_{l,h} = softmax(causal(q kᵀ/√d_head)) v W_O[l,h], from the layer's normalised input
        a = LN_l(x^l) (x^l itself without layer norm). Used by the restricted fast path, which
        caches a and the rest of the layer's output when only this head is sampled. ``head`` may
        be a traced integer (one compiled program for every head of a layer)."""

        def bias(b):
            return None if b is None else b[layer, head]

        return attention_head(
            normed, W_Q=self.W_Q[layer, head], W_K=self.W_K[layer, head],
            W_V=self.W_V[layer, head], W_O=self.W_O[layer, head], b_Q=bias(self.b_Q),
            b_K=bias(self.b_K), b_V=bias(self.b_V), rotary=self.rotary(normed.shape[0]))

    def normed_input(self, layer: int, resid: Float[Array, "seq d_model"]
                     ) -> Float[Array, "seq d_model"]:
        """a = LN_l(x^l), the input of layer ``layer``'s heads (x^l without layer norm)."""
        c = self.config
        if not c.layer_norm:
            return resid
        return _layer_norm(resid, self.ln_w[layer], self.ln_b[layer], c.ln_eps)

    @property
    def unembedding(self) -> Float[Array, "d_model vocab"]:
        """W_U, or W_Eᵀ for a tied embedding."""
        return self.W_E.T if self.W_U is None else self.W_U

    def final_normed(self, resid: Float[Array, "seq d_model"]) -> Float[Array, "seq d_model"]:
        """LN_final(x^L) (x^L itself without layer norm)."""
        c = self.config
        if not c.layer_norm:
            return resid
        return _layer_norm(resid, self.ln_final_w, self.ln_final_b, c.ln_eps)

    def unembed(self, resid: Float[Array, "seq d_model"]) -> Float[Array, "seq vocab"]:
        """logits = LN_final(x^L) W_U + b_U (no LayerNorm when ``layer_norm`` is off)."""
        return _plus(self.final_normed(resid) @ self.unembedding, self.b_U)

    def residual_from(
        self, layer: int, resid: Float[Array, "seq d_model"]
    ) -> Float[Array, "seq d_model"]:
        """Run layers ``layer, ..., n_layers-1`` on ``resid`` (the stream before ``layer``)."""
        for l in range(layer, self.config.n_layers):
            resid = self.apply_layer(l, resid)
        return resid

    def losses_from_residual(self, resid: Float[Array, "n d_model"], targets: Int[Array, " n"],
                             chunk: int | None = None) -> Float[Array, " n"]:
        """ℓ_i = −log softmax(unembed(x_i))[y_i] for final residual rows x_i, in chunks of
        positions (:func:`chunked_token_losses`)."""
        return chunked_token_losses(self.unembed, resid, targets, self.config.d_vocab, chunk)

    # ------------------------------------------------------------------ public forward passes

    def __call__(self, tokens: Int[Array, " seq"]) -> Float[Array, "seq vocab"]:
        """Logits ``[seq, d_vocab]``; row s predicts token s+1 from tokens 1..s only."""
        self.check_tokens(tokens)
        return self.unembed(self.residual_from(0, self.embed(tokens)))

    def token_losses(self, tokens: Int[Array, " seq"], *, chunk: int | None = None
                     ) -> Float[Array, " seq-1"]:
        """Per-token next-token loss ℓ_s = −log p(t_{s+1} | t_1..t_s, w), s = 1..S−1.

        Computed as logsumexp(logits_s) − logits_s[t_{s+1}] (a stable log-softmax) over chunks
        of ``chunk`` positions (default: :data:`LOGITS_CHUNK_FLOATS` logits per chunk); the last
        position's logits are not computed since they predict nothing.
        """
        self.check_tokens(tokens, min_len=2)
        resid = self.residual_from(0, self.embed(tokens))
        return self.losses_from_residual(resid[:-1], tokens[1:], chunk)

    def loss(self, tokens: Int[Array, " seq"]) -> Float[Array, ""]:
        """Mean next-token loss of one sequence, mean_s ℓ_s."""
        return jnp.mean(self.token_losses(tokens))

    def run_with_cache(self, tokens: Int[Array, " seq"]) -> ActivationCache:
        """Forward pass that also returns every activation (see :class:`ActivationCache`).

        Costs more memory than :meth:`__call__` (per-head outputs are materialised).
        """
        self.check_tokens(tokens)
        embed = self.W_E[tokens]
        resid = self.embed(tokens)
        resids, patterns, head_outs, attn_outs, mlp_outs = [resid], [], [], [], []
        for l in range(self.config.n_layers):
            attn_out, pattern, head_out = self._attention(l, resid, per_head=True)
            new = self.apply_layer_from(l, resid, attn_out)
            if self.config.d_mlp is not None:
                mlp_outs.append(new - resid - attn_out)
            resid = new
            resids.append(resid)
            patterns.append(pattern)
            head_outs.append(head_out)
            attn_outs.append(attn_out)
        return ActivationCache(
            embed=embed,
            pos=(jnp.zeros_like(embed) if self.W_pos is None
                 else self.W_pos[: tokens.shape[0]]),
            resid=jnp.stack(resids),
            patterns=jnp.stack(patterns),
            head_out=jnp.stack(head_outs),
            attn_out=jnp.stack(attn_outs),
            logits=self.unembed(resid),
            mlp_out=jnp.stack(mlp_outs) if mlp_outs else None,
        )

    def apply_layer_from(self, layer: int, resid: Float[Array, "seq d_model"],
                         attn_out: Float[Array, "seq d_model"]) -> Float[Array, "seq d_model"]:
        """xˡ⁺¹ given xˡ and the layer's attention write ``attn_out`` (which may be edited, e.g.
        with one head ablated)."""
        return self.finish_layer(layer, self.attention_stream(layer, resid, attn_out))

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
            resid = self.apply_layer_from(l, resid, attn_out)
            patterns.append(pattern)
        return jnp.stack(patterns)


AttentionOnlyTransformer = Transformer
"""The former name of :class:`Transformer` (an attention-only model is the configuration with
``d_mlp=None``); kept so that existing code and checkpoints keep working."""


def _initial_parameters(config: TransformerConfig, key: PRNGKeyArray) -> dict[str, Array]:
    """Weight matrices ~ N(0, weight_std²) from one draw (one compiled sampler instead of one per
    shape), biases and LayerNorm shifts 0, LayerNorm scales 1."""
    shapes = config.present_shapes()
    matrices = [f for f in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U", "W_in", "W_out")
                if f in shapes]
    sizes = [math.prod(shapes[f]) for f in matrices]
    flat = config.weight_std * jax.random.normal(key, (sum(sizes),), dtype=jnp.float32)
    pieces = jnp.split(flat, np.cumsum(sizes)[:-1].tolist())
    values = {f: p.reshape(shapes[f]) for f, p in zip(matrices, pieces, strict=True)}
    for f, shape in shapes.items():
        if f not in values:
            fill = jnp.ones if f in ("ln_w", "ln2_w", "ln_final_w") else jnp.zeros
            values[f] = fill(shape, jnp.float32)
    return values


def _checked_parameters(config: TransformerConfig,
                        parameters: Mapping[str, ArrayLike]) -> dict[str, Array]:
    shapes = config.present_shapes()
    missing = [f for f in shapes if f not in parameters]
    unexpected = sorted(set(parameters) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"parameters do not match the architecture: missing {missing}, "
                         f"unexpected {unexpected}; a network of this config has exactly "
                         f"{list(shapes)}.")
    values = {}
    for f, shape in shapes.items():
        array = jnp.asarray(parameters[f], dtype=jnp.float32)
        if tuple(array.shape) != shape:
            raise ValueError(f"parameter {f} has shape {tuple(array.shape)}, expected {shape} "
                             "for this config.")
        values[f] = array
    return values
