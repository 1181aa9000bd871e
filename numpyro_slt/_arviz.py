"""One door to the ArviZ data of both ArviZ lines.

ArviZ 0.2x (Python 3.11) gives ``InferenceData``; ArviZ 1.x (Python >= 3.12) gives an xarray
``DataTree``. Everything in the package that reads a group (:func:`sample_stats`,
:func:`posterior_group`), builds ArviZ data (:func:`from_groups`, :func:`with_posterior`) or reads
and writes a run file (:func:`write_run`, :func:`read_run`) goes through this module, so no other
module branches on the ArviZ line. The estimators therefore accept either container, a finished
``numpyro.infer.MCMC``, a :class:`~numpyro_slt.checkpoint.CheckpointedRun`, or the
``sample_stats`` Dataset itself.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from ._io import atomic_write_path

__all__ = ["posterior_group", "sample_stats", "stats_dataset", "from_groups", "with_posterior",
           "write_run", "read_run", "is_datatree"]


def is_datatree(source: Any) -> bool:
    """Whether ``source`` is an xarray ``DataTree`` (ArviZ 1.x data)."""
    return hasattr(xr, "DataTree") and isinstance(source, xr.DataTree)


def sample_stats(source: Any) -> xr.Dataset:
    """The per-draw statistics of ``source`` as a Dataset with dims (chain, draw, ...)."""
    from numpyro.infer import MCMC

    to_stats = getattr(source, "sample_stats_dataset", None)
    if callable(to_stats):  # a CheckpointedRun
        return to_stats()
    if isinstance(source, MCMC):
        if getattr(source, "_states", None) is None:
            raise ValueError("source is an MCMC that has not run; call mcmc.run(...) first")
        return stats_dataset(source.get_extra_fields(group_by_chain=True))
    if isinstance(source, xr.Dataset):
        return source
    if is_datatree(source):
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


def stats_dataset(fields: dict[str, Any]) -> xr.Dataset:
    """Per-draw arrays [chain, draw, ...] as a Dataset with dims (chain, draw,
    ``<name>_dim_0``, …), the naming of ``az.from_numpyro``; nested fields are left out."""
    return xr.Dataset({
        name: (("chain", "draw") + tuple(f"{name}_dim_{j}" for j in range(np.ndim(v) - 2)),
               np.asarray(v))
        for name, v in fields.items()
        if not isinstance(v, dict | tuple)
    })


def posterior_group(source: Any) -> xr.Dataset:
    """The ``posterior`` group of ArviZ data (``InferenceData`` or ``DataTree``) as a Dataset."""
    if is_datatree(source):
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


def with_posterior(data: Any, posterior: xr.Dataset) -> Any:
    """ArviZ data ``data`` (either line) with its posterior group replaced by ``posterior``;
    the other groups are kept."""
    if is_datatree(data):
        data = data.copy()
        data["posterior"] = xr.DataTree(posterior)
        return data
    groups = getattr(data, "groups", None)
    if callable(groups):  # InferenceData
        return type(data)(**{**{name: getattr(data, name) for name in groups()},
                             "posterior": posterior})
    raise TypeError(f"data must be an ArviZ InferenceData or DataTree, got {type(data).__name__}.")


def write_run(data: Any, path: str | os.PathLike, attrs: dict[str, str] | None = None) -> None:
    """Write ArviZ data (either line) to the netCDF file ``path`` atomically, with ``attrs``
    added to the posterior group's attributes (how a run records the settings it was made
    with)."""
    posterior = posterior_group(data)
    posterior.attrs.update(attrs or {})
    data = with_posterior(data, posterior)
    atomic_write_path(path, lambda temporary: data.to_netcdf(str(temporary), engine="h5netcdf"))


def read_run(path: str | os.PathLike) -> Any:
    """The ArviZ data written by :func:`write_run` (``InferenceData`` under ArviZ 0.2x, a
    ``DataTree`` under ArviZ 1.x)."""
    import arviz as az

    if hasattr(az, "from_netcdf"):
        return az.from_netcdf(str(path), engine="h5netcdf")
    return xr.open_datatree(str(path), engine="h5netcdf")
