"""The study on the user's own data: token windows from datasets, folders, files and Hub names
(offline), StudyConfig's data/probes/context_length, study_data with them, the CLI flags, and the
token pattern labels of GPT-2- and GPT-NeoX-style tokenizers."""

import json

import datasets
import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from numpyro_slt.data import (
    EOS_TOKEN,
    genre_texts,
    label_tokens,
    token_text,
    token_windows,
    train_tokenizer,
)
from numpyro_slt.study import StudyConfig, study_data
from numpyro_slt.study.sampling import study_settings

VOCAB = 300


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(vocab_size=VOCAB, max_chars=60_000, seed=0)


@pytest.fixture(scope="module")
def default():
    from numpyro_slt.nn import load_default

    return load_default()


def _byte_level_bpe(path, texts, special_first=(), special_last=(), added=()):
    """A byte-level BPE tokenizer as GPT-2 and GPT-NeoX have them (GPT-2 pre-tokenizer and
    decoder), written as tokenizer.json and read back with Tokenizer.from_file."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=2,
                                  special_tokens=list(special_first),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if added:
        tokenizer.add_tokens([AddedToken(t, normalized=True) for t in added])
    if special_last:
        tokenizer.add_special_tokens(list(special_last))
    tokenizer.save(str(path))
    return Tokenizer.from_file(str(path))


TRAINING = ["x <=> y 123 (z) it's the thing\n"] * 200


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """GPT-2's layout: the end-of-text token is the last id, added as a special token."""
    path = tmp_path_factory.mktemp("gpt2") / "tokenizer.json"
    return _byte_level_bpe(path, genre_texts("prose", 30_000) + TRAINING,
                           special_last=[EOS_TOKEN])


@pytest.fixture(scope="module")
def neox(tmp_path_factory):
    """GPT-NeoX's layout: <|endoftext|> and <|padding|> first, runs of spaces added as
    (non-special) tokens."""
    path = tmp_path_factory.mktemp("neox") / "tokenizer.json"
    return _byte_level_bpe(path, genre_texts("prose", 30_000) + TRAINING,
                           special_first=[EOS_TOKEN, "<|padding|>"], added=["  ", "    "])


def _rows(n, length, start=1):
    return [[(start + 7 * i + j) % VOCAB for j in range(length)] for i in range(n)]


# --- token_windows: sources ------------------------------------------------------------------


def test_windows_of_an_input_ids_dataset_saved_to_disk(tok, tmp_path):
    long_rows = _rows(6, 20)  # each gives 2 windows of 8; its remainder of 4 is dropped
    ds = datasets.Dataset.from_dict({"input_ids": long_rows})
    ds.save_to_disk(str(tmp_path / "saved"))
    w = token_windows(str(tmp_path / "saved"), tok, 8, 12, seed=3)
    assert w.shape == (12, 8) and w.dtype == np.int32
    expect = {tuple(r[i * 8:(i + 1) * 8]) for r in long_rows for i in range(2)}
    assert {tuple(x) for x in w} == expect  # every window once: the rows in some order
    np.testing.assert_array_equal(w, token_windows(ds, tok, 8, 12, seed=3))
    np.testing.assert_array_equal(w, token_windows(tmp_path / "saved", tok, 8, 12, seed=3))
    assert not np.array_equal(w, token_windows(ds, tok, 8, 12, seed=4))  # another row order
    with pytest.raises(ValueError, match="fewer than the 13 asked.*num_sequences"):
        token_windows(ds, tok, 8, 13)
    # rows shorter than a window are joined with the end-of-text token (id 0) after each
    short = datasets.Dataset.from_dict({"input_ids": [[5, 6, 7]] * 4})
    np.testing.assert_array_equal(token_windows(short, tok, 4, 4),
                                  np.array([[5, 6, 7, 0]] * 4, np.int32))
    np.testing.assert_array_equal(token_windows(short, tok, 3, 4, separator_token=None),
                                  np.array([[5, 6, 7]] * 4, np.int32))
    # a DatasetDict, saved or not: the split is chosen
    both = datasets.DatasetDict({"train": ds, "validation": short})
    both.save_to_disk(str(tmp_path / "dict"))
    np.testing.assert_array_equal(token_windows(tmp_path / "dict", tok, 4, 2, split="validation"),
                                  token_windows(short, tok, 4, 2))
    with pytest.raises(ValueError, match=r"splits \['train', 'validation'\], not split='test'"):
        token_windows(both, tok, 4, 2, split="test")


