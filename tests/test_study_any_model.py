"""The study on an imported model and the user's own data, end to end from the CLI: a tiny
GPT-NeoX with MLPs (rotary, parallel residual) saved by transformers, probes as local datasets
folders."""

import json

import numpy as np
import pytest
import xarray as xr

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from numpyro_slt.cli import main  # noqa: E402
from numpyro_slt.data import genre_texts  # noqa: E402

COMPONENTS = ["0:1", "1.mlp", "unembed"]


def _tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def _train(model, tokenizer, texts, steps=150, context=24):
    """A few Adam steps on the sampling texts, so that the weights are near a minimum of the
    loss the study samples around (at random weights the LLC estimate has no meaning)."""
    ids = np.concatenate([tokenizer.encode(t).ids for t in texts])
    windows = torch.as_tensor(ids[: len(ids) // context * context].reshape(-1, context))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = windows[torch.randint(len(windows), (16,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def neox_folder(tmp_path_factory):
    """A Hugging Face folder: config.json, model.safetensors and tokenizer.json of a random
    2-layer GPT-NeoX (padding rows beyond the tokenizer's vocabulary, as Pythia has)."""
    texts = genre_texts("prose", max_chars=40_000) + genre_texts("code", max_chars=40_000)
    tokenizer = _tokenizer(texts, 400)
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        vocab_size=416, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, rotary_pct=0.5,
        use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False)
    model = transformers.GPTNeoXForCausalLM(config)
    _train(model, tokenizer, genre_texts("legal", max_chars=60_000, seed=3))
    folder = tmp_path_factory.mktemp("neox")
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    data = tmp_path_factory.mktemp("data")
    for name, genre in (("code", "code"), ("prose", "prose"), ("sampling", "legal")):
        datasets.Dataset.from_dict({"text": genre_texts(genre, max_chars=60_000, seed=3)}
                                   ).save_to_disk(str(data / name))
    return folder, data


@pytest.mark.slow
def test_quick_study_on_an_imported_neox_with_local_probes(neox_folder, tmp_path, capsys):
    folder, data = neox_folder
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"sampling_sequences": 96, "eval_sequences": 8,
                                  "probe_sequences": 4, "batch_size": 8, "num_warmup": 20,
                                  "num_draws": 30, "thinning": 2, "step_size": 1e-4,
                                  "nbeta": 10.0, "gamma": 300.0, "num_chains": 2}))
    out = tmp_path / "out"
    code = main(["study", "--model", str(folder), "--config", str(config),
                 "--components", *COMPONENTS, "--data", str(data / "sampling"),
                 "--probes", f"code={data / 'code'}", f"prose={data / 'prose'}",
                 "--context-length", "24", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 4
    assert (out / "tables" / "llc.csv").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["context_length"] == 24
    assert summary["probes"] == {"code": [4, 24], "prose": [4, 24]}
    assert set(summary["llc"]) == set(COMPONENTS)
    for component, row in summary["llc"].items():  # a head, an MLP and the unembedding
        assert np.isfinite(row["mean"]) and row["mean"] > 0, (component, row)
        assert np.isfinite(row["rhat"]) and np.isfinite(row["phi_rhat"]), (component, row)
    saved = xr.open_dataset(out / "susceptibility.nc", engine="h5netcdf")
    assert set(saved["token_probe"].values) == {"code", "prose"}
    assert np.all(np.isfinite(saved["per_token"].values))
