"""Observables of a language model evaluated at the kept draws of a (restricted) run.

At every kept draw w = (u*, c) of component C (notation of docs/formulas.md):

- ``sampling_loss`` L_q(w): the mean next-token loss on a fixed evaluation set of the sampling
  distribution q (the same set at every draw);
- ``phi`` φ_C(w) = L_q(w) − L_q(w*), the observable localized on C;
- ``token_loss`` ℓ_xy(w) for every probe token: the loss of predicting token y = t[s, i+1] from
  context x = t[s, :i+1] of every probe sequence s and position i.

They are computed in one compiled call per token length (the evaluation set and the probes of
that length joined into one array): a ``jax.lax.map`` over the draws and,
within it, over chunks of ``token_chunk`` sequences, so the logits in memory at once stay small
(memory traffic, not arithmetic, bounds this on a CPU), with the frozen part of the network cached
once (:func:`~numpyro_slt.nn.caches.frozen_cache`). The result is an
``xarray.Dataset`` with dims (chain, draw[, token]) that :func:`add_observables` places in the
``posterior`` group of the run's ArviZ data, next to the draws.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Int

from .._arviz import posterior_group, with_posterior
from .._validate import positive_int, token_array
from .caches import frozen_cache
from .components import canonical_components
from .posterior import losses_at, network_at, parameter_sites
from .transformer import AttentionOnlyTransformer

__all__ = ["evaluate_observables", "ObservableEvaluator", "token_coordinates", "add_observables"]


def token_coordinates(probes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Coordinates of the flattened probe tokens, in the order of :func:`evaluate_observables`:
    ``token_probe`` (the probe's name), ``sequence`` (row in its probe) and ``position`` (index
    of the predicted token y in the row, 1 .. length − 1)."""
    probe, sequence, position = [], [], []
    for name, tokens in probes.items():
        rows, length = np.shape(tokens)
        probe.append(np.full(rows * (length - 1), name, dtype=object))
        sequence.append(np.repeat(np.arange(rows), length - 1))
        position.append(np.tile(np.arange(1, length), rows))
    return {"token_probe": np.concatenate(probe).astype(str), "sequence": np.concatenate(sequence),
            "position": np.concatenate(position)}


@eqx.filter_jit
def _batched_losses(network: AttentionOnlyTransformer, values, tokens, upstream,
                    components: tuple[str, ...] | None, chunk: int):
    """ℓ [batches, draw_batch, P·(S−1)]: every token's loss at every draw of ``values``
    [batches, draw_batch, ...]. Batches of draws are mapped over; within a batch, the sequences
    are mapped over in chunks of ``chunk`` (P a multiple of it), each chunk evaluated at the
    batch's draws at once (``vmap``), so the logits in memory are [draw_batch, chunk, S−1,
    vocab], not [draws, P, S−1, vocab]. With ``upstream``
    (:func:`~numpyro_slt.nn.caches.frozen_cache` of ``tokens``)
    only the part of the network downstream of the components runs per draw. The network is an
    argument, not a closure, so the compiled function is reused by every call with the same
    shapes and components (e.g. each segment of a checkpointed run)."""
    token_chunks = tokens.reshape(-1, chunk, tokens.shape[1])
    cache_chunks = jax.tree.map(lambda u: u.reshape(-1, chunk, *u.shape[1:]), upstream)

    def one_draw(vals, chunk_tokens, chunk_cache):
        if chunk_cache is None:
            return jax.vmap(network_at(network, vals, components).token_losses)(chunk_tokens)
        return jax.vmap(lambda seq, cached: losses_at(network, vals, components, seq,
                                                      cached=cached))(chunk_tokens, chunk_cache)

    def one_batch(batch_values):
        def one_chunk(args):
            chunk_tokens, chunk_cache = args
            return jax.vmap(one_draw, in_axes=(0, None, None))(batch_values, chunk_tokens,
                                                               chunk_cache)

        out = jax.lax.map(one_chunk, (token_chunks, cache_chunks))  # [chunks, k, chunk, S−1]
        return jnp.moveaxis(out, 1, 0).reshape(out.shape[1], -1)

    return jax.lax.map(one_batch, values)


