"""slt.calibrate: one vectorized sweep over (ε, nβ, γ), every setting judged, one recommended.

The fast tests share one sweep of a linear regression (n = 2,000, d = 3, minibatch 200) over a
factor-2 grid of step sizes from 0.016 (diverges) down to 1.6e-5 (does not mix), plus two small
sweeps that must fail for other reasons (a center off the minimum; a flat direction with almost no
localization), synthetic chains for the criteria a small model does not fail on its own, and the
command line on a head of the default model. The slow tests check the acceptance criterion of
issue 16: with the default grids, the recommended setting's λ̂ is within 10% of the known learning
coefficient (8–18 s each on a quiet 2-core machine).
"""

import logging
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from numpyro.infer import MCMC

import numpyro_slt as slt
from numpyro_slt._arviz import stats_dataset
from numpyro_slt.calibration import CRITERIA, Criteria
from numpyro_slt.calibration.criteria import judge_setting, stability
from numpyro_slt.calibration.grid import (
    GAMMA_FRACTION,
    NBETA_FRACTIONS,
    checked_grid,
    settings_grid,
)
from numpyro_slt.known_models import (
    least_squares,
    linear_model,
    logistic_mle,
    logistic_model,
    make_linear_data,
    make_logistic_data,
    make_rrr_data,
    rrr_model,
)
from numpyro_slt.study import StudyConfig
from numpyro_slt.theory import rrr_learning_coefficient

STEP_SIZES = [0.016 * 2.0**-k for k in range(11)]  # 0.016 ... 1.56e-5
BUDGET = dict(num_chains=2, num_warmup=200, num_samples=1_600, thinning=2, seed=0)
NBETA, GAMMA = 300.0, 10.0


@pytest.fixture(scope="module")
def data():
    return make_linear_data(n=2_000, d=3, seed=8)


@pytest.fixture(scope="module")
def model():
    return partial(linear_model, batch_size=200)


@pytest.fixture(scope="module")
def center(data):
    return {"w": least_squares(*data)}


