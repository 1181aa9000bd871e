"""Sampling that survives interruption: draws go to disk every K draws, and a killed run resumes.

:func:`sample_checkpointed` runs ``numpyro.infer.MCMC`` in segments of ``checkpoint_every`` kept
draws. After the burn-in and after every segment it writes, atomically (write to a temporary file,
then ``os.replace``):

- ``observed_00000.nc``, …: with ``observe``, the observables of the segment's draws (an xarray
  Dataset with dims chain, draw, …), written before the segment itself;
- ``segment_00000.npz``, ``segment_00001.npz``, …: the draws (unless ``keep_draws=False``) and the
  per-draw statistics of a segment, shaped (chain, draw, …);
- ``checkpoint.pkl``: the kernel state after the last written segment and the number of segments;
- ``run.json``: the settings of the run, checked on resume, and ``"complete": true`` at the end.

A run killed at any moment (SIGKILL included) resumes with ``resume=True`` and loses at most the
segment in progress. Because each segment continues the chains from the saved state with the
state's own random keys, the draws of a resumed run equal those of an uninterrupted run with the
same seed, bit for bit on CPU. The sampling loop is compiled once for all segments of the same
length (see :mod:`numpyro_slt.utils`).

The result is a :class:`CheckpointedRun`: the draws and statistics of the whole run, its last
kernel state, and :meth:`CheckpointedRun.to_arviz`; :func:`numpyro_slt.llc` and
:func:`numpyro_slt.check_chains` accept it as they accept a finished ``MCMC``.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr
from numpyro.infer import MCMC
from numpyro.infer.mcmc import MCMCKernel

from ._arviz import from_groups, stats_dataset
from ._io import atomic_write, atomic_write_path
from ._validate import nonnegative_int, positive_int
from .utils import reuse_loop_compilation

__all__ = ["sample_checkpointed", "CheckpointedRun", "load_draws", "load_observed"]


@dataclass(frozen=True)
class CheckpointedRun:
    """Every draw of a :func:`sample_checkpointed` run, as if it had run in one piece.

    Attributes:
        samples: site → draws [chain, draw, ...] (empty when the run kept no draws).
        extra_fields: per-draw kernel statistics [chain, draw, ...] (for SGLD: the loss, the
            running mean excess loss and its count, nβ, L_n(w*), …).
        last_state: the kernel state after the last draw (continue from it with
            ``mcmc.post_warmup_state = run.last_state``).
        directory: the folder the run lives in.
    """

    samples: dict[str, np.ndarray]
    extra_fields: dict[str, Any]
    last_state: Any
    directory: Path

    def get_samples(self, group_by_chain: bool = False) -> dict[str, np.ndarray]:
        """The draws, as ``MCMC.get_samples``: [chain, draw, ...], or [chain·draw, ...]."""
        return self.samples if group_by_chain else _merge_chains(self.samples)

    def get_extra_fields(self, group_by_chain: bool = False) -> dict[str, Any]:
        """The per-draw statistics, as ``MCMC.get_extra_fields``."""
        return self.extra_fields if group_by_chain else _merge_chains(self.extra_fields)

    def sample_stats_dataset(self) -> xr.Dataset:
        """The statistics as an xarray Dataset with dims (chain, draw, ...)."""
        return stats_dataset(self.extra_fields)

    def observed(self) -> xr.Dataset:
        """The observables written with the run (see ``observe`` of :func:`sample_checkpointed`)."""
        return load_observed(self.directory)

    def to_arviz(self) -> Any:
        """ArviZ data of the installed ArviZ line (``InferenceData`` or ``DataTree``): the draws
        and the observables (when the run has them) in ``posterior``, the statistics in
        ``sample_stats``, both with chain and draw numbered 0, 1, …"""
        parts = []
        if self.samples:
            parts.append(stats_dataset(self.samples))
        if list(self.directory.glob("observed_*.nc")):
            parts.append(self.observed())
        if not parts:
            raise ValueError("the run kept no draws and no observables: there is no posterior "
                             "group; sample with keep_draws=True or observe=...")
        posterior = parts[0] if len(parts) == 1 else xr.merge(parts)
        stats = self.sample_stats_dataset()
        stats = stats.assign_coords(chain=np.arange(stats.sizes["chain"]),
                                    draw=np.arange(stats.sizes["draw"]))
        return from_groups(posterior, stats)


def _merge_chains(tree: dict[str, Any]) -> dict[str, Any]:
    return jax.tree.map(lambda x: np.reshape(x, (-1, *np.shape(x)[2:])), tree)

_SETTINGS = ("num_warmup", "num_samples", "num_chains", "chain_method", "thinning",
             "checkpoint_every", "seed", "keep_draws", "observed")


def sample_checkpointed(
    kernel: MCMCKernel,
    rng_key: jax.Array,
    *model_args: Any,
    directory: str | os.PathLike,
    num_warmup: int,
    num_samples: int,
    num_chains: int = 1,
    chain_method: str = "sequential",
    thinning: int = 1,
    checkpoint_every: int = 100,
    resume: bool = False,
    progress_bar: bool = True,
    extra_fields: tuple[str, ...] = (),
    on_segment: Callable[[int], None] | None = None,
    observe: Callable[[dict[str, Any]], xr.Dataset] | None = None,
    keep_draws: bool = True,
    jit_model_args: bool = False,
    **model_kwargs: Any,
) -> CheckpointedRun:
    """Run ``MCMC(kernel, ...)`` writing draws to ``directory`` every ``checkpoint_every`` draws.

    :param kernel: an MCMC kernel, e.g. :class:`numpyro_slt.SGLD`.
    :param rng_key: the seed; the same key gives the same draws, interrupted or not.
    :param directory: where the segments and the checkpoint live (created if needed).
    :param num_warmup: burn-in steps, as for ``MCMC``.
    :param num_samples: total number of steps after burn-in (kept draws = num_samples / thinning).
    :param checkpoint_every: kept draws per segment (``checkpoint_every * thinning`` steps); the
        last segment is shorter when ``num_samples / thinning`` is not a multiple of it.
    :param resume: continue the run found in ``directory``; without it an existing run there is an
        error (so nothing is overwritten by accident).
    :param on_segment: called with the number of segments written, after each one (for progress
        reports or tests).
    :param observe: called with each segment's draws (site → array [chain, draw, ...]); the
        Dataset it returns (dims chain and draw first) is written with the segment, so
        observables of a long run are on disk as soon as their draws are. Read them back with
        :func:`load_observed`.
    :param keep_draws: False writes no parameter draws, only the statistics and the observables,
        so disk and memory grow with draws × observables, not draws × parameters;
        ``get_samples()`` of the result is then empty.
    :param jit_model_args: NumPyro's option: pass the model arguments to the compiled sampling
        loop instead of embedding them in it as constants. With large data (a study's cached
        activations are tens of MB) this cuts the compile time several-fold; every model
        argument must then be an array or a pytree of arrays.
    :return: a :class:`CheckpointedRun` whose ``get_samples``, ``get_extra_fields`` and
        ``to_arviz()`` cover every draw of the run, as if it had run in one piece.
    """
    directory = Path(directory)
    num_samples = positive_int("num_samples", num_samples)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    thinning = positive_int("thinning", thinning)
    num_chains = positive_int("num_chains", num_chains)
    num_warmup = nonnegative_int("num_warmup", num_warmup)
    if num_samples % thinning:
        raise ValueError(f"num_samples={num_samples} must be a multiple of thinning={thinning}, "
                         "so that every segment keeps the same draws as one long run")
    if observe is not None and not callable(observe):
        raise ValueError(f"observe must be a function of a segment's draws, got {observe!r}")
    settings = {
        "num_warmup": int(num_warmup), "num_samples": int(num_samples),
        "num_chains": int(num_chains), "chain_method": chain_method, "thinning": int(thinning),
        "checkpoint_every": int(checkpoint_every),
        "seed": np.asarray(jax.random.key_data(rng_key) if _is_typed_key(rng_key)
                           else rng_key).tolist(),
        "keep_draws": bool(keep_draws), "observed": observe is not None,
    }
    total_draws = num_samples // thinning
    lengths = [checkpoint_every] * (total_draws // checkpoint_every)
    if total_draws % checkpoint_every:
        lengths.append(total_draws % checkpoint_every)

    def new_mcmc(draws: int, warmup: int = 0) -> MCMC:
        return MCMC(kernel, num_warmup=warmup, num_samples=draws * thinning,
                    num_chains=num_chains, chain_method=chain_method, thinning=thinning,
                    progress_bar=progress_bar, jit_model_args=jit_model_args)

    state, done = _start(directory, settings, resume)
    if state is None:
        warm = new_mcmc(lengths[0], num_warmup)
        warm.warmup(rng_key, *model_args, extra_fields=extra_fields, **model_kwargs)
        state = warm.post_warmup_state
        _write_pickle(directory / "checkpoint.pkl", {"state": jax.device_get(state), "segments": 0})
    mcmcs = {length: new_mcmc(length) for length in set(lengths)}  # one per segment length,
    mcmc = mcmcs[lengths[0]]  # reused so that its compiled loop is reused
    with reuse_loop_compilation():
        while done < len(lengths):
            mcmc = mcmcs[lengths[done]]
            mcmc.post_warmup_state = state
            mcmc.run(state.rng_key, *model_args, extra_fields=extra_fields, **model_kwargs)
            state = mcmc.last_state
            draws = mcmc.get_samples(group_by_chain=True)
            if observe is not None:
                observed = observe(draws)
                _check_observed(observed, num_chains, lengths[done])
                _write_netcdf(directory / f"observed_{done:05d}.nc", observed)
            segment = {
                **(_flatten("draws", draws) if keep_draws else {}),
                **_flatten("stats", mcmc.get_extra_fields(group_by_chain=True)),
            }
            _write_npz(directory / f"segment_{done:05d}.npz", segment)
            done += 1
            _write_pickle(directory / "checkpoint.pkl",
                          {"state": jax.device_get(state), "segments": done})
            if on_segment is not None:
                on_segment(done)
    _write_json(directory / "run.json", {**settings, "complete": True})
    draws, stats = load_draws(directory)
    return CheckpointedRun(samples=draws, extra_fields=stats, last_state=state,
                           directory=directory)


def load_draws(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(draws, statistics) of every segment written so far, concatenated along the draw axis."""
    directory = Path(directory)
    paths = sorted(directory.glob("segment_*.npz"))
    if not paths:
        raise ValueError(f"{directory} holds no segments; nothing has been sampled there yet")
    parts = []
    for path in paths:
        try:
            with np.load(path) as data:
                parts.append({k: data[k] for k in data.files})
        except Exception as err:  # truncated or corrupt (atomic writes rule out half-written)
            raise _unreadable(path, err) from None
    _fill_missing(parts)
    merged = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    draws = _unflatten(merged, "draws")
    stats = _unflatten(merged, "stats")
    return draws, stats


