"""Synthetic probe data, deterministic from a seed (no third-party text, nothing to license).

* Induction patterns: a uniformly random token sequence of length ``L`` repeated twice
  (Olsson et al. 2022): a model with induction heads predicts the second copy far better.
* Nested brackets: well-nested ``()``, ``[]``, ``{}`` text (with short words inside), tokenized.
* Arithmetic in the style of DeepMind Mathematics (Saxton et al. 2019): "Calculate 12 + -7.",
  "What is 3*4 - 2?", "Evaluate (5 - 9)*2.", "What is 84 divided by 7?", each with its integer
  answer, generated here from scratch (the templates imitate the style; no DM text is used).
"""

from __future__ import annotations

import random

import numpy as np

BRACKET_PAIRS: tuple[tuple[str, str], ...] = (("(", ")"), ("[", "]"), ("{", "}"))
_WORDS = ("a", "b", "x", "y", "key", "val", "item", "n", "0", "1", "f", "data")


def _check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
    return int(value)


def induction_sequences(
    num_sequences: int, length: int, low: int = 0, high: int = 5000, seed: int = 0
) -> np.ndarray:
    """Return an int32 array of shape ``(num_sequences, 2 * length)``: each row is a sequence of
    ``length`` token ids drawn uniformly from ``[low, high)`` followed by an exact copy of it.

    Use ``low`` to skip special tokens (e.g. ``low=1`` when id 0 is the end-of-text token) and
    ``high=vocab_size`` (or lower) to stay inside the vocabulary.
    """
    _check_positive("num_sequences", num_sequences)
    _check_positive("length", length)
    if not (isinstance(low, (int, np.integer)) and isinstance(high, (int, np.integer))) or not (
        0 <= low < high
    ):
        raise ValueError(
            f"low={low!r}, high={high!r} must be integers with 0 <= low < high (a token id range)."
        )
    rng = np.random.default_rng(seed)
    first = rng.integers(low, high, size=(num_sequences, length), dtype=np.int64)
    return np.concatenate([first, first], axis=1).astype(np.int32)


def _bracket_group(rng: random.Random, depth: int, max_depth: int) -> str:
    left, right = rng.choice(BRACKET_PAIRS)
    parts = []
    for _ in range(rng.randint(1, 3)):
        if depth < max_depth and rng.random() < 0.55:
            parts.append(_bracket_group(rng, depth + 1, max_depth))
        else:
            parts.append(rng.choice(_WORDS))
    sep = rng.choice((" ", ", "))
    return left + sep.join(parts) + right


def bracket_texts(num_texts: int, max_depth: int = 4, seed: int = 0) -> list[str]:
    """Return ``num_texts`` strings of well-nested ``()``/``[]``/``{}`` groups (nesting depth at
    most ``max_depth``) with short words inside, e.g. ``"f([a, {x}] (n))"``."""
    _check_positive("num_texts", num_texts)
    _check_positive("max_depth", max_depth)
    rng = random.Random(seed)
    texts = []
    for _ in range(num_texts):
        groups = [_bracket_group(rng, 1, max_depth) for _ in range(rng.randint(1, 3))]
        prefix = rng.choice(("", "f", "x = ", "call"))
        texts.append(prefix + " ".join(groups))
    return texts


def brackets_balanced(text: str) -> bool:
    """Return True when every bracket in ``text`` is closed by its partner in nesting order."""
    closing = {r: l for l, r in BRACKET_PAIRS}
    stack = []
    for ch in text:
        if ch in "([{":
            stack.append(ch)
        elif ch in closing:
            if not stack or stack.pop() != closing[ch]:
                return False
    return not stack


def _num(rng: random.Random, lo: int = -99, hi: int = 99) -> int:
    return rng.randint(lo, hi)


def _fmt(n: int, paren: bool = False) -> str:
    return f"({n})" if paren and n < 0 else str(n)


def arithmetic_problems(num_problems: int, seed: int = 0) -> list[tuple[str, str]]:
    """Return ``num_problems`` pairs ``(question, answer)`` of integer arithmetic in the style of
    DM Mathematics; ``answer`` is the exact integer result as a string.

    Question forms: ``"Calculate a + b."``, ``"What is a - b?"``, ``"What is a*b - c?"``,
    ``"Evaluate (a - b)*c."``, ``"What is a divided by b?"`` (exact division),
    ``"Sum a and b."``. Negative operands appear as ``-7`` or ``(-7)`` after an operator.
    """
    _check_positive("num_problems", num_problems)
    rng = random.Random(seed)
    out = []
    for _ in range(num_problems):
        kind = rng.randrange(6)
        a, b, c = _num(rng), _num(rng), _num(rng, -20, 20)
        if kind == 0:
            q, ans = f"Calculate {a} + {b}.", a + b
        elif kind == 1:
            q, ans = f"What is {a} - {_fmt(b, True)}?", a - b
        elif kind == 2:
            a, b = _num(rng, -12, 12), _num(rng, -12, 12)
            q, ans = f"What is {a}*{_fmt(b, True)} - {_fmt(c, True)}?", a * b - c
        elif kind == 3:
            q, ans = f"Evaluate ({a} - {_fmt(b, True)})*{_fmt(c, True)}.", (a - b) * c
        elif kind == 4:
            divisor = rng.choice([d for d in range(-12, 13) if d != 0])
            quotient = _num(rng, -30, 30)
            q, ans = f"What is {divisor * quotient} divided by {divisor}?", quotient
        else:
            q, ans = f"Sum {a} and {b}.", a + b
        out.append((q, str(ans)))
    return out


def arithmetic_texts(num_problems: int, seed: int = 0) -> list[str]:
    """Return ``num_problems`` strings ``"<question>\\n<answer>"`` from
    :func:`arithmetic_problems`."""
    return [f"{q}\n{a}" for q, a in arithmetic_problems(num_problems, seed=seed)]


def bracket_sequences(tokenizer, num_sequences: int, context_length: int, seed: int = 0,
                      max_depth: int = 4) -> np.ndarray:
    """Return an int32 array ``(num_sequences, context_length)`` of token ids of bracket text from
    :func:`bracket_texts`, joined by the end-of-text token and cut into fixed windows."""
    return _probe_sequences(lambda n, s: bracket_texts(n, max_depth=max_depth, seed=s),
                            tokenizer, num_sequences, context_length, seed)


def arithmetic_sequences(tokenizer, num_sequences: int, context_length: int,
                         seed: int = 0) -> np.ndarray:
    """Return an int32 array ``(num_sequences, context_length)`` of token ids of arithmetic
    questions and answers from :func:`arithmetic_texts`, joined by the end-of-text token and cut
    into fixed windows."""
    return _probe_sequences(arithmetic_texts, tokenizer, num_sequences, context_length, seed)


def _probe_sequences(make_texts, tokenizer, num_sequences, context_length, seed) -> np.ndarray:
    from .datasets_io import chunk_ids

    _check_positive("num_sequences", num_sequences)
    _check_positive("context_length", context_length, 2)
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