class _Compilations(logging.Handler):
    """Collects JAX's log lines of finished XLA compilations."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.names = []

    def emit(self, record):
        match = re.search(r"Finished XLA compilation of (\S+)", record.getMessage())
        if match:
            self.names.append(match.group(1))


@pytest.fixture(scope="module")
def compiled():
    return _Compilations()


@pytest.fixture(scope="module")
def cal(data, model, center, compiled):
    logger = logging.getLogger("jax")
    logger.addHandler(compiled)
    try:
        with jax.log_compiles():
            return slt.calibrate(model, center, *data, step_sizes=STEP_SIZES, nbetas=[NBETA],
                                 gammas=[GAMMA], **BUDGET)
    finally:
        logger.removeHandler(compiled)


def _row(cal, step_size):
    return cal.sweep.sel(step_size=step_size, nbeta=NBETA, gamma=GAMMA)


def _rejected_by(cal, step_size):
    return set(str(_row(cal, step_size).rejected_by.values).split(",")) - {""}


# -- the result ---------------------------------------------------------------------------------


def test_result_structure(cal):
    sweep = cal.sweep
    assert isinstance(sweep, xr.Dataset)
    assert sweep.llc_mean.dims == ("step_size", "nbeta", "gamma")
    assert sweep.llc_per_chain.dims == ("step_size", "nbeta", "gamma", "chain")
    assert dict(sweep.sizes) == {"step_size": len(STEP_SIZES), "nbeta": 1, "gamma": 1,
                                 "chain": BUDGET["num_chains"]}
    np.testing.assert_allclose(sweep.step_size.values, sorted(STEP_SIZES))
    for name in ("llc_se", "llc_std", "mala_accept", "rhat", "ess", "observable_rhat",
                 "observable_ess", "drift_z", "escape", "dip_fraction", "diverged_chains",
                 "stability_z", "verdict", "rejected_by", "detail"):
        assert name in sweep, name
    assert set(np.ravel(sweep.verdict.values)) <= {"ok", *CRITERIA}
    assert set(cal.recommended) == {"step_size", "nbeta", "gamma"}
    assert all(isinstance(v, float) for v in cal.recommended.values())
    assert cal.ok and cal.best is not None and cal.best.verdict.item() == "ok"
    assert sweep.attrs["num_samples"] == BUDGET["num_samples"]
    assert sweep.attrs["mala_min"] == 0.9 and sweep.attrs["stability_z"] == 2.0
    assert cal.seconds["sweep"] > 0 and cal.seconds["judge"] > 0


def test_the_sweep_is_one_compiled_program(cal, compiled):
    """All 11 settings × 2 chains, burn-in and draws, run as one program (the other
    compilations are L_n(w*) and small eager operations, none of them per setting)."""
    assert compiled.names.count("jit(program)") == 1, compiled.names
    assert len(compiled.names) < 40, compiled.names


def test_recommendation_is_the_largest_passing_step(cal):
    ok = cal.sweep.step_size.values[cal.sweep.verdict.values[:, 0, 0] == "ok"]
    assert ok.size >= 1
    assert cal.recommended == {"step_size": float(ok.max()), "nbeta": NBETA, "gamma": GAMMA}
    assert "largest step size that passes every criterion" in cal.reasons[0]
    assert any("next larger" in r for r in cal.reasons)
    # a regular model of d = 3 parameters at nβ = 300, γ = 10: λ ≈ 1.5·nβh/(nβh + γ)
    assert float(cal.best.llc_mean) == pytest.approx(1.5, rel=0.15)


def test_sweep_chains_are_the_chains_of_sgld(cal, data, model, center):
    """Chain c of a setting is the chain MCMC(SGLD) draws with the same seed and budget."""
    step_size = cal.recommended["step_size"]
    posterior = slt.localize(slt.temper(model, NBETA), center, GAMMA)
    mcmc = MCMC(slt.SGLD(posterior, step_size, control_variate=True),
                num_warmup=BUDGET["num_warmup"], num_samples=BUDGET["num_samples"],
                num_chains=BUDGET["num_chains"], thinning=BUDGET["thinning"],
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(BUDGET["seed"]), *data)
    np.testing.assert_allclose(_row(cal, step_size).llc_per_chain.values,
                               slt.llc(mcmc).llc_per_chain.values, rtol=1e-3)
    np.testing.assert_allclose(cal.runs.stats["distance"][STEP_SIZES.index(step_size)],
                               mcmc.get_extra_fields(group_by_chain=True)["distance"],
                               rtol=1e-3)


def test_str_summarises_the_table_and_the_recommendation(cal):
    text = str(cal)
    assert "step_size" in text and "rejected by" in text and "φ ess" in text
    assert "<- recommended" in text
    assert f"recommended: step_size={cal.recommended['step_size']:.4g}" in text
    assert text.count("\n") >= len(STEP_SIZES)


def test_plot_writes_a_png(cal, tmp_path):
    path = tmp_path / "sweep.png"
    fig = cal.plot(path, reference=1.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 200_000
    assert fig.axes and fig.axes[0].get_xscale() == "log"
    labels = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "diverged" in labels and "mala" in labels and "unstable" in labels


def test_sweep_round_trips_through_netcdf(cal, tmp_path):
    path = tmp_path / "sweep.nc"
    cal.to_netcdf(path)
    back = xr.open_dataset(path, engine="h5netcdf")
    np.testing.assert_allclose(back.llc_mean.values, cal.sweep.llc_mean.values)
    assert list(np.ravel(back.verdict.values)) == list(np.ravel(cal.sweep.verdict.values))
    assert "step_size=" in back.attrs["recommended"]
    back.close()


def test_study_config_takes_the_calibrated_setting(cal):
    config = StudyConfig.from_calibration(cal, quick=True)
    assert (config.step_size, config.nbeta, config.gamma) == (
        cal.recommended["step_size"], cal.recommended["nbeta"], cal.recommended["gamma"])
    assert config.num_draws == StudyConfig.quick().num_draws
    assert StudyConfig(**cal.recommended).step_size == cal.recommended["step_size"]
    assert StudyConfig.from_calibration(cal.recommended, num_chains=3).num_chains == 3
    with pytest.raises(ValueError, match="recommends no setting"):
        StudyConfig.from_calibration(None)


# -- each rejection -----------------------------------------------------------------------------


def test_a_far_too_large_step_diverges(cal):
    row = _row(cal, 0.016)
    assert row.verdict.item() == "diverged"
    assert int(row.diverged_chains) == BUDGET["num_chains"]
    assert _rejected_by(cal, 0.016) == {"diverged"}


def test_a_too_large_step_fails_mala_and_halving(cal):
    for step_size in (0.008, 0.004, 0.002):
        assert {"mala", "unstable"} <= _rejected_by(cal, step_size), step_size
        assert float(_row(cal, step_size).mala_accept) < 0.9
    assert _rejected_by(cal, 0.001) == {"mala"}


def test_halving_catches_a_biased_step_when_mala_is_off(cal):
    """With the MALA check switched off, the discretisation bias of a large ε is still caught:
    λ̂(ε) disagrees with λ̂(ε/2); the same runs, judged again."""
    lenient = cal.rejudge(Criteria(mala_min=0.5))
    assert lenient.runs is cal.runs
    row = lenient.sweep.sel(step_size=0.002, nbeta=NBETA, gamma=GAMMA)
    assert row.verdict.item() == "unstable" and abs(float(row.stability_z)) > 2
    assert lenient.recommended["step_size"] < 0.002
    assert lenient.recommended["step_size"] >= cal.recommended["step_size"]


def test_too_small_a_step_does_not_mix(cal):
    smallest = _rejected_by(cal, STEP_SIZES[-1])
    assert {"drift", "rhat", "ess"} <= smallest
    for step_size in STEP_SIZES[-4:]:
        assert {"rhat", "ess"} & _rejected_by(cal, step_size), step_size


def test_the_smallest_step_cannot_be_judged_for_stability(cal):
    assert "unjudged" in _rejected_by(cal, STEP_SIZES[-1])
    assert np.isnan(float(_row(cal, STEP_SIZES[-1]).stability_z))
    z, codes = stability(np.array([1.0, 1.2, 2.0]), np.array([0.1, 0.1, 0.1]),
                         np.array([1.0, 2.0, 3.0]), 2.0)
    assert list(codes) == ["unjudged", "", "unjudged"]  # 2 has its half 1 (z = 1.4); 3 has none
    assert z[1] == pytest.approx(0.2 / np.sqrt(0.02))


def test_a_center_off_the_minimum_dips_and_nothing_passes(data, model, center):
    """w* shifted off the least-squares minimum: the chains slide down below L_n(w*)."""
    shifted = {"w": center["w"] + jnp.array([0.3, 0.0, 0.0])}
    off = slt.calibrate(model, shifted, *data, step_sizes=[1e-3, 5e-4], nbetas=[NBETA],
                        gammas=[GAMMA], **BUDGET)
    assert off.recommended is None and not off.ok and off.best is None
    for step_size in off.sweep.step_size.values:
        row = off.sweep.sel(step_size=step_size, nbeta=NBETA, gamma=GAMMA)
        assert "dips" in str(row.rejected_by.values).split(",")
        assert float(row.llc_mean) < 0 and float(row.dip_fraction) > 0.5
    assert "no setting passes every criterion" in off.reasons[0]
    assert any("find_center" in r for r in off.reasons)
    text = str(off)
    assert "no setting recommended" in text and "try:" in text


def _redundant_model(x, y, batch_size=None):
    """y ~ N(x·(w₀ + w₁), 1): the direction w₀ − w₁ is flat (held by γ alone)."""
    w = numpyro.sample("w", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        numpyro.sample("y", dist.Normal(x[idx] * (w[0] + w[1]), 1.0), obs=y[idx])


def test_a_weak_localization_lets_the_chains_escape(data):
    x, y = data[0][:, 0], data[1]
    w = float(jnp.sum(x * y) / jnp.sum(x * x))
    weak = slt.calibrate(partial(_redundant_model, batch_size=200), {"w": jnp.array([w, w]) / 2},
                         x, y, step_sizes=[2e-3], nbetas=[NBETA], gammas=[1e-4], num_chains=2,
                         num_warmup=0, num_samples=600, thinning=2)
    row = weak.sweep.sel(step_size=2e-3, nbeta=NBETA, gamma=1e-4)
    assert "escape" in str(row.rejected_by.values).split(","), str(weak)
    assert float(row.escape) > 2.0


def _stats(excess, *, mala=0.95, distance=None, observable=None):
    """SGLD statistics of chains whose per-step excess loss is ``excess`` [chain, draw]."""
    chains, draws = excess.shape
    count = np.broadcast_to(np.arange(1, draws + 1), excess.shape)
    rng = np.random.default_rng(0)
    return stats_dataset({
        "mean_excess_loss": np.cumsum(excess, axis=1) / count,
        "mean_count": count.astype(np.int32),
        "init_loss": np.ones_like(excess), "nbeta": np.full_like(excess, 10.0),
        "mala_accept": np.full_like(excess, mala),
        "distance": np.ones_like(excess) if distance is None else distance,
        "observable": rng.normal(size=excess.shape) if observable is None else observable,
        "diverged_at": np.full(excess.shape, -1, np.int32),
    })


def test_chains_that_disagree_fail_rhat():
    rng = np.random.default_rng(1)
    excess = 0.1 * np.arange(1, 5)[:, None] + 0.01 * rng.normal(size=(4, 400))
    judged = judge_setting(_stats(excess), num_params=10, criteria=Criteria())
    assert "rhat" in judged["failed"] and judged["rhat"] > 1.05
    healthy = judge_setting(_stats(0.1 + 0.01 * rng.normal(size=(4, 400))), 10, Criteria())
    assert healthy["failed"] == []


def test_a_spread_between_chains_beyond_the_trace_precision_fails_precision():
    """Two white-noise traces (a large ESS) whose means differ by 8 standard errors of one
    chain's mean: R-hat stays small, but the spread between chains is more than 3 times the
    standard error the trace's ESS implies."""
    rng = np.random.default_rng(0)
    draws = 1_000
    offsets = np.array([-1.0, 1.0])[:, None] * 4.0 / np.sqrt(draws)
    excess = 0.1 + 0.01 * (offsets + rng.normal(size=(2, draws)))
    judged = judge_setting(_stats(excess), 10, Criteria())
    assert judged["failed"] == ["precision"], judged
    assert judged["rhat"] < 1.05 and judged["ess"] > 1_000


