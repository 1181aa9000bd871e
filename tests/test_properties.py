"""Property-based tests (hypothesis) of the estimators' invariances and identities.

Susceptibilities, response PCA and the LLC are checked on random bounded inputs against independent
numpy computations (two-pass covariances, eigenvalues of the covariance, direct step means) and
against the invariances the formulas of docs/formulas.md imply: shifts, scalings, permutations
of draws, rows and components.
"""

import numpy as np
import pytest
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import numpyro_slt as slt
from numpyro_slt.estimators.pca import response_pca
from numpyro_slt.estimators.susceptibility import susceptibilities

FLOATS = st.floats(-10, 10, allow_nan=False, allow_infinity=False, allow_subnormal=False)
CONSTANTS = st.floats(-100, 100, allow_nan=False, allow_subnormal=False)
SAMPLES = ("chain", "draw")
OUTPUTS = ("per_token", "standardized", "global")
ATOL = 1e-8  # inputs are bounded by 10 (shifts by 100): float64 rounding stays far below this


# ---------------------------------------------------------------------------------------------
# susceptibilities


@st.composite
def observables(draw):
    """phi, sampling_loss (component, chain, draw) and token_losses (…, token) as numpy arrays."""
    k, chains, draws, tokens = (draw(st.integers(*r)) for r in ((1, 3), (1, 3), (2, 6), (1, 5)))
    phi = draw(hnp.arrays(np.float64, (k, chains, draws), elements=FLOATS))
    loss = draw(hnp.arrays(np.float64, (k, chains, draws), elements=FLOATS))
    tokens_ = draw(hnp.arrays(np.float64, (k, chains, draws, tokens), elements=FLOATS))
    return phi, loss, tokens_ + 0.5 * phi[..., None]  # plus some real covariance


def _chi(phi, loss, token_losses, **kwargs):
    k = phi.shape[0]
    coords = {"component": [f"c{i}" for i in range(k)]}
    dims = ("component", *SAMPLES)
    return susceptibilities(xr.DataArray(phi, dims=dims, coords=coords),
                            xr.DataArray(loss, dims=dims, coords=coords),
                            xr.DataArray(token_losses, dims=(*dims, "token"), coords=coords),
                            **kwargs)


def _numpy_chi(phi, loss, token_losses):
    """−Cov(X, φ) per (component, token), pooled draws, ddof = 0, by np.cov (roles swapped)."""
    k, tokens = phi.shape[0], token_losses.shape[-1]
    x = (token_losses - loss[..., None]).reshape(k, -1, tokens)
    return np.array([[-np.cov(x[c, :, t], phi[c].ravel(), ddof=0)[0, 1] for t in range(tokens)]
                     for c in range(k)])


def _assert_same(a, b, names=OUTPUTS, atol=ATOL):
    for name in names:
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-9, atol=atol)


@settings(max_examples=60, deadline=None)
@given(observables(), st.lists(st.sampled_from("abc"), min_size=5, max_size=5))
def test_susceptibilities_match_numpy_covariances(data, labels):
    phi, loss, token_losses = data
    tokens = token_losses.shape[-1]
    expected = _numpy_chi(phi, loss, token_losses)
    probe = xr.DataArray(labels[:tokens], dims="token")
    result = _chi(phi, loss, token_losses, probe=probe)
    np.testing.assert_allclose(result.per_token.values, expected, rtol=1e-9, atol=ATOL)
    np.testing.assert_allclose(result.standardized.values,
                               expected - expected.mean(1, keepdims=True), rtol=1e-9, atol=ATOL)
    np.testing.assert_allclose(result.standardized.mean("token"), 0.0, atol=ATOL)
    np.testing.assert_allclose(result.phi_mean.values, phi.mean((1, 2)), rtol=1e-12, atol=1e-12)
    for label in set(labels[:tokens]):
        mask = np.array(labels[:tokens]) == label
        np.testing.assert_allclose(result["global"].sel(probe=label).values,
                                   expected[:, mask].mean(1), rtol=1e-9, atol=ATOL)
    overall = _chi(phi, loss, token_losses)["global"].values
    np.testing.assert_allclose(overall, expected.mean(1), rtol=1e-9, atol=ATOL)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, (2, 5), elements=FLOATS),
       hnp.arrays(np.float64, (2, 5), elements=FLOATS))
