"""Token datasets in the devinterp 2.x layout: a ``datasets.Dataset`` with one column
``input_ids`` whose rows are fixed-length lists of token ids (length = context).

Offline: :func:`genre_dataset` tokenizes the run-time corpora of :mod:`numpyro_slt.data.corpora`.
Online: :func:`load_hub_dataset` calls ``datasets.load_dataset`` on a Hub name, for instance one of
the Pile subsets that Timaeus published for the susceptibilities paper (``"timaeus/pile-github"``
and its siblings; the Pile's own licences apply to those), or on local files (``.jsonl``,
``.json``, ``.csv``, ``.parquet``, ``.txt``), through the same code path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np

from .corpora import check_genre, genre_texts
from .tokenizer import EOS_TOKEN

COLUMN = "input_ids"
_LOCAL_BUILDERS = {
    ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
}


def _check_context(context_length) -> int:
    if isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer)) or (
        context_length < 2
    ):
        raise ValueError(
            f"context_length={context_length!r} must be an integer >= 2 (tokens per sequence)."
        )
    return int(context_length)


def _check_count(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer or None.")
    return int(value)


def _separator_id(tokenizer, separator_token: str | None) -> int | None:
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
    context_length = _check_context(context_length)
    texts = _texts(texts)
    sep = _separator_id(tokenizer, separator_token)
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


def to_dataset(input_ids, vocab_size: int | None = None,
               context_length: int | None = None) -> datasets.Dataset:
    """Return a ``datasets.Dataset`` with column ``input_ids`` from a 2-D array or list of
    sequences, after :func:`validate_input_ids`."""
    arr = validate_input_ids(input_ids, vocab_size=vocab_size, context_length=context_length)
    return datasets.Dataset.from_dict({COLUMN: arr.tolist()})


def validate_input_ids(input_ids, vocab_size: int | None = None,
                       context_length: int | None = None) -> np.ndarray:
    """Check token sequences and return them as an int64 array ``(num_sequences, length)``.

    Accepts a 2-D array, a list of equal-length lists or a ``datasets.Dataset`` with an
    ``input_ids`` column. Raises ValueError for an empty input, ragged rows, sequences shorter than
    ``context_length`` and ids outside ``[0, vocab_size)``. Sequences longer than
    ``context_length`` are truncated to it.
    """
    if isinstance(input_ids, datasets.Dataset):
        if COLUMN not in input_ids.column_names:
            raise ValueError(
                f"input_ids dataset has columns {input_ids.column_names}, not {COLUMN!r}; build it "
                "with chunk_texts() or rename the token column to 'input_ids'."
            )
        input_ids = input_ids[COLUMN]
    if input_ids is None or len(input_ids) == 0:
        raise ValueError("input_ids is empty (no sequences); pass at least one sequence.")
    try:
        arr = np.asarray(input_ids)
    except ValueError as err:
        raise ValueError("input_ids rows have different lengths; cut them into fixed windows "
                         "with chunk_texts().") from err
    if arr.dtype == object or arr.ndim != 2:
        raise ValueError(
            f"input_ids must be 2-D (num_sequences, length) with equal-length rows, got shape "
            f"{arr.shape}; cut texts into fixed windows with chunk_texts()."
        )
    if arr.shape[1] == 0:
        raise ValueError("input_ids has empty sequences; pass sequences of at least 2 tokens.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if context_length is not None:
        context_length = _check_context(context_length)
        if arr.shape[1] < context_length:
            raise ValueError(
                f"input_ids sequences have length {arr.shape[1]}, shorter than "
                f"context_length={context_length}; pass longer sequences or a smaller "
                "context_length."
            )
        arr = arr[:, :context_length]
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        bound = f"[0, {vocab_size})" if vocab_size is not None else "[0, inf)"
        raise ValueError(
            f"input_ids contain token ids from {lo} to {hi}, outside the vocabulary {bound}; "
            "tokenize with the model's tokenizer or pass the matching vocab_size."
        )
    return arr


def chunk_texts(texts: Iterable[str], tokenizer, context_length: int,
                separator_token: str | None = EOS_TOKEN,
                num_sequences: int | None = None) -> datasets.Dataset:
    """Return a ``datasets.Dataset`` with one column ``input_ids`` (lists of ``context_length``
    ints): ``texts`` tokenized, joined with ``separator_token`` after each text, cut into windows,
    the remainder dropped; at most ``num_sequences`` rows (the first ones) when given."""
    num_sequences = _check_count("num_sequences", num_sequences)
    arr = chunk_ids(texts, tokenizer, context_length, separator_token)
    if num_sequences is not None:
        arr = arr[:num_sequences]
    return datasets.Dataset.from_dict({COLUMN: arr.astype(np.int64).tolist()})


def genre_dataset(genre: str, tokenizer, context_length: int, num_sequences: int, seed: int = 0,
                  max_chars: int | None = None) -> datasets.Dataset:
    """Return ``num_sequences`` windows of ``context_length`` tokens of the offline ``genre``
    corpus (see :mod:`numpyro_slt.data.corpora` for provenance and licences) as a
    ``datasets.Dataset`` with column ``input_ids``.

    The character budget starts at ``max_chars`` (default: about 4 characters per token needed)
    and doubles until enough tokens are found; ValueError if the whole corpus is too small.
    """
    check_genre(genre)
    context_length = _check_context(context_length)
    num_sequences = _check_count("num_sequences", num_sequences)
    if num_sequences is None:
        raise ValueError("num_sequences=None; pass the number of sequences wanted.")
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
    return datasets.Dataset.from_dict({COLUMN: arr[:num_sequences].astype(np.int64).tolist()})


def _resolve_source(name: str | os.PathLike | None, data_files) -> tuple[str, object]:
    """Return ``(path_or_builder, data_files)`` for ``datasets.load_dataset``."""
    if name is None and data_files is None:
        raise ValueError("name=None and data_files=None; pass a Hub dataset name such as "
                         "'timaeus/pile-github', a local file path, or data_files=.")
    if data_files is not None:
        if name is not None and str(name) not in set(_LOCAL_BUILDERS.values()):
            return str(name), data_files
        files = [data_files] if isinstance(data_files, (str, os.PathLike)) else data_files
        first = files if isinstance(files, dict) else {"_": files}
        sample = next(iter(first.values()))
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        suffix = Path(str(sample)).suffix.lower()
        builder = str(name) if name is not None else _LOCAL_BUILDERS.get(suffix)
        if builder is None:
            raise ValueError(
                f"data_files={data_files!r}: cannot tell the format from {suffix!r}; pass "
                f"name= one of {sorted(set(_LOCAL_BUILDERS.values()))}."
            )
        return builder, data_files
    path = Path(str(name))
    if path.exists() and path.is_file():
        builder = _LOCAL_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"name={str(name)!r} is a local file of unknown format; use one of "
                f"{sorted(_LOCAL_BUILDERS)} or pass data_files= with name= a builder name."
            )
        return builder, str(path)
    return str(name), None


def load_hub_dataset(name: str | os.PathLike | None, split: str = "train", tokenizer=None,
                     context_length: int = 1024, text_column: str = "text",
                     num_sequences: int | None = None, data_files=None,
                     separator_token: str | None = EOS_TOKEN, batch_size: int = 1000,
                     **load_kwargs) -> datasets.Dataset:
    """Load a text dataset with ``datasets.load_dataset`` and return it tokenized as a
    ``datasets.Dataset`` with column ``input_ids`` (rows of ``context_length`` ints).

    ``name`` is a Hub dataset (e.g. ``"timaeus/pile-github"``, ``"timaeus/pile-arxiv"``: the
    Pile subsets used in the susceptibilities paper; any name works), a local file path
    (``.jsonl``/``.json``/``.csv``/``.parquet``/``.txt``) or a builder name used with
    ``data_files``. Rows are read in order, ``text_column`` tokenized ``batch_size`` rows at a
    time, until ``num_sequences`` windows are filled (all rows when None). A dataset that already
    has an ``input_ids`` column and no ``text_column`` is used as is (rows cut to
    ``context_length``). Extra keyword arguments go to ``datasets.load_dataset``.
    """
    if tokenizer is None:
        raise ValueError("tokenizer=None; pass a tokenizers.Tokenizer (see train_tokenizer()).")
    context_length = _check_context(context_length)
    num_sequences = _check_count("num_sequences", num_sequences)
    path, files = _resolve_source(name, data_files)
    kwargs = dict(load_kwargs)
    if files is not None:
        kwargs["data_files"] = files
    raw = datasets.load_dataset(path, split=split, streaming=False, **kwargs)
    if len(raw) == 0:
        raise ValueError(f"name={str(name)!r} split={split!r} is an empty dataset; pass a "
                         "dataset with at least one row.")
    if text_column not in raw.column_names:
        if COLUMN in raw.column_names:
            arr = validate_input_ids(raw[COLUMN][: num_sequences or len(raw)],
                                     vocab_size=tokenizer.get_vocab_size(),
                                     context_length=context_length)
            return datasets.Dataset.from_dict({COLUMN: arr.tolist()})
        raise ValueError(
            f"text_column={text_column!r} is not a column of this dataset; its columns are "
            f"{raw.column_names}."
        )
    sep = _separator_id(tokenizer, separator_token)
    buffer: list[int] = []
    rows: list[list[int]] = []
    for start in range(0, len(raw), batch_size):
        batch: Sequence = raw[start : start + batch_size][text_column]
        for enc in tokenizer.encode_batch([t or "" for t in batch], add_special_tokens=False):
            buffer.extend(enc.ids)
            if sep is not None:
                buffer.append(sep)
        n = len(buffer) // context_length
        rows.extend(buffer[i * context_length : (i + 1) * context_length] for i in range(n))
        buffer = buffer[n * context_length :]
        if num_sequences is not None and len(rows) >= num_sequences:
            break
    if not rows:
        raise ValueError(
            f"the dataset gives {len(buffer)} tokens, fewer than context_length={context_length}; "
            "pass more data or a smaller context_length."
        )
    if num_sequences is not None:
        rows = rows[:num_sequences]
    return datasets.Dataset.from_dict({COLUMN: rows})
