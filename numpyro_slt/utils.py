"""Utilities for compiling less: NumPyro's sampling loop reused across ``MCMC.run`` calls, and
JAX's persistent compilation cache.

:func:`reuse_loop_compilation` works around a NumPyro issue (pyro-ppl/numpyro#2171): up to
NumPyro 0.22, ``fori_collect`` wraps its loop body in a fresh ``jax.jit`` at every call and hands
it to the jitted loop as a static argument, so every ``MCMC.run(progress_bar=False)`` traces and
compiles the whole loop again, and a run written in segments
(:func:`~numpyro_slt.checkpoint.sample_checkpointed`) would pay that at every segment. On those
versions, inside the block, ``numpyro.util.maybe_jit`` is memoised so the same body gives the same
jitted objects and JAX's cache is hit; on later versions (fixed upstream) it is left alone. On
every version the block stacks sequential chains on the host (NumPyro stacks them in a compiled
program per collected field).

:func:`use_compilation_cache` turns on JAX's persistent compilation cache, which keys compiled
programs on their content. A study's heads of one layer lower to the same programs (the head is
data, see :func:`numpyro_slt.nn.restricted_posterior`), so with the cache each layer's sampling
loop, kernel init and observables compile once, not once per head; a rerun compiles nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import numpyro.infer.mcmc
import numpyro.util
from jax.experimental.compilation_cache import compilation_cache

__all__ = ["reuse_loop_compilation", "use_compilation_cache", "compilation_cache_for_run",
           "LOOP_RECOMPILES"]

CACHE_ENV = "NUMPYRO_SLT_COMPILATION_CACHE"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2] if part.isdigit())


#: Whether the installed NumPyro recompiles its sampling loop at every ``MCMC.run`` (up to 0.22).
LOOP_RECOMPILES = _version(numpyro.__version__) <= (0, 22)


@contextlib.contextmanager
def reuse_loop_compilation(cache: dict[tuple, Callable] | None = None) -> Iterator[None]:
    """Within the block, on NumPyro versions that recompile the loop (:data:`LOOP_RECOMPILES`),
    ``numpyro.util.maybe_jit(fn, *args, **kwargs)`` returns the jitted function made the first
    time for the same arguments (kept in ``cache``, a new dict by default, dropped when the block
    ends); on every version sequential chains are stacked on the host. Neither changes a
    draw."""
    cache = {} if cache is None else cache
    original = numpyro.util.maybe_jit
    original_laxmap = numpyro.infer.mcmc._laxmap

    def maybe_jit(fn: Callable, *args: Any, **kwargs: Any) -> Callable:
        key = (fn, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(fn, *args, **kwargs)
        return cache[key]

    if LOOP_RECOMPILES:
        numpyro.util.maybe_jit = maybe_jit
    numpyro.infer.mcmc._laxmap = _sequential_chains
    try:
        yield
    finally:
        numpyro.util.maybe_jit = original
        numpyro.infer.mcmc._laxmap = original_laxmap


@jax.jit
def _chain(xs: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda x: x[index], xs)


def _sequential_chains(fn: Callable, xs: Any) -> Any:
    """NumPyro's sequential chain map, stacking the chains' results on the host (NumPyro's
    ``jnp.stack`` compiles one program per collected field)."""
    count = jax.tree.leaves(xs)[0].shape[0]
    results = [fn(_chain(xs, i)) for i in range(count)]
    return jax.tree.map(lambda *chains: jax.device_put(np.stack([np.asarray(c) for c in chains])),
                        *results)


def use_compilation_cache(directory: str | os.PathLike | None = None,
                          min_compile_seconds: float = 0.1) -> Path | None:
    """Turn on JAX's persistent compilation cache, from the next compilation on.

    :param directory: where compiled programs are kept; default ``$NUMPYRO_SLT_COMPILATION_CACHE``
        or else ``~/.cache/numpyro-slt/jax`` (``$XDG_CACHE_HOME`` respected). The environment
        variable set to ``off`` disables the cache.
    :param min_compile_seconds: programs that compile faster than this are not kept.
    :return: the cache folder in use, or None when disabled. A folder the user already gave JAX
        (``jax_compilation_cache_dir``) is kept and returned.
    """
    if not min_compile_seconds >= 0:
        raise ValueError(f"min_compile_seconds must be >= 0, got {min_compile_seconds!r}.")
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return Path(configured)
    if directory is None:
        choice = os.environ.get(CACHE_ENV)
        if choice is not None and choice.strip().lower() in ("off", "0", "false", "no", ""):
            return None
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        directory = choice or base / "numpyro-slt" / "jax"
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    # JAX decides at its first compilation whether to use the cache; make it decide again
    compilation_cache.reset_cache()
    return path


@contextlib.contextmanager
def compilation_cache_for_run(directory: str | os.PathLike | None = None,
                              min_compile_seconds: float = 0.1) -> Iterator[Path | None]:
    """:func:`use_compilation_cache` for the duration of the block only; JAX's previous cache
    folder (usually none) is put back afterwards, so a command run inside a longer-lived process
    (a notebook, a test session) does not leave the cache on for everything compiled later."""
    previous = jax.config.jax_compilation_cache_dir
    try:
        yield use_compilation_cache(directory, min_compile_seconds)
    finally:
        if jax.config.jax_compilation_cache_dir != previous:
            jax.config.update("jax_compilation_cache_dir", previous)
            compilation_cache.reset_cache()
