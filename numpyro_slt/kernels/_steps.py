"""Parts shared by the SG-MCMC kernels: minibatch indices, the reference loss L_n(w*), the Gaussian
noise, tree norms and the MALA acceptance of a Langevin step (docs/formulas.md)."""

from __future__ import annotations

import math
import warnings
from itertools import product
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _model

__all__ = ["draw_indices", "reference_loss", "normal_like", "sq_norm", "norm", "sq_norms",
           "weighted_sq_norm", "mala_acceptance", "no_draws"]


def draw_indices(plates: dict[str, tuple[int, int]], minibatch: str,
                 rng_key) -> dict[str, jnp.ndarray]:
    """Fresh minibatch indices for every subsampled plate (name → (size N, batch B)): B uniform
    draws from [0, N) with replacement, or B distinct ones (``minibatch="without_replacement"``)."""
    indices = {}
    for name, (size, batch) in plates.items():
        rng_key, key = jax.random.split(rng_key)
        if minibatch == "with_replacement":
            indices[name] = jax.random.randint(key, (batch,), 0, size)
        else:
            indices[name] = jax.random.choice(key, size, (batch,), replace=False)
    return indices


def reference_loss(info: _model.ModelInfo, reference: dict[str, jnp.ndarray], model_args: tuple,
                   model_kwargs: dict, *, batches: int | None, minibatch: str) -> float:
    """L_n(w*): on the full data, in chunks of the plates' minibatch sizes (each chunk weighted
    by its share of the data), or, with ``batches`` = k, the mean over k minibatches drawn with
    ``PRNGKey(0)``. The same number for every chain and every ``chain_method``."""
    # the data are arguments, not constants baked into the program
    loss_of = eqx.filter_jit(
        lambda z, idx, args, kwargs: _model.energy_and_loss(info, args, kwargs, z, idx)[1]
    )

    def loss_fn(z, idx):
        return loss_of(z, idx, model_args, model_kwargs)

    plates = info.subsampled_plates
    if batches is not None:
        keys = jax.random.split(jax.random.PRNGKey(0), batches)
        losses = [float(loss_fn(reference, draw_indices(plates, minibatch, k))) for k in keys]
        return float(np.mean(losses))
    chunks = {
        name: [np.arange(s, min(s + b, n)) for s in range(0, n, b)]
        for name, (n, b) in plates.items()
    }
    total = 0.0
    with warnings.catch_warnings():  # a short last chunk is intended, NumPyro warns about it
        warnings.filterwarnings("ignore", message="subsample_size does not match len")
        for combo in product(*chunks.values()):
            indices = {name: jnp.asarray(idx) for name, idx in zip(chunks, combo, strict=True)}
            weight = math.prod(len(idx) / plates[name][0]
                               for name, idx in zip(chunks, combo, strict=True))
            total += weight * float(loss_fn(reference, indices))
    return total


def normal_like(key, tree: Any) -> Any:
    """ξ ~ N(0, I) shaped like ``tree``: one draw of all the parameters, cut into the leaves
    (one random-number generator in the compiled loop instead of one per leaf, which compiles
    faster)."""
    leaves, treedef = jax.tree.flatten(tree)
    dtype = jnp.result_type(*leaves)
    sizes = [math.prod(x.shape) for x in leaves]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    starts = np.cumsum([0, *sizes[:-1]])
    return jax.tree.unflatten(treedef, [
        flat[start:start + size].reshape(x.shape).astype(x.dtype)
        for x, start, size in zip(leaves, starts, sizes, strict=True)
    ])


def sq_norm(tree: Any) -> jnp.ndarray:
    """Σ x² over all leaves."""
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def norm(tree: Any) -> jnp.ndarray:
    """‖tree‖₂ over all leaves."""
    return jnp.sqrt(sq_norm(tree))


def sq_norms(rows: list[tuple[Any, ...]]) -> tuple[jnp.ndarray, ...]:
    """Several Σ x² at once: ``rows`` holds, for each leaf of the parameters, one array per sum
    (``None`` where a sum gets nothing from that leaf). Each leaf's squares go through one
    variadic reduction, so XLA reads the arrays they are computed from once per leaf, not once
    per sum."""
    totals = [jnp.zeros(())] * len(rows[0]) if rows else []
    for row in rows:
        present = [j for j, x in enumerate(row) if x is not None]
        if not present:
            continue
        squares = tuple(jnp.square(row[j]).ravel() for j in present)
        sums = jax.lax.reduce(squares, tuple(jnp.zeros((), x.dtype) for x in squares),
                              lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)), (0,))
        for j, value in zip(present, sums, strict=True):
            totals[j] = totals[j] + value
    return tuple(totals)


def weighted_sq_norm(metric: Any, grad: Any) -> jnp.ndarray:
    """Σ G·g² over all leaves."""
    return sum(jnp.sum(G * g * g) for G, g in zip(jax.tree.leaves(metric), jax.tree.leaves(grad),
                                                   strict=True))


def mala_acceptance(grad_sq_weighted, grad_new_sq_weighted, eps):
    """min(1, exp(a)) with a = −ΔU + log q(z|z') − log q(z'|z) and ΔU by the trapezoid rule.

    With d = z' − z, the forward residual f = d + (ε/2)·G·g and the backward residual
    b = −d + (ε/2)·G·g', log q(z|z') − log q(z'|z) = Σ (f² − b²)/(2εG) = ½(g + g')·d
    + (ε/8)·Σ G·(g² − g'²). Subtracting ΔU ≈ ½(g + g')·d leaves a = (ε/8)·Σ G·(g² − g'²): two
    G-weighted squared gradient norms, no extra pass over the parameters.
    """
    log_ratio = 0.125 * eps * (grad_sq_weighted - grad_new_sq_weighted)
    return jnp.exp(jnp.minimum(log_ratio, 0.0))


def no_draws(z: Any) -> dict:
    """A postprocess function that keeps no parameter draws."""
    return {}
