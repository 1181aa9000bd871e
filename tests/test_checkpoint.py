"""Checkpointed sampling: a killed run resumes and ends exactly where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import jax
import numpy as np
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt.checkpoint import load_draws, load_observed, sample_checkpointed
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data

SETTINGS = dict(num_warmup=20, num_samples=240, num_chains=2, chain_method="vectorized")


def _kernel():
    x, y = make_linear_data(n=2_000, d=3, seed=7)
    posterior = slt.localize(slt.temper(partial(linear_model, batch_size=100), 300.0),
                             {"w": least_squares(x, y)}, 10.0)
    return slt.SGLD(posterior, 1e-4), (x, y)


def _uninterrupted():
    kernel, args = _kernel()
    mcmc = MCMC(kernel, progress_bar=False, **SETTINGS)
    mcmc.run(jax.random.PRNGKey(3), *args)
    return mcmc


def _assert_same_run(a, b):
    np.testing.assert_array_equal(a.get_samples(group_by_chain=True)["w"],
                                  b.get_samples(group_by_chain=True)["w"])
    fields_a = a.get_extra_fields(group_by_chain=True)
    fields_b = b.get_extra_fields(group_by_chain=True)
    for name in ("loss", "mean_excess_loss", "mean_count", "i", "init_loss"):
        np.testing.assert_array_equal(fields_a[name], fields_b[name], err_msg=name)
    np.testing.assert_array_equal(slt.llc(a).llc_per_chain, slt.llc(b).llc_per_chain)


def test_checkpointed_run_equals_one_long_run(tmp_path):
    kernel, args = _kernel()
    segments = []
    mcmc = sample_checkpointed(kernel, jax.random.PRNGKey(3), *args, directory=tmp_path,
                               checkpoint_every=60, progress_bar=False,
                               on_segment=segments.append, **SETTINGS)
    assert segments == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.glob("segment_*.npz")) == [
        f"segment_{k:05d}.npz" for k in range(4)]
    _assert_same_run(mcmc, _uninterrupted())
    draws, stats = load_draws(tmp_path)
    assert draws["w"].shape == (2, 240, 3) and stats["loss"].shape == (2, 240)


def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path):
    script = tmp_path / "run.py"
    out = tmp_path / "run"
    script.write_text(textwrap.dedent(f"""
        import sys, time, jax
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_checkpoint import SETTINGS, _kernel
        from numpyro_slt.checkpoint import sample_checkpointed
        kernel, args = _kernel()
        sample_checkpointed(kernel, jax.random.PRNGKey(3), *args, directory={str(out)!r},
                            checkpoint_every=20, progress_bar=False,
                            resume=len(sys.argv) > 1, **SETTINGS,
                            on_segment=lambda k: time.sleep(0.2))  # a segment takes a while
    """))
    process = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 240
    while not (out / "segment_00002.npz").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, "no segment written in time"
        time.sleep(0.05)
    time.sleep(0.3)  # now somewhere inside a later segment
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    written = len(list(out.glob("segment_*.npz")))
    assert 3 <= written < 12, written  # killed mid-run: some segments are missing

    kernel, args = _kernel()
    resumed = sample_checkpointed(kernel, jax.random.PRNGKey(3), *args, directory=out,
                                  checkpoint_every=20, progress_bar=False, resume=True,
                                  **SETTINGS)
    _assert_same_run(resumed, _uninterrupted())
    assert '"complete": true' in (out / "run.json").read_text()


def test_checkpoint_refuses_mixing_runs_and_bad_settings(tmp_path):
    kernel, args = _kernel()
    run = partial(sample_checkpointed, kernel, jax.random.PRNGKey(3), *args,
                  directory=tmp_path, progress_bar=False, num_warmup=0, num_chains=1)
    run(num_samples=40, checkpoint_every=20)
    with pytest.raises(ValueError, match="already holds a run; pass resume=True"):
        run(num_samples=40, checkpoint_every=20)
    with pytest.raises(ValueError, match=r"other settings for \['num_samples'\]"):
        run(num_samples=60, checkpoint_every=20, resume=True)
    with pytest.raises(ValueError, match="multiple of thinning=3"):
        run(num_samples=50, checkpoint_every=20, thinning=3)
    with pytest.raises(ValueError, match="observe must be a function"):
        run(num_samples=40, checkpoint_every=20, observe="loss")
    with pytest.raises(ValueError, match="checkpoint_every"):
        run(num_samples=40, checkpoint_every=0)
    with pytest.raises(ValueError, match="not a numpyro-slt run"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "x.txt").write_text("x")
        sample_checkpointed(kernel, jax.random.PRNGKey(3), *args, directory=tmp_path / "other",
                            num_warmup=0, num_samples=20, checkpoint_every=20, resume=True)


def _observe(draws):
    """A per-draw observable of the draws: the squared norm of w."""
    w = np.asarray(draws["w"])
    return xr.Dataset({"w_norm2": (("chain", "draw"), (w ** 2).sum(-1)),
                       "w_sum": (("chain", "draw", "coordinate"), np.cumsum(w, -1))},
                      coords={"coordinate": ["a", "b", "c"]})


def test_observables_and_uneven_last_segment_without_draws(tmp_path):
    """observe writes a segment's observables with it; keep_draws=False stores none of the
    parameters; 240 draws in segments of 100 end with a segment of 40; all equals one long run."""
    kernel, args = _kernel()
    mcmc = sample_checkpointed(kernel, jax.random.PRNGKey(3), *args, directory=tmp_path,
                               checkpoint_every=100, progress_bar=False, keep_draws=False,
                               observe=_observe, **SETTINGS)
    assert sorted(p.name for p in tmp_path.glob("observed_*.nc")) == [
        "observed_00000.nc", "observed_00001.nc", "observed_00002.nc"]
    draws, stats = load_draws(tmp_path)
    assert draws == {} and stats["loss"].shape == (2, 240)
    long_run = _uninterrupted()
    for name in ("loss", "mean_excess_loss"):
        np.testing.assert_array_equal(mcmc.get_extra_fields(group_by_chain=True)[name],
                                      long_run.get_extra_fields(group_by_chain=True)[name])
    observed = load_observed(tmp_path)
    expected = _observe(long_run.get_samples(group_by_chain=True))
    np.testing.assert_array_equal(observed["w_norm2"].values, expected["w_norm2"].values)
    np.testing.assert_array_equal(observed["w_sum"].values, expected["w_sum"].values)
    assert list(observed["draw"].values) == list(range(240))
    assert list(observed["coordinate"].values) == ["a", "b", "c"]


def test_observe_must_return_one_value_per_draw(tmp_path):
    kernel, args = _kernel()
    with pytest.raises(ValueError, match=r"\(chain, draw\) sizes \(2, 1\)"):
        sample_checkpointed(kernel, jax.random.PRNGKey(3), *args, directory=tmp_path,
                            checkpoint_every=100, progress_bar=False,
                            observe=lambda d: _observe(d).isel(draw=[0]), **SETTINGS)


def test_damaged_files_are_named_with_the_fix(tmp_path):
    kernel, args = _kernel()
    run = partial(sample_checkpointed, kernel, jax.random.PRNGKey(3), *args, directory=tmp_path,
                  checkpoint_every=20, progress_bar=False, observe=_observe, **SETTINGS)
    run()
    segment = tmp_path / "segment_00001.npz"
    segment.write_bytes(segment.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"segment_00001.npz is unreadable.*Delete"):
        load_draws(tmp_path)
    observed = tmp_path / "observed_00002.nc"
    observed.write_bytes(b"not netcdf")
    with pytest.raises(ValueError, match=r"observed_00002.nc is unreadable"):
        load_observed(tmp_path)
    (tmp_path / "checkpoint.pkl").write_bytes(b"\x80\x04truncated")
    with pytest.raises(ValueError, match=r"checkpoint.pkl is unreadable"):
        run(resume=True)
