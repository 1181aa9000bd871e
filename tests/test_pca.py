"""PCA of response matrices: a planted low-rank structure is recovered."""

import numpy as np
import pytest
import xarray as xr

from numpyro_slt.estimators.pca import per_layer_pca, response_pca


def _planted(seed=0, tokens=400):
    """Layer 1: heads 1:0–1:3 share one factor, heads 1:4–1:5 another; small noise."""
    rng = np.random.default_rng(seed)
    heads = [f"0:{h}" for h in range(4)] + [f"1:{h}" for h in range(6)]
    a, b = rng.normal(size=tokens), rng.normal(size=tokens)
    columns = [rng.normal(size=tokens) for _ in range(4)]
    columns += [2.0 * a + 0.01 * rng.normal(size=tokens) for _ in range(4)]
    columns += [b + 0.01 * rng.normal(size=tokens) for _ in range(2)]
    return xr.DataArray(np.stack(columns, axis=1) + 3.0, dims=("token", "component"),
                        coords={"component": heads})


def test_planted_modules_are_recovered_per_layer():
    layer = per_layer_pca(_planted())["1"]
    ratio = layer.explained_variance_ratio.values
    np.testing.assert_allclose(ratio.sum(), 1.0)
    assert ratio[0] > 0.7 and ratio[:2].sum() > 0.999
    pc1 = layer.loadings.sel(pc=1)
    assert np.all(pc1.sel(component=[f"1:{h}" for h in range(4)]) > 0.45)
    assert np.all(np.abs(pc1.sel(component=["1:4", "1:5"])) < 0.05)


def test_scores_and_loadings_reconstruct_the_centred_matrix():
    matrix = _planted(seed=1)
    result = response_pca(matrix)
    reconstructed = result.scores.values @ result.loadings.values.T
    centred = matrix.values - matrix.values.mean(0)
    np.testing.assert_allclose(reconstructed, centred, atol=1e-9)
    again = response_pca(matrix)
    np.testing.assert_array_equal(again.loadings.values, result.loadings.values)


def test_pca_errors():
    with pytest.raises(ValueError, match="dims"):
        response_pca(xr.DataArray(np.ones((3, 3)), dims=("a", "b")))
    with pytest.raises(ValueError, match="n_components"):
        response_pca(_planted(), n_components=50)
    with pytest.raises(ValueError, match="L:H"):
        per_layer_pca(xr.DataArray(np.ones((3, 2)), dims=("token", "component"),
                                   coords={"component": ["embed", "unembed"]}))