def test_windows_of_texts_in_a_jsonl_file_a_folder_and_a_text_file(tok, tmp_path):
    texts = [f"def f{i}(x):\n    return x + {i}\n" for i in range(40)]
    path = tmp_path / "code.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "n": i}) for i, t in enumerate(texts)))
    w = token_windows(str(path), tok, 16, 10, seed=1)
    # the rule: rows in the order of default_rng(seed).permutation, end-of-text after each
    order = np.random.default_rng(1).permutation(len(texts))
    stream = [i for k in order for i in [*tok.encode(texts[k]).ids, 0]]
    np.testing.assert_array_equal(w, np.asarray(stream[:160]).reshape(10, 16))
    np.testing.assert_array_equal(w, token_windows(path, tok, 16, 10, seed=1))
    # another column, and the text column of an in-memory dataset
    other = tmp_path / "content.jsonl"
    other.write_text("\n".join(json.dumps({"content": t}) for t in texts))
    np.testing.assert_array_equal(token_windows(other, tok, 16, 10, seed=1, column="content"), w)
    with pytest.raises(ValueError, match=r"columns \['content'\].*column="):
        token_windows(other, tok, 16, 10)
    np.testing.assert_array_equal(
        token_windows(datasets.Dataset.from_dict({"text": texts}), tok, 16, 10, seed=1), w)
    # a folder of .txt files: each file one text; hidden folders are skipped
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk.txt").write_text("never read " * 50)
    for i, t in enumerate(texts[:20]):
        (folder / ("sub" if i % 2 else ".") / f"{i:02d}.txt").write_text(t)
    f = token_windows(folder, tok, 16, 5, seed=2)
    files = sorted(p for p in folder.rglob("*.txt") if ".cache" not in p.parts)
    order = np.random.default_rng(2).permutation(len(files))
    stream = [i for k in order for i in [*tok.encode(files[k].read_text()).ids, 0]]
    np.testing.assert_array_equal(f, np.asarray(stream[:80]).reshape(5, 16))
    # one .txt file is one text
    single = tmp_path / "one.txt"
    single.write_text("alpha beta gamma delta\n" * 20)
    ids = [*tok.encode(single.read_text()).ids, 0]
    np.testing.assert_array_equal(token_windows(single, tok, 8, 2), np.reshape(ids[:16], (2, 8)))
    # a folder of data files of one format (e.g. parquet shards) is one dataset
    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(2):
        (shards / f"part-{k}.jsonl").write_text(
            "\n".join(json.dumps({"text": t}) for t in texts[k * 20:(k + 1) * 20]))
    (shards / "README.md").write_text("# not data")
    assert token_windows(shards, tok, 16, 10).shape == (10, 16)


def test_windows_with_a_gpt2_style_tokenizer(gpt2):
    eos = gpt2.token_to_id(EOS_TOKEN)
    assert eos == gpt2.get_vocab_size() - 1  # GPT-2's layout: the last id
    texts = ["the thing (123)\n", "it's unbelievable"] * 10
    w = token_windows(datasets.Dataset.from_dict({"text": texts}), gpt2, 6, 3)
    assert w.shape == (3, 6) and (w == eos).sum() >= 1 and w.max() <= eos
    assert gpt2.decode(w.ravel().tolist(), skip_special_tokens=True).count("thing") >= 1


def test_windows_refuse_bad_sources(tok, tmp_path):
    ok = datasets.Dataset.from_dict({"input_ids": _rows(4, 8)})
    with pytest.raises(ValueError, match=r"ids from 1 to 300, outside the vocabulary \[0, 300\)"):
        token_windows(datasets.Dataset.from_dict({"input_ids": [[1, 300] * 4]}), tok, 4, 2)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 20\)"):
        token_windows(ok, tok, 8, 2, vocab_size=20)
    with pytest.raises(ValueError, match="empty"):
        token_windows(datasets.Dataset.from_dict({"input_ids": []}), tok, 4, 2)
    with pytest.raises(ValueError, match="gives only 0 windows"):
        token_windows(datasets.Dataset.from_dict({"text": ["", None]}), tok, 4, 2)
    with pytest.raises(ValueError, match="floats.*neither text"):
        token_windows(datasets.Dataset.from_dict({"floats": [[0.5]]}), tok, 4, 1, column="floats")
    with pytest.raises(ValueError, match="no column 'body'"):
        token_windows(ok, tok, 4, 1, column="body")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no dataset saved by save_to_disk, no .txt"):
        token_windows(tmp_path / "empty", tok, 4, 1)
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(ValueError, match="unknown format '.docx'"):
        token_windows(tmp_path / "notes.docx", tok, 4, 1)
    with pytest.raises(ValueError, match="no such file or folder"):
        token_windows(str(tmp_path / "missing.jsonl"), tok, 4, 1)
    with pytest.raises(ValueError, match="StudyConfig.data='timaeus/pile-github'.*offline.*"
                                         "local folder"):
        token_windows("timaeus/pile-github", tok, 4, 1, argument="StudyConfig.data")
    with pytest.raises(ValueError, match="source=5 must be a datasets.Dataset, a path"):
        token_windows(5, tok, 4, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="could not be read as json"):
        token_windows(bad, tok, 4, 1)
    with pytest.raises(ValueError, match="num_sequences"):
        token_windows(ok, tok, 4, 0)
    with pytest.raises(ValueError, match="context_length"):
        token_windows(ok, tok, 1, 1)


