"""numpyro_slt.data: offline corpora, tokenizer, probes, token datasets, labels, bad input."""

import json
import re

import datasets
import numpy as np
import pytest

from numpyro_slt.data import (
    EOS_TOKEN,
    GENRES,
    LABELS,
    arithmetic_problems,
    arithmetic_sequences,
    bracket_sequences,
    bracket_texts,
    brackets_balanced,
    chunk_texts,
    genre_corpus,
    genre_dataset,
    genre_texts,
    induction_sequences,
    label_sequences,
    label_tokens,
    load_hub_dataset,
    load_tokenizer,
    save_tokenizer,
    to_dataset,
    train_tokenizer,
    validate_input_ids,
)

VOCAB = 300
CHARS = 60_000


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(vocab_size=VOCAB, max_chars=CHARS, seed=0)


# --- corpora ---------------------------------------------------------------------------------


@pytest.mark.parametrize("genre", GENRES)
def test_genre_corpus_deterministic_with_provenance(genre):
    a = genre_corpus(genre, max_chars=20_000, seed=3)
    b = genre_corpus(genre, max_chars=20_000, seed=3)
    assert a.texts == b.texts and a.provenance == b.provenance
    assert a.texts and a.num_chars == sum(len(t) for t in a.texts) <= 20_000
    assert len(a.provenance) == len(a.texts)
    for prov in a.provenance:
        assert set(prov) == {"source", "package", "license"} and prov["source"]
    assert genre_texts(genre, max_chars=20_000, seed=3) == a.texts


def test_genre_seeds_differ_and_sources_are_local():
    assert genre_texts("code", 20_000, seed=0) != genre_texts("code", 20_000, seed=1)
    legal = genre_corpus("legal", max_chars=50_000)
    assert any("licen" in t.lower() or "copyright" in t.lower() for t in legal.texts)
    code = genre_corpus("code", max_chars=5_000)
    assert code.provenance[0]["license"] == "PSF-2.0"
    assert code.provenance[0]["source"].endswith(".py")


# --- tokenizer -------------------------------------------------------------------------------


def test_tokenizer_vocab_roundtrip_and_determinism(tok, tmp_path):
    assert tok.get_vocab_size() <= VOCAB
    assert tok.token_to_id(EOS_TOKEN) == 0
    text = 'def f(x):\n    return {"k": [x, 12]}  # naïve café\n'
    ids = tok.encode(text).ids
    assert max(ids) < VOCAB
    assert tok.decode(ids) == text
    again = train_tokenizer(vocab_size=VOCAB, max_chars=CHARS, seed=0)
    assert again.to_str() == tok.to_str()
    path = save_tokenizer(tok, tmp_path / "sub" / "tok.json")
    loaded = load_tokenizer(path)
    assert loaded.encode(text).ids == ids
    assert not list(tmp_path.glob("sub/*.tmp"))


# --- probes ----------------------------------------------------------------------------------


def test_induction_sequences_repeat():
    x = induction_sequences(5, 7, low=1, high=VOCAB, seed=2)
    assert x.shape == (5, 14)
    np.testing.assert_array_equal(x[:, :7], x[:, 7:])
    assert x.min() >= 1 and x.max() < VOCAB
    np.testing.assert_array_equal(x, induction_sequences(5, 7, low=1, high=VOCAB, seed=2))
    assert not np.array_equal(x, induction_sequences(5, 7, low=1, high=VOCAB, seed=3))


def test_brackets_balanced_and_tokenized(tok):
    texts = bracket_texts(50, max_depth=4, seed=1)
    assert texts == bracket_texts(50, max_depth=4, seed=1)
    assert all(brackets_balanced(t) for t in texts)
    assert any(c in "".join(texts) for c in "[{")
    assert not brackets_balanced("([)]") and not brackets_balanced("((")
    seqs = bracket_sequences(tok, 4, 32, seed=1)
    assert seqs.shape == (4, 32) and seqs.max() < VOCAB
    np.testing.assert_array_equal(seqs, bracket_sequences(tok, 4, 32, seed=1))


def _expression(question):
    m = re.fullmatch(r"What is (-?\d+) divided by (-?\d+)\?", question)
    if m:
        a, b = int(m[1]), int(m[2])
        assert a % b == 0
        return a // b
    m = re.fullmatch(r"Sum (-?\d+) and (-?\d+)\.", question)
    if m:
        return int(m[1]) + int(m[2])
    m = re.fullmatch(r"(?:Calculate|Evaluate|What is) ([-\d ()*+]+)[.?]", question)
    assert m, question
    return eval(m[1], {"__builtins__": {}})  # only digits, spaces, ( ) * + -


def test_arithmetic_answers_correct(tok):
    problems = arithmetic_problems(300, seed=4)
    assert problems == arithmetic_problems(300, seed=4)
    assert len({q.split()[0] for q, _ in problems}) >= 4
    for question, answer in problems:
        assert _expression(question) == int(answer), question
    seqs = arithmetic_sequences(tok, 3, 24, seed=4)
    assert seqs.shape == (3, 24)


# --- datasets --------------------------------------------------------------------------------


def test_chunk_texts_layout(tok):
    texts = ["alpha beta gamma " * 20, "def f(x): return x\n" * 10]
    ds = chunk_texts(texts, tok, context_length=16)
    assert isinstance(ds, datasets.Dataset) and ds.column_names == ["input_ids"]
    total = sum(len(tok.encode(t).ids) + 1 for t in texts)
    assert len(ds) == total // 16
    assert all(len(row) == 16 for row in ds["input_ids"])
    flat = [i for row in ds["input_ids"] for i in row]
    first = tok.encode(texts[0]).ids
    assert flat[: len(first)] == first and flat[len(first)] == 0  # separator after each text
    assert len(chunk_texts(texts, tok, 16, num_sequences=3)) == 3


