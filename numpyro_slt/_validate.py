"""Argument checks shared by the whole package: one place for the rules and their messages.

Every check raises ``ValueError`` naming the argument, what it must be and what it got, and
returns the value in its canonical type (``int``, ``float``, an int32 token array), so a caller
writes ``batch_size = positive_int("batch_size", batch_size)``. ``bool`` is never accepted where a
number is asked for, although Python counts it as an ``int``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["positive_int", "nonnegative_int", "positive_number", "nonnegative_number",
           "fraction", "token_array"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool | np.bool_))


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 1."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def nonnegative_int(name: str, value: Any) -> int:
    """``value`` as an ``int`` ≥ 0."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
    return int(value)


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float`` > 0."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def positive_float(name: str, value: Any, hint: str) -> float:
    """``float(value)``, finite and > 0 (anything ``float`` converts: NumPy and JAX scalars too);
    otherwise a ``ValueError`` naming ``name`` and ending with ``hint``, what to pass instead."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}; {hint}") from None
    if not (number > 0.0 and math.isfinite(number)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}; {hint}")
    return number


def nonnegative_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float`` ≥ 0."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    return float(value)


def fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` in [0, 1]."""
    if not _is_real(value) or not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    return float(value)


def token_array(name: str, tokens: Any, *, d_vocab: int, n_ctx: int,
                min_length: int = 2) -> np.ndarray:
    """``tokens`` as an int32 array ``[sequences, length]`` of ids in [0, d_vocab), with
    ``min_length ≤ length ≤ n_ctx`` and at least one sequence.

    ``min_length`` is 2 wherever a token is predicted from the ones before it (a sequence of one
    token predicts nothing).
    """
    arr = np.asarray(tokens)
    if arr.dtype == object or arr.ndim != 2 or arr.shape[0] == 0:
        empty = " (no sequences)" if arr.dtype != object and arr.ndim == 2 else ""
        raise ValueError(
            f"{name} must be a non-empty 2-D array of shape (sequences, context), got shape "
            f"{arr.shape}{empty}; stack the input_ids of a dataset into one 2-D integer array.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer token ids (an integer dtype), got dtype "
                         f"{arr.dtype}.")
    length = arr.shape[1]
    if length < min_length:
        raise ValueError(f"{name} sequences have {length} token(s); need at least {min_length} "
                         "to predict one (the sequence is too short).")
    if length > n_ctx:
        raise ValueError(
            f"{name} sequences have {length} tokens, longer than the context: the network's "
            f"context is {n_ctx} (a sequence that exceeds the context n_ctx={n_ctx} must be cut "
            "to n_ctx tokens).")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high >= d_vocab:
        raise ValueError(
            f"{name}: token ids must lie in [0, {d_vocab - 1}] (the vocabulary, d_vocab="
            f"{d_vocab}), got ids from {low} to {high}, outside the vocabulary; re-tokenize with "
            "the network's tokenizer.")
    return arr.astype(np.int32)
