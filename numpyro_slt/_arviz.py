"""One door to the ArviZ data of both ArviZ lines.

ArviZ 0.2x (Python 3.11) gives ``InferenceData``; ArviZ 1.x (Python >= 3.12) gives an xarray
``DataTree``. The estimators read the ``sample_stats`` group through :func:`sample_stats`, so they
accept either, a finished ``numpyro.infer.MCMC``, or the ``sample_stats`` Dataset itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["posterior_group", "sample_stats", "from_groups"]


def sample_stats(source: Any) -> xr.Dataset:
    """The per-draw statistics of ``source`` as a Dataset with dims (chain, draw, ...)."""
    from numpyro.infer import MCMC

    if isinstance(source, MCMC):
        if getattr(source, "_states", None) is None:
            raise ValueError("source is an MCMC that has not run; call mcmc.run(...) first")
        fields = source.get_extra_fields(group_by_chain=True)
        data = {
            name: (("chain", "draw") + tuple(f"{name}_dim_{j}" for j in range(np.ndim(v) - 2)),
                   np.asarray(v))
            for name, v in fields.items()
            if not isinstance(v, dict | tuple)
        }
        return xr.Dataset(data)
    if isinstance(source, xr.Dataset):
        return source
    if hasattr(xr, "DataTree") and isinstance(source, xr.DataTree):
        if "sample_stats" not in source.children:
            raise ValueError(
                "the DataTree has no 'sample_stats' group; convert the run with "
                "az.from_numpyro(mcmc)"
            )
        return source["sample_stats"].to_dataset()
    groups = getattr(source, "groups", None)
    if callable(groups) and hasattr(source, "sample_stats"):
        return source.sample_stats
    if callable(groups):
        raise ValueError(
            "the InferenceData has no 'sample_stats' group; convert the run with "
            "az.from_numpyro(mcmc)"
        )
    raise TypeError(
        "source must be a finished numpyro.infer.MCMC, an ArviZ InferenceData, an xarray "
        f"DataTree or a sample_stats Dataset; got {type(source).__name__}"
    )


def posterior_group(source: Any) -> xr.Dataset:
    """The ``posterior`` group of ArviZ data (``InferenceData`` or ``DataTree``) as a Dataset."""
    if hasattr(xr, "DataTree") and isinstance(source, xr.DataTree):
        if "posterior" not in source.children:
            raise ValueError("the DataTree has no posterior group")
        return source["posterior"].to_dataset()
    if hasattr(source, "posterior"):
        return source.posterior
    raise TypeError(f"expected ArviZ data (InferenceData or DataTree), got {type(source).__name__}")


def from_groups(posterior: xr.Dataset, sample_stats: xr.Dataset) -> Any:
    """ArviZ data of the installed ArviZ line (``InferenceData`` or ``DataTree``) with these two
    groups, both with dims (chain, draw, ...)."""
    import arviz as az

    if int(az.__version__.split(".")[0]) < 1:  # ArviZ 0.2x
        return az.InferenceData(posterior=posterior, sample_stats=sample_stats)
    return xr.DataTree.from_dict({"posterior": posterior, "sample_stats": sample_stats})