def _fill_missing(parts: list[dict[str, np.ndarray]]) -> None:
    """Give every segment every array: a statistic that older segments lack (a run resumed by a
    version that records more) is NaN there, shaped (chain, draws of that segment, ...)."""
    names = list(dict.fromkeys(name for part in parts for name in part))
    for part in parts:
        chains, draws = next(iter(part.values())).shape[:2]
        for name in names:
            if name not in part:
                like = next(p[name] for p in parts if name in p)
                dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
                part[name] = np.full((chains, draws, *like.shape[2:]), np.nan, dtype=dtype)


def load_observed(directory: str | os.PathLike) -> xr.Dataset:
    """The observables of every segment written so far (see ``observe`` of
    :func:`sample_checkpointed`), concatenated along ``draw``, with ``draw`` numbered 0, 1, …"""
    directory = Path(directory)
    segments = len(list(directory.glob("segment_*.npz")))
    paths = [directory / f"observed_{k:05d}.nc" for k in range(segments)]
    if not segments or not all(p.is_file() for p in paths):
        raise ValueError(f"{directory} holds no observables for its {segments} segments; was the "
                         "run made with observe=...?")
    parts = []
    for path in paths:
        try:
            with xr.open_dataset(path, engine="h5netcdf") as part:
                parts.append(part.load())
        except Exception as err:
            raise _unreadable(path, err) from None
    merged = xr.concat(parts, dim="draw", data_vars="minimal", coords="minimal",
                       compat="override")
    return merged.assign_coords(draw=np.arange(merged.sizes["draw"]))