def test_genre_dataset_shapes_and_determinism(tok):
    for genre in GENRES:
        ds = genre_dataset(genre, tok, context_length=32, num_sequences=6, seed=0)
        arr = np.asarray(ds["input_ids"])
        assert arr.shape == (6, 32) and arr.max() < VOCAB and arr.min() >= 0
    a = genre_dataset("code", tok, 32, 6, seed=5)["input_ids"]
    assert a == genre_dataset("code", tok, 32, 6, seed=5)["input_ids"]


def test_hub_loader_on_local_jsonl(tok, tmp_path):
    path = tmp_path / "pile.jsonl"
    rows = [{"text": f"def f{i}(x):\n    return x + {i}\n", "meta": i} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_hub_dataset(str(path), "train", tok, context_length=16)
    expect = chunk_texts([r["text"] for r in rows], tok, 16)
    assert ds["input_ids"] == expect["input_ids"]
    few = load_hub_dataset("json", "train", tok, 16, data_files=str(path), num_sequences=5)
    assert few["input_ids"] == expect["input_ids"][:5]
    # a pre-tokenized dataset (devinterp layout) is passed through, cut to the context
    tokpath = tmp_path / "tokens.jsonl"
    tokpath.write_text("\n".join(json.dumps({"input_ids": r}) for r in expect["input_ids"]))
    pre = load_hub_dataset(tokpath, "train", tok, context_length=8)
    assert pre["input_ids"] == [r[:8] for r in expect["input_ids"]]


# --- labels ----------------------------------------------------------------------------------


def _ids(tok, pieces):
    return [tok.encode(p).ids[0] for p in pieces]


def test_labels_hand_made(tok):
    for piece in ["(", "[", "{", ")", "]", "}", "1", "7", " ", "\n", ",", ":", "a", "b", "c"]:
        assert len(tok.encode(piece).ids) == 1, piece
    seq = _ids(tok, ["a", "b", "(", "7", ")", ",", " ", "\n", "c", "a", "b"])
    labels = label_tokens(seq, tok)
    assert len(labels) == len(seq) and set(labels) <= set(LABELS)
    assert labels[:3] == ["word_start", "word_part", "left_delimiter"]
    assert labels[3] == "numeric" and labels[4] == "right_delimiter"
    assert labels[5] == "formatting" and labels[6] == "spacing" and labels[7] == "formatting"
    assert labels[8] == "word_start"
    assert labels[9] == "word_part"  # 'c a' is a new bigram
    assert labels[10] == "induction"  # (a, b) occurred at positions 0, 1
    spaced = sorted(t for t in tok.get_vocab() if re.fullmatch(r"Ġ[a-z]+", t))[0]
    assert label_tokens([tok.token_to_id(spaced)], tok) == ["word_start"]
    assert label_tokens(_ids(tok, [" ", "b"]), tok) == ["spacing", "word_start"]
    assert label_tokens([0], tok) == ["formatting"]  # end-of-text token
    assert label_sequences(np.array([seq, seq]), tok) == [labels, labels]


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_errors(tok, tmp_path):
    with pytest.raises(ValueError, match=r"genre='poetry'.*'code'.*'legal'"):
        genre_texts("poetry")
    with pytest.raises(ValueError, match="genre="):
        genre_dataset("poetry", tok, 16, 2)
    with pytest.raises(ValueError, match="max_chars"):
        genre_texts("code", max_chars=0)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(vocab_size=100)
    with pytest.raises(ValueError, match="input_ids contain token ids.*vocabulary"):
        validate_input_ids([[1, 2, VOCAB]], vocab_size=VOCAB)
    with pytest.raises(ValueError, match="vocabulary"):
        validate_input_ids([[1, -1, 2]])
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        label_tokens([1, VOCAB + 5], tok)
    with pytest.raises(ValueError, match="shorter than context_length=8"):
        to_dataset([[1, 2, 3, 4]], vocab_size=VOCAB, context_length=8)
    with pytest.raises(ValueError, match="input_ids is empty"):
        to_dataset([])
    with pytest.raises(ValueError, match="input_ids is empty"):
        validate_input_ids(datasets.Dataset.from_dict({"input_ids": []}))
    with pytest.raises(ValueError, match="different lengths|2-D"):
        validate_input_ids([[1, 2], [1]])
    with pytest.raises(ValueError, match="texts is empty"):
        chunk_texts([], tok, 8)
    with pytest.raises(ValueError, match="fewer than context_length=64"):
        chunk_texts(["ab"], tok, 64)
    with pytest.raises(ValueError, match="context_length"):
        chunk_texts(["abc"], tok, 1)
    with pytest.raises(ValueError, match="separator_token"):
        chunk_texts(["abc"], tok, 2, separator_token="<nope>")
    with pytest.raises(ValueError, match="low=.*high="):
        induction_sequences(2, 3, low=5, high=5)
    with pytest.raises(ValueError, match="num_sequences"):
        induction_sequences(0, 3)
    with pytest.raises(ValueError, match="load_tokenizer|save_tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="text_column='content'.*columns"):
        load_hub_dataset(empty, "train", tok, 4, text_column="content")
    with pytest.raises(ValueError, match="fewer than context_length=64"):
        load_hub_dataset(empty, "train", tok, 64)
    with pytest.raises(ValueError, match="tokenizer=None"):
        load_hub_dataset(empty, "train", None, 4)


def test_recipe_cli(tmp_path):
    from numpyro_slt.data.__main__ import main

    out = tmp_path / "tok.json"
    main([str(out), "--vocab-size", "280", "--max-chars", "20000"])
    assert load_tokenizer(out).get_vocab_size() <= 280
