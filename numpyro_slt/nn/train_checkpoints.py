"""Training checkpoints on disk: writing the state of a run, checking it and reading it back.

A checkpoint directory holds ``state_<step>.eqx`` (the network and the optimiser state, through
``equinox.tree_serialise_leaves``) and ``checkpoint.json`` (step, training and model configs,
the size and SHA-256 of the state file, a fingerprint of the data, the loss history). Both are
written to a temporary file first and moved into place with ``os.replace``; the JSON is written
last and is the commit point, so a run killed at any moment leaves the previous checkpoint intact.

Reading refuses, with an error naming the cause, a missing or invalid ``checkpoint.json``, a state
file whose size or SHA-256 differs from the record, a state whose array shapes differ from the
model's, and, on resumption, a model config, training config or token array other than the saved
ones. :func:`numpyro_slt.nn.train` writes and resumes these checkpoints;
:func:`numpyro_slt.nn.load_checkpoint` reads the network out of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._io import atomic_write, sha256_of

__all__ = [
    "CHECKPOINT_JSON",
    "checkpoint_directory",
    "data_fingerprint",
    "match_config",
    "read_meta",
    "read_state",
    "resume_state",
    "write_checkpoint",
]

CHECKPOINT_JSON = "checkpoint.json"
_FORMAT = "numpyro-slt-train-checkpoint-1"
_NEEDED = ("format", "step", "state_file", "state_bytes", "state_sha256", "model_config",
           "train_config", "history")


def data_fingerprint(tokens) -> str:
    """First 16 hex digits of the SHA-256 of the token array's shape and int32 bytes: a resumed
    run must train on the same data."""
    arr = np.ascontiguousarray(np.asarray(tokens, dtype=np.int32))
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- writing


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, "wb")


def write_checkpoint(directory: Path, network, opt_state, train_config: dict[str, Any],
                     history: dict, fingerprint: str, step: int) -> None:
    """Write ``(network, opt_state)`` after ``step`` updates to ``directory``, then its record
    ``checkpoint.json`` (the commit point), then delete the states it supersedes."""
    directory.mkdir(parents=True, exist_ok=True)
    state_name = f"state_{step:08d}.eqx"
    state_path = directory / state_name
    _atomic_write_bytes(state_path, lambda f: eqx.tree_serialise_leaves(f, (network, opt_state)))
    meta = {
        "format": _FORMAT,
        "step": step,
        "state_file": state_name,
        "state_bytes": state_path.stat().st_size,
        "state_sha256": sha256_of(state_path),
        "model_config": network.config.to_dict(),
        "train_config": train_config,
        "data_fingerprint": fingerprint,
        "history": history,
    }
    text = json.dumps(meta, indent=1).encode()
    _atomic_write_bytes(directory / CHECKPOINT_JSON, lambda f: f.write(text))
    for old in directory.glob("state_*.eqx"):  # older states are superseded by the commit above
        if old.name != state_name:
            old.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- reading


def checkpoint_directory(path: str | os.PathLike) -> Path:
    """The checkpoint directory named by ``path``: the directory itself or its
    ``checkpoint.json``."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name == CHECKPOINT_JSON:
        return path.parent
    raise FileNotFoundError(
        f"no checkpoint at {path}: pass a checkpoint directory (holding {CHECKPOINT_JSON})."
    )


def read_meta(directory: Path) -> dict[str, Any]:
    """The record ``checkpoint.json`` of ``directory``, checked for its format and fields."""
    meta_path = directory / CHECKPOINT_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"no {CHECKPOINT_JSON} in {directory}: not a training checkpoint.")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is corrupt or truncated (not valid JSON: {err}).") from None
    missing = [k for k in _NEEDED if not isinstance(meta, dict) or k not in meta]
    if missing or meta.get("format") != _FORMAT:
        raise ValueError(
            f"{meta_path} is not a numpyro-slt training checkpoint (format "
            f"{meta.get('format') if isinstance(meta, dict) else None!r}, missing {missing})."
        )
    return meta


def _verify_state_file(directory: Path, meta: dict) -> Path:
    state_path = directory / meta["state_file"]
    if not state_path.exists():
        raise FileNotFoundError(f"checkpoint state file {state_path} is missing.")
    size = state_path.stat().st_size
    if size != meta["state_bytes"]:
        raise ValueError(
            f"checkpoint state file {state_path} is truncated or corrupt: {size} bytes, "
            f"expected {meta['state_bytes']}."
        )
    if sha256_of(state_path) != meta["state_sha256"]:
        raise ValueError(
            f"checkpoint state file {state_path} is corrupt: its SHA-256 does not match the one "
            f"recorded in {CHECKPOINT_JSON}."
        )
    return state_path


def read_state(directory: Path, meta: dict, like):
    """The saved state, a pytree shaped like ``like`` (arrays or ``ShapeDtypeStruct``s), after
    checking the state file against ``meta`` and every array's shape and dtype against ``like``."""
    state_path = _verify_state_file(directory, meta)
    template = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if eqx.is_array(x) else x, like
    )
    try:
        loaded = eqx.tree_deserialise_leaves(state_path, template)
    except Exception as err:  # reported as a clear error below
        raise ValueError(f"could not read checkpoint state {state_path}: {err}") from err
    bad = [
        f"{jax.tree_util.keystr(path)}: saved {a.shape} {a.dtype}, expected {b.shape} {b.dtype}"
        for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(loaded), jax.tree_util.tree_leaves(template),
            strict=True,
        )
        if eqx.is_array(a) and (a.shape != b.shape or a.dtype != b.dtype)
    ]
    if bad:
        raise ValueError(f"checkpoint {state_path} does not match the model: " + "; ".join(bad))
    return loaded


def match_config(what: str, saved: dict, expected: dict, ignore: tuple[str, ...] = ()) -> None:
    """Raise a ValueError naming every field (outside ``ignore``) where ``saved`` and
    ``expected`` differ."""
    diffs = [
        f"{k}: saved {saved.get(k)!r}, expected {expected.get(k)!r}"
        for k in sorted(set(saved) | set(expected))
        if k not in ignore and saved.get(k) != expected.get(k)
    ]
    if diffs:
        raise ValueError(f"checkpoint {what} does not match: " + "; ".join(diffs) + ".")


def resume_state(directory: Path, network, opt_state, train_config: dict[str, Any],
                 fingerprint: str) -> tuple[Any, Any, int, dict[str, Any]] | None:
    """``(network, opt_state, step, history)`` of the checkpoint in ``directory``, or ``None``
    when there is none.

    The saved model config must equal ``network``'s, the training config ``train_config``
    (except ``checkpoint_every``, which may change between the parts of a run) and the data
    fingerprint ``fingerprint``; ``network`` and ``opt_state`` give the shapes of the state.
    """
    if not (directory / CHECKPOINT_JSON).exists():
        return None
    meta = read_meta(directory)
    match_config("model config", meta["model_config"], network.config.to_dict())
    match_config("training config", meta["train_config"], train_config,
                 ignore=("checkpoint_every",))
    if meta.get("data_fingerprint") != fingerprint:
        raise ValueError(
            f"the token array differs from the one the checkpoint in {directory} was trained "
            f"on (fingerprint {fingerprint} vs {meta.get('data_fingerprint')}); resume with "
            "the same data or start a new run."
        )
    network, opt_state = read_state(directory, meta, (network, opt_state))
    return network, opt_state, int(meta["step"]), meta["history"]
