"""Property-based tests of the LLC estimator's arithmetic on synthetic per-step losses."""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import numpyro_slt as slt


def _stats(excess: np.ndarray, thinning: int, nbeta: float, init_loss: float) -> xr.Dataset:
    """The per-draw statistics the SGLD kernel would record for per-step excess losses."""
    chains, steps = excess.shape
    count = np.arange(1, steps + 1)
    running = np.cumsum(excess, axis=1) / count
    kept = slice(thinning - 1, None, thinning)
    shape = running[:, kept].shape
    return xr.Dataset({
        "mean_excess_loss": (("chain", "draw"), running[:, kept]),
        "mean_count": (("chain", "draw"), np.broadcast_to(count[kept], shape)),
        "init_loss": (("chain", "draw"), np.full(shape, init_loss)),
        "nbeta": (("chain", "draw"), np.full(shape, nbeta)),
        "diverged_at": (("chain", "draw"), np.full(shape, -1)),
    })


problems = st.tuples(
    st.integers(2, 4),  # chains
    st.integers(1, 5),  # thinning
    st.integers(4, 30),  # kept draws
    st.floats(0.1, 1e4),  # nbeta
    st.integers(0, 2**32 - 1),  # seed
)


@settings(max_examples=60, deadline=None)
@given(problems)
def test_llc_uses_every_step_whatever_the_thinning(problem):
    chains, thinning, draws, nbeta, seed = problem
    excess = np.random.default_rng(seed).normal(0.01, 0.1, size=(chains, draws * thinning))
    result = slt.llc(_stats(excess, thinning, nbeta, 1.5))
    np.testing.assert_allclose(result.llc_per_chain, nbeta * excess.mean(1), rtol=1e-9,
                               atol=1e-12 * nbeta)
    windows = excess.reshape(chains, draws, thinning).mean(-1)
    np.testing.assert_allclose(result.loss_trace, windows + 1.5, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.llc_std, np.std(nbeta * excess.mean(1), ddof=1),
                               rtol=1e-7, atol=1e-12 * nbeta)


@settings(max_examples=40, deadline=None)
@given(problems, st.data())
def test_burn_in_drops_exactly_the_leading_steps(problem, data):
    chains, thinning, draws, nbeta, seed = problem
    burn_in = data.draw(st.integers(0, draws - 1))
    excess = np.random.default_rng(seed).normal(size=(chains, draws * thinning))
    result = slt.llc(_stats(excess, thinning, nbeta, 0.0), burn_in=burn_in)
    expected = nbeta * excess[:, burn_in * thinning:].mean(1)
    np.testing.assert_allclose(result.llc_per_chain, expected, rtol=1e-8, atol=1e-10 * nbeta)
    assert result.llc_trace.shape == (chains, draws - burn_in)


@settings(max_examples=40, deadline=None)
@given(problems, st.floats(0.01, 100.0))
def test_llc_is_linear_in_nbeta_and_invariant_to_the_reference_loss(problem, factor):
    chains, thinning, draws, nbeta, seed = problem
    excess = np.random.default_rng(seed).normal(size=(chains, draws * thinning))
    base = slt.llc(_stats(excess, thinning, nbeta, 0.0))
    scaled = slt.llc(_stats(excess, thinning, nbeta * factor, 7.0))
    np.testing.assert_allclose(scaled.llc_per_chain, factor * base.llc_per_chain, rtol=1e-9,
                               atol=1e-12 * nbeta * factor)
    np.testing.assert_allclose(scaled.loss_trace - 7.0, base.loss_trace, rtol=1e-9, atol=1e-9)


def test_llc_never_silently_nan():
    excess = np.zeros((2, 10))
    stats = _stats(excess, 1, 10.0, 0.0)
    stats["mean_excess_loss"][0, 5] = np.nan
    with pytest.raises(FloatingPointError, match="chain 0"):
        slt.llc(stats)