def test_a_token_whose_loss_is_phi_plus_sampling_loss_has_minus_var_phi(phi, loss):
    result = _chi(phi[None], loss[None], (phi + loss)[None, ..., None])
    np.testing.assert_allclose(result.per_token.values.ravel(), -np.var(phi), rtol=1e-9,
                               atol=ATOL)


@settings(max_examples=40, deadline=None)
@given(observables(), CONSTANTS, CONSTANTS, st.data())
def test_susceptibilities_are_shift_invariant(data, c_phi, c_loss, more):
    phi, loss, token_losses = data
    per_token_shift = more.draw(hnp.arrays(np.float64, token_losses.shape[-1], elements=CONSTANTS))
    base = _chi(phi, loss, token_losses)
    _assert_same(base, _chi(phi + c_phi, loss, token_losses))
    _assert_same(base, _chi(phi, loss + c_loss, token_losses + c_loss))
    _assert_same(base, _chi(phi, loss, token_losses + per_token_shift))


@settings(max_examples=40, deadline=None)
@given(observables(), st.floats(1e-3, 1e3))
def test_susceptibilities_scale_with_phi(data, a):
    phi, loss, token_losses = data
    base, scaled = _chi(phi, loss, token_losses), _chi(a * phi, loss, token_losses)
    for name in OUTPUTS:
        np.testing.assert_allclose(scaled[name].values, a * base[name].values, rtol=1e-9,
                                   atol=ATOL * max(a, 1.0))


@settings(max_examples=40, deadline=None)
@given(observables(), st.data())
def test_centrings_differ_by_phi_mean_times_the_excess_shift(data, more):
    phi, loss, token_losses = data
    tokens = token_losses.shape[-1]
    full_excess = more.draw(hnp.arrays(np.float64, tokens, elements=FLOATS))
    covariance = _chi(phi, loss, token_losses)
    full = _chi(phi, loss, token_losses, centring="full_chain",
                full_chain_excess=xr.DataArray(full_excess, dims="token"))
    restricted_excess = (token_losses - loss[..., None]).mean((1, 2))
    expected = phi.mean((1, 2))[:, None] * (full_excess[None] - restricted_excess)
    np.testing.assert_allclose(full.per_token.values - covariance.per_token.values, expected,
                               rtol=1e-9, atol=ATOL)


@settings(max_examples=40, deadline=None)
@given(observables(), st.randoms(use_true_random=False), st.sampled_from(["same", "one", "all"]))
def test_draw_order_and_chain_split_do_not_matter(data, random, split):
    """Permute the pooled (chain, draw) samples jointly, then re-split them into chains."""
    phi, loss, token_losses = data
    k, chains, draws = phi.shape
    total = chains * draws
    order = list(range(total))
    random.shuffle(order)
    shape = {"same": (chains, draws), "one": (1, total), "all": (total, 1)}[split]

    def resplit(a):
        return a.reshape(k, total, *a.shape[3:])[:, order].reshape(k, *shape, *a.shape[3:])

    _assert_same(_chi(phi, loss, token_losses),
                 _chi(resplit(phi), resplit(loss), resplit(token_losses)))


@settings(max_examples=30, deadline=None)
@given(observables(), st.randoms(use_true_random=False))
def test_component_order_does_not_matter(data, random):
    phi, loss, token_losses = data
    k = phi.shape[0]
    order = list(range(k))
    random.shuffle(order)
    dims = ("component", *SAMPLES)
    names = [f"c{i}" for i in order]

    def named(a, extra=()):
        return xr.DataArray(a[order], dims=(*dims, *extra), coords={"component": names})

    shuffled = susceptibilities(named(phi), named(loss), named(token_losses, ("token",)))
    base = _chi(phi, loss, token_losses)
    _assert_same(base, shuffled.sel(component=base.component), (*OUTPUTS, "phi_mean"))


