"""Training an attention-only transformer: AdamW, warm-up then cosine decay, resumable checkpoints.

The objective is the mean next-token loss of a batch, (1/(B·(S−1))) Σ_b Σ_s ℓ_{b,s}. The
optimiser is ``clip_by_global_norm(grad_clip)`` followed by AdamW (decoupled weight decay on
weight matrices only: leaves with two or more axes) at learning rate η(t) for update t = 0, 1, …:

    η(t) = η_max · t / T_w                                          for t < T_w  (linear warm-up)
    η(t) = η_end + (η_max − η_end) · ½ (1 + cos(π (t − T_w) / (T − T_w)))   for T_w <= t <= T

with T_w = ``warmup_steps``, T = ``steps``, η_max = ``learning_rate`` and
η_end = ``final_lr_fraction`` · η_max (``optax.warmup_cosine_decay_schedule``).

The batch of step t is drawn with replacement from the rows of the token array with the key
``fold_in(PRNGKey(seed), t)``, so it depends only on the seed and the step number: a run
resumed from a checkpoint sees the same batches, and on a given machine ends with the same
parameters, bit for bit, as an uninterrupted one.

A checkpoint directory holds ``state_<step>.eqx`` (the network and the optimiser state, through
``equinox.tree_serialise_leaves``) and ``checkpoint.json`` (step, training and model configs,
the size and SHA-256 of the state file, a fingerprint of the data, the loss history). Both are
written to a temporary file first and moved into place with ``os.replace``; the JSON is written
last and is the commit point, so a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._config import checked_fields
from .._io import atomic_write, sha256_of
from .._validate import (
    nonnegative_int,
    nonnegative_number,
    positive_int,
    positive_number,
    token_array,
)
from ..data.synthetic import repeated_random_tokens
from .config import TransformerConfig
from .induction import default_probe_length, score_from_patterns
from .transformer import AttentionOnlyTransformer

__all__ = [
    "TrainConfig",
    "batch_at",
    "learning_rate_schedule",
    "load_checkpoint",
    "make_optimizer",
    "train",
]

CHECKPOINT_JSON = "checkpoint.json"
_FORMAT = "numpyro-slt-train-checkpoint-1"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        steps: total number of optimiser updates T (the schedule's length).
        batch_size: sequences per batch B.
        learning_rate: peak learning rate η_max, reached after the warm-up.
        warmup_steps: linear warm-up length T_w (0 <= T_w < T).
        weight_decay: AdamW decoupled weight decay λ (applied to weight matrices only).
        seed: seed of the batch draws and of the evaluation probe.
        checkpoint_every: write a checkpoint every this many steps (0: only at the end); needs
            a ``checkpoint_dir``.
        eval_every: every this many steps compute the induction / previous-token scores on a
            fixed repeated-random-token probe and record them (0: never).
        grad_clip: maximum global gradient norm (``optax.clip_by_global_norm``).
        final_lr_fraction: η_end / η_max at the end of the cosine decay.
        b1, b2: Adam's moment decay rates.
        eval_sequences: number of probe sequences for the scores.
    """

    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 100
    grad_clip: float = 1.0
    final_lr_fraction: float = 0.1
    b1: float = 0.9
    b2: float = 0.99
    eval_sequences: int = 16

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_sequences"):
            positive_int(f"TrainConfig.{name}", getattr(self, name))
        for name in ("warmup_steps", "seed", "checkpoint_every", "eval_every"):
            nonnegative_int(f"TrainConfig.{name}", getattr(self, name))
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"TrainConfig.warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})."
            )
        for name in ("learning_rate", "grad_clip"):
            positive_number(f"TrainConfig.{name}", getattr(self, name))
        for name in ("weight_decay", "final_lr_fraction"):
            nonnegative_number(f"TrainConfig.{name}", getattr(self, name))
        for name in ("b1", "b2"):
            if nonnegative_number(f"TrainConfig.{name}", getattr(self, name)) >= 1:
                raise ValueError(f"TrainConfig.{name} must lie in [0, 1), got "
                                 f"{getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**checked_fields(cls, data))


# ---------------------------------------------------------------------------- optimiser, batches


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """η(t): linear warm-up from 0 to η_max over T_w steps, then cosine decay to η_end at T."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(config.learning_rate),
        warmup_steps=config.warmup_steps,
        decay_steps=config.steps,
        end_value=float(config.learning_rate) * float(config.final_lr_fraction),
    )


def _decay_mask(params):
    return jax.tree_util.tree_map(lambda x: x.ndim >= 2, params)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm(grad_clip), adamw(schedule, b1, b2, weight_decay))``."""
    return optax.chain(
        optax.clip_by_global_norm(float(config.grad_clip)),
        optax.adamw(
            learning_rate_schedule(config),
            b1=float(config.b1),
            b2=float(config.b2),
            weight_decay=float(config.weight_decay),
            mask=_decay_mask,
        ),
    )


def batch_at(tokens: jax.Array, seed: int, step: int | jax.Array, batch_size: int) -> jax.Array:
    """Batch of step ``step``: rows ``randint(fold_in(PRNGKey(seed), step), (B,), 0, N)``."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    rows = jax.random.randint(key, (batch_size,), 0, tokens.shape[0])
    return tokens[rows]


def _check_data(network: AttentionOnlyTransformer, tokens) -> jax.Array:
    c = network.config
    return jnp.asarray(token_array("tokens", tokens, d_vocab=c.d_vocab, n_ctx=c.n_ctx))


def _fingerprint(tokens: jax.Array) -> str:
    arr = np.ascontiguousarray(np.asarray(tokens, dtype=np.int32))
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _make_step(optimizer: optax.GradientTransformation, seed: int, batch_size: int):
    @eqx.filter_jit
    def step(network, opt_state, tokens, t):
        batch = batch_at(tokens, seed, t, batch_size)

        def loss_fn(net):
            return jnp.mean(jax.vmap(net.token_losses)(batch))

        loss, grads = eqx.filter_value_and_grad(loss_fn)(network)
        params = eqx.filter(network, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(network, updates), opt_state, loss

    return step


@eqx.filter_jit
def _probe_scores(network, probe, length):
    patterns = jax.vmap(network.attention_patterns)(probe)
    induction, previous = score_from_patterns(patterns, length)
    losses = jax.vmap(network.token_losses)(probe)
    return (induction, previous, jnp.mean(losses[:, : length - 1]),
            jnp.mean(losses[:, length : 2 * length - 1]))


def _probe(network: AttentionOnlyTransformer, config: TrainConfig):
    """The fixed evaluation probe: repeated random tokens over the whole vocabulary, drawn from
    a key of ``config.seed`` that no training batch uses."""
    length = default_probe_length(network)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2**31 - 1)
    probe = repeated_random_tokens(key, config.eval_sequences, length, 0, network.config.d_vocab)
    return jnp.asarray(probe), length


def _evaluate(network, probe, length, step: int) -> dict[str, Any]:
    induction, previous, first, second = _probe_scores(network, probe, length)
    induction, previous = np.asarray(induction), np.asarray(previous)
    later = induction[1:] if induction.shape[0] > 1 else induction
    return {
        "step": step,
        "best_induction": float(later.max()),
        "best_previous_token": float(previous[0].max()),
        "loss_first": float(first),
        "loss_second": float(second),
        "induction": induction.round(4).tolist(),
        "previous_token": previous.round(4).tolist(),
    }


# ---------------------------------------------------------------------------- training loop


def train(
    network: AttentionOnlyTransformer,
    tokens,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    *,
    stop_at: int | None = None,
) -> tuple[AttentionOnlyTransformer, dict[str, Any]]:
    """Train ``network`` on the rows of ``tokens`` ``[N, S]`` (S <= n_ctx) for ``config.steps``.

    :param network: the initial network (with ``resume=True``: a network of the checkpoint's
        shape; its values are replaced by the checkpoint's).
    :param tokens: integer array ``[N, S]``; the batch of step t is :func:`batch_at`.
    :param config: a :class:`TrainConfig`.
    :param checkpoint_dir: where checkpoints go (created); ``None`` writes none.
    :param resume: continue from the checkpoint in ``checkpoint_dir`` (the training config,
        the model config and the data must match the saved ones); without a checkpoint there,
        start from scratch.
    :param progress: show a tqdm bar with the loss and the latest best layer-1 induction score.
    :param stop_at: stop after this many steps (a checkpoint is written there) while keeping the
        schedule of ``config.steps``; used to split a run, e.g. to test resumption.
    :returns: ``(network, history)`` with ``history = {"loss": [loss of step t, …],
        "eval": [{"step", "best_induction", "best_previous_token", "loss_first",
        "loss_second", "induction", "previous_token"}, …], "tokens_per_second": float,
        "step": steps done}``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}.")
    if not isinstance(network, AttentionOnlyTransformer):
        raise TypeError(f"network must be an AttentionOnlyTransformer, got {type(network)}.")
    data = _check_data(network, tokens)
    fingerprint = _fingerprint(data)
    end = config.steps if stop_at is None else int(stop_at)
    if not 0 <= end <= config.steps:
        raise ValueError(f"stop_at must lie in [0, steps={config.steps}], got {stop_at}.")
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if resume and directory is None:
        raise ValueError("resume=True needs a checkpoint_dir.")

    optimizer = make_optimizer(config)
    opt_state = optimizer.init(eqx.filter(network, eqx.is_inexact_array))
    history: dict[str, Any] = {"loss": [], "eval": [], "tokens_per_second": None, "step": 0}
    start = 0
    if resume and (directory / CHECKPOINT_JSON).exists():
        meta = _read_meta(directory)
        _match("model config", meta["model_config"], network.config.to_dict())
        _match("training config", meta["train_config"], config.to_dict(),
               ignore=("checkpoint_every",))
        if meta.get("data_fingerprint") != fingerprint:
            raise ValueError(
                f"the token array differs from the one the checkpoint in {directory} was trained "
                f"on (fingerprint {fingerprint} vs {meta.get('data_fingerprint')}); resume with "
                "the same data or start a new run."
            )
        network, opt_state = _read_state(directory, meta, (network, opt_state))
        start = int(meta["step"])
        history = meta["history"]
        if start > end:
            raise ValueError(f"the checkpoint is at step {start}, beyond stop_at={end}.")

    step_fn = _make_step(optimizer, config.seed, config.batch_size)
    probe, length = _probe(network, config)
    tokens_per_step = config.batch_size * (data.shape[1] - 1)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=end, initial=start, desc="train", dynamic_ncols=True)
    pending: list[jax.Array] = []
    last_eval = history["eval"][-1]["best_induction"] if history["eval"] else None
    t0, trained = None, 0
    try:
        for t in range(start, end):
            network, opt_state, loss = step_fn(network, opt_state, data, jnp.int32(t))
            pending.append(loss)
            if t == start:
                jax.block_until_ready(loss)  # exclude compilation from the throughput
                t0 = time.perf_counter()
            else:
                trained += 1
            done = t + 1
            evaluate = config.eval_every and (
                done % config.eval_every == 0 or done == config.steps
            )
            save = directory is not None and (
                done == end or (config.checkpoint_every and done % config.checkpoint_every == 0)
            )
            if evaluate or save or bar is not None and (done % 10 == 0 or done == end):
                history["loss"].extend(float(x) for x in pending)
                pending = []
                if evaluate:
                    record = _evaluate(network, probe, length, done)
                    history["eval"].append(record)
                    last_eval = record["best_induction"]
                if t0 is not None and trained:
                    history["tokens_per_second"] = trained * tokens_per_step / (
                        time.perf_counter() - t0
                    )
                history["step"] = done
                if save:
                    _write_checkpoint(directory, network, opt_state, config, history,
                                      fingerprint, done)
                if bar is not None:
                    postfix = {"loss": f"{history['loss'][-1]:.3f}"}
                    if last_eval is not None:
                        postfix["ind"] = f"{last_eval:.3f}"
                    bar.set_postfix(postfix, refresh=False)
                    bar.update(done - bar.n)
    finally:
        if bar is not None:
            bar.close()
    history["loss"].extend(float(x) for x in pending)
    history["step"] = end
    return network, history