def test_a_slowly_mixing_observable_fails_ess():
    """The LLC trace looks white, but φ is a slow random walk: judged by φ, not by the trace."""
    rng = np.random.default_rng(2)
    excess = 0.1 + 0.01 * rng.normal(size=(4, 400))
    walk = np.cumsum(rng.normal(size=(4, 400)), axis=1) * 0.01
    judged = judge_setting(_stats(excess, observable=walk), 10, Criteria())
    assert "ess" in judged["failed"] and judged["ess"] > 100 > judged["observable_ess"]


def test_criteria_share_the_thresholds_of_check_chains():
    import inspect

    defaults = inspect.signature(slt.check_chains).parameters
    for name, value in Criteria().chain_checks().items():
        assert defaults[name].default == value, name
    with pytest.raises(ValueError, match="criteria.mala_min"):
        Criteria(mala_min=1.5)


# -- grids and bad input ------------------------------------------------------------------------


def test_default_grid_is_a_factor_two_grid_from_the_curvature():
    step_sizes, nbetas, gammas, h = settings_grid(None, None, None, 20_000, lambda: 10.0)
    base = 20_000 / np.log(20_000)
    np.testing.assert_allclose(nbetas, [base * f for f in NBETA_FRACTIONS])
    np.testing.assert_allclose(gammas, [GAMMA_FRACTION * base * 10.0])
    assert h == 10.0
    ratios = step_sizes[1:] / step_sizes[:-1]
    np.testing.assert_allclose(ratios, 2.0)
    assert step_sizes.max() <= 2.0 / (nbetas.min() * h + gammas.max())  # below the Langevin limit
    assert step_sizes.size >= 8
    given = settings_grid(np.array([1e-3]), None, np.array([1.0]), 100, lambda: 1 / 0)
    assert given[0].tolist() == [1e-3] and np.isnan(given[3])  # no curvature needed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"step_sizes": []}, "step_sizes must hold at least one value"),
    ({"step_sizes": [1e-3, 0.0]}, "step_sizes must hold finite positive"),
    ({"step_sizes": [1e-3, 1e-3]}, "step_sizes holds a value twice"),
    ({"nbetas": [-1.0]}, "nbetas must hold finite positive"),
    ({"nbetas": "30"}, "nbetas must be a sequence of numbers"),
    ({"gammas": [float("nan")]}, "gammas must hold finite non-negative"),
    ({"gammas": [True]}, "gammas must hold numbers, not booleans"),
    ({"num_chains": 1}, "num_chains must be at least 2"),
    ({"num_samples": 0}, "num_samples must be a positive int"),
    ({"num_samples": 20, "thinning": 4}, "at least 12 kept draws"),
    ({"minibatch": "all"}, "minibatch must be one of"),
    ({"criteria": {"mala_min": 0.8}}, "criteria must be a numpyro_slt.calibration.Criteria"),
])
def test_bad_input_names_the_argument(data, model, center, kwargs, message):
    with pytest.raises(ValueError, match=message):
        slt.calibrate(model, center, *data, **kwargs)


