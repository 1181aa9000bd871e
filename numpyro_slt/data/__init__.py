"""Data for language-model experiments: offline genre corpora, a byte-level BPE tokenizer,
synthetic probes, token datasets in the devinterp 2.x layout and token pattern labels.

Import explicitly (``import numpyro_slt.data``); the top-level package does not import it.
Everything is assembled at run time from files of the running Python installation or generated
from a seed; no third-party text ships with numpyro-slt. Provenance and licences are described in
:mod:`numpyro_slt.data.corpora`.
"""

from .corpora import GENRES, Corpus, genre_corpus, genre_texts
from .datasets_io import (
    chunk_ids,
    chunk_texts,
    genre_dataset,
    load_hub_dataset,
    to_dataset,
    validate_input_ids,
)
from .labels import LABELS, label_sequences, label_tokens, token_text
from .probes import (
    arithmetic_problems,
    arithmetic_sequences,
    arithmetic_texts,
    bracket_sequences,
    bracket_texts,
    brackets_balanced,
    induction_sequences,
)
from .tokenizer import EOS_TOKEN, eos_id, load_tokenizer, save_tokenizer, train_tokenizer

__all__ = [
    "GENRES", "Corpus", "genre_corpus", "genre_texts",
    "chunk_ids", "chunk_texts", "genre_dataset", "load_hub_dataset", "to_dataset",
    "validate_input_ids",
    "LABELS", "label_sequences", "label_tokens", "token_text",
    "arithmetic_problems", "arithmetic_sequences", "arithmetic_texts", "bracket_sequences",
    "bracket_texts", "brackets_balanced", "induction_sequences",
    "EOS_TOKEN", "eos_id", "load_tokenizer", "save_tokenizer", "train_tokenizer",
]
