"""Your own Equinox language model: components named by pytree paths, the plain restricted
posterior and the observables at its draws.

Any Equinox module ``f`` that maps one sequence of token ids ``[seq]`` to next-token logits
``[seq, vocab]`` (or has a ``token_losses(tokens)`` method giving ℓ_s = −log p(t_{s+1} | t_≤s))
can be sampled and studied here. Its components are named by pytree paths, the strings
:func:`module_components` lists (``"layers[0].mlp.weight"``, ``"embedding.weight"``); a name that
is a prefix of paths (``"layers[0]"``, ``"layers[0].mlp"``) selects every array under it. The
weight split w = (u, c) is then the selected arrays c against the rest u, frozen at their
trained values:

    c ~ prior;   t[s, i+1] ~ Categorical(logits = f_{u*, c}(t[s, :i+1]))

with the same plate over sequences, the same n (predicted tokens) and the same site conventions
as :func:`~numpyro_slt.nn.posterior.language_model`, so ``temper``, ``localize``, the SG-MCMC
kernels and ``llc`` apply unchanged. :func:`module_observables` evaluates φ_C, L_q and every probe
token's loss at the draws, the inputs of :func:`numpyro_slt.susceptibilities`.

This is the plain path: every step runs the whole module (nothing upstream of the components is
cached, since the module's structure is unknown). For :class:`~numpyro_slt.nn.Transformer` use
:func:`~numpyro_slt.nn.restricted_posterior`, which caches the frozen part.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Float, Int

from .._validate import token_array
from .posterior import _batch_size, _latent_sites, _next_token_likelihood
from .transformer import _next_token_nll

__all__ = ["module_components", "module_sites", "module_at", "module_token_losses",
           "module_model", "module_observables", "checked_module_tokens", "module_vocabulary"]


def _paths(module: eqx.Module) -> dict[str, Array]:
    """Path string → array for every floating-point array leaf, in leaf order (paths without
    their leading dot, and with ``/``, reserved by ArviZ 1.x and netCDF, refused)."""
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(module, eqx.is_inexact_array))[0]
    out = {}
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path).lstrip(".")
        if "/" in name:
            raise ValueError(f"the module's parameter path {name!r} contains '/', which ArviZ "
                             "and netCDF reserve; rename the field or dict key.")
        out[name] = leaf
    return out


def module_components(module: eqx.Module) -> list[str]:
    """The pytree path of every floating-point array of ``module``, e.g.
    ``["embedding.weight", "layers[0].weight", "layers[0].bias", ...]``: the finest component
    names; a prefix of them names a larger component."""
    return list(_paths(module))


def _selected(module: eqx.Module, components: Iterable[str] | None) -> list[str]:
    paths = list(_paths(module))
    if components is None:
        return paths
    if isinstance(components, str):
        components = [components]
    chosen: list[str] = []
    for name in components:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a component of a module is a pytree path string, got {name!r}.")
        match = [p for p in paths if p == name or p.startswith((name + ".", name + "["))]
        if not match:
            raise ValueError(f"component {name!r} names no array of the module; its paths are "
                             f"{paths} (a prefix such as 'layers[0]' selects everything under "
                             "it).")
        overlap = sorted(set(match) & set(chosen))
        if overlap:
            raise ValueError(f"components overlap: {overlap} are selected twice; name each "
                             "array once.")
        chosen.extend(match)
    return [p for p in paths if p in chosen]


def module_sites(module: eqx.Module, components: Iterable[str] | None = None
                 ) -> dict[str, Float[Array, "*shape"]]:
    """The selected arrays by path: the center w* of the restricted posterior (every array when
    ``components`` is None)."""
    paths = _paths(module)
    return {p: paths[p] for p in _selected(module, components)}


def module_at(module: eqx.Module, values: Mapping[str, Array]) -> eqx.Module:
    """``module`` with the arrays at the paths of ``values`` replaced (shapes must match)."""
    paths = _paths(module)
    unknown = sorted(set(values) - set(paths))
    if unknown:
        raise ValueError(f"no array of the module has the path(s) {unknown}.")
    for name, value in values.items():
        if tuple(jnp.shape(value)) != tuple(paths[name].shape):
            raise ValueError(f"the value for {name!r} has shape {tuple(jnp.shape(value))}, "
                             f"expected {tuple(paths[name].shape)}.")
    names = list(values)

    def where(m):  # tree_at calls it on a copy whose leaves are placeholders, not arrays
        found = {jax.tree_util.keystr(path).lstrip("."): leaf
                 for path, leaf in jax.tree_util.tree_flatten_with_path(m)[0]}
        return [found[n] for n in names]

    return eqx.tree_at(where, module, [jnp.asarray(values[n], paths[n].dtype) for n in names])


def module_token_losses(module: eqx.Module | Callable,
                        tokens: Int[Array, " seq"]) -> Float[Array, " seq-1"]:
    """ℓ_s of one sequence: ``module.token_losses(tokens)`` when the module has it, else the
    cross-entropy of ``module(tokens[:-1])``'s logits against ``tokens[1:]``."""
    if hasattr(module, "token_losses"):
        return module.token_losses(tokens)
    logits = module(tokens[:-1])
    if logits.ndim != 2 or logits.shape[0] != tokens.shape[0] - 1:
        raise ValueError(f"the module must map a sequence [seq] to logits [seq, vocab]; for "
                         f"{tokens.shape[0] - 1} inputs it returned shape {logits.shape}.")
    return _next_token_nll(logits, tokens[1:])


