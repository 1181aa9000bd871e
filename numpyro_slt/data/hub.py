"""Token datasets in the devinterp 2.x layout: a ``datasets.Dataset`` with one column
``input_ids`` whose rows are fixed-length lists of token ids (length = context). This is the one
module of :mod:`numpyro_slt.data` that imports ``datasets``; the windows themselves are cut by
:mod:`numpyro_slt.data.windows`.

Offline: :func:`genre_dataset` tokenizes the run-time corpora of :mod:`numpyro_slt.data.corpora`.
Online: :func:`load_hub_dataset` calls ``datasets.load_dataset`` on a Hub name, for instance one of
the Pile subsets that Timaeus published for the susceptibilities paper (``"timaeus/pile-github"``
and its siblings; the Pile's own licences apply to those), or on local files (``.jsonl``,
``.json``, ``.csv``, ``.parquet``, ``.txt``), through the same code path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np

from .._validate import positive_int
from .tokenizer import EOS_TOKEN
from .windows import check_context, chunk_ids, genre_windows, stream_windows

__all__ = ["chunk_texts", "genre_dataset", "load_hub_dataset", "to_dataset", "validate_input_ids"]

COLUMN = "input_ids"
_LOCAL_BUILDERS = {
    ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text",
}


def _optional_count(name: str, value) -> int | None:
    return None if value is None else positive_int(name, value)


def _from_windows(windows: np.ndarray) -> datasets.Dataset:
    return datasets.Dataset.from_dict({COLUMN: np.asarray(windows).astype(np.int64).tolist()})


def to_dataset(input_ids, vocab_size: int | None = None,
               context_length: int | None = None) -> datasets.Dataset:
    """Return a ``datasets.Dataset`` with column ``input_ids`` from a 2-D array or list of
    sequences, after :func:`validate_input_ids`."""
    return _from_windows(validate_input_ids(input_ids, vocab_size=vocab_size,
                                            context_length=context_length))


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
        context_length = check_context(context_length)
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
    num_sequences = _optional_count("num_sequences", num_sequences)
    arr = chunk_ids(texts, tokenizer, context_length, separator_token)
    if num_sequences is not None:
        arr = arr[:num_sequences]
    return _from_windows(arr)


def genre_dataset(genre: str, tokenizer, context_length: int, num_sequences: int, seed: int = 0,
                  max_chars: int | None = None) -> datasets.Dataset:
    """Return ``num_sequences`` windows of ``context_length`` tokens of the offline ``genre``
    corpus (see :mod:`numpyro_slt.data.corpora` for provenance and licences) as a
    ``datasets.Dataset`` with column ``input_ids``.

    The character budget starts at ``max_chars`` (default: about 4 characters per token needed)
    and doubles until enough tokens are found (:func:`~numpyro_slt.data.windows.genre_windows`);
    ValueError if the whole corpus is too small.
    """
    return _from_windows(genre_windows(genre, tokenizer, context_length, num_sequences,
                                       seed=seed, max_chars=max_chars))


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
    context_length = check_context(context_length)
    num_sequences = _optional_count("num_sequences", num_sequences)
    batch_size = positive_int("batch_size", batch_size)
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
            return _from_windows(arr)
        raise ValueError(
            f"text_column={text_column!r} is not a column of this dataset; its columns are "
            f"{raw.column_names}."
        )
    batches = (raw[start : start + batch_size][text_column]
               for start in range(0, len(raw), batch_size))
    return _from_windows(stream_windows(batches, tokenizer, context_length, separator_token,
                                        num_sequences))
