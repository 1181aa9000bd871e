"""Tokenized probe windows: the synthetic texts of :mod:`numpyro_slt.data.synthetic` (nested
brackets, arithmetic) joined by the end-of-text token and cut into fixed windows.

The induction probe needs no tokenizer: it is
:func:`numpyro_slt.data.synthetic.induction_sequences`.
"""

from __future__ import annotations

import numpy as np

from .._validate import positive_int
from .synthetic import arithmetic_texts, bracket_texts
from .windows import check_context, chunk_ids

__all__ = ["arithmetic_sequences", "bracket_sequences"]


def bracket_sequences(tokenizer, num_sequences: int, context_length: int, seed: int = 0,
                      max_depth: int = 4) -> np.ndarray:
    """Return an int32 array ``(num_sequences, context_length)`` of token ids of bracket text from
    :func:`~numpyro_slt.data.synthetic.bracket_texts`, joined by the end-of-text token and cut
    into fixed windows."""
    return _probe_sequences(lambda n, s: bracket_texts(n, max_depth=max_depth, seed=s),
                            tokenizer, num_sequences, context_length, seed)


def arithmetic_sequences(tokenizer, num_sequences: int, context_length: int,
                         seed: int = 0) -> np.ndarray:
    """Return an int32 array ``(num_sequences, context_length)`` of token ids of arithmetic
    questions and answers from :func:`~numpyro_slt.data.synthetic.arithmetic_texts`, joined by
    the end-of-text token and cut into fixed windows."""
    return _probe_sequences(arithmetic_texts, tokenizer, num_sequences, context_length, seed)


def _probe_sequences(make_texts, tokenizer, num_sequences, context_length, seed) -> np.ndarray:
    """Generate texts in batches ``make_texts(count, seed)`` until they give ``num_sequences``
    windows; batch b uses the seed ``seed * 100_003 + b``."""
    num_sequences = positive_int("num_sequences", num_sequences)
    context_length = check_context(context_length)
    # Roughly 3 characters per token for this text; over-generate and top up if needed.
    n_texts = max(8, num_sequences * context_length // 6)
    batch = 0
    ids: list[np.ndarray] = []
    while True:
        texts = make_texts(n_texts, seed * 100_003 + batch)
        batch += 1
        ids.append(chunk_ids(texts, tokenizer, context_length, allow_partial=True))
        total = sum(len(x) for x in ids)
        if total >= num_sequences:
            return np.concatenate(ids, axis=0)[:num_sequences]