def checked_module_tokens(name: str, module, tokens, d_vocab: int | None = None) -> np.ndarray:
    """``tokens`` ([sequences, length]) checked as token ids of ``module``: integer, at least
    two per sequence, and within the vocabulary (``d_vocab``, or the width of the module's
    logits when None, :func:`module_vocabulary`) — under ``jit`` an id out of range would
    silently be clipped."""
    tokens = np.asarray(tokens)
    if d_vocab is None:
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            token_array(name, tokens, d_vocab=2**31 - 1, n_ctx=2**31 - 1)
        d_vocab = module_vocabulary(module, tokens[0, :-1])
    return token_array(name, tokens, d_vocab=d_vocab, n_ctx=2**31 - 1)


def module_vocabulary(module, inputs) -> int:
    """The width of ``module(inputs)``'s logits (shapes only, nothing is computed)."""
    try:
        shape = jax.eval_shape(module, jnp.asarray(inputs)).shape
    except Exception as err:
        raise ValueError(f"could not infer the module's vocabulary from its logits ({err}); "
                         "pass d_vocab=.") from None
    return int(shape[-1])


def module_model(module: eqx.Module, components: Iterable[str] | None = None,
                 batch_size: int | None = None, prior_scale: float = 1.0, *,
                 d_vocab: int | None = None
                 ) -> Callable[[Int[Array, "sequences context"]], None]:
    """A NumPyro model ``model(tokens)`` of next-token prediction with ``module`` (module
    docstring): latent sites are the selected arrays, named by path, with placeholder priors
    N(0, prior_scale²) for :func:`numpyro_slt.localize` to replace; center:
    :func:`module_sites`. ``batch_size`` sequences per minibatch (None: all). Concrete tokens
    are checked against ``d_vocab`` (None: the width of the module's logits)."""
    names = _selected(module, components)
    batch_size = _batch_size(batch_size)
    shapes = {n: v.shape for n, v in module_sites(module, names).items()}

    vocabulary = [d_vocab]  # inferred at the first concrete call, then kept

    def model(tokens: Int[Array, "sequences context"]) -> None:
        if not isinstance(tokens, jax.core.Tracer):
            checked = checked_module_tokens("tokens", module, tokens, vocabulary[0])
            if vocabulary[0] is None:
                vocabulary[0] = module_vocabulary(module, checked[0, :-1])
        current = module_at(module, _latent_sites(shapes, prior_scale))
        _next_token_likelihood(
            tokens, batch_size,
            lambda rows, batch: jax.vmap(lambda seq: module_token_losses(current, seq))(batch))

    model.module = module
    model.components = tuple(names)
    return model


def module_observables(module: eqx.Module, draws: Mapping[str, Any],
                       probes: Mapping[str, Int[Array, "sequences length"]],
                       eval_tokens: Int[Array, "sequences length"], *,
                       d_vocab: int | None = None) -> xr.Dataset:
    """``sampling_loss`` L_q, ``phi`` φ_C = L_q(w) − L_q(w*) (chain, draw) and ``token_loss``
    ℓ_xy (chain, draw, token) at every draw of ``draws`` (path → ``[chain, draw, *shape]``, e.g.
    ``mcmc.get_samples(group_by_chain=True)``), with the token coordinates of
    :func:`~numpyro_slt.nn.observables.token_coordinates`: the inputs of
    :func:`numpyro_slt.susceptibilities`. One compiled program maps over the draws."""
    from .observables import token_coordinates

    names = [n for n in draws if n in _paths(module)]
    if not names:
        raise ValueError(f"draws hold none of the module's paths; got {sorted(draws)}.")
    stacked = {n: jnp.asarray(draws[n]) for n in names}
    chains, count = stacked[names[0]].shape[:2]
    eval_tokens = checked_module_tokens("eval_tokens", module, eval_tokens, d_vocab)
    if d_vocab is None:
        d_vocab = module_vocabulary(module, eval_tokens[0, :-1])
    eval_tokens = jnp.asarray(eval_tokens)
    probe_arrays = [jnp.asarray(checked_module_tokens(f"probes[{k!r}]", module, v, d_vocab))
                    for k, v in probes.items()]

    @eqx.filter_jit
    def evaluate(mod, flat):
        def one(values):
            current = module_at(mod, values)
            losses = jax.vmap(lambda seq: module_token_losses(current, seq))
            tokens = [losses(p).reshape(-1) for p in probe_arrays]
            return jnp.mean(losses(eval_tokens)), jnp.concatenate(tokens)
        return jax.lax.map(one, flat)

    flat = {n: v.reshape(chains * count, *v.shape[2:]) for n, v in stacked.items()}
    sampling, tokens = evaluate(module, flat)
    at_center = float(jnp.mean(jax.vmap(lambda s: module_token_losses(module, s))(eval_tokens)))
    coords = token_coordinates({k: np.asarray(v) for k, v in zip(probes, probe_arrays,
                                                                 strict=True)})
    sampling = np.asarray(sampling).reshape(chains, count)
    return xr.Dataset(
        {"sampling_loss": (("chain", "draw"), sampling),
         "phi": (("chain", "draw"), sampling - at_center),
         "token_loss": (("chain", "draw", "token"),
                        np.asarray(tokens).reshape(chains, count, -1)),
         "sampling_loss_at_center": at_center},
        coords={"chain": np.arange(chains), "draw": np.arange(count),
                "token_probe": ("token", coords["token_probe"]),
                "sequence": ("token", coords["sequence"]),
                "position": ("token", coords["position"])})
