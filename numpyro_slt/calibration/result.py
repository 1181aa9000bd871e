"""The result of :func:`~numpyro_slt.calibrate`: the judged sweep and the recommendation."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .criteria import Criteria, judged_sweep

__all__ = ["Calibration"]


@dataclass
class Calibration:
    """What :func:`~numpyro_slt.calibrate` found.

    Attributes:
        recommended: ``{"step_size": ε, "nbeta": nβ, "gamma": γ}`` of the recommended setting,
            or None when no setting passes every criterion (``reasons`` then says what to try).
            Its keys are :class:`~numpyro_slt.study.StudyConfig` fields:
            ``StudyConfig.quick(**calibration.recommended)``.
        reasons: why this setting (or why none), one sentence per item.
        sweep: the judged grid, an xarray Dataset with dims (step_size, nbeta, gamma) and
            ``chain`` for ``llc_per_chain``; per setting ``llc_mean``, ``llc_se``, ``llc_std``,
            ``mala_accept`` (least chain mean), ``rhat``, ``ess`` (LLC trace),
            ``observable_rhat``, ``observable_ess`` (‖u − u*‖), ``drift_z`` (largest in size),
            ``escape``, ``dip_fraction``, ``diverged_chains``, ``stability_z``, ``verdict``
            (``"ok"`` or the first failed criterion), ``rejected_by`` (every failed criterion,
            comma-separated) and ``detail`` (the problems :func:`~numpyro_slt.check_chains`
            reported). Its ``attrs`` hold the run's settings, thresholds and timing.
        seconds: wall time of the sweep (compilation included) and of the judging.
        runs: the raw statistics the sweep was judged from (:meth:`rejudge` uses them).
        criteria: the thresholds used.
    """

    recommended: dict[str, float] | None
    reasons: list[str]
    sweep: xr.Dataset = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    runs: Any = field(default=None, repr=False)
    criteria: Any = None

    def rejudge(self, criteria: Any) -> Calibration:
        """The same runs judged with other thresholds (a
        :class:`~numpyro_slt.calibration.Criteria`), without sampling again."""
        if not isinstance(criteria, Criteria):
            raise ValueError(f"criteria must be a numpyro_slt.calibration.Criteria, got "
                             f"{type(criteria).__name__}.")
        if self.runs is None:
            raise ValueError("this Calibration holds no runs to judge again (it was read back "
                             "from a file, or built by hand)")
        t0 = time.perf_counter()
        sweep, recommended, reasons = judged_sweep(self.runs, criteria, dict(self.sweep.attrs))
        seconds = {**self.seconds, "judge": time.perf_counter() - t0}
        return Calibration(recommended, reasons, sweep, seconds, runs=self.runs,
                           criteria=criteria)

    @property
    def ok(self) -> bool:
        """Whether a setting was recommended."""
        return self.recommended is not None

    @property
    def best(self) -> xr.Dataset | None:
        """The sweep's row at the recommended setting (None without one)."""
        if self.recommended is None:
            return None
        return self.sweep.sel(**self.recommended)

    def plot(self, path: str | os.PathLike | None = None, *, reference: float | None = None,
             title: str | None = None) -> Any:
        """λ̂ ± one standard error against ε (log axis), one panel per (nβ, γ), the
        recommendation marked with a star and each rejected setting shaded and labelled with the
        first criterion it fails; ``reference`` (a known λ) is drawn as a dashed line. Saves a
        PNG at ``path`` when given; returns the matplotlib Figure."""
        from ..report.calibration_plots import plot_calibration

        return plot_calibration(self.sweep, self.recommended, path, reference=reference,
                                title=title)

    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write the sweep (with the recommendation and reasons in its attributes) to netCDF."""
        from .._io import atomic_write_path

        data = self.sweep.copy()
        data.attrs = {**data.attrs, "reasons": "\n".join(self.reasons),
                      "recommended": "none" if self.recommended is None else
                      ", ".join(f"{k}={v:.6g}" for k, v in self.recommended.items())}
        atomic_write_path(path, lambda tmp: data.to_netcdf(str(tmp), engine="h5netcdf"))

    def __str__(self) -> str:
        s = self.sweep
        lines = [f"{'step_size':>10} {'nbeta':>9} {'gamma':>9} {'llc':>9} {'± se':>8} "
                 f"{'mala':>6} {'rhat':>6} {'ess':>6} {'φ rhat':>6} {'φ ess':>6} {'drift':>6}"
                 "  rejected by"]
        for eps in s.step_size.values[::-1]:
            for nbeta in s.nbeta.values:
                for gamma in s.gamma.values:
                    row = s.sel(step_size=eps, nbeta=nbeta, gamma=gamma)
                    mark = ("  <- recommended" if self.recommended is not None
                            and np.isclose(eps, self.recommended["step_size"])
                            and np.isclose(nbeta, self.recommended["nbeta"])
                            and np.isclose(gamma, self.recommended["gamma"]) else "")
                    lines.append(
                        f"{eps:>10.3g} {nbeta:>9.4g} {gamma:>9.4g} "
                        f"{_fmt(row.llc_mean, '.4g'):>9} {_fmt(row.llc_se, '.2g'):>8} "
                        f"{_fmt(row.mala_accept, '.3f'):>6} {_fmt(row.rhat, '.3f'):>6} "
                        f"{_fmt(row.ess, '.0f'):>6} {_fmt(row.observable_rhat, '.3f'):>6} "
                        f"{_fmt(row.observable_ess, '.0f'):>6} {_fmt(row.drift_z, '+.1f'):>6}  "
                        f"{row.rejected_by.item() or 'ok'}{mark}")
        if self.recommended is not None:
            r = self.recommended
            lines.append(f"recommended: step_size={r['step_size']:.4g}, nbeta={r['nbeta']:.4g}, "
                         f"gamma={r['gamma']:.4g}")
        else:
            lines.append("no setting recommended")
        lines += [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines)


def _fmt(value: Any, spec: str) -> str:
    value = float(value)
    return "n/a" if not np.isfinite(value) else format(value, spec)
