"""Token pattern labels used to read per-token susceptibilities.

Every token of a sequence gets exactly one label from :data:`LABELS`. The token's text is its
bytes (byte-level BPE token strings mapped back through the GPT-2 byte alphabet, so a leading
``"Ġ"`` is a leading space), decoded as UTF-8 with replacement; a token the tokenizer added to its
vocabulary (its special tokens, or GPT-NeoX's runs of spaces) is its own text. This covers the
byte-level BPE tokenizers of GPT-2 and GPT-NeoX (``tokenizer.json`` loaded with
``tokenizers.Tokenizer.from_file``) as well as :func:`~numpyro_slt.data.train_tokenizer`'s.
When several labels apply, the first rule that matches wins, in this order:

1. ``induction``: the pair (previous token, this token) occurred earlier in the same sequence,
   i.e. the token continues a bigram already seen in the context;
2. ``spacing``: the token is only spaces (no newline, no tab);
3. ``formatting`` (whitespace): the token is whitespace containing a newline or tab (line breaks,
   indentation), or a special token such as the end-of-text token: one the tokenizer marks as
   special (``get_added_tokens_decoder``); for a tokenizer object without that method, any
   token written ``<...>``;
4. then the text after leading spaces (the core) decides:
   ``numeric`` if it contains a digit and only digits and ``.,_``;
   ``left_delimiter`` if it starts with one of ``( [ { < " '``, except an apostrophe followed
   by letters only (GPT-2's contractions ``'s``, ``'t``, ``'re``, …, which continue a word);
   ``right_delimiter`` if it starts with one of ``) ] } >``;
   ``formatting`` if it has no letter or digit (punctuation such as ``, . : ;``);
5. ``word_start`` if the token starts with a space or follows a token (or the sequence start)
   that does not end in a letter or digit; otherwise ``word_part`` (the token continues a word).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

LABELS: tuple[str, ...] = (
    "word_start", "word_part", "induction", "spacing", "left_delimiter", "right_delimiter",
    "formatting", "numeric",
)
LEFT_DELIMITERS = "([{<\"'"
RIGHT_DELIMITERS = ")]}>"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Map each GPT-2 byte-level alphabet character back to its byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    byte_values = list(printable)
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for c, b in zip(chars, byte_values, strict=True)}


def _added_tokens(tokenizer) -> dict[int, tuple[str, bool]] | None:
    """Id → (text, special) of the tokens added to the tokenizer's vocabulary (special tokens,
    GPT-NeoX's runs of spaces), or None when the tokenizer cannot tell."""
    added = getattr(tokenizer, "get_added_tokens_decoder", None)
    if added is None:
        return None
    return {int(i): (tok.content, bool(tok.special)) for i, tok in added().items()}


def _text(tokenizer, token_id: int, added: dict[int, tuple[str, bool]] | None) -> str:
    if added is not None and token_id in added:
        return added[token_id][0]
    raw = tokenizer.id_to_token(int(token_id))
    if raw is None:
        raise ValueError(f"token id {token_id} is not in the tokenizer's vocabulary.")
    table = _byte_decoder()
    if all(ch in table for ch in raw):
        return bytes(table[ch] for ch in raw).decode("utf-8", errors="replace")
    return raw


def token_text(tokenizer, token_id: int) -> str:
    """Return the text of one token (bytes decoded as UTF-8 with replacement); special tokens
    and other added tokens are returned as their text (e.g. ``"<|endoftext|>"``)."""
    return _text(tokenizer, int(token_id), _added_tokens(tokenizer))


def _is_special(tokenizer, token_id: int, added: dict[int, tuple[str, bool]] | None) -> bool:
    if added is not None:
        return token_id in added and added[token_id][1]
    raw = tokenizer.id_to_token(int(token_id))
    return raw is not None and raw.startswith("<") and raw.endswith(">") and len(raw) > 2


def _base_label(text: str, prev_text: str | None, special: bool) -> str:
    if special:
        return "formatting"
    if text and set(text) == {" "}:
        return "spacing"
    if text and text.isspace():
        return "formatting"
    core = text.lstrip(" ")
    if not core:
        return "formatting"
    if any(c.isdigit() for c in core) and all(c.isdigit() or c in ".,_" for c in core):
        return "numeric"
    contraction = core[0] == "'" and core[1:].isalpha()
    if core[0] in LEFT_DELIMITERS and not contraction:
        return "left_delimiter"
    if core[0] in RIGHT_DELIMITERS:
        return "right_delimiter"
    if not any(c.isalnum() for c in core):
        return "formatting"
    if text.startswith(" ") or not prev_text or not prev_text[-1].isalnum():
        return "word_start"
    return "word_part"


def label_tokens(input_ids, tokenizer) -> list[str]:
    """Return one label from :data:`LABELS` per token of ``input_ids`` (a 1-D sequence of ids),
    with the precedence stated in the module docstring. Raises ValueError for ids outside the
    tokenizer's vocabulary or a sequence that is not 1-D."""
    ids = np.asarray(input_ids)
    if ids.ndim != 1:
        raise ValueError(f"input_ids must be one sequence (1-D), got shape {ids.shape}; label "
                         "a batch with label_sequences().")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {ids.dtype}.")
    vocab = tokenizer.get_vocab_size()
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        raise ValueError(
            f"input_ids contain ids from {ids.min()} to {ids.max()}, outside the tokenizer's "
            f"vocabulary [0, {vocab}); use the tokenizer that produced them."
        )
    ids_list = [int(i) for i in ids]
    added = _added_tokens(tokenizer)
    texts = [_text(tokenizer, i, added) for i in ids_list]
    seen: set[tuple[int, int]] = set()
    labels = []
    for i, tid in enumerate(ids_list):
        pair = (ids_list[i - 1], tid) if i > 0 else None
        if pair is not None and pair in seen:
            labels.append("induction")
        else:
            prev = texts[i - 1] if i > 0 else None
            labels.append(_base_label(texts[i], prev, _is_special(tokenizer, tid, added)))
        if pair is not None:
            seen.add(pair)
    return labels


def label_sequences(input_ids, tokenizer) -> list[list[str]]:
    """Return :func:`label_tokens` for each row of ``input_ids`` (2-D array, list of lists or a
    ``datasets.Dataset`` with column ``input_ids``)."""
    if hasattr(input_ids, "column_names"):
        input_ids = input_ids["input_ids"]
    return [label_tokens(row, tokenizer) for row in input_ids]