# ---------------------------------------------------------------------------------------------
# response PCA


@st.composite
def matrices(draw, min_rows=3):
    rows, cols = draw(st.integers(min_rows, 10)), draw(st.integers(1, 4))
    values = draw(hnp.arrays(np.float64, (rows, cols), elements=FLOATS))
    return xr.DataArray(values, dims=("token", "component"),
                        coords={"component": [f"0:{h}" for h in range(cols)]})


@settings(max_examples=60, deadline=None)
@given(matrices())
def test_pca_identities(matrix):
    values = matrix.values
    assume(np.ptp(values, axis=0).max() > 1e-3)
    result = response_pca(matrix)
    ratio = result.explained_variance_ratio.values
    np.testing.assert_allclose(ratio.sum(), 1.0, rtol=1e-12)
    assert np.all(np.diff(ratio) <= 1e-12)
    centred = values - values.mean(0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred))[::-1][: ratio.size]
    np.testing.assert_allclose(ratio, eigenvalues / np.trace(centred.T @ centred), atol=1e-9)
    loadings, scores = result.loadings.values, result.scores.values
    np.testing.assert_allclose(loadings.T @ loadings, np.eye(ratio.size), atol=1e-10)
    np.testing.assert_allclose(scores @ loadings.T, centred, atol=1e-9)


def _well_separated(values):
    """Distinct, non-zero singular values and an unambiguous largest loading per PC, so that the
    singular vectors (and their orientation) are determined far above rounding error."""
    centred = values - values.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    top2 = -np.sort(-np.abs(vt), axis=1)[:, :2] if vt.shape[1] > 1 else np.zeros((len(s), 2))
    return (s[-1] > 1e-2 * s[0] and np.all(-np.diff(s) > 1e-2 * s[0])
            and np.all(top2[:, 0] - top2[:, 1] > 1e-3))


@settings(max_examples=60, deadline=None)
@given(matrices(min_rows=6), st.randoms(use_true_random=False), st.floats(1e-2, 1e2), st.data())
def test_pca_invariances(matrix, random, c, more):
    assume(_well_separated(matrix.values))
    base = response_pca(matrix)
    shifts = more.draw(hnp.arrays(np.float64, matrix.sizes["component"], elements=CONSTANTS))
    shifted = response_pca(matrix + shifts)
    for name in ("explained_variance_ratio", "loadings", "scores"):
        np.testing.assert_allclose(shifted[name].values, base[name].values, rtol=1e-7, atol=1e-7)
    order = list(range(matrix.sizes["token"]))
    random.shuffle(order)
    permuted = response_pca(matrix.isel(token=order))
    np.testing.assert_allclose(permuted.loadings.values, base.loadings.values, atol=1e-9)
    np.testing.assert_allclose(permuted.scores.values, base.scores.values[order], atol=1e-9)
    scaled = response_pca(c * matrix)
    np.testing.assert_allclose(scaled.explained_variance_ratio.values,
                               base.explained_variance_ratio.values, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaled.loadings.values, base.loadings.values, atol=1e-9)
    np.testing.assert_allclose(scaled.scores.values, c * base.scores.values, rtol=1e-8,
                               atol=1e-9 * c)


# ---------------------------------------------------------------------------------------------
# LLC


