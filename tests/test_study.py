"""The study pipeline on a tiny model: observables, run_study, the report folder, the CLI."""

import json

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from numpyro_slt.cli import main
from numpyro_slt.data import train_tokenizer
from numpyro_slt.estimators.tokens import top_tokens
from numpyro_slt.nn import AttentionOnlyTransformer, TransformerConfig
from numpyro_slt.nn.default import load_model, save_model
from numpyro_slt.nn.observables import (
    ObservableEvaluator,
    add_observables,
    evaluate_observables,
)
from numpyro_slt.nn.posterior import network_at, parameter_sites
from numpyro_slt.report.study_report import write_study
from numpyro_slt.study import StudyConfig, run_study

TINY = StudyConfig(components=("1:0", "0:1", "embed"), num_chains=2, num_draws=8, num_warmup=4,
                   batch_size=4, sampling_sequences=64, eval_sequences=8, probe_sequences=3,
                   step_size=1e-4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tokenizer = train_tokenizer(300, max_chars=60_000)
    config = TransformerConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, n_ctx=16,
                               d_vocab=300, layer_norm=True)
    network = AttentionOnlyTransformer(config, key=jax.random.PRNGKey(0))
    folder = tmp_path_factory.mktemp("tiny_model")
    save_model(folder, network, tokenizer, {"note": "random weights"})
    return folder, network, tokenizer


@pytest.fixture(scope="module")
def study(tiny, tmp_path_factory):
    _, network, tokenizer = tiny
    out = tmp_path_factory.mktemp("study")
    result = run_study(network, tokenizer, TINY, out=out, progress=False)
    return out, result


def _draws(network, components, shape=(2, 3), scale=0.05):
    rng = np.random.default_rng(0)
    center = parameter_sites(network, components)
    return {k: np.asarray(v) + scale * rng.normal(size=shape + v.shape) for k, v in center.items()}


@pytest.mark.parametrize("component, options", [
    ("1:0", {"draw_batch": 4}),  # head cache, draws vmapped in fours (one padded)
    ("0:1", {"token_chunk": 2}),  # head cache in layer 0, sequences padded to whole chunks
    ("unembed", {"fast_path": False}),  # x^L cache off: the whole forward pass
    ("1:0", {"fast_path": False, "token_chunk": 1}),
])
def test_observables_equal_direct_evaluation_at_every_draw(tiny, component, options):
    _, network, _ = tiny
    rng = np.random.default_rng(1)
    probes = {"short": rng.integers(0, 300, (2, 5)), "long": rng.integers(0, 300, (3, 16))}
    eval_tokens = rng.integers(0, 300, (4, 16))
    draws = _draws(network, [component])
    obs = evaluate_observables(network, draws, probes, eval_tokens, [component], **options)
    assert obs["token_loss"].shape == (2, 3, 2 * 4 + 3 * 15)
    assert list(np.unique(obs["token_probe"].values)) == ["long", "short"]
    for chain, draw in [(0, 0), (1, 2)]:
        net = network_at(network, {k: jnp.asarray(v[chain, draw]) for k, v in draws.items()},
                         [component])
        direct = np.concatenate([np.asarray(jax.vmap(net.token_losses)(jnp.asarray(p))).ravel()
                                 for p in probes.values()])
        np.testing.assert_allclose(obs["token_loss"].values[chain, draw], direct, rtol=1e-5,
                                   atol=1e-6)
        sampling = float(jnp.mean(jax.vmap(net.token_losses)(jnp.asarray(eval_tokens))))
        np.testing.assert_allclose(obs["sampling_loss"].values[chain, draw], sampling, rtol=1e-5)
    centre = float(jnp.mean(jax.vmap(network.token_losses)(jnp.asarray(eval_tokens))))
    np.testing.assert_allclose(obs["phi"].values, obs["sampling_loss"].values - centre,
                               rtol=1e-5, atol=1e-6)
    thinned = evaluate_observables(network, draws, probes, eval_tokens, [component], thinning=2,
                                   **options)
    assert list(thinned["draw"].values) == [0, 2]
    np.testing.assert_allclose(thinned["token_loss"].values[:, 1],
                               obs["token_loss"].values[:, 2], rtol=1e-5)


