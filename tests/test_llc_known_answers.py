"""Known-answer tests of the LLC: models whose learning coefficient is known in closed form.

Hyperparameter recipe (documented in docs/llc.md): nβ = n / log n for the regression models,
γ = 10, ε = 1e-5, minibatch 500 of n = 20,000 with the control variate, 8 chains of 10,000 draws
after 2,000 burn-in steps.
"""

from functools import partial

import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_slt as slt
from numpyro_slt.known_models import (
    crossing_model,
    least_squares,
    linear_model,
    make_crossing_data,
    make_linear_data,
    make_rrr_data,
    rrr_model,
)
from numpyro_slt.theory import (
    normal_crossing_expected_excess,
    normal_crossing_learning_coefficient,
    rrr_case,
    rrr_learning_coefficient,
)

pytestmark = pytest.mark.slow


def _estimate(model, center, gamma, step_size, args, *, nbeta, num_samples, num_chains=8,
              control_variate=True, seed=0):
    return slt.estimate_llc(model, center, *args, nbeta=nbeta, gamma=gamma, step_size=step_size,
                            num_samples=num_samples, num_chains=num_chains,
                            control_variate=control_variate, seed=seed, progress_bar=False)


@pytest.mark.parametrize("d", [3, 8])
def test_regular_linear_regression_minibatch(d):
    x, y = make_linear_data(n=20_000, d=d)
    n = x.shape[0]
    result = _estimate(partial(linear_model, batch_size=500), {"w": least_squares(x, y)}, 10.0,
                       1e-5, (x, y), nbeta=n / np.log(n), num_samples=20_000)
    assert float(result.loss_rhat) < 1.05
    assert result.llc_mean.item() == pytest.approx(d / 2, rel=0.10)


def test_regular_linear_regression_full_batch_without_control_variate():
    x, y = make_linear_data(n=2_000, d=4)
    n = x.shape[0]
    result = _estimate(linear_model, {"w": least_squares(x, y)}, 1.0, 1e-4, (x, y),
                       nbeta=n / np.log(n), num_samples=5_000, control_variate=False)
    assert result.llc_mean.item() == pytest.approx(2.0, rel=0.10)


# (input M, output N, hidden H, true rank r): every case of Aoyagi & Watanabe (2005).
RRR_SHAPES = [(5, 5, 3, 1), (4, 4, 4, 2), (3, 8, 4, 1), (8, 3, 4, 1), (2, 2, 5, 1)]


def test_rrr_shapes_cover_all_cases():
    assert {rrr_case(*shape) for shape in RRR_SHAPES} == {1, 2, 3, 4}


@pytest.mark.parametrize("shape", RRR_SHAPES, ids=lambda s: "M{}-N{}-H{}-r{}".format(*s))
def test_reduced_rank_regression_matches_aoyagi_watanabe(shape):
    m, n_out, h, r = shape
    x, y, center = make_rrr_data(m, n_out, h, r, n=20_000)
    n = x.shape[0]
    result = _estimate(partial(rrr_model, h=h, batch_size=500), center, 10.0, 1e-5, (x, y),
                       nbeta=n / np.log(n), num_samples=10_000)
    expected = rrr_learning_coefficient(m, n_out, h, r)
    assert result.llc_mean.item() == pytest.approx(expected, rel=0.10)


@pytest.mark.parametrize(
    ("powers", "gamma", "step_size", "num_chains"),
    [((1,), 1.0, 1e-5, 16), ((3,), 1.0, 1e-4, 16), ((1, 2), 1.0, 1e-4, 32),
     ((1, 1), 10.0, 1e-4, 32)],
)
def test_normal_crossing_potentials(powers, gamma, step_size, num_chains):
    """K(w) = ½·mean(x²)·Π w_i^(2 k_i) at w* = 0: λ = min_i 1/(2 k_i).

    The estimate is checked against the exact E[nβ·K] of the localized tempered posterior
    (quadrature) and, for multiplicity 1, against λ itself, both within 10%. With multiplicity 2
    ((1, 1)) the finite-nβ value sits well below λ (by about (m − 1)/log nβ, and γ = 10 keeps the
    chains off the long arms of the cross where ε = 1e-4 would be too coarse), so only the exact
    value is the reference there.
    """
    x, y = make_crossing_data(n=1_000)
    nbeta = 10_000.0
    result = _estimate(partial(crossing_model, powers=powers), {"w": jnp.zeros(len(powers))},
                       gamma, step_size, (x, y), nbeta=nbeta, num_samples=100_000,
                       num_chains=num_chains, control_variate=False)
    scale = 0.5 * float(jnp.mean(x**2))
    exact = normal_crossing_expected_excess(powers, scale, nbeta, gamma)
    expected, multiplicity = normal_crossing_learning_coefficient(powers)
    assert result.llc_mean.item() == pytest.approx(exact, rel=0.10)
    if multiplicity == 1:
        assert result.llc_mean.item() == pytest.approx(expected, rel=0.10)
    else:
        assert exact < 0.8 * expected
