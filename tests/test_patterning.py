"""slt.patterning on a linear-Gaussian model: the proposed probe mixture, sampled, moves E[φ_C] by
the predicted amount.

Model: linear regression with unit noise, d coordinates; each coordinate k is a component whose
restricted posterior (the others frozen at w*) is the 1-D Gaussian with precision nβ·a + γ and mean
(nβ·b + γw*_k)/(nβ·a + γ), where L(c) = ½a c² − b c + const is the (reweighted) loss along k.
φ_k = L_q(restricted w) − L_q(w*). The response matrix R[d, k] = −Cov[φ_k, L_{q′_d} − L_q] is
estimated from draws at h = 0; the posterior under q_h is then sampled and its E[φ] compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import numpyro_slt as slt

NBETA, GAMMA, D = 50.0, 20.0, 3


def _dataset(rng, scale, w):
    x = rng.normal(size=(4_000, D)) * scale
    return x, x @ w + rng.normal(size=len(x))


def _moments(x, y):
    return x.T @ x / len(x), x.T @ y / len(x)


def _loss(c, k, center, moments):
    """L(w* with coordinate k set to c) for draws c; L(w) = ½wᵀAw − bᵀw + ½E[y²] (constant
    dropped: only differences of losses enter)."""
    a, b = moments
    w = np.broadcast_to(center, c.shape + (D,)).copy()
    w[..., k] = c
    return 0.5 * np.einsum("...i,ij,...j->...", w, a, w) - w @ b


def _draws(noise, k, center, moments):
    a, b = moments
    curvature = a[k, k]
    slope = b[k] - a[k] @ center + a[k, k] * center[k]
    precision = NBETA * curvature + GAMMA
    mean = (NBETA * slope + GAMMA * center[k]) / precision
    return mean + precision**-0.5 * noise


def _mix(base, probes, h):
    a = (1 - h.sum()) * base[0] + sum(hd * p[0] for hd, p in zip(h, probes, strict=True))
    b = (1 - h.sum()) * base[1] + sum(hd * p[1] for hd, p in zip(h, probes, strict=True))
    return a, b


def test_patterning_weights_move_the_sampled_observables_as_predicted():
    rng = np.random.default_rng(0)
    w0 = np.array([1.0, -0.5, 0.3])
    x, y = _dataset(rng, 1.0, w0)
    center = np.linalg.lstsq(x, y, rcond=None)[0]
    q = _moments(x, y)
    probe_sets = [_dataset(rng, s, w0 + shift) for s, shift in [
        (np.array([2.0, 1.0, 1.0]), 0.0), (np.array([1.0, 2.0, 1.0]), 0.2),
        (np.array([1.0, 1.0, 2.0]), -0.2), (np.array([1.5, 1.5, 1.5]), 0.4)]]
    probes = [_moments(px, py) for px, py in probe_sets]
    n_draws = 400_000
    base_value = [_loss(center[k:k + 1], k, center, q)[0] for k in range(D)]

    response = np.empty((len(probes), D))
    base_phi = []
    # the same standard-normal noise under q and q_h (common random numbers): the change of
    # E[φ] is then resolved far below the noise of either mean
    noise = rng.normal(size=(D, n_draws))
    for k in range(D):
        c = _draws(noise[k], k, center, q)
        phi = _loss(c, k, center, q) - base_value[k]
        base_phi.append(phi)
        for d, p in enumerate(probes):
            delta_loss = _loss(c, k, center, p) - _loss(c, k, center, q)
            response[d, k] = -np.cov(phi, delta_loss, bias=True)[0, 1]
    matrix = xr.DataArray(response, dims=("probe", "component"),
                          coords={"probe": ["p0", "p1", "p2", "p3"],
                                  "component": ["w0", "w1", "w2"]})

    # adding probe data sharpens every restricted posterior (R < 0), so reachable targets lower φ
    targets = {"w0": -1e-4, "w1": -5e-5}
    plan = slt.patterning(matrix, targets, nbeta=NBETA)
    h = plan["weights"].values
    assert np.all(h >= 0) and h.sum() <= 1
    np.testing.assert_allclose(plan["predicted_change"].sel(component=["w0", "w1"]).values,
                               [-1e-4, -5e-5], rtol=1e-6)

    def sampled_change(weights):
        shifted = _mix(q, probes, weights)
        out = []
        for k in range(D):
            c = _draws(noise[k], k, center, shifted)
            out.append((_loss(c, k, center, q) - base_value[k]).mean() - base_phi[k].mean())
        return np.array(out)

    # the deviation is second order: a quarter of the weights, a quarter of the relative error
    predicted = plan["predicted_change"].values
    error = np.abs(sampled_change(h) / predicted - 1)
    error_quarter = np.abs(sampled_change(h / 4) / (predicted / 4) - 1)
    assert np.all(error_quarter < 0.4 * error), (error, error_quarter)

    shifted = _mix(q, probes, h)
    for k, name in enumerate(["w0", "w1", "w2"]):
        c = _draws(noise[k], k, center, shifted)
        moved = _loss(c, k, center, q) - base_value[k]
        change = moved.mean() - base_phi[k].mean()
        se = np.std(moved - base_phi[k]) / np.sqrt(n_draws)
        predicted = float(plan["predicted_change"].sel(component=name))
        # first order: the second-order term is O(h²), small against the target at these h
        assert abs(change - predicted) < 4 * se + 0.1 * abs(predicted), (name, change, predicted)


def test_patterning_bad_input_names_the_argument():
    matrix = xr.DataArray(np.eye(2), dims=("probe", "component"),
                          coords={"probe": ["a", "b"], "component": ["c0", "c1"]})
    with pytest.raises(ValueError, match="lacks"):
        slt.patterning(matrix, {"c9": 1.0}, nbeta=10.0)
    with pytest.raises(ValueError, match="nbeta"):
        slt.patterning(matrix, {"c0": 0.1}, nbeta=-1.0)
    with pytest.raises(ValueError, match="dims"):
        slt.patterning(matrix.rename(probe="token"), {"c0": 0.1}, nbeta=10.0)
    with pytest.raises(ValueError, match="non-negative"):
        slt.patterning(matrix, {"c0": -0.1}, nbeta=10.0)
    with pytest.raises(ValueError, match="sum to"):
        slt.patterning(matrix, {"c0": 20.0, "c1": 20.0}, nbeta=10.0)
    plan = slt.patterning(matrix, {"c0": -0.1}, nbeta=10.0, nonnegative=False)
    np.testing.assert_allclose(plan["weights"].values, [-0.01, 0.0])
