"""Reuse NumPyro's compiled sampling loop across ``MCMC.run`` calls.

NumPyro 0.22's ``fori_collect`` wraps its loop body in a fresh ``jax.jit`` at every call and hands
it to the jitted loop as a static argument, so every ``MCMC.run(progress_bar=False)`` traces and
compiles the whole loop again, 1–10 s on the models here (pyro-ppl/numpyro#2171, fixed upstream
after 0.22.0). A run written in segments (:func:`~numpyro_slt.checkpoint.sample_checkpointed`)
would pay that at every segment. Inside :func:`reuse_loop_compilation`, ``numpyro.util.maybe_jit``
is memoised, so the same body gives the same jitted objects, and JAX's cache is hit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpyro.util

__all__ = ["reuse_loop_compilation"]


@contextlib.contextmanager
def reuse_loop_compilation(cache: dict[tuple, Callable] | None = None) -> Iterator[None]:
    """Within the block, ``numpyro.util.maybe_jit(fn, *args, **kwargs)`` returns the jitted
    function made the first time for the same arguments (kept in ``cache``, a new dict by
    default, dropped when the block ends)."""
    cache = {} if cache is None else cache
    original = numpyro.util.maybe_jit

    def maybe_jit(fn: Callable, *args: Any, **kwargs: Any) -> Callable:
        key = (fn, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(fn, *args, **kwargs)
        return cache[key]

    numpyro.util.maybe_jit = maybe_jit
    try:
        yield
    finally:
        numpyro.util.maybe_jit = original
