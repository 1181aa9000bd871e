"""Sampling that survives interruption: draws go to disk every K draws, and a killed run resumes.

:func:`sample_checkpointed` runs ``numpyro.infer.MCMC`` in segments of ``checkpoint_every`` kept
draws. After the burn-in and after every segment it writes, atomically (write to a temporary file,
then ``os.replace``):

- ``segment_00000.npz``, ``segment_00001.npz``, …: the draws and per-draw statistics of a segment,
  shaped (chain, draw, …);
- ``checkpoint.pkl``: the kernel state after the last written segment and the number of segments;
- ``run.json``: the settings of the run, checked on resume, and ``"complete": true`` at the end.

A run killed at any moment (SIGKILL included) resumes with ``resume=True`` and loses at most the
segment in progress. Because each segment continues the chains from the saved state with the
state's own random keys, the draws of a resumed run equal those of an uninterrupted run with the
same seed, bit for bit on CPU.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from numpyro.infer import MCMC
from numpyro.infer.mcmc import MCMCKernel

from ._io import atomic_write

__all__ = ["sample_checkpointed", "load_draws"]

_SETTINGS = ("num_warmup", "num_samples", "num_chains", "chain_method", "thinning",
             "checkpoint_every", "seed")


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
    **model_kwargs: Any,
) -> MCMC:
    """Run ``MCMC(kernel, ...)`` writing draws to ``directory`` every ``checkpoint_every`` draws.

    :param kernel: an MCMC kernel, e.g. :class:`numpyro_slt.SGLD`.
    :param rng_key: the seed; the same key gives the same draws, interrupted or not.
    :param directory: where the segments and the checkpoint live (created if needed).
    :param num_warmup: burn-in steps, as for ``MCMC``.
    :param num_samples: total number of steps after burn-in (kept draws = num_samples / thinning).
    :param checkpoint_every: kept draws per segment; ``checkpoint_every * thinning`` steps.
    :param resume: continue the run found in ``directory``; without it an existing run there is an
        error (so nothing is overwritten by accident).
    :param on_segment: called with the number of segments written, after each one (for progress
        reports or tests).
    :return: an ``MCMC`` whose ``get_samples``, ``get_extra_fields`` and ``az.from_numpyro`` cover
        every draw of the run, as if it had run in one piece.
    """
    directory = Path(directory)
    for name, value in (("num_samples", num_samples), ("checkpoint_every", checkpoint_every),
                        ("thinning", thinning), ("num_chains", num_chains)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(num_warmup) != num_warmup or num_warmup < 0:
        raise ValueError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    steps_per_segment = checkpoint_every * thinning
    if num_samples % steps_per_segment:
        raise ValueError(
            f"num_samples={num_samples} must be a multiple of checkpoint_every * thinning = "
            f"{steps_per_segment}, so that every segment keeps the same draws as one long run"
        )
    settings = {
        "num_warmup": int(num_warmup), "num_samples": int(num_samples),
        "num_chains": int(num_chains), "chain_method": chain_method, "thinning": int(thinning),
        "checkpoint_every": int(checkpoint_every),
        "seed": np.asarray(jax.random.key_data(rng_key) if _is_typed_key(rng_key)
                           else rng_key).tolist(),
    }

    def new_mcmc(warmup: int) -> MCMC:
        return MCMC(kernel, num_warmup=warmup, num_samples=steps_per_segment,
                    num_chains=num_chains, chain_method=chain_method, thinning=thinning,
                    progress_bar=progress_bar)

    state, done = _start(directory, settings, resume)
    if state is None:
        warm = new_mcmc(num_warmup)
        warm.warmup(rng_key, *model_args, extra_fields=extra_fields, **model_kwargs)
        state = warm.post_warmup_state
        _write_pickle(directory / "checkpoint.pkl", {"state": jax.device_get(state), "segments": 0})
    total_segments = num_samples // steps_per_segment
    mcmc = new_mcmc(0)
    while done < total_segments:
        mcmc.post_warmup_state = state
        mcmc.run(state.rng_key, *model_args, extra_fields=extra_fields, **model_kwargs)
        state = mcmc.last_state
        segment = {
            **_flatten("draws", mcmc.get_samples(group_by_chain=True)),
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
    mcmc._states = {mcmc._sample_field: draws, **stats}
    mcmc._states_flat = None
    mcmc._last_state = state
    return mcmc


def load_draws(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(draws, statistics) of every segment written so far, concatenated along the draw axis."""
    directory = Path(directory)
    paths = sorted(directory.glob("segment_*.npz"))
    if not paths:
        raise ValueError(f"{directory} holds no segments; nothing has been sampled there yet")
    parts = []
    for path in paths:
        with np.load(path) as data:
            parts.append({k: data[k] for k in data.files})
    merged = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    draws = _unflatten(merged, "draws")
    stats = _unflatten(merged, "stats")
    return draws, stats


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
        with open(checkpoint, "rb") as handle:
            saved_state = pickle.load(handle)
        segments = saved_state["segments"]
        for stale in directory.glob("segment_*.npz"):
            if int(stale.stem.split("_")[1]) >= segments:
                stale.unlink()  # written but not committed by the checkpoint
        return saved_state["state"], segments
    if resume and directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} holds no run.json: it is not a numpyro-slt run to resume")
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(run_file, {**settings, "complete": False})
    return None, 0


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


def _write_pickle(path: Path, obj: Any) -> None:
    atomic_write(path, lambda stream: pickle.dump(obj, stream), "wb")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda stream: json.dump(obj, stream, indent=2), "w")
