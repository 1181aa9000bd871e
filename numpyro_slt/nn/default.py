"""The embedded default model: its recipe, the files that ship, and :func:`load_default`.

The default is the paper's 2-layer × 8-head attention-only transformer, shrunk so that it trains
on a small CPU (every difference from the paper is listed in ``docs/transformer.md``): d_model 64,
d_head 16, context 64, a byte-level BPE vocabulary of 1,024 tokens trained on the offline
corpora, and pre-LN layer norm. It is trained in two stages by :func:`build_default`:

1. **Induction stage.** Windows of offline text in each of which one segment of uniform random
   tokens appears twice (:func:`~numpyro_slt.data.synthetic.induction_mixture` with
   ``repeat_fraction=1``, ``random_fraction=1``). In-context copying is then the only way to
   predict the second copy, which is what makes induction heads form within a few million tokens.
2. **Text stage.** Windows of the code, legal, prose and math corpora, half of them carrying a
   repeated segment (random tokens or a copied span), at a lower learning rate: the model learns
   the text while keeping its induction circuit.

``build_default(out)`` writes ``out/model.eqx`` (the network, Equinox serialisation),
``out/tokenizer.json`` and ``out/model.json`` (the model config, the recipe, the SHA-256 of the
other two files, the per-head induction and previous-token scores, the training curves and the
timings). Each stage checkpoints under ``work`` and resumes from it, so an interrupted
``make model`` loses at most ``checkpoint_every`` steps. The files in ``out`` are written
atomically and ``model.json`` last: a folder with a ``model.json`` is complete.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np

from .._config import checked_fields
from .._io import atomic_write, sha256_of
from .._validate import fraction as _fraction
from .._validate import nonnegative_int, positive_int
from ..data.corpora import GENRES, genre_texts
from ..data.synthetic import induction_mixture
from ..data.tokenizer import train_tokenizer
from ..data.windows import chunk_ids
from .config import TransformerConfig
from .induction import score_table
from .train import TrainConfig, train
from .transformer import AttentionOnlyTransformer

__all__ = [
    "DEFAULT_DIR",
    "DefaultModel",
    "DefaultRecipe",
    "build_default",
    "load_default",
    "load_model",
    "save_model",
]

DEFAULT_DIR = Path(__file__).resolve().parent / "default_model"
MODEL_FILE = "model.eqx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "model.json"
_FORMAT = "numpyro-slt-model-1"


def _default_model_config() -> TransformerConfig:
    return TransformerConfig(
        n_layers=2, n_heads=8, d_model=64, d_head=16, n_ctx=64, d_vocab=1024, layer_norm=True
    )


def _default_stage1() -> TrainConfig:
    return TrainConfig(steps=14_000, batch_size=32, learning_rate=3e-3, warmup_steps=300,
                       weight_decay=0.05, seed=0, checkpoint_every=1000, eval_every=1000)


def _default_stage2() -> TrainConfig:
    return TrainConfig(steps=6_000, batch_size=32, learning_rate=1e-3, warmup_steps=300,
                       weight_decay=0.05, seed=1, checkpoint_every=1000, eval_every=1000)


@dataclass(frozen=True)
class DefaultRecipe:
    """Everything :func:`build_default` needs to reproduce the default model.

    Attributes:
        model: the network's shape.
        tokenizer_chars: characters of offline text the BPE tokenizer is trained on.
        text_chars: characters per genre of training text (code, legal, prose, math).
        stage1, stage2: the two training runs (see the module doc).
        stage1_sequences, stage2_sequences: rows of the training token arrays.
        stage2_repeat_fraction, stage2_random_fraction: the share of stage-2 rows with a
            repeated segment, and the share of those segments that are random tokens.
        seed: seed of the model initialisation and of the data mixtures.
    """

    model: TransformerConfig = field(default_factory=_default_model_config)
    tokenizer_chars: int = 2_000_000
    text_chars: int = 600_000
    stage1: TrainConfig = field(default_factory=_default_stage1)
    stage2: TrainConfig = field(default_factory=_default_stage2)
    stage1_sequences: int = 200_000
    stage2_sequences: int = 200_000
    stage2_repeat_fraction: float = 0.5
    stage2_random_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.model, TransformerConfig):
            raise ValueError(f"DefaultRecipe.model must be a TransformerConfig, got "
                             f"{self.model!r}.")
        for name in ("stage1", "stage2"):
            if not isinstance(getattr(self, name), TrainConfig):
                raise ValueError(f"DefaultRecipe.{name} must be a TrainConfig.")
        # Each number is stored in its canonical type, so that to_dict stays JSON-serialisable.
        checks = {name: positive_int for name in ("tokenizer_chars", "text_chars",
                                                  "stage1_sequences", "stage2_sequences")}
        checks |= {"seed": nonnegative_int, "stage2_repeat_fraction": _fraction,
                   "stage2_random_fraction": _fraction}
        for name, check in checks.items():
            object.__setattr__(self, name, check(f"DefaultRecipe.{name}", getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = self.model.to_dict()
        out["stage1"] = self.stage1.to_dict()
        out["stage2"] = self.stage2.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DefaultRecipe:
        data = checked_fields(cls, data)
        if "model" in data:
            data["model"] = TransformerConfig.from_dict(data["model"])
        for stage in ("stage1", "stage2"):
            if stage in data:
                data[stage] = TrainConfig.from_dict(data[stage])
        return cls(**data)

    def scaled(self, fraction: float) -> DefaultRecipe:
        """The same recipe with both stages shortened to ``fraction`` of their steps (for smoke
        tests and ``numpyro-slt train --quick``; such a model has no induction heads)."""
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")

        def shorten(stage: TrainConfig) -> TrainConfig:
            steps = max(2, round(stage.steps * fraction))
            every = max(1, min(stage.eval_every, steps))
            return replace(stage, steps=steps, warmup_steps=min(stage.warmup_steps, steps // 2),
                           eval_every=every, checkpoint_every=every)

        return replace(self, stage1=shorten(self.stage1), stage2=shorten(self.stage2))


class DefaultModel(NamedTuple):
    """What :func:`load_default` returns: the network, its tokenizer and the ``model.json``
    record (config, recipe, per-head scores, training curves)."""

    network: AttentionOnlyTransformer
    tokenizer: Any
    info: dict[str, Any]


# ---------------------------------------------------------------------------- files


def save_model(directory: str | os.PathLike, network: AttentionOnlyTransformer, tokenizer,
               info: dict[str, Any] | None = None) -> Path:
    """Write ``network``, ``tokenizer`` and ``info`` to ``directory`` in the default's layout.

    ``model.eqx`` and ``tokenizer.json`` are written atomically first, then ``model.json``
    (config, file hashes, ``info``) as the commit point.
    """
    if not isinstance(network, AttentionOnlyTransformer):
        raise TypeError(f"network must be an AttentionOnlyTransformer, got {type(network)}.")
    vocab = tokenizer.get_vocab_size()
    if vocab > network.config.d_vocab:
        raise ValueError(f"the tokenizer has {vocab} tokens but the network's d_vocab is "
                         f"{network.config.d_vocab}; train them together.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / META_FILE
    meta_path.unlink(missing_ok=True)  # the folder is incomplete until the new record lands
    atomic_write(directory / MODEL_FILE, lambda f: eqx.tree_serialise_leaves(f, network), "wb")
    text = tokenizer.to_str(pretty=False)
    atomic_write(directory / TOKENIZER_FILE, lambda f: f.write(text), "w")
    meta = {
        "format": _FORMAT,
        "model_config": network.config.to_dict(),
        "model_sha256": sha256_of(directory / MODEL_FILE),
        "tokenizer_sha256": sha256_of(directory / TOKENIZER_FILE),
        **(info or {}),
    }
    payload = json.dumps(meta, indent=1)
    atomic_write(meta_path, lambda f: f.write(payload), "w")
    return directory


def load_model(directory: str | os.PathLike) -> DefaultModel:
    """Load a model folder written by :func:`save_model` / :func:`build_default`.

    Refuses (ValueError) a folder without ``model.json``, a missing, truncated or modified
    ``model.eqx`` or ``tokenizer.json`` (SHA-256 mismatch), and a state that does not match the
    recorded config.
    """
    from tokenizers import Tokenizer

    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no {META_FILE} in {directory}: not a complete model folder (build one with "
            "`numpyro-slt train --out DIR` or `make model`)."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is corrupt (not valid JSON: {err}).") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{meta_path} is not a numpyro-slt model record (format {_FORMAT}).")
    for name, key in ((MODEL_FILE, "model_sha256"), (TOKENIZER_FILE, "tokenizer_sha256")):
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; rebuild the folder.")
        if sha256_of(path) != meta.get(key):
            raise ValueError(f"{path} is truncated or modified: its SHA-256 differs from the one "
                             f"in {META_FILE}; rebuild the folder.")
    config = TransformerConfig.from_dict(meta["model_config"])
    template = eqx.filter_eval_shape(AttentionOnlyTransformer, config, key=jax.random.PRNGKey(0))
    try:
        network = eqx.tree_deserialise_leaves(directory / MODEL_FILE, template)
    except Exception as err:  # reported as a clear error
        raise ValueError(f"{directory / MODEL_FILE} does not match its config {config}: {err}"
                         ) from err
    tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    return DefaultModel(network, tokenizer, meta)


def load_default() -> DefaultModel:
    """The shipped default model, its tokenizer and its record, read from the package (no
    network access). See :mod:`numpyro_slt.nn.default` for what it is and how it was made."""
    return load_model(DEFAULT_DIR)


# ---------------------------------------------------------------------------- recipe


def _text_tokens(tokenizer, recipe: DefaultRecipe) -> np.ndarray:
    streams = [
        chunk_ids(genre_texts(g, max_chars=recipe.text_chars, seed=recipe.seed), tokenizer,
                  recipe.model.n_ctx).reshape(-1)
        for g in GENRES
    ]
    return np.concatenate(streams)


def _stage(name: str, network, tokens, config: TrainConfig, work: Path, progress: bool):
    """Run one training stage with checkpoints in ``work/name``; resumes, and returns at once
    when the stage is already finished there."""
    return train(network, tokens, config, checkpoint_dir=work / name, resume=True,
                 progress=progress)


def build_default(
    out: str | os.PathLike,
    recipe: DefaultRecipe | None = None,
    *,
    work: str | os.PathLike | None = None,
    progress: bool = True,
) -> DefaultModel:
    """Train the default model from scratch with ``recipe`` and write it to ``out``.

    :param out: the model folder to write (``model.eqx``, ``tokenizer.json``, ``model.json``).
    :param recipe: a :class:`DefaultRecipe` (default: the shipped model's).
    :param work: where stage checkpoints go (default ``out/../<out name>.work``); a rerun with
        the same recipe resumes from them, and a finished stage is not trained again.
    :param progress: show progress bars.
    :returns: the :class:`DefaultModel` written.
    """
    recipe = DefaultRecipe() if recipe is None else recipe
    if not isinstance(recipe, DefaultRecipe):
        raise TypeError(f"recipe must be a DefaultRecipe, got {type(recipe).__name__}.")
    out = Path(out)
    work = out.parent / f"{out.name}.work" if work is None else Path(work)
    work.mkdir(parents=True, exist_ok=True)
    recipe_path = work / "recipe.json"
    if recipe_path.exists() and json.loads(recipe_path.read_text()) != recipe.to_dict():
        raise ValueError(f"{work} holds checkpoints of a different recipe; pass another "
                         "work folder or delete it.")
    payload = json.dumps(recipe.to_dict(), indent=1)
    atomic_write(recipe_path, lambda f: f.write(payload), "w")

    t_start = time.perf_counter()
    tokenizer = train_tokenizer(recipe.model.d_vocab, recipe.tokenizer_chars, recipe.seed)
    if tokenizer.get_vocab_size() != recipe.model.d_vocab:
        raise ValueError(
            f"the corpus gave a tokenizer of {tokenizer.get_vocab_size()} tokens, not "
            f"d_vocab={recipe.model.d_vocab}; raise tokenizer_chars or lower d_vocab."
        )
    text = _text_tokens(tokenizer, recipe)
    n_ctx, vocab = recipe.model.n_ctx, recipe.model.d_vocab
    first = induction_mixture(recipe.seed, text, recipe.stage1_sequences, n_ctx,
                              repeat_fraction=1.0, random_fraction=1.0, vocab_low=1,
                              vocab_high=vocab)
    second = induction_mixture(recipe.seed + 1, text, recipe.stage2_sequences, n_ctx,
                               repeat_fraction=recipe.stage2_repeat_fraction,
                               random_fraction=recipe.stage2_random_fraction, vocab_low=1,
                               vocab_high=vocab)
    t_data = time.perf_counter() - t_start

    network = AttentionOnlyTransformer(recipe.model, key=jax.random.PRNGKey(recipe.seed))
    t0 = time.perf_counter()
    network, history1 = _stage("stage1", network, first, recipe.stage1, work, progress)
    network, history2 = _stage("stage2", network, second, recipe.stage2, work, progress)
    t_train = time.perf_counter() - t0

    scores = score_table(network, jax.random.PRNGKey(12345), num_sequences=64, vocab_low=1)
    info = {
        "recipe": recipe.to_dict(),
        "scores": scores,
        "training": {
            name: {"eval": h["eval"], "final_loss": float(np.mean(h["loss"][-100:])),
                   "tokens_per_second": h["tokens_per_second"], "steps": h["step"]}
            for name, h in (("stage1", history1), ("stage2", history2))
        },
        "text_tokens": int(text.size),
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
        "built_with": {"python": sys.version.split()[0], "jax": jax.__version__,
                       "machine": platform.machine()},
    }
    save_model(out, network, tokenizer, info)
    return load_model(out)