def test_observable_evaluator_reused_across_segments_matches_one_call(tiny):
    """The study builds one ObservableEvaluator per component and calls it per segment: it must
    give what evaluate_observables gives, with probes of interleaved lengths kept in order."""
    _, network, _ = tiny
    rng = np.random.default_rng(2)
    probes = {"a": rng.integers(0, 300, (3, 16)), "b": rng.integers(0, 300, (2, 5)),
              "c": rng.integers(0, 300, (1, 16))}
    eval_tokens = rng.integers(0, 300, (4, 16))
    draws = _draws(network, ["1:1"], shape=(2, 4))
    whole = evaluate_observables(network, draws, probes, eval_tokens, ["1:1"])
    assert list(dict.fromkeys(whole["token_probe"].values)) == ["a", "b", "c"]
    evaluator = ObservableEvaluator(network, probes, eval_tokens, ["1:1"])
    # a last-layer head: the evaluator uses the projected unembedding (checked against the plain
    # forward pass below and in test_observables_equal_direct_evaluation_at_every_draw)
    assert all(group.cache.projected is not None for group in evaluator._groups)
    first = evaluator({k: v[:, :2] for k, v in draws.items()})
    second = evaluator({k: v[:, 2:] for k, v in draws.items()})
    for name in ("token_loss", "sampling_loss", "phi"):
        joined = np.concatenate([first[name].values, second[name].values], axis=1)
        np.testing.assert_allclose(joined, whole[name].values, rtol=1e-6, atol=1e-7)
    assert float(first["sampling_loss_at_center"]) == float(whole["sampling_loss_at_center"])
    for (probe, rows) in probes.items():  # each probe's columns hold that probe's losses
        net = network_at(network, {k: jnp.asarray(v[1, 3]) for k, v in draws.items()}, ["1:1"])
        direct = np.asarray(jax.vmap(net.token_losses)(jnp.asarray(rows))).ravel()
        columns = whole["token_probe"].values == probe
        np.testing.assert_allclose(whole["token_loss"].values[1, 3, columns], direct, rtol=1e-5,
                                   atol=1e-6)


