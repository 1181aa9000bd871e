"""Fixed-length token windows: texts tokenized, joined with a separator token after each text and
cut into consecutive windows of ``context_length`` ids (the remainder shorter than a window is
dropped). Everything here returns NumPy arrays; :mod:`numpyro_slt.data.hub` wraps them as
``datasets.Dataset`` objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import numpy as np

from .._validate import positive_int
from .corpora import check_genre, genre_texts
from .tokenizer import EOS_TOKEN

__all__ = ["check_context", "chunk_ids", "genre_windows", "iter_windows", "stream_windows",
           "text_ids"]


def check_context(context_length) -> int:
    """``context_length`` as an ``int`` ≥ 2 (a window predicts at least one token)."""
    context_length = positive_int("context_length", context_length)
    if context_length < 2:
        raise ValueError(
            f"context_length={context_length!r} must be an integer >= 2 (tokens per sequence)."
        )
    return context_length


def separator_id(tokenizer, separator_token: str | None) -> int | None:
    """The id of ``separator_token`` in ``tokenizer`` (None for no separator)."""
    if separator_token is None:
        return None
    idx = tokenizer.token_to_id(separator_token)
    if idx is None:
        raise ValueError(
            f"separator_token={separator_token!r} is not in the tokenizer's vocabulary; pass the "
            "tokenizer's end-of-document token or None to join texts without a separator."
        )
    return idx


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string; wrap it: [text].")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty; pass at least one non-empty string.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] is a {type(t).__name__}, not a string.")
    return texts


def chunk_ids(texts: Iterable[str], tokenizer, context_length: int,
              separator_token: str | None = EOS_TOKEN, allow_partial: bool = False) -> np.ndarray:
    """Return an int32 array ``(num_windows, context_length)``: ``texts`` tokenized, concatenated
    with ``separator_token`` after each text, and cut into consecutive windows; the remainder
    shorter than a window is dropped. With ``allow_partial=False`` a text too short for a single
    window raises ValueError; with True it returns an empty ``(0, context_length)`` array."""
    context_length = check_context(context_length)
    texts = _texts(texts)
    sep = separator_id(tokenizer, separator_token)
    pieces = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        pieces.append(np.asarray(enc.ids, dtype=np.int32))
        if sep is not None:
            pieces.append(np.asarray([sep], dtype=np.int32))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    n = len(flat) // context_length
    if n == 0 and not allow_partial:
        raise ValueError(
            f"texts give {len(flat)} tokens, fewer than context_length={context_length}; pass more "
            "text or a smaller context_length."
        )
    return flat[: n * context_length].reshape(n, context_length)


def iter_windows(sequences: Iterable[Sequence[int]], context_length: int,
                 separator: int | None = None, *, cut_long: bool = False) -> Iterator[np.ndarray]:
    """Yield int32 windows of ``context_length`` ids from a stream of token sequences, reading the
    stream only as far as the windows taken.

    Each sequence is followed by ``separator`` (an id; None: nothing) and the stream is cut into
    consecutive windows; a tail shorter than a window is dropped. With ``cut_long=True`` a
    sequence at least ``context_length`` long is not joined to the stream: it is cut into its own
    consecutive windows (its remainder dropped), as suits rows that are windows already, and only
    the shorter sequences are joined.
    """
    context_length = check_context(context_length)
    buffer: list[int] = []
    for seq in sequences:
        if cut_long and len(seq) >= context_length:
            row = np.asarray(seq, dtype=np.int64)
            for i in range(len(row) // context_length):
                yield row[i * context_length : (i + 1) * context_length].astype(np.int32)
            continue
        buffer.extend(int(i) for i in seq)
        if separator is not None:
            buffer.append(separator)
        n = len(buffer) // context_length
        for i in range(n):
            yield np.asarray(buffer[i * context_length : (i + 1) * context_length], np.int32)
        del buffer[: n * context_length]


def text_ids(text_batches: Iterable[Sequence[str | None]], tokenizer) -> Iterator[list[int]]:
    """The token ids of each text of a stream of text batches (``None`` counts as empty),
    encoded without special tokens one batch at a time."""
    for batch in text_batches:
        for enc in tokenizer.encode_batch([t or "" for t in batch], add_special_tokens=False):
            yield enc.ids


def stream_windows(text_batches: Iterable[Sequence[str | None]], tokenizer, context_length: int,
                   separator_token: str | None = EOS_TOKEN,
                   num_sequences: int | None = None) -> np.ndarray:
    """The windows of :func:`chunk_ids` over a stream of text batches, reading batches only until
    ``num_sequences`` windows are filled (all of them when None): an int32 array
    ``(num_windows, context_length)``. A ``None`` text counts as empty. Raises ValueError when
    the stream gives fewer tokens than one window."""
    context_length = check_context(context_length)
    sep = separator_id(tokenizer, separator_token)
    seen = [0]

    def counted():
        for ids in text_ids(text_batches, tokenizer):
            seen[0] += len(ids) + (sep is not None)
            yield ids

    rows = list(islice(iter_windows(counted(), context_length, sep), num_sequences))
    if not rows:
        raise ValueError(
            f"the texts give {seen[0]} tokens, fewer than context_length={context_length}; "
            "pass more data or a smaller context_length."
        )
    return np.stack(rows)


def genre_windows(genre: str, tokenizer, context_length: int, num_sequences: int, seed: int = 0,
                  max_chars: int | None = None) -> np.ndarray:
    """Return an int32 array ``(num_sequences, context_length)``: the first windows of the
    offline ``genre`` corpus (:func:`~numpyro_slt.data.corpora.genre_texts` with ``seed``).

    The character budget starts at ``max_chars`` (default: about 4 characters per token needed)
    and doubles until enough tokens are found; ValueError if the whole corpus is too small.
    """
    check_genre(genre)
    context_length = check_context(context_length)
    if num_sequences is None:
        raise ValueError("num_sequences=None; pass the number of sequences wanted.")
    num_sequences = positive_int("num_sequences", num_sequences)
    budget = max_chars or max(10_000, 4 * num_sequences * context_length)
    while True:
        texts = genre_texts(genre, max_chars=budget, seed=seed)
        arr = chunk_ids(texts, tokenizer, context_length, allow_partial=True)
        exhausted = sum(len(t) for t in texts) < budget
        if len(arr) >= num_sequences or exhausted:
            break
        budget *= 2
    if len(arr) < num_sequences:
        raise ValueError(
            f"num_sequences={num_sequences}: the {genre!r} corpus on this machine gives only "
            f"{len(arr)} windows of context_length={context_length}; ask for fewer sequences."
        )
    return arr[:num_sequences]
