"""Synthetic token and text patterns, deterministic from a seed: they need no corpus and no
tokenizer (no third-party text, nothing to license).

* Induction sequences: a uniformly random token sequence of length ``L`` repeated twice
  (Olsson et al. 2022): a model with induction heads predicts the second copy far better.
* The induction mixture: windows of a token stream of which a share carries a repeated segment,
  the training and sampling distribution that rewards in-context copying.
* Nested brackets: well-nested ``()``, ``[]``, ``{}`` text with short words inside.
* Arithmetic in the style of DeepMind Mathematics (Saxton et al. 2019): "Calculate 12 + -7.",
  "What is 3*4 - 2?", "Evaluate (5 - 9)*2.", "What is 84 divided by 7?", each with its integer
  answer, generated here from scratch (the templates imitate the style; no DM text is used).

:mod:`numpyro_slt.data.probes` tokenizes the bracket and arithmetic texts into fixed windows.
"""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import fraction, positive_int

__all__ = [
    "BRACKET_PAIRS", "arithmetic_problems", "arithmetic_texts", "bracket_texts",
    "brackets_balanced", "induction_mixture", "induction_sequences", "repeated_random_tokens",
]

BRACKET_PAIRS: tuple[tuple[str, str], ...] = (("(", ")"), ("[", "]"), ("{", "}"))
_WORDS = ("a", "b", "x", "y", "key", "val", "item", "n", "0", "1", "f", "data")


def repeated_random_tokens(source, num_sequences: int, length: int, vocab_low: int,
                           vocab_high: int) -> np.ndarray:
    """``num_sequences`` sequences of ``length`` uniform random tokens repeated twice: an int32
    array ``[num_sequences, 2·length]`` whose row b is ``(r_b, r_b)`` with
    ``r_b[j] ~ Uniform{vocab_low, …, vocab_high − 1}`` i.i.d.

    ``source`` decides how the tokens are drawn, each a deterministic function of it: a JAX PRNG
    key draws ``jax.random.randint(source, (num_sequences, length), vocab_low, vocab_high,
    int32)`` (the probes of :mod:`numpyro_slt.nn.induction` and of training), anything else is
    a seed of ``numpy.random.default_rng`` (the probes of a study, through
    :func:`induction_sequences`).
    """
    num_sequences = positive_int("num_sequences", num_sequences)
    length = positive_int("length", length)
    if not (isinstance(vocab_low, (int, np.integer)) and isinstance(vocab_high, (int, np.integer))
            ) or not 0 <= vocab_low < vocab_high:
        raise ValueError(
            f"need integers 0 <= vocab_low < vocab_high (the token id range [low, high)), got "
            f"low={vocab_low!r}, high={vocab_high!r}."
        )
    shape = (num_sequences, length)
    if isinstance(source, jax.Array):
        first = np.asarray(jax.random.randint(source, shape, int(vocab_low), int(vocab_high),
                                              dtype=jnp.int32))
    else:
        rng = np.random.default_rng(source)
        first = rng.integers(vocab_low, vocab_high, size=shape, dtype=np.int64)
    return np.concatenate([first, first], axis=1).astype(np.int32)


def induction_sequences(
    num_sequences: int, length: int, low: int = 0, high: int = 5000, seed=0
) -> np.ndarray:
    """Return an int32 array of shape ``(num_sequences, 2 * length)``: each row is a sequence of
    ``length`` token ids drawn uniformly from ``[low, high)`` followed by an exact copy of it
    (:func:`repeated_random_tokens` with ``source=seed``).

    Use ``low`` to skip special tokens (e.g. ``low=1`` when id 0 is the end-of-text token) and
    ``high=vocab_size`` (or lower) to stay inside the vocabulary.
    """
    return repeated_random_tokens(seed, num_sequences, length, low, high)


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
    positive_int("num_texts", num_texts)
    positive_int("max_depth", max_depth)
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
    positive_int("num_problems", num_problems)
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


def induction_mixture(
    key,
    base_tokens,
    num_sequences: int,
    context: int,
    repeat_fraction: float = 0.6,
    *,
    random_fraction: float = 0.5,
    vocab_low: int = 0,
    vocab_high: int | None = None,
    min_segment: int | None = None,
    max_segment: int | None = None,
) -> np.ndarray:
    """Training windows of ``context`` tokens of which a share carries repeated segments.

    Every row starts as a window of ``base_tokens`` (a 1-D stream, or a 2-D array that is
    flattened row by row) at a uniformly random offset. Then, independently per row, with
    probability ``repeat_fraction`` the row receives one repeated segment of length
    ℓ ~ Uniform{min_segment, …, max_segment} (defaults ``max(2, context // 8)`` and
    ``context // 2``):

    - with probability ``random_fraction`` a *random-token* segment: ℓ tokens uniform in
      ``[vocab_low, vocab_high)`` (default the range of ``base_tokens``) written at a position p
      and again at p + ℓ + g (gap g uniform in what is left of the window);
    - otherwise a *copied span*: the window's own tokens at [p, p + ℓ) copied to
      [p + ℓ + g, p + 2ℓ + g) (a natural-text span that recurs later, as quotes and repeated
      identifiers do).

    So a share ``repeat_fraction`` of rows lets a model lower its loss by in-context copying,
    which is what rewards induction heads. ``key`` is a JAX key or an int seed; the result is a
    deterministic int32 array ``[num_sequences, context]``.
    """
    base = np.asarray(base_tokens)
    if not np.issubdtype(base.dtype, np.integer):
        raise ValueError(f"base_tokens must be integers, got dtype {base.dtype}.")
    base = base.reshape(-1).astype(np.int32)
    num_sequences = positive_int("num_sequences", num_sequences)
    context = positive_int("context", context)
    if context < 4:
        raise ValueError(f"context must be >= 4, got {context}.")
    if base.size < context:
        raise ValueError(f"base_tokens has {base.size} tokens, fewer than one window ({context}).")
    repeat_fraction = fraction("repeat_fraction", repeat_fraction)
    random_fraction = fraction("random_fraction", random_fraction)
    lo_seg = max(2, context // 8) if min_segment is None else int(min_segment)
    hi_seg = context // 2 if max_segment is None else int(max_segment)
    if not 2 <= lo_seg <= hi_seg <= context // 2:
        raise ValueError(
            f"need 2 <= min_segment <= max_segment <= context // 2 = {context // 2}, got "
            f"{lo_seg} and {hi_seg}."
        )
    vocab_high = int(base.max()) + 1 if vocab_high is None else int(vocab_high)
    if not 0 <= vocab_low < vocab_high:
        raise ValueError(f"need 0 <= vocab_low < vocab_high, got {vocab_low}, {vocab_high}.")

    if isinstance(key, (int, np.integer)):
        seed = [int(key)]
    else:
        seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32)).tolist()
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, base.size - context + 1, size=num_sequences)
    out = np.stack([base[o : o + context] for o in offsets])
    for row in out:
        if rng.random() >= repeat_fraction:
            continue
        seg = int(rng.integers(lo_seg, hi_seg + 1))
        slack = context - 2 * seg  # room for the start position and the gap together
        gap = int(rng.integers(0, slack + 1))
        p = int(rng.integers(0, slack - gap + 1))
        if rng.random() < random_fraction:
            row[p : p + seg] = rng.integers(vocab_low, vocab_high, size=seg)
        row[p + seg + gap : p + 2 * seg + gap] = row[p : p + seg]
    return out
