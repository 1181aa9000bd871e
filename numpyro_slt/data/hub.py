"""Token datasets in the devinterp 2.x layout: a ``datasets.Dataset`` with one column
``input_ids`` whose rows are fixed-length lists of token ids (length = context). This is the one
module of :mod:`numpyro_slt.data` that imports ``datasets``; the windows themselves are cut by
:mod:`numpyro_slt.data.windows`.

:func:`token_windows` turns the user's own data (a ``datasets.Dataset``, a folder saved with
``save_to_disk``, a data file, a folder of text files or a Hub name) into the fixed windows a study
samples on.

Offline: :func:`genre_dataset` tokenizes the run-time corpora of :mod:`numpyro_slt.data.corpora`.
Online: :func:`load_hub_dataset` calls ``datasets.load_dataset`` on a Hub name, for instance one of
the Pile subsets that Timaeus published for the susceptibilities paper (``"timaeus/pile-github"``
and its siblings; the Pile's own licences apply to those), or on local files (``.jsonl``,
``.json``, ``.csv``, ``.parquet``, ``.txt``), through the same code path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import datasets
import numpy as np

from .._validate import nonnegative_int, positive_int
from .tokenizer import EOS_TOKEN
from .windows import (
    check_context,
    chunk_ids,
    genre_windows,
    iter_windows,
    separator_id,
    stream_windows,
    text_ids,
)

__all__ = ["chunk_texts", "genre_dataset", "load_hub_dataset", "to_dataset", "token_windows",
           "validate_input_ids"]

COLUMN = "input_ids"
TEXT_COLUMN = "text"
#: Files that ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` write into their folder.
_SAVED_MARKERS = ("state.json", "dataset_dict.json")
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


# --- the user's own data: token_windows --------------------------------------------------------


def token_windows(source, tokenizer, context_length: int, num_sequences: int, *,
                  split: str = "train", seed: int = 0, column: str | None = None,
                  separator_token: str | None = EOS_TOKEN, vocab_size: int | None = None,
                  argument: str = "source") -> np.ndarray:
    """Return ``num_sequences`` windows of ``context_length`` token ids of ``source``: an int32
    array ``(num_sequences, context_length)``, a deterministic function of the data and ``seed``.

    ``source`` is one of

    - a ``datasets.Dataset``, or a ``datasets.DatasetDict`` (``split`` is taken);
    - a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``;
    - a data file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``) or a folder of such files of
      one format (for instance a downloaded Hub dataset of parquet shards), read with
      ``datasets.load_dataset``; a local file or folder is one split, ``split`` is not used;
    - a ``.txt`` file or a folder of ``.txt`` files (searched recursively, hidden paths skipped):
      each file is one text;
    - any other string: a Hub dataset name, loaded with ``datasets.load_dataset(source,
      split=split)`` (downloads it; offline this raises a ValueError saying so).

    A dataset's token column is ``column``: by default ``input_ids`` when the dataset has one,
    else ``text``. A column of strings is tokenized with ``tokenizer`` (no special tokens added).
    A column of token-id lists (the devinterp layout) is used as it is: a row at least
    ``context_length`` long is cut into its consecutive windows (its remainder dropped), shorter
    rows are joined into one stream. Texts and short rows are joined with ``separator_token``
    (the end-of-text token; None: nothing) after each and the stream is cut into consecutive
    windows (:func:`~numpyro_slt.data.windows.iter_windows`); the tail is dropped.

    Rows (or files) are read in an order shuffled by ``seed``, only until ``num_sequences``
    windows are filled, so the windows of a large dataset are a random sample of its rows.

    Raises ValueError, naming ``argument`` (the name of ``source`` in the caller's terms), for a
    source that cannot be read, an empty one, a missing or unsuitable column, token ids outside
    ``[0, vocab_size)`` (default: the tokenizer's vocabulary) and a source that gives fewer than
    ``num_sequences`` windows: never fewer windows than asked.
    """
    if tokenizer is None:
        raise ValueError("tokenizer=None; pass a tokenizers.Tokenizer (the model's own).")
    context_length = check_context(context_length)
    num_sequences = positive_int("num_sequences", num_sequences)
    seed = nonnegative_int("seed", seed)
    vocab_size = (tokenizer.get_vocab_size() if vocab_size is None
                  else positive_int("vocab_size", vocab_size))
    if column is not None and (not isinstance(column, str) or not column):
        raise ValueError(f"column={column!r} must be the name of a column, such as 'text'.")
    sep = separator_id(tokenizer, separator_token)
    rng = np.random.default_rng(seed)
    opened = _open_source(source, split, argument)
    where = _describe(argument, source)
    if isinstance(opened, list):  # text files
        order = rng.permutation(len(opened))
        texts = ([_read_text(opened[i], argument) for i in order[start : start + 64]]
                 for start in range(0, len(order), 64))
        sequences, is_ids = text_ids(texts, tokenizer), False
    else:
        sequences, is_ids = _dataset_sequences(opened, column, tokenizer, rng, where)
    seen = [0]

    def counted():
        for seq in sequences:
            seen[0] += len(seq)
            yield seq

    windows = iter_windows(counted(), context_length, sep, cut_long=is_ids)
    rows = list(islice(windows, num_sequences))
    if len(rows) < num_sequences:
        raise ValueError(
            f"{where} gives only {len(rows)} windows of context_length={context_length} "
            f"({seen[0]} tokens), fewer than the {num_sequences} asked for (num_sequences); "
            "pass more data, ask for fewer sequences or choose a smaller context_length."
        )
    arr = np.stack(rows)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(
            f"{where} holds token ids from {lo} to {hi}, outside the vocabulary [0, {vocab_size}) "
            "of the model's tokenizer; tokenize the data with the model's own tokenizer, or give "
            "the texts (a 'text' column) instead of input_ids."
        )
    return arr


def _describe(argument: str, source) -> str:
    """``argument`` and its value, for messages."""
    if isinstance(source, datasets.Dataset | datasets.DatasetDict):
        return f"{argument} (a datasets.{type(source).__name__})"
    return f"{argument}={str(source)!r}"


def _open_source(source, split: str, argument: str):
    """``source`` as a ``datasets.Dataset`` or a sorted list of text files."""
    if isinstance(source, datasets.DatasetDict):
        return _pick_split(source, split, argument)
    if isinstance(source, datasets.Dataset):
        return source
    if not isinstance(source, str | os.PathLike) or not str(source):
        raise ValueError(
            f"{argument}={source!r} must be a datasets.Dataset, a path (a folder saved with "
            "save_to_disk, a data file, a folder of .txt files) or a Hub dataset name."
        )
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return _open_folder(path, split, argument)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return [path]
        if suffix not in _LOCAL_BUILDERS:
            raise ValueError(
                f"{argument}={str(source)!r} is a file of unknown format {suffix!r}; use one of "
                f"{sorted(_LOCAL_BUILDERS)}, or a folder of .txt files."
            )
        return _load_files(_LOCAL_BUILDERS[suffix], [path], argument, source)
    if path.suffix.lower() in _LOCAL_BUILDERS or str(source).startswith((".", "/", "~")):
        raise ValueError(f"{argument}={str(source)!r}: no such file or folder.")
    return _load_hub(str(source), split, argument)


def _pick_split(data, split: str, argument: str) -> datasets.Dataset:
    if split not in data:
        raise ValueError(f"{argument} has the splits {sorted(data)}, not split={split!r}; pass "
                         "one of them.")
    return data[split]


def _open_folder(path: Path, split: str, argument: str):
    if any((path / marker).is_file() for marker in _SAVED_MARKERS):
        loaded = datasets.load_from_disk(str(path))
        return (_pick_split(loaded, split, argument)
                if isinstance(loaded, datasets.DatasetDict) else loaded)
    files: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*")):
        hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
        if file.is_file() and not hidden and file.suffix.lower() in _LOCAL_BUILDERS:
            files.setdefault(_LOCAL_BUILDERS[file.suffix.lower()], []).append(file)
    data_files = {k: v for k, v in files.items() if k != "text"}
    if len(data_files) > 1:
        raise ValueError(f"{argument}={str(path)!r} holds data files of several formats "
                         f"({sorted(data_files)}); keep one format per folder.")
    if data_files:
        (builder, found), = data_files.items()
        return _load_files(builder, found, argument, path)
    if files.get("text"):
        return files["text"]
    raise ValueError(
        f"{argument}={str(path)!r} is a folder with no dataset saved by save_to_disk, no .txt "
        f"files and no data files ({', '.join(sorted(_LOCAL_BUILDERS))}); pass a folder or file "
        "holding your data."
    )


def _load_files(builder: str, files: list[Path], argument: str, source) -> datasets.Dataset:
    try:
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as err:  # a parse error of the user's file: say which argument
        raise ValueError(f"{argument}={str(source)!r} could not be read as {builder} "
                         f"({type(err).__name__}: {err})") from err


def _load_hub(name: str, split: str, argument: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as err:
        offline = (datasets.config.HF_HUB_OFFLINE or "offline" in str(err).lower())
        if offline or isinstance(err, ConnectionError):
            how = "offline" if offline else "(the Hub could not be reached)"
            raise ValueError(
                f"{argument}={name!r} is no local file or folder, and as a Hub dataset name it "
                f"could not be loaded {how}; pass a local folder (saved with "
                "Dataset.save_to_disk, or of .txt or data files) or a data file instead."
            ) from err
        raise ValueError(f"{argument}={name!r} is no local file or folder, and "
                         f"datasets.load_dataset could not load it from the Hub: {err}") from err


def _read_text(path: Path, argument: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{argument}: {str(path)!r} is not UTF-8 text ({err}).") from None


def _column_kind(ds: datasets.Dataset, column: str | None, where: str) -> tuple[str, str]:
    """The column to read and whether it holds ``"text"`` or token ``"ids"``."""
    names = ds.column_names
    if column is None:
        column = COLUMN if COLUMN in names else TEXT_COLUMN
        if column not in names:
            raise ValueError(f"{where} has the columns {names}, neither {COLUMN!r} nor "
                             f"{TEXT_COLUMN!r}; pass column= the name of its text column.")
    elif column not in names:
        raise ValueError(f"{where} has no column {column!r}; its columns are {names}.")
    feature = ds.features[column]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return column, "text"
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.Value) and ("int" in inner.dtype):
        return column, "ids"
    raise ValueError(f"{where}: column {column!r} holds {feature}, neither text (strings) nor "
                     "token ids (lists of integers); pass column= another column.")


def _dataset_sequences(ds: datasets.Dataset, column: str | None, tokenizer, rng,
                       where: str) -> tuple[Iterator, bool]:
    """The token sequences of the rows of ``ds`` in shuffled order, read in growing batches,
    and whether they are id rows (True) or tokenized texts (False)."""
    if len(ds) == 0:
        raise ValueError(f"{where} is empty (no rows); pass a dataset with data.")
    column, kind = _column_kind(ds, column, where)
    order = rng.permutation(len(ds))
    table = ds.select_columns([column])

    def batches():
        start, size = 0, 64
        while start < len(order):
            yield table[order[start : start + size].tolist()][column]
            start, size = start + size, min(2 * size, 1024)

    if kind == "text":
        return text_ids(batches(), tokenizer), False
    return (row for batch in batches() for row in batch if row is not None), True