def evaluate_observables(
    network: AttentionOnlyTransformer,
    draws: Mapping[str, np.ndarray],
    probes: Mapping[str, Int[Array, "sequences length"]],
    eval_tokens: Int[Array, "sequences length"],
    components: Iterable[str] | None = None,
    *,
    thinning: int = 1,
    draw_batch: int = 1,
    token_chunk: int = 16,
    fast_path: bool = True,
) -> xr.Dataset:
    """Evaluate ``sampling_loss``, ``phi`` and ``token_loss`` at the kept draws.

    :param network: the trained network (its parameters are w*).
    :param draws: site name → array ``[chain, draw, *site shape]`` (the samples of a run of
        :func:`~numpyro_slt.nn.posterior.language_model` with the same ``components``, e.g.
        ``mcmc.get_samples(group_by_chain=True)``); extra sites are ignored.
    :param probes: probe name → token array ``[sequences, length]`` (length ≤ n_ctx); probes may
        have different lengths.
    :param eval_tokens: the fixed evaluation set of the sampling distribution ``[E, length]``.
    :param components: the sampled components (None: the whole network).
    :param thinning: evaluate every ``thinning``-th draw.
    :param draw_batch: draws evaluated together on each chunk of sequences (``vmap``).
    :param token_chunk: sequences evaluated together; the logits held in memory at once are
        [draw_batch, token_chunk, length − 1, vocab].
    :param fast_path: cache the frozen part of the network once per token array
        (:func:`~numpyro_slt.nn.caches.frozen_cache`): for one head, its input and the rest
        of its layer's output, so each draw runs that head, the later layers and the
        unembedding; for components downstream of layer L > 0, x^L. Same losses up to float
        rounding.
    :returns: Dataset with ``sampling_loss`` and ``phi`` (chain, draw), ``token_loss``
        (chain, draw, token) with the coordinates of :func:`token_coordinates`, and the scalar
        ``sampling_loss_at_center`` L_q(w*).

    To evaluate several sets of draws of one run (e.g. segment by segment), build an
    :class:`ObservableEvaluator` once and call it on each: the checks, the frozen cache and
    L_q(w*) are then computed once.
    """
    evaluator = ObservableEvaluator(network, probes, eval_tokens, components,
                                    token_chunk=token_chunk, fast_path=fast_path)
    return evaluator(draws, thinning=thinning, draw_batch=draw_batch)