def _unreadable(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path} is unreadable ({type(err).__name__}: {err}); the file was damaged "
                      f"after it was written. Delete {path.parent} to sample this run again.")


def _check_observed(observed: Any, num_chains: int, num_draws: int) -> None:
    if not isinstance(observed, xr.Dataset):
        raise TypeError(f"observe must return an xarray Dataset, got {type(observed).__name__}")
    sizes = (observed.sizes.get("chain"), observed.sizes.get("draw"))
    if sizes != (num_chains, num_draws):
        raise ValueError(f"observe returned (chain, draw) sizes {sizes}; expected "
                         f"{(num_chains, num_draws)}, one value per chain and draw of the segment")


def _start(directory: Path, settings: dict, resume: bool):
    """(state, segments done) of an existing run to resume, or (None, 0) for a fresh one."""
    run_file = directory / "run.json"
    if run_file.exists():
        if not resume:
            raise ValueError(
                f"{directory} already holds a run; pass resume=True to continue it, or choose "
                "another directory"
            )
        saved = json.loads(run_file.read_text())
        differing = sorted(k for k in _SETTINGS if saved.get(k) != settings[k])
        if differing:
            raise ValueError(
                f"cannot resume: the run in {directory} used other settings for {differing} "
                f"({ {k: saved.get(k) for k in differing} }); use the same settings or a new "
                "directory"
            )
        checkpoint = directory / "checkpoint.pkl"
        if not checkpoint.exists():  # killed during burn-in: start again
            return None, 0
        try:
            with open(checkpoint, "rb") as handle:
                saved_state = pickle.load(handle)
        except Exception as err:
            raise _unreadable(checkpoint, err) from None
        segments = saved_state["segments"]
        for stale in [*directory.glob("segment_*.npz"), *directory.glob("observed_*.nc")]:
            if int(stale.stem.split("_")[1]) >= segments:
                stale.unlink()  # written but not committed by the checkpoint
        return _upgrade(saved_state["state"]), segments
    if resume and directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} holds no run.json: it is not a numpyro-slt run to resume")
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(run_file, {**settings, "complete": False})
    return None, 0


def _upgrade(state: Any) -> Any:
    """A kernel state saved by an older version, with the fields added since filled in."""
    from .kernels.sgld import SGLDState, upgrade_state

    return upgrade_state(state) if isinstance(state, SGLDState) else state


def _is_typed_key(key) -> bool:
    return jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key)


def _flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for name, value in tree.items():
            out.update(_flatten(f"{prefix}/{name}", value))
        return out
    return {prefix: np.asarray(tree)}


def _unflatten(flat: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split("/")
        if parts[0] != prefix:
            continue
        node = out
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda stream: np.savez(stream, **arrays), "wb")


def _write_netcdf(path: Path, dataset: xr.Dataset) -> None:
    atomic_write_path(path, lambda temporary: dataset.to_netcdf(temporary, engine="h5netcdf"))


def _write_pickle(path: Path, obj: Any) -> None:
    atomic_write(path, lambda stream: pickle.dump(obj, stream), "wb")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda stream: json.dump(obj, stream, indent=2), "w")
