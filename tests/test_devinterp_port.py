"""What a port of a devinterp run needs: estimate_llc's settings, devinterp's default nβ and a
divergence report that names the chain and draw."""

import math
from functools import partial

import jax
import numpy as np
import pytest
import xarray as xr

import numpyro_slt as slt
from numpyro_slt.kernels._steps import draw_indices
from numpyro_slt.known_models import least_squares, linear_model, make_linear_data

N, BATCH, NBETA = 400, 40, 50.0


@pytest.fixture(scope="module")
def problem():
    x, y = make_linear_data(n=N, d=2, seed=2)
    return partial(linear_model, batch_size=BATCH), {"w": least_squares(x, y)}, (x, y)


def _estimate(problem, **settings):
    model, center, args = problem
    settings = dict(dict(nbeta=NBETA, gamma=10.0, step_size=1e-3, num_samples=200,
                         num_chains=2, progress_bar=False), **settings)
    return slt.estimate_llc(model, center, *args, **settings)


def _gaussian_nll(x, y, w):
    return 0.5 * (y - x @ w) ** 2 + 0.5 * np.log(2 * np.pi)


# -- slt.llc names the first non-finite draw -------------------------------------------------


def _stats(mean_excess_loss, *, chains=None, diverged_at=None):
    mean = np.asarray(mean_excess_loss, dtype=np.float64)
    count = np.broadcast_to(np.arange(1, mean.shape[1] + 1), mean.shape)
    data = {"mean_excess_loss": (("chain", "draw"), mean),
            "mean_count": (("chain", "draw"), count),
            "init_loss": (("chain", "draw"), np.ones_like(mean)),
            "nbeta": (("chain", "draw"), np.full_like(mean, 10.0))}
    if diverged_at is not None:
        data["diverged_at"] = (("chain", "draw"), diverged_at)
    coords = {"chain": np.arange(mean.shape[0]) if chains is None else chains,
              "draw": np.arange(mean.shape[1])}
    return xr.Dataset(data, coords=coords)


def test_llc_names_the_chain_and_first_non_finite_draw_without_diverged_at():
    mean = np.full((3, 6), 0.1)
    mean[1, 3:] = np.nan
    with pytest.raises(FloatingPointError, match=r"chain 1 at draw 3 \(the first draw"):
        slt.llc(_stats(mean))
    with pytest.warns(UserWarning, match=r"dropping diverged chains: chain 11 at draw 3"):
        result = slt.llc(_stats(mean, chains=np.array([10, 11, 12])), on_divergence="drop")
    assert list(result.chain.values) == [10, 12]
    assert result.llc_mean.item() == pytest.approx(10.0 * 0.1)


def test_llc_reports_the_kernels_step_when_it_has_diverged_at():
    mean = np.full((2, 4), 0.1)
    mean[0, 2:] = np.inf
    diverged_at = np.array([[-1, -1, 7, 7], [-1, -1, -1, -1]])
    with pytest.raises(FloatingPointError, match=r"chain 0 at step 7;"):
        slt.llc(_stats(mean, diverged_at=diverged_at))


# -- devinterp's default nβ -------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "accumulation"), [(2, 1), (32, 1), (64, 1), (16, 4)])
def test_default_nbeta_is_devinterps_batch_over_log_batch(batch_size, accumulation):
    m = batch_size * accumulation
    assert slt.default_nbeta(batch_size, accumulation) == pytest.approx(m / math.log(m),
                                                                         rel=1e-12)
    assert slt.default_nbeta(64) == pytest.approx(15.389, abs=1e-3)


@pytest.mark.parametrize("bad", [1, 0, -3, 2.5, True, "64"])
def test_default_nbeta_refuses_what_has_no_batch_over_log_batch(bad):
    with pytest.raises(ValueError, match="batch_size"):
        slt.default_nbeta(bad)


# -- estimate_llc's settings -----------------------------------------------------------------


def test_init_loss_given_replaces_the_computed_one_and_defaults_stay(problem):
    """One run: a given L_n(w*) is the one the kernel subtracts, and an existing call's defaults
    (burn-in num_samples // 5, the SGLD kernel) are unchanged."""
    _, center, (x, y) = problem
    full = float(np.mean(_gaussian_nll(x, y, center["w"])))
    result = _estimate(problem, control_variate=False, init_loss=full + 0.01, num_samples=50)
    assert result.init_loss.item() == pytest.approx(full + 0.01)
    # λ̂ = nβ·(mean L_B − init_loss) over the steps (loss_trace is the mean L_B of each window)
    assert result.llc_mean.item() == pytest.approx(
        NBETA * (result.loss_trace.mean().item() - full - 0.01), rel=1e-4)
    assert result.attrs["num_warmup"] == 10 and result.attrs["kernel"] == "SGLD"
    assert result.attrs["steps_per_chain"] == 50