class ObservableEvaluator:
    """:func:`evaluate_observables` for one network, probe set, evaluation set and components,
    prepared once: the token arrays are checked, those of equal length are joined into one
    array (one compiled call per length at each evaluation, not one per probe), the frozen cache
    of the fast path is computed, and L_q(w*) is evaluated. Calling it on draws returns the
    Dataset of :func:`evaluate_observables` (same arguments)."""

    def __init__(
        self,
        network: AttentionOnlyTransformer,
        probes: Mapping[str, Int[Array, "sequences length"]],
        eval_tokens: Int[Array, "sequences length"],
        components: Iterable[str] | None = None,
        *,
        token_chunk: int = 16,
        fast_path: bool = True,
    ):
        self.network = network
        self.components = (None if components is None
                           else canonical_components(network.config, components))
        if not isinstance(probes, Mapping) or not probes:
            raise ValueError("probes must be a non-empty mapping: probe name -> token array.")
        config = network.config
        self.probes = {str(k): token_array(f"probes[{k!r}]", v, d_vocab=config.d_vocab,
                                           n_ctx=config.n_ctx) for k, v in probes.items()}
        eval_arr = token_array("eval_tokens", eval_tokens, d_vocab=config.d_vocab,
                               n_ctx=config.n_ctx)
        token_chunk = positive_int("token_chunk", token_chunk)
        self.center = parameter_sites(network, self.components)
        self.coords = token_coordinates(self.probes)
        # every array ("eval" first, then the probes), grouped by length into joined arrays
        arrays = {_EVAL: eval_arr, **{("probe", k): v for k, v in self.probes.items()}}
        self._groups: list[_JoinedTokens] = []
        for length in dict.fromkeys(a.shape[1] for a in arrays.values()):
            members = {k: a for k, a in arrays.items() if a.shape[1] == length}
            self._groups.append(_JoinedTokens.build(network, members, self.components,
                                                    token_chunk, fast_path))
        one = {k: jnp.asarray(v)[None, None] for k, v in self.center.items()}
        self.center_loss = float(self._losses(one, 1)[_EVAL].mean())

    def _losses(self, batched_values, total: int) -> dict:
        """ℓ [total, rows·(length − 1)] of every array (keys as in ``__init__``)."""
        out: dict = {}
        for group in self._groups:
            out.update(group.losses(self.network, batched_values, self.components, total))
        return out

    def __call__(self, draws: Mapping[str, np.ndarray], *, thinning: int = 1,
                 draw_batch: int = 1) -> xr.Dataset:
        thinning = positive_int("thinning", thinning)
        draw_batch = positive_int("draw_batch", draw_batch)
        center = self.center
        missing = sorted(set(center) - set(draws))
        if missing:
            raise ValueError(f"draws lack the sites {missing} of components {self.components}; "
                             "pass the samples of a run over the same components.")
        values = {k: np.asarray(draws[k])[:, ::thinning] for k in center}
        lead = {k: v.shape[:2] for k, v in values.items()}
        for k, v in values.items():
            if v.ndim < 2 or v.shape[2:] != center[k].shape:
                raise ValueError(f"draws[{k!r}] has shape {np.shape(draws[k])}; expected [chain, "
                                 f"draw, *{tuple(center[k].shape)}].")
        if len(set(lead.values())) != 1:
            raise ValueError(f"draws disagree on (chain, draw): {lead}.")
        num_chains, num_draws = next(iter(lead.values()))
        total = num_chains * num_draws
        batches = -(-total // draw_batch)
        padded = {
            k: np.concatenate([v.reshape(total, *v.shape[2:]),
                               np.repeat(v.reshape(total, *v.shape[2:])[-1:],
                                         batches * draw_batch - total, axis=0)])
            .reshape(batches, draw_batch, *v.shape[2:])
            for k, v in values.items()
        }
        losses = self._losses(padded, total)
        sampling_loss = losses[_EVAL].mean(axis=1).reshape(num_chains, num_draws)
        token_loss = np.concatenate([losses[("probe", k)] for k in self.probes], axis=1)
        token_loss = token_loss.reshape(num_chains, num_draws, -1)
        draw_index = np.arange(0, num_draws * thinning, thinning)
        return xr.Dataset(
            {
                "sampling_loss": (("chain", "draw"), sampling_loss),
                "phi": (("chain", "draw"), sampling_loss - self.center_loss),
                "token_loss": (("chain", "draw", "token"), token_loss),
                "sampling_loss_at_center": self.center_loss,
            },
            coords={"chain": np.arange(num_chains), "draw": draw_index,
                    **{k: ("token", v) for k, v in self.coords.items()}},
            attrs={"definition": "phi = L_q(w) - L_q(w*); token_loss = -log p(y | x, w)",
                   "thinning": thinning},
        )


_EVAL = ("eval", "")


class _JoinedTokens(NamedTuple):
    """Token arrays of one length joined row-wise and padded to whole chunks, with their
    frozen cache and where each array's rows start."""

    tokens: jnp.ndarray
    cache: object
    chunk: int
    rows: dict  # key -> (first row, number of rows)

    @classmethod
    def build(cls, network, members: dict, components, token_chunk: int,
              fast_path: bool) -> _JoinedTokens:
        joined = np.concatenate(list(members.values()))
        starts = np.cumsum([0, *[len(a) for a in members.values()]])[:-1]
        rows = {k: (int(start), len(a)) for (k, a), start in zip(members.items(), starts,
                                                                 strict=True)}
        chunk = min(token_chunk, len(joined))
        joined = np.concatenate([joined, np.repeat(joined[-1:], -len(joined) % chunk, axis=0)])
        # forward passes only: the projected unembedding pays for itself here (not in SGLD steps)
        cache = frozen_cache(network, joined, components, project=None) if fast_path else None
        return cls(jnp.asarray(joined), cache, chunk, rows)

    def losses(self, network, batched_values, components, total: int) -> dict:
        out = np.asarray(_batched_losses(network, batched_values, self.tokens, self.cache,
                                         components, self.chunk))
        out = out.reshape(out.shape[0] * out.shape[1], -1)[:total]
        per_row = self.tokens.shape[1] - 1
        return {k: out[:, start * per_row:(start + count) * per_row]
                for k, (start, count) in self.rows.items()}


def add_observables(data, observables: xr.Dataset):
    """Return the ArviZ data ``data`` (InferenceData or DataTree) with ``observables`` merged into
    its ``posterior`` group (matched on chain and draw; ``draw`` coordinates of thinned
    observables must be a subset of the run's)."""
    try:
        posterior = posterior_group(data)
    except (TypeError, ValueError):
        raise TypeError("data must be ArviZ data (InferenceData or DataTree) with a posterior "
                        f"group, got {type(data).__name__}.") from None
    return with_posterior(data, _merge(posterior, observables))


def _merge(posterior: xr.Dataset, observables: xr.Dataset) -> xr.Dataset:
    if posterior.sizes.get("chain") != observables.sizes.get("chain"):
        raise ValueError(f"the observables have {observables.sizes.get('chain')} chains, the run "
                         f"{posterior.sizes.get('chain')}; evaluate them on this run's draws.")
    extra = np.setdiff1d(observables["draw"].values, posterior["draw"].values)
    if extra.size:
        raise ValueError(f"observable draws {extra[:5].tolist()} are not draws of the run.")
    clash = sorted(set(observables.data_vars) & set(posterior.data_vars))
    if clash:
        raise ValueError(f"the posterior already holds {clash}; observables were added before.")
    return xr.merge([posterior, observables.assign_coords(chain=posterior["chain"].values)],
                    join="left", compat="override")
