"""Token arrays checked against a network's configuration, concrete or traced.

The rules and messages are those of :func:`numpyro_slt._validate.token_array`. Inside ``jit``
(a NumPyro model traced with ``jit_model_args=True``, a forward pass under ``vmap``) the ids of a
traced array are unknown, so only its shape and dtype are checked; forcing the tracer to a value
would fail. An out-of-range id under ``jit`` is clipped silently by the embedding gather, which is
why concrete arrays are checked in full.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import token_array
from .config import TransformerConfig

__all__ = ["checked_tokens", "check_sequence"]


def checked_tokens(name: str, tokens, config: TransformerConfig, *,
                   min_length: int = 2) -> jax.Array:
    """``tokens`` ([sequences, length]) as a JAX array after :func:`token_array`'s checks
    (``min_length ≤ length ≤ n_ctx``, integer ids in [0, d_vocab), at least one sequence); the
    id range only when ``tokens`` is concrete."""
    _check_rows(name, tokens, config, min_length)
    return tokens if isinstance(tokens, jax.core.Tracer) else jnp.asarray(tokens)


def check_sequence(name: str, tokens, config: TransformerConfig, *, min_length: int = 1) -> None:
    """The checks of :func:`checked_tokens` for one sequence ``tokens`` ([seq])."""
    shape = getattr(tokens, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"{name} must be a 1-D integer array [seq] (one sequence; use jax.vmap "
                         f"for a batch), got shape {shape}.")
    _check_rows(name, tokens[None] if isinstance(tokens, jax.core.Tracer)
                else np.asarray(tokens)[None], config, min_length)


def _check_rows(name: str, tokens, config: TransformerConfig, min_length: int) -> None:
    if isinstance(tokens, jax.core.Tracer):
        # shape and dtype only: zeros of the same shape and dtype pass the id check trivially
        tokens = np.zeros(tokens.shape, tokens.dtype)
    token_array(name, tokens, d_vocab=config.d_vocab, n_ctx=config.n_ctx, min_length=min_length)
