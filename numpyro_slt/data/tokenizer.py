"""Byte-level BPE tokenizer trained with HuggingFace ``tokenizers`` on the offline genre corpora.

The training text is a deterministic mix of :mod:`numpyro_slt.data.corpora` (standard-library code
and docstrings under PSF-2.0, licence texts shipped by the installed packages, synthetic
arithmetic), with ``max_chars`` characters split evenly over the genres. The trained tokenizer
(a JSON file, see :func:`save_tokenizer`) contains only merges and token strings, not the texts.

Id 0 is the end-of-text token :data:`EOS_TOKEN` (used as the separator between documents); the
256 byte tokens follow, then the merges. A leading space is part of the token and shows as
``"Ġ"`` in the raw token strings (GPT-2 convention).
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .._io import atomic_write_path
from .._validate import positive_int
from .corpora import GENRES, check_genre, genre_texts

EOS_TOKEN = "<|endoftext|>"
_MIN_VOCAB = 257  # 256 bytes + the end-of-text token


def _training_texts(genres, max_chars: int, seed: int) -> list[str]:
    genres = tuple(genres)
    if not genres:
        raise ValueError(f"genres={genres!r} is empty; pass some of {GENRES}.")
    for g in genres:
        check_genre(g)
    share = max(1, max_chars // len(genres))
    texts: list[str] = []
    for g in genres:
        texts.extend(genre_texts(g, max_chars=share, seed=seed))
    return texts


def train_tokenizer(
    vocab_size: int = 5000,
    max_chars: int = 2_000_000,
    seed: int = 0,
    genres=GENRES,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train and return a byte-level BPE :class:`tokenizers.Tokenizer` with ``vocab_size`` tokens.

    ``max_chars`` characters of training text are taken evenly from ``genres`` (see
    :mod:`numpyro_slt.data.corpora` for their provenance and licences). Deterministic given the
    arguments and the Python installation. ``vocab_size`` is an upper bound: the trainer stops
    earlier when no pair occurs ``min_frequency`` times.
    """
    vocab_size = positive_int("vocab_size", vocab_size)
    if vocab_size < _MIN_VOCAB:
        raise ValueError(
            f"vocab_size={vocab_size!r} must be an integer >= {_MIN_VOCAB} (256 byte tokens plus "
            "the end-of-text token)."
        )
    max_chars = positive_int("max_chars", max_chars)
    texts = _training_texts(genres, max_chars, seed)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def eos_id(tokenizer: Tokenizer) -> int:
    """Return the id of :data:`EOS_TOKEN` in ``tokenizer``; raise ValueError when it has none."""
    idx = tokenizer.token_to_id(EOS_TOKEN)
    if idx is None:
        raise ValueError(
            f"tokenizer has no {EOS_TOKEN!r} token; train it with train_tokenizer() or pass "
            "separator_token= the name of its end-of-document token."
        )
    return idx


def save_tokenizer(tokenizer: Tokenizer, path: str | os.PathLike) -> Path:
    """Write ``tokenizer`` as a JSON file at ``path`` (parent folders created) and return the path.

    The file is written to a temporary name first and renamed, so a failure leaves nothing
    half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_path(path, lambda temporary: tokenizer.save(str(temporary), pretty=False))
    return path


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Return the tokenizer stored in the JSON file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path={str(path)!r} is not a tokenizer file; save one with "
                         "save_tokenizer(train_tokenizer(), path).")
    return Tokenizer.from_file(str(path))

