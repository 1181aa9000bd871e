"""Data for language-model experiments: synthetic patterns, offline genre corpora, a byte-level
BPE tokenizer, fixed-length token windows, tokenized probes, token datasets in the devinterp 2.x
layout and token pattern labels.

Import explicitly (``import numpyro_slt.data``); the top-level package does not import it.
Everything is assembled at run time from files of the running Python installation or generated
from a seed; no third-party text ships with numpyro-slt. Provenance and licences are described in
:mod:`numpyro_slt.data.corpora`.

The modules import one way: :mod:`~numpyro_slt.data.synthetic` ←
:mod:`~numpyro_slt.data.corpora` ← :mod:`~numpyro_slt.data.tokenizer` ←
:mod:`~numpyro_slt.data.windows` ← :mod:`~numpyro_slt.data.probes` and
:mod:`~numpyro_slt.data.hub`; :mod:`~numpyro_slt.data.labels` stands alone. Only
:mod:`~numpyro_slt.data.hub` imports ``datasets``, and it is loaded on first use of one of its
names here (``numpyro_slt.data.load_hub_dataset``, ``numpyro_slt.data.token_windows``, which
cuts the user's own data, a dataset, a folder, a file or a Hub name, into token windows, and the
other ``datasets.Dataset`` builders).
"""

from importlib import import_module

from .corpora import GENRES, Corpus, genre_corpus, genre_texts
from .labels import LABELS, label_sequences, label_tokens, token_text
from .probes import arithmetic_sequences, bracket_sequences
from .synthetic import (
    arithmetic_problems,
    arithmetic_texts,
    bracket_texts,
    brackets_balanced,
    induction_mixture,
    induction_sequences,
    repeated_random_tokens,
)
from .tokenizer import EOS_TOKEN, eos_id, load_tokenizer, save_tokenizer, train_tokenizer
from .windows import chunk_ids, genre_windows

_HUB_NAMES = ("chunk_texts", "genre_dataset", "load_hub_dataset", "to_dataset",
              "token_windows", "validate_input_ids")

__all__ = [
    "GENRES", "Corpus", "genre_corpus", "genre_texts",
    "chunk_ids", "genre_windows", *_HUB_NAMES,
    "LABELS", "label_sequences", "label_tokens", "token_text",
    "arithmetic_problems", "arithmetic_sequences", "arithmetic_texts", "bracket_sequences",
    "bracket_texts", "brackets_balanced", "induction_mixture", "induction_sequences",
    "repeated_random_tokens",
    "EOS_TOKEN", "eos_id", "load_tokenizer", "save_tokenizer", "train_tokenizer",
]


def __getattr__(name: str):
    if name in _HUB_NAMES:
        value = getattr(import_module(".hub", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