# --- labels of GPT-2 and GPT-NeoX tokenizers -------------------------------------------------


def _labels(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return [token_text(tokenizer, i) for i in ids], label_tokens(ids, tokenizer)


@pytest.mark.parametrize("which", ["gpt2", "neox"])
def test_labels_of_byte_level_bpe_tokenizers(which, request):
    tokenizer = request.getfixturevalue(which)
    assert _labels(tokenizer, " the") == ([" the"], ["word_start"])
    pieces, labels = _labels(tokenizer, " antidisestablishmentarian")
    assert len(pieces) > 1 and "".join(pieces) == " antidisestablishmentarian"
    assert labels == ["word_start"] + ["word_part"] * (len(pieces) - 1)
    assert _labels(tokenizer, "(") == (["("], ["left_delimiter"])
    assert _labels(tokenizer, ")")[1] == ["right_delimiter"]
    assert set(_labels(tokenizer, "123")[1]) == {"numeric"}
    assert _labels(tokenizer, "\n") == (["\n"], ["formatting"])
    assert _labels(tokenizer, EOS_TOKEN) == ([EOS_TOKEN], ["formatting"])  # the special token
    # " a b" repeated: the second (a, b) continues a bigram seen before
    assert _labels(tokenizer, " a b c a b")[1] == ["word_start"] * 4 + ["induction"]
    # GPT-2's contraction tokens continue the word; a lone quote opens one
    # (how "it" itself is split depends on the merges learned from this interpreter's corpora)
    pieces, labels = _labels(tokenizer, "it's")
    assert "".join(pieces) == "it's" and pieces[-1] == "'s"
    assert labels == ["word_start"] + ["word_part"] * (len(pieces) - 1)
    assert _labels(tokenizer, " '")[1] == ["left_delimiter"]
    # a vocabulary token written <...> is no special token
    pieces, labels = _labels(tokenizer, " <=>")
    assert pieces == [" <=>"] and labels == ["left_delimiter"]


def test_neox_runs_of_spaces_and_padding(neox, gpt2):
    assert _labels(neox, "x    y") == (["x", "    ", "y"], ["word_start", "spacing", "word_start"])
    assert _labels(neox, "<|padding|>") == (["<|padding|>"], ["formatting"])
    pieces, labels = _labels(gpt2, "x    y")  # GPT-2: 'ĠĠĠ', 'Ġy'
    assert pieces == ["x", "   ", " y"] and labels == ["word_start", "spacing", "word_start"]


# --- StudyConfig ------------------------------------------------------------------------------


def test_study_config_data_fields_round_trip_and_checks(tmp_path):
    config = StudyConfig(data=str(tmp_path / "q.jsonl"), context_length=16,
                         probes=(("code", "code/"), ("prose", "timaeus/pile-github")))
    saved = config.to_dict()
    assert saved["probes"] == [["code", "code/"], ["prose", "timaeus/pile-github"]]
    assert StudyConfig.from_dict(json.loads(json.dumps(saved))) == config
    assert StudyConfig(probes={"code": "code/", "prose": "timaeus/pile-github"},
                       data=tmp_path / "q.jsonl", context_length=16) == config
    assert StudyConfig.quick(data="x.jsonl").data == "x.jsonl"
    plain = StudyConfig()
    assert (plain.data, plain.probes, plain.context_length) == (None, None, None)
    assert StudyConfig.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    for bad, match in [({"data": ""}, "StudyConfig.data"), ({"data": 3}, "StudyConfig.data"),
                       ({"probes": []}, "non-empty list"), ({"probes": [["a"]]}, "entry"),
                       ({"probes": [["1a", "x"]]}, "identifier"),
                       ({"probes": [["a", "x"], ["a", "y"]]}, r"\['a'\] more than once"),
                       ({"probes": [["a", ""]]}, r"probes\['a'\]"),
                       ({"probes": "code=x"}, "non-empty list"),
                       ({"context_length": 1}, "context_length"),
                       ({"context_length": 2.5}, "context_length")]:
        with pytest.raises(ValueError, match=match):
            StudyConfig.from_dict(bad)


# --- study_data --------------------------------------------------------------------------------


def test_study_data_from_own_data_and_probes(default, tmp_path):
    network, tokenizer, _ = default
    vocab = tokenizer.get_vocab_size()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in genre_texts("code", 60_000)))
    rows = np.random.default_rng(0).integers(1, vocab, (6, 64)).tolist()
    datasets.Dataset.from_dict({"input_ids": rows}).save_to_disk(str(tmp_path / "ids"))
    (tmp_path / "books").mkdir()
    for i, text in enumerate(genre_texts("prose", 8_000)[:30]):
        (tmp_path / "books" / f"{i}.txt").write_text(text)
    config = StudyConfig(sampling_sequences=40, eval_sequences=4, probe_sequences=3,
                         batch_size=4, context_length=32, data=str(corpus),
                         probes=(("tokens", str(tmp_path / "ids")),
                                 ("books", str(tmp_path / "books"))))
    data = study_data(network, tokenizer, config)
    assert data["sampling"].shape == (40, 32) and data["eval"].shape == (4, 32)
    assert list(data["probes"]) == ["tokens", "books"]
    assert all(p.shape == (3, 32) and p.dtype == np.int32 for p in data["probes"].values())
    assert {tuple(r) for r in data["probes"]["tokens"]} <= {tuple(r[i:i + 32]) for r in rows
                                                              for i in (0, 32)}
    assert not {tuple(r) for r in data["sampling"]} & {tuple(r) for r in data["eval"]}
    again = study_data(network, tokenizer, config)
    for key in ("sampling", "eval"):
        np.testing.assert_array_equal(again[key], data[key])
    # the settings of reusable runs cover the data itself, not only the file's name
    before = study_settings(network, config, data)
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in genre_texts("legal", 60_000)))
    assert study_settings(network, config, study_data(network, tokenizer, config)) != before
    # errors name the config field
    with pytest.raises(ValueError, match=r"context_length=65 exceeds the network's context "
                                         r"n_ctx=64"):
        study_data(network, tokenizer, StudyConfig(context_length=65))
    short = StudyConfig(sampling_sequences=40, eval_sequences=4, probe_sequences=13,
                        batch_size=4, context_length=32, data=str(corpus),
                        probes=(("tokens", str(tmp_path / "ids")),))
    with pytest.raises(ValueError, match=r"StudyConfig.probes\['tokens'\].*only 12 windows"):
        study_data(network, tokenizer, short)


