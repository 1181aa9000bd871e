"""Patterning: the probe-mixture weights that move chosen components' observables by a target.

Notation of docs/formulas.md. Reweighting the data distribution toward probe distributions,
q_h = (1 − Σ_d h_d)·q + Σ_d h_d·q′_d, changes the posterior mean of a component observable, to
first order, by

    ΔE[φ_C] ≈ nβ · Σ_d R[d, C]·h_d            (R the global response matrix, χ_C(q′_d))

Given targets Δ_C for chosen components, the weights are the minimum-norm solution of
nβ·R_Sᵀ h = Δ (S the chosen components) under the mixture constraints h_d ≥ 0 and Σ_d h_d ≤ 1:
the pseudo-inverse when its solution already satisfies them, otherwise the non-negative
minimum-norm solution of the same equations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from .._validate import positive_float

__all__ = ["patterning"]


def patterning(response: xr.DataArray, targets: Mapping[str, float], *, nbeta: float,
               nonnegative: bool = True, tolerance: float = 1e-8) -> xr.Dataset:
    """Probe-mixture weights h that move E[φ_C] by ``targets[C]`` to first order.

    :param response: the global response matrix R[probe, component] (``global`` of
        :func:`numpyro_slt.susceptibilities` with a ``probe`` dim), dims (probe, component).
    :param targets: Δ_C for the components to move; the other components are left free.
    :param nbeta: the nβ of the runs that estimated ``response``.
    :param nonnegative: require h_d ≥ 0 (a mixture that adds probe data); ``False`` allows
        negative weights (moving away from a probe, only meaningful when q contains it).
    :param tolerance: the largest residual |nβ·R_Sᵀh − Δ| accepted, relative to max |Δ|.
    :return: Dataset with ``weights`` (probe), ``predicted_change`` (component: nβ·Rᵀh for every
        component, the chosen and the others), ``target`` (the chosen components) and
        ``residual`` (chosen components).
    """
    matrix = _checked_response(response)
    chosen, delta = _checked_targets(matrix, targets)
    nbeta = positive_float("nbeta", nbeta, "pass the nβ of the runs that estimated response")
    system = nbeta * matrix.sel(component=chosen).transpose("component", "probe").values
    weights = np.linalg.pinv(system) @ delta
    if nonnegative and np.any(weights < 0):
        weights = _nonnegative_min_norm(system, delta)
    residual = system @ weights - delta
    if np.max(np.abs(residual)) > tolerance * max(np.max(np.abs(delta)), 1e-300):
        kind = "non-negative " if nonnegative else ""
        escape = ", or nonnegative=False" if nonnegative else ""
        raise ValueError(
            f"no {kind}probe mixture reaches the targets to first order (largest residual "
            f"{np.max(np.abs(residual)):.3g}); choose fewer components, other signs of the "
            f"targets, more probes{escape}")
    if weights.sum() > 1:
        raise ValueError(f"the weights sum to {weights.sum():.3g} > 1, beyond any mixture; scale "
                         "the targets down (first order holds only for small shifts)")
    probes = matrix["probe"].values
    predicted = nbeta * matrix.transpose("component", "probe").values @ weights
    return xr.Dataset(
        {"weights": ("probe", weights),
         "predicted_change": ("component", predicted),
         "target": ("chosen", delta),
         "residual": ("chosen", residual)},
        coords={"probe": probes, "component": matrix["component"].values, "chosen": chosen},
        attrs={"nbeta": float(nbeta), "definition": "Delta E[phi_C] = nbeta * sum_d R[d, C] h_d"},
    )


def _checked_response(response: xr.DataArray) -> xr.DataArray:
    if not isinstance(response, xr.DataArray):
        raise TypeError(f"response must be an xarray.DataArray (probe, component), got "
                        f"{type(response).__name__}")
    if set(response.dims) != {"probe", "component"}:
        raise ValueError(f"response must have exactly the dims (probe, component), got "
                         f"{response.dims}; take the 'global' of slt.susceptibilities with probe=")
    if not np.all(np.isfinite(response.values)):
        raise ValueError("response holds NaN or Inf")
    return response.astype(np.float64)


def _checked_targets(matrix: xr.DataArray, targets: Mapping[str, float]
                     ) -> tuple[list[str], np.ndarray]:
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError("targets must be a non-empty mapping {component: target change}")
    known = [str(c) for c in matrix["component"].values]
    unknown = [c for c in targets if str(c) not in known]
    if unknown:
        raise ValueError(f"targets name components {unknown} that response lacks; it has {known}")
    delta = np.array([float(v) for v in targets.values()])
    if not np.all(np.isfinite(delta)):
        raise ValueError("targets must be finite numbers")
    return list(targets), delta


def _nonnegative_min_norm(system: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """argmin ‖h‖² subject to system·h = delta and h ≥ 0 (a small quadratic programme)."""
    from scipy.optimize import minimize

    start = np.clip(np.linalg.pinv(system) @ delta, 0.0, None)
    solution = minimize(
        lambda h: h @ h, start, jac=lambda h: 2 * h, method="SLSQP",
        bounds=[(0.0, None)] * system.shape[1],
        constraints=[{"type": "eq", "fun": lambda h: system @ h - delta,
                      "jac": lambda h: system}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return np.clip(solution.x, 0.0, None)