def test_init_loss_batches_averages_that_many_minibatches(problem):
    _, center, (x, y) = problem
    result = _estimate(problem, init_loss_batches=3, num_samples=20)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batches = [draw_indices({"data": (N, BATCH)}, "with_replacement", key)["data"]
               for key in keys]
    expected = np.mean([np.mean(_gaussian_nll(x[idx], y[idx], center["w"])) for idx in batches])
    full = float(np.mean(_gaussian_nll(x, y, center["w"])))
    assert result.init_loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert abs(result.init_loss.item() - full) > 1e-4  # not the full-data L_n(w*)
    assert result.attrs["init_loss_batches"] == 3


def test_max_excess_loss_reaches_the_kernel(problem):
    with pytest.raises(FloatingPointError, match="diverged"):
        _estimate(problem, max_excess_loss=1e-9, control_variate=False, num_samples=20)


def test_restrict_to_samples_only_those_sites(tmp_path):
    x, y = make_linear_data(n=N, d=3, seed=4)
    w = least_squares(x, y)

    def loss(params, sample):
        inputs, target = sample
        return 0.5 * (target - inputs[:1] @ params["a"] - inputs[1:] @ params["b"]) ** 2

    both = slt.loss_model(loss, {"a": w[:1], "b": w[1:]}, (x, y), batch_size=BATCH)
    only_a = slt.loss_model(lambda p, s: loss({"a": p["a"], "b": w[1:]}, s), {"a": w[:1]},
                            (x, y), batch_size=BATCH)
    settings = dict(nbeta=NBETA, gamma=10.0, step_size=1e-3, num_samples=200, num_chains=2,
                    progress_bar=False)
    restricted = slt.estimate_llc(both, both.center, restrict_to=["a"], **settings)
    reference = slt.estimate_llc(only_a, only_a.center, **settings)
    assert restricted.attrs["restrict_to"] == "a"
    restricted.to_netcdf(tmp_path / "llc.nc")  # the settings in attrs are netCDF attributes
    np.testing.assert_allclose(restricted.llc_per_chain, reference.llc_per_chain, rtol=1e-4)


class RecordingSGLD(slt.SGLD):
    """SGLD that records the options it was built with and the burn-in it was given: a stand-in
    for any kernel class with options of its own."""

    built_with: dict = {}
    warmup: int = -1

    def __init__(self, model, step_size, *, special=None, **options):
        RecordingSGLD.built_with = dict(options, special=special, step_size=step_size)
        super().__init__(model, step_size, **options)

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        RecordingSGLD.warmup = num_warmup
        return super().init(rng_key, num_warmup, init_params, model_args, model_kwargs)


def test_kernel_and_kernel_options_pass_through_with_the_warmup_share(problem):
    result = _estimate(problem, kernel=RecordingSGLD, warmup_fraction=0.5, num_samples=40,
                       num_chains=3, kernel_options={"special": "on", "keep_draws": False,
                                                     "minibatch": "without_replacement"})
    recorded = RecordingSGLD.built_with
    assert recorded["special"] == "on" and recorded["keep_draws"] is False
    assert recorded["minibatch"] == "without_replacement" and recorded["step_size"] == 1e-3
    assert recorded["control_variate"] is True and "init_loss" not in recorded
    assert RecordingSGLD.warmup == 20
    assert result.attrs["kernel"] == "RecordingSGLD" and result.attrs["num_warmup"] == 20
    assert result.sizes["chain"] == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [(dict(kernel_options={"control_variate": False}), "repeats"),
     (dict(kernel_options={"no_such_option": 1}), r"kernel SGLD does not take the options"),
     (dict(kernel_options=["minibatch"]), "kernel_options must be a dict"),
     (dict(kernel="SGLD"), "kernel must be a kernel class"),
     (dict(num_warmup=10, warmup_fraction=0.1), "not both"),
     (dict(warmup_fraction=-0.1), "warmup_fraction must be"),
     (dict(num_warmup=-1), "num_warmup must be")],
)
def test_bad_settings_name_the_argument(problem, settings, message):
    with pytest.raises(ValueError, match=message):
        _estimate(problem, **settings)


def _half_in_a_factor(x, y):
    """linear_model's likelihood with its second half of the data written as a factor."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    half = x.shape[0] // 2
    with numpyro.plate("first", half):
        numpyro.sample("y", dist.Normal(x[:half] @ w, 1.0), obs=y[:half])
    numpyro.factor("rest", dist.Normal(x[half:] @ w, 1.0).log_prob(y[half:]).sum())


def test_n_and_factors_reach_temper(problem):
    _, center, (x, y) = problem
    settings = dict(nbeta=NBETA, gamma=10.0, step_size=1e-3, num_samples=200, num_chains=2,
                    progress_bar=False, control_variate=False)
    with pytest.raises(ValueError, match="factor"):
        slt.estimate_llc(_half_in_a_factor, center, x, y, **settings)
    result = slt.estimate_llc(_half_in_a_factor, center, x, y, n=N, factors={"rest": N // 2},
                              **settings)
    assert np.isfinite(float(result["llc_mean"]))
    assert float(result["init_loss"]) == pytest.approx(
        float(np.mean(_gaussian_nll(np.asarray(x), np.asarray(y), np.asarray(center["w"])))),
        rel=1e-5)