def test_study_data_builtin_with_a_shorter_context(default):
    network, tokenizer, _ = default
    config = StudyConfig(sampling_sequences=16, eval_sequences=4, probe_sequences=2,
                         batch_size=4, context_length=24)
    data = study_data(network, tokenizer, config)
    assert data["sampling"].shape == (16, 24) and data["eval"].shape == (4, 24)
    assert data["probes"]["induction"].shape == (2, 24)
    assert {p.shape[1] for p in data["probes"].values()} == {24}
    # without the new fields the settings are those of earlier releases (runs stay reusable)
    plain = json.loads(study_settings(network, StudyConfig()))
    assert not {"data", "probes", "context_length"} & set(plain["config"])
    assert "data" not in plain


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_passes_data_probes_and_context_length(tmp_path, monkeypatch, capsys):
    import numpyro_slt.study as study
    from numpyro_slt.cli import main

    seen = []

    def stop(network, tokenizer, config, **kwargs):
        seen.append(config)
        raise RuntimeError("stopped before sampling")

    monkeypatch.setattr(study, "run_study", stop)
    code = main(["study", "--quick", "--out", str(tmp_path / "out"), "--data", "q.jsonl",
                 "--probes", "code=code/", "hub=timaeus/pile-github", "--context-length", "32"])
    assert code == 1 and "stopped before sampling" in capsys.readouterr().err
    assert seen[0].data == "q.jsonl" and seen[0].context_length == 32
    assert seen[0].probes == (("code", "code/"), ("hub", "timaeus/pile-github"))
    assert seen[0].num_draws == StudyConfig.quick().num_draws
    for argv in (["--probes", "code"], ["--probes", "1x=a"], ["--probes", "a="],
                 ["--context-length", "0"], ["--data"]):
        with pytest.raises(SystemExit) as stopped:
            main(["study", *argv])
        assert stopped.value.code == 2
        flag = argv[0]
        assert f"argument {flag}" in capsys.readouterr().err
    assert main(["study", "--probes", "a=x", "a=y", "--out", str(tmp_path / "o")]) == 1
    assert "more than once" in capsys.readouterr().err
