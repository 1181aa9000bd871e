"""The embedded default model: offline loading, induction circuit, LLCs with SGLD, recipe."""

import json

import equinox as eqx
import jax
import numpy as np
import pytest
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.cli import main
from numpyro_slt.data.synthetic import repeated_random_tokens
from numpyro_slt.nn import copy_ablation, copy_losses, induction_scores, previous_token_scores
from numpyro_slt.nn.default import (
    DEFAULT_DIR,
    DefaultRecipe,
    build_default,
    load_default,
    load_model,
)
from numpyro_slt.nn.posterior import language_model, parameter_sites


@pytest.fixture(scope="module")
def default():
    return load_default()


def test_default_loads_offline_and_is_small(default):
    network, tokenizer, info = default
    c = network.config
    assert (c.n_layers, c.n_heads) == (2, 8)  # the paper's head layout
    assert tokenizer.get_vocab_size() == c.d_vocab
    assert sum(p.stat().st_size for p in DEFAULT_DIR.iterdir()) < 10 * 2**20
    assert info["recipe"]["model"] == c.to_dict()
    ids = tokenizer.encode("def f(x):\n    return x + 1").ids
    assert max(ids) < c.d_vocab and tokenizer.decode(ids) == "def f(x):\n    return x + 1"


def test_default_has_an_induction_circuit(default):
    network = default.network
    # fresh random sequences, not those the recipe scored
    tokens = repeated_random_tokens(jax.random.PRNGKey(2024), 32, 32, 1, network.config.d_vocab)
    first, second = copy_losses(network, tokens)
    assert first > 5.0 and second < 0.25 * first, (first, second)
    induction = np.asarray(induction_scores(network, tokens))
    previous = np.asarray(previous_token_scores(network, tokens))
    assert induction[1].max() >= 0.3, induction
    assert previous[0].max() >= 0.3, previous
    # the recorded table in model.json agrees with what the network does
    recorded = default.info["scores"]
    assert recorded["best_induction"]["head"] == f"1:{int(np.argmax(induction[1]))}"


def test_copy_ablation_singles_out_the_copying_heads(default):
    """Mean-ablating 1:3 or 1:4 undoes about a quarter of the copying gain each; 1:0 attends
    like an induction head (score 0.64) but ablating it undoes under 5%."""
    network = default.network
    tokens = repeated_random_tokens(jax.random.PRNGKey(2025), 32, 32, 1, network.config.d_vocab)
    share = np.asarray(copy_ablation(network, tokens))
    assert share.shape == (2, 8)
    assert share[1, 3] > 0.15 and share[1, 4] > 0.15, share[1]
    assert abs(share[1, 0]) < 0.05, share[1]
    assert share[0, 0] > 0.5  # the previous-token head feeds the induction heads
    # a head that writes nothing carries nothing: its ablation changes no loss
    dead = eqx.tree_at(lambda m: m.W_O, network, network.W_O.at[1, 5].set(0.0))
    assert float(np.asarray(copy_ablation(dead, tokens))[1, 5]) == pytest.approx(0.0, abs=1e-6)
    recorded = default.info["scores"]
    assert [h["head"] for h in recorded["heads"]
            if h["copy_ablation"] is not None and h["copy_ablation"] >= 0.1
            and h["induction"] >= 0.3] == ["1:3", "1:4"]


def _sgld_llc(network, components, tokens, num_samples):
    model = language_model(network, components, batch_size=8)
    center = parameter_sites(network, components)
    posterior = slt.localize(slt.temper(model, 30.0), center, 300.0)
    kernel = slt.SGLD(posterior, 1e-4, keep_draws=components is not None)
    mcmc = MCMC(kernel, num_warmup=20, num_samples=num_samples, num_chains=2,
                progress_bar=False, chain_method="sequential")
    mcmc.run(jax.random.PRNGKey(0), tokens)
    return slt.llc(mcmc)


@pytest.mark.parametrize("components", [None, ["1:3"]])
def test_llc_of_the_default_model(default, components):
    from numpyro_slt.study import StudyConfig, study_data

    network, tokenizer, _ = default
    data = study_data(network, tokenizer, StudyConfig(sampling_sequences=256, eval_sequences=8,
                                                      probe_sequences=2))
    result = _sgld_llc(network, components, data["sampling"], 60)
    value = float(result["llc_mean"])
    assert np.isfinite(value) and value > 0, value
    assert np.isfinite(float(result["loss_rhat"]))


def test_model_folder_round_trip_and_mismatch(default, tmp_path):
    from numpyro_slt.nn.default import save_model

    network, tokenizer, info = default
    save_model(tmp_path, network, tokenizer, {"scores": info["scores"]})
    again = load_model(tmp_path)
    np.testing.assert_array_equal(np.asarray(again.network.W_E), np.asarray(network.W_E))
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["model_config"]["d_model"] = 32
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its config"):
        load_model(tmp_path)


def test_recipe_round_trip_and_validation():
    recipe = DefaultRecipe()
    assert DefaultRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match="unknown DefaultRecipe field"):
        DefaultRecipe.from_dict({"stages": 3})
    with pytest.raises(ValueError, match="fraction"):
        recipe.scaled(0.0)
    for bad in ({"tokenizer_chars": float("nan")}, {"stage1_sequences": 0}, {"seed": True},
                {"stage2_repeat_fraction": 1.5}):
        with pytest.raises(ValueError, match="DefaultRecipe"):
            DefaultRecipe.from_dict(bad)


@pytest.mark.slow
def test_recipe_runs_end_to_end_and_resumes(tmp_path):
    recipe = DefaultRecipe(tokenizer_chars=200_000, text_chars=40_000, stage1_sequences=512,
                           stage2_sequences=512).scaled(0.002)
    out = tmp_path / "model"
    built = build_default(out, recipe, progress=False)
    assert built.info["training"]["stage2"]["steps"] == recipe.stage2.steps
    before = (out / "model.eqx").read_bytes()
    again = build_default(out, recipe, progress=False)  # both stages finished: nothing retrained
    assert (out / "model.eqx").read_bytes() == before
    assert again.info["scores"] == built.info["scores"]
    other = DefaultRecipe(tokenizer_chars=200_000, text_chars=40_000, stage1_sequences=256,
                          stage2_sequences=512).scaled(0.002)
    with pytest.raises(ValueError, match="different recipe"):
        build_default(out, other, progress=False)


def test_cli_train_errors(tmp_path, capsys):
    bad = tmp_path / "recipe.json"
    bad.write_text(json.dumps({"model": {"n_layers": 0}}))
    assert main(["train", "--recipe", str(bad), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "n_layers" in err and err.count("\n") == 1
    assert not (tmp_path / "m" / "model.json").exists()