def test_the_model_must_be_the_plain_one(data, model, center):
    with pytest.raises(ValueError, match="pass the plain model"):
        slt.calibrate(slt.temper(model, 30.0), center, *data, step_sizes=[1e-3],
                      gammas=[1.0])
    with pytest.raises(ValueError, match="center must be a non-empty dict"):
        slt.calibrate(model, {}, *data)
    with pytest.raises(ValueError, match="gammas must hold finite non-negative"):
        checked_grid("gammas", [-1.0], allow_zero=True)
    assert checked_grid("gammas", 0.0, allow_zero=True).tolist() == [0.0]


# -- acceptance: known learning coefficients with the default grids (issue 16) -------------------


def _rrr(shape):
    m, n_out, h, r = shape
    x, y, center = make_rrr_data(m, n_out, h, r, n=20_000)
    return partial(rrr_model, h=h, batch_size=500), center, (x, y), rrr_learning_coefficient(
        *shape)


def _logistic():
    x, y = make_logistic_data(n=20_000, d=6)
    return partial(logistic_model, batch_size=500), {"w": logistic_mle(x, y)}, (x, y), 3.0


@pytest.mark.slow
@pytest.mark.parametrize("case", ["rrr-5-5-3-1", "rrr-4-4-4-2", "rrr-8-3-4-1", "logistic-d6"])
def test_recommended_setting_recovers_the_known_llc(case):
    """No hand tuning: the default grids and budget, the recommended setting's λ̂ within 10%."""
    if case.startswith("rrr"):
        model, center, args, expected = _rrr(tuple(int(v) for v in case.split("-")[1:]))
    else:
        model, center, args, expected = _logistic()
    cal = slt.calibrate(model, center, *args)
    assert cal.recommended is not None, str(cal)
    assert float(cal.best.llc_mean) == pytest.approx(expected, rel=0.10), str(cal)


# -- the command line ---------------------------------------------------------------------------


def test_cli_rejects_bad_grids_and_outputs(tmp_path, capsys):
    from numpyro_slt.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--step-sizes", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert main(["calibrate", "--out", str(not_a_folder)]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_cli_calibrates_a_head_of_the_default_model(tmp_path, capsys):
    """Two step sizes at the quick study's budget (13 s on a quiet 2-core machine)."""
    from numpyro_slt.cli import main

    out = tmp_path / "cal"
    assert main(["calibrate", "--quick", "--component", "1:3", "--out", str(out),
                 "--step-sizes", "2.5e-4", "1.25e-4"]) == 0
    text = capsys.readouterr().out
    assert "rejected by" in text and "wrote" in text
    assert ("recommended: step_size=" in text) == (out / "study_config.json").is_file()
    assert (out / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    sweep = xr.open_dataset(out / "calibration.nc", engine="h5netcdf")
    assert dict(sweep.sizes) == {"step_size": 2, "nbeta": 1, "gamma": 1, "chain": 2}
    assert sweep.attrs["component"] == "1:3" and sweep.attrs["control_variate"] == 0
    assert sweep.nbeta.item() == StudyConfig.quick().nbeta
    sweep.close()
