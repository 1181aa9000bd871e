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

Checkpoints (their files, checks and resumption) are :mod:`numpyro_slt.nn.train_checkpoints`.
"""

from __future__ import annotations

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
from .train_checkpoints import (
    checkpoint_directory,
    data_fingerprint,
    match_config,
    read_meta,
    read_state,
    resume_state,
    write_checkpoint,
)
from .transformer import AttentionOnlyTransformer

__all__ = [
    "TrainConfig",
    "batch_at",
    "learning_rate_schedule",
    "load_checkpoint",
    "make_optimizer",
    "train",
]

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
    fingerprint = data_fingerprint(data)
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
    resumed = resume_state(directory, network, opt_state, config.to_dict(), fingerprint
                           ) if resume else None
    if resumed is not None:  # None: no checkpoint there yet, start from scratch
        network, opt_state, start, history = resumed
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
                    write_checkpoint(directory, network, opt_state, config.to_dict(), history,
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


# ---------------------------------------------------------------------------- reading a network


def load_checkpoint(
    path: str | os.PathLike, config: TransformerConfig | None = None
) -> AttentionOnlyTransformer:
    """The network saved in the checkpoint directory ``path`` (or its ``checkpoint.json``).

    If ``config`` is given, the saved model config must equal it; otherwise a ValueError names
    every mismatching field. A truncated or corrupt state file (size or SHA-256 differing from
    the record in ``checkpoint.json``) or JSON file is refused with a ValueError.

    It lives here rather than in :mod:`~numpyro_slt.nn.train_checkpoints` because reading the
    state needs its shape, and the optimiser state's shape comes from :func:`make_optimizer`.
    """
    directory = checkpoint_directory(path)
    meta = read_meta(directory)
    if config is not None:
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}.")
        match_config("model config", meta["model_config"], config.to_dict())
    saved_config = TransformerConfig.from_dict(meta["model_config"])
    train_config = TrainConfig.from_dict(meta["train_config"])

    def template():
        net = AttentionOnlyTransformer(saved_config, key=jax.random.PRNGKey(0))
        return net, make_optimizer(train_config).init(eqx.filter(net, eqx.is_inexact_array))

    network, _ = read_state(directory, meta, eqx.filter_eval_shape(template))
    return network