def _recorded(losses, init_loss, nbeta, thinning):
    """sample_stats as the SGLD kernel records them: the running mean of L_B − L_n(w*) updated at
    every step (m ← m + (x − m)/count), kept every ``thinning`` steps."""
    chains, steps = losses.shape
    mean, kept, counts = np.zeros(chains), [], []
    for i in range(steps):
        mean = mean + (losses[:, i] - init_loss - mean) / (i + 1)
        if (i + 1) % thinning == 0:
            kept.append(mean)
            counts.append(i + 1)
    shape = (chains, len(kept))
    return xr.Dataset({
        "mean_excess_loss": (SAMPLES, np.stack(kept, axis=1)),
        "mean_count": (SAMPLES, np.broadcast_to(np.array(counts, np.int32), shape)),
        "init_loss": (SAMPLES, np.full(shape, init_loss)),
        "nbeta": (SAMPLES, np.full(shape, nbeta)),
    })


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 4), st.integers(1, 3), st.integers(2, 8), st.floats(0.1, 1e3),
       st.floats(0, 10), CONSTANTS, st.data())
def test_llc_is_nbeta_times_the_mean_excess_loss(chains, thinning, draws, nbeta, init_loss,
                                                 shift, more):
    losses = more.draw(hnp.arrays(np.float64, (chains, draws * thinning),
                                  elements=st.floats(0, 10, allow_subnormal=False)))
    burn_in = more.draw(st.integers(0, draws - 1))
    expected = nbeta * (losses[:, burn_in * thinning:].mean(1) - init_loss)
    atol = 1e-9 * nbeta
    result = slt.llc(_recorded(losses, init_loss, nbeta, thinning), burn_in=burn_in)
    np.testing.assert_allclose(result.llc_per_chain.values, expected, rtol=1e-9, atol=atol)
    np.testing.assert_allclose(float(result.llc_mean), expected.mean(), rtol=1e-9, atol=atol)
    np.testing.assert_allclose(float(result.llc_mean), float(result.llc_per_chain.mean()),
                               rtol=1e-12, atol=1e-12 * nbeta)
    doubled = slt.llc(_recorded(losses, init_loss, 2 * nbeta, thinning), burn_in=burn_in)
    np.testing.assert_allclose(doubled.llc_per_chain.values, 2 * result.llc_per_chain.values,
                               rtol=1e-12, atol=1e-12 * nbeta)
    moved = slt.llc(_recorded(losses + shift, init_loss + shift, nbeta, thinning),
                    burn_in=burn_in)
    np.testing.assert_allclose(moved.llc_per_chain.values, result.llc_per_chain.values,
                               rtol=1e-9, atol=atol * (1 + abs(shift)))


# ---------------------------------------------------------------------------------------------
# bad input


@settings(max_examples=30, deadline=None)
@given(observables(), st.integers(0, 2), st.integers(0, 10**6), st.sampled_from([np.nan, np.inf]))
def test_non_finite_observables_are_refused(data, which, position, bad):
    arrays = [a.copy() for a in data]
    arrays[which].flat[position % arrays[which].size] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        _chi(*arrays)


@settings(max_examples=30, deadline=None)
@given(matrices(), st.integers(0, 10**6), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_matrix_is_refused(matrix, position, bad):
    values = matrix.values.copy()
    values.flat[position % values.size] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        response_pca(matrix.copy(data=values))


def test_non_finite_full_chain_excess_is_refused():
    phi, loss, token_losses = (np.ones((1, 2, 3)), np.zeros((1, 2, 3)), np.ones((1, 2, 3, 2)))
    with pytest.raises(ValueError):
        _chi(phi, loss, token_losses, centring="full_chain",
             full_chain_excess=xr.DataArray([np.nan, 0.0], dims="token"))


def test_misaligned_draw_coordinates_are_refused():
    rng = np.random.default_rng(0)
    phi = xr.DataArray(rng.normal(size=(2, 5)), dims=SAMPLES, coords={"draw": np.arange(5)})
    token_losses = xr.DataArray(rng.normal(size=(2, 5, 3)), dims=(*SAMPLES, "token"),
                                coords={"draw": np.arange(100, 105)})
    with pytest.raises(ValueError):
        susceptibilities(phi, phi, token_losses)