# ---------------------------------------------------------------------------- checkpoints


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write, "wb")


def _write_checkpoint(directory: Path, network, opt_state, config: TrainConfig,
                      history: dict, fingerprint: str, step: int) -> None:
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
        "train_config": config.to_dict(),
        "data_fingerprint": fingerprint,
        "history": history,
    }
    text = json.dumps(meta, indent=1).encode()
    _atomic_write_bytes(directory / CHECKPOINT_JSON, lambda f: f.write(text))
    for old in directory.glob("state_*.eqx"):  # older states are superseded by the commit above
        if old.name != state_name:
            old.unlink(missing_ok=True)


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    if path.name == CHECKPOINT_JSON:
        return path.parent
    raise FileNotFoundError(
        f"no checkpoint at {path}: pass a checkpoint directory (holding {CHECKPOINT_JSON})."
    )


def _read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / CHECKPOINT_JSON
    if not meta_path.exists():
        raise FileNotFoundError(f"no {CHECKPOINT_JSON} in {directory}: not a training checkpoint.")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is corrupt or truncated (not valid JSON: {err}).") from None
    needed = ("format", "step", "state_file", "state_bytes", "state_sha256", "model_config",
              "train_config", "history")
    missing = [k for k in needed if not isinstance(meta, dict) or k not in meta]
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