def test_observables_refuse_bad_input(tiny):
    _, network, _ = tiny
    draws = _draws(network, ["1:0"])
    ok = np.zeros((2, 16), np.int32)
    with pytest.raises(ValueError, match="non-empty mapping"):
        evaluate_observables(network, draws, {}, ok, ["1:0"])
    with pytest.raises(ValueError, match="longer than the context"):
        evaluate_observables(network, draws, {"p": np.zeros((2, 17), np.int32)}, ok, ["1:0"])
    with pytest.raises(ValueError, match="non-empty 2-D"):
        evaluate_observables(network, draws, {"p": np.zeros((0, 8), np.int32)}, ok, ["1:0"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        evaluate_observables(network, draws, {"p": np.full((1, 8), 300)}, ok, ["1:0"])
    with pytest.raises(ValueError, match="lack the sites"):
        evaluate_observables(network, draws, {"p": ok}, ok, ["0:1"])
    with pytest.raises(ValueError, match="Valid|valid"):
        evaluate_observables(network, draws, {"p": ok}, ok, ["7:7"])


def test_add_observables_puts_them_next_to_the_draws(tiny):
    _, network, _ = tiny
    draws = _draws(network, ["1:0"])
    posterior = dict(draws)
    if az.__version__.startswith("0."):  # InferenceData
        idata = az.from_dict(posterior=posterior)
    else:  # ArviZ 1.x: a DataTree
        idata = az.from_dict({"posterior": posterior})
    obs = evaluate_observables(network, draws, {"p": np.ones((1, 8), np.int32)},
                               np.ones((2, 8), np.int32), ["1:0"])
    merged = add_observables(idata, obs)
    post = (merged["posterior"].to_dataset() if isinstance(merged, xr.DataTree)
            else merged.posterior)
    assert {"phi", "sampling_loss", "token_loss"} <= set(post.data_vars)
    with pytest.raises(ValueError, match="already holds"):
        add_observables(merged, obs)
    from numpyro_slt import susceptibilities

    direct = susceptibilities(obs["phi"], obs["sampling_loss"], obs["token_loss"],
                              probe=obs["token_probe"])
    xr.testing.assert_allclose(susceptibilities(merged)["per_token"], direct["per_token"])
    with pytest.raises(ValueError, match="lacks the observables"):
        susceptibilities(idata.__class__(posterior=post[["1:0.W_Q"]]) if not isinstance(
            merged, xr.DataTree) else xr.DataTree.from_dict({"posterior": post[["1:0.W_Q"]]}))


def test_study_result_structure_and_identities(study):
    _, result = study
    chi = result.susceptibility
    assert list(chi["component"].values) == ["1:0", "0:1", "embed"]
    assert set(chi["token_probe"].values) == {"code", "legal", "prose", "math", "induction",
                                        "brackets"}
    assert chi.sizes["token"] == 3 * 15 * 6
    for name in ("per_token", "standardized", "global"):
        assert np.all(np.isfinite(chi[name].values)), name
    # per-token contributions average exactly to the global value of each probe
    for probe in np.unique(chi["token_probe"].values):
        mask = chi["token_probe"].values == probe
        np.testing.assert_allclose(chi["per_token"].values[:, mask].mean(axis=1),
                                   chi["global"].sel(probe=probe).values, rtol=1e-10)
    assert set(result.pca_layers) == {"0", "1"}
    assert result.llc["loss_trace"].dims == ("component", "chain", "draw")
    assert np.all(np.isfinite(result.llc["llc_mean"].values))
    assert "induction_heads" in result.acceptance
    assert set(chi["label"].values) <= {"word_start", "word_part", "induction", "spacing",
                                        "left_delimiter", "right_delimiter", "formatting",
                                        "numeric"}


def test_study_resumes_finished_components(study, tiny, monkeypatch):
    out, result = study
    _, network, tokenizer = tiny
    import numpyro_slt.study.sampling as sampling

    def refuse(*args, **kwargs):
        raise AssertionError("a finished component was sampled again")

    monkeypatch.setattr(sampling, "sample_component", refuse)
    again = run_study(network, tokenizer, TINY, out=out, progress=False)
    np.testing.assert_allclose(again.susceptibility["per_token"].values,
                               result.susceptibility["per_token"].values, rtol=1e-6)
    changed = StudyConfig.from_dict({**TINY.to_dict(), "nbeta": 10.0})
    with pytest.raises(AssertionError, match="sampled again"):
        run_study(network, tokenizer, changed, out=out, progress=False)


def test_same_seed_same_study(study, tiny, tmp_path):
    """Component i always samples with fold_in(seed, i): rerunning gives the same numbers."""
    _, result = study
    _, network, tokenizer = tiny
    again = run_study(network, tokenizer, StudyConfig.from_dict(
        {**TINY.to_dict(), "components": ["1:0"]}), progress=False)
    np.testing.assert_array_equal(again.susceptibility["per_token"].sel(component="1:0").values,
                                  result.susceptibility["per_token"].sel(component="1:0").values)


def test_report_folder(study, tiny):
    out, result = study
    _, _, tokenizer = tiny
    report = write_study(result, out, tokenizer)
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 6
    for name in ("loss_traces", "llc", "response_global", "response_tokens", "pca_loadings",
                 "explained_variance", "top_tokens"):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    for name in ("response_global", "response_tokens", "pca_layer0_loadings",
                 "pca_layer1_loadings", "pca_explained_variance", "llc", "head_scores",
                 "top_tokens"):
        assert (out / "tables" / f"{name}.csv").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["explained_variance"]) == {"0", "1", "all"}
    saved = xr.open_dataset(out / "susceptibility.nc", engine="h5netcdf")
    np.testing.assert_allclose(saved["per_token"].values,
                               result.susceptibility["per_token"].values)
    assert sorted(p.name for p in (out / "runs").glob("*.nc")) == ["0-1.nc", "1-0.nc",
                                                                   "embed.nc"]


def test_top_tokens_order_and_context(study, tiny):
    _, result = study
    _, _, tokenizer = tiny
    matrix = result.susceptibility["standardized"]
    rows = top_tokens(matrix, result.probes, tokenizer.decode, "1:0", k=3)
    values = [r["value"] for r in rows]
    column = matrix.sel(component="1:0").values
    assert values[:3] == sorted(column)[:3] and values[3:] == sorted(column)[::-1][:3]
    first = rows[0]
    row = result.probes[first["probe"]][first["sequence"]]
    assert first["token"] == tokenizer.decode([int(row[first["position"]])])
    with pytest.raises(ValueError, match="not in the matrix"):
        top_tokens(matrix, result.probes, tokenizer.decode, "9:9")


def test_study_config_refuses_bad_values(tiny):
    _, network, tokenizer = tiny
    for bad in ({"num_chains": 0}, {"nbeta": -1.0}, {"gamma": float("nan")},
                {"step_size": "big"}, {"components": "1:0"}, {"chain_method": "threads"},
                {"batch_size": 10_000}, {"components": False}, {"components": []},
                {"checkpoint_every": 0}):
        with pytest.raises(ValueError, match="StudyConfig"):
            StudyConfig.from_dict({**TINY.to_dict(), **bad})
    with pytest.raises(ValueError, match="unknown StudyConfig"):
        StudyConfig.from_dict({"num_chain": 2})
    with pytest.raises(ValueError, match="valid"):
        run_study(network, tokenizer, StudyConfig(components=("5:0",)), progress=False)


def test_cli_study_and_errors(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    config = tmp_path / "config.json"
    config.write_text(json.dumps({k: v for k, v in TINY.to_dict().items()
                                  if k != "components"}))
    out = tmp_path / "out"
    code = main(["study", "--model", str(folder), "--config", str(config), "--components", "1:1",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    assert (out / "report.html").exists() and (out / "summary.json").exists()
    assert "explained variance" in capsys.readouterr().out

    assert main(["study", "--model", str(folder), "--components", "4:4", "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4:4" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["study", "--model", str(folder), "--config", str(bad)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["study", "--model", str(tmp_path / "missing")]) == 1
    assert "model.json" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        main(["--debug", "study", "--model", str(tmp_path / "missing")])


def test_model_folder_refuses_modified_files(tiny, tmp_path):
    folder, network, tokenizer = tiny
    copy = tmp_path / "copy"
    save_model(copy, network, tokenizer)
    loaded = load_model(copy)
    assert loaded.network.config == network.config
    data = (copy / "model.eqx").read_bytes()
    (copy / "model.eqx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or modified"):
        load_model(copy)
    (copy / "model.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(copy)
    with pytest.raises(FileNotFoundError, match="model.json"):
        load_model(tmp_path)


@pytest.mark.slow
def test_cli_study_killed_mid_component_and_resumed_equals_uninterrupted(tiny, tmp_path,
                                                                          monkeypatch):
    """SIGKILL a study in the middle of its second component; --resume keeps the finished
    component and every written segment of the second (it samples only the segments that were
    not written: at most checkpoint_every draws lost) and ends with the same susceptibilities, bit
    for bit, as a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpyro_slt.checkpoint as checkpoint

    folder, _, _ = tiny
    config = tmp_path / "config.json"
    settings = {**{k: v for k, v in TINY.to_dict().items() if k != "components"},
                "num_draws": 40, "checkpoint_every": 2}
    config.write_text(json.dumps(settings))
    base = [sys.executable, "-m", "numpyro_slt.cli", "study", "--model", str(folder),
            "--config", str(config), "--components", "1:0", "0:1", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*base, "--out", str(killed)], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    partial = killed / "runs" / ".partial"
    while not list(partial.glob("0-1-*/segment_00000.npz")):
        assert proc.poll() is None, "the study ended before it could be killed"
        assert time.time() < deadline, "no segment of the second component in time"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in (killed / "runs").glob("*.nc")) == ["1-0.nc"]
    assert not (killed / "report.html").exists()
    written = len(list(partial.glob("0-1-*/segment_*.npz")))
    assert 1 <= written < 20, written

    sampled = []  # segments sampled by the resumed run
    original = checkpoint.sample_checkpointed

    def counting(*args, on_segment=None, **kwargs):
        def count(done):
            sampled.append(done)
            if on_segment is not None:
                on_segment(done)
        return original(*args, on_segment=count, **kwargs)

    monkeypatch.setattr(checkpoint, "sample_checkpointed", counting)
    assert main([*base[3:], "--out", str(killed)]) == 1  # refused without --resume
    assert main([*base[3:], "--out", str(killed), "--resume"]) == 0
    assert sampled[0] >= written and len(sampled) <= 20 - written + 1, (written, sampled)
    assert not list(partial.glob("*")), "finished components leave no segments behind"
    monkeypatch.setattr(checkpoint, "sample_checkpointed", original)
    clean = tmp_path / "clean"
    assert main([*base[3:], "--out", str(clean)]) == 0
    a = xr.open_dataset(killed / "susceptibility.nc", engine="h5netcdf")
    b = xr.open_dataset(clean / "susceptibility.nc", engine="h5netcdf")
    np.testing.assert_array_equal(a["per_token"].values, b["per_token"].values)


@pytest.mark.slow
def test_cli_study_with_a_shared_compilation_cache(tiny, tmp_path):
    """`numpyro-slt study` in two fresh processes sharing one compilation cache: the first fills
    it (heads 1:0 and 1:1 are one program), the second loads its programs, and both give the same
    susceptibilities, bit for bit, as a run in this process without the cache."""
    import os
    import subprocess
    import sys

    folder, _, _ = tiny
    config = tmp_path / "config.json"
    config.write_text(json.dumps({k: v for k, v in TINY.to_dict().items()
                                  if k != "components"}))
    args = ["study", "--model", str(folder), "--config", str(config), "--components", "1:0",
            "1:1", "--no-progress"]
    cache = tmp_path / "cache"
    env = {**os.environ, "NUMPYRO_SLT_COMPILATION_CACHE": str(cache)}
    for name in ("cold", "warm"):
        subprocess.run([sys.executable, "-m", "numpyro_slt.cli", *args, "--out",
                        str(tmp_path / name)], env=env, check=True, capture_output=True)
        if name == "cold":
            loops = [p.name for p in cache.iterdir() if "fori_collect_loop" in p.name]
            # burn-in loop and segment loop, once for both heads (twice each if not shared)
            assert len(loops) == 2, loops
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    plain = xr.open_dataset(tmp_path / "plain" / "susceptibility.nc", engine="h5netcdf")
    for name in ("cold", "warm"):
        other = xr.open_dataset(tmp_path / name / "susceptibility.nc", engine="h5netcdf")
        xr.testing.assert_identical(other, plain)