def _read_state(directory: Path, meta: dict, like):
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


def _match(what: str, saved: dict, expected: dict, ignore: tuple[str, ...] = ()) -> None:
    diffs = [
        f"{k}: saved {saved.get(k)!r}, expected {expected.get(k)!r}"
        for k in sorted(set(saved) | set(expected))
        if k not in ignore and saved.get(k) != expected.get(k)
    ]
    if diffs:
        raise ValueError(f"checkpoint {what} does not match: " + "; ".join(diffs) + ".")


def load_checkpoint(
    path: str | os.PathLike, config: TransformerConfig | None = None
) -> AttentionOnlyTransformer:
    """The network saved in the checkpoint directory ``path`` (or its ``checkpoint.json``).

    If ``config`` is given, the saved model config must equal it; otherwise a ValueError names
    every mismatching field. A truncated or corrupt state file (size or SHA-256 differing from
    the record in ``checkpoint.json``) or JSON file is refused with a ValueError.
    """
    directory = _resolve(path)
    meta = _read_meta(directory)
    if config is not None:
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}.")
        _match("model config", meta["model_config"], config.to_dict())
    saved_config = TransformerConfig.from_dict(meta["model_config"])
    train_config = TrainConfig.from_dict(meta["train_config"])

    def template():
        net = AttentionOnlyTransformer(saved_config, key=jax.random.PRNGKey(0))
        return net, make_optimizer(train_config).init(eqx.filter(net, eqx.is_inexact_array))

    network, _ = _read_state(directory, meta, eqx.filter_eval_shape(template))
    return network
