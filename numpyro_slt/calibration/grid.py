"""The grid of settings a calibration sweeps: the user's, or defaults read off the model.

Defaults (docs/calibration.md):

* nβ: n/log n (the WBIC temperature of the quick start), n/(2 log n) and n/(4 log n). The
  minibatch gradient noise of SGLD grows like nβ², so a smaller nβ allows a larger ε at the same
  MALA acceptance and mixes faster; λ̂ depends on nβ only weakly once nβ is large.
* γ: one value, 4·10⁻⁴·nβ₀·h_max with nβ₀ = n/log n and h_max the largest curvature of L_B at
  w* (power iteration on one minibatch): the localization is 2,500 times weaker than the data in
  their stiffest direction. On the reduced-rank regressions of docs/llc.md this is γ ≈ 7–9, the
  γ = 10 of their recipe (γ = 100 pins the singular directions and biases λ̂ by −26%).
* ε: a factor-2 grid, so that every ε but the smallest has ε/2 beside it, from ε_max, the
  largest of 1, 2 or 5 × 10^k below 2/(nβ_min·h_max + γ_max) (beyond 4/(nβ·h_max + γ) the
  Langevin step is unstable on a quadratic), down over 5 halvings plus two per doubling of the
  nβ range (the minibatch noise, ∝ ε·nβ², sets the usable ε at large nβ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["settings_grid", "default_nbetas", "default_gammas", "default_step_sizes",
           "checked_grid", "NBETA_FRACTIONS", "GAMMA_FRACTION", "HALVINGS"]

#: Default nβ grid as multiples of n/log n.
NBETA_FRACTIONS = (0.25, 0.5, 1.0)
#: Default γ as a multiple of nβ₀·h_max.
GAMMA_FRACTION = 4e-4
#: Halvings of the default ε grid below its top (plus two per doubling of the nβ range).
HALVINGS = 5


def checked_grid(name: str, values: Any, *, allow_zero: bool = False) -> np.ndarray:
    """``values`` (a number or a sequence of numbers) as a sorted float array of distinct,
    finite, positive (or, with ``allow_zero``, non-negative) values; a ValueError names
    ``name`` otherwise."""
    if isinstance(values, int | float | np.integer | np.floating) and not isinstance(values,
                                                                                     bool):
        values = [values]
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}.")
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers only, got {values!r}.") from None
    if array.size == 0:
        raise ValueError(f"{name} must hold at least one value, got an empty grid.")
    if any(isinstance(v, bool | np.bool_) for v in np.ravel(np.asarray(values, dtype=object))):
        raise ValueError(f"{name} must hold numbers, not booleans, got {values!r}.")
    bound = "non-negative" if allow_zero else "positive"
    bad = ~np.isfinite(array) | ((array < 0) if allow_zero else (array <= 0))
    if bad.any():
        raise ValueError(f"{name} must hold finite {bound} numbers, got {array[bad][0]!r} in "
                         f"{values!r}.")
    if np.unique(array).size != array.size:
        raise ValueError(f"{name} holds a value twice: {values!r}.")
    return np.sort(array)


def settings_grid(step_sizes: np.ndarray | None, nbetas: np.ndarray | None,
                  gammas: np.ndarray | None, num_observations: int,
                  curvature: Callable[[], float]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           float]:
    """The (ε, nβ, γ) grids: the user's where given, the defaults otherwise, and h_max
    (``curvature()``, computed only when a default needs it; NaN otherwise)."""
    h_max = curvature() if step_sizes is None or gammas is None else float("nan")
    nbetas = default_nbetas(num_observations) if nbetas is None else nbetas
    gammas = default_gammas(num_observations, h_max) if gammas is None else gammas
    step_sizes = default_step_sizes(nbetas, gammas, h_max) if step_sizes is None else step_sizes
    return step_sizes, nbetas, gammas, h_max


def default_nbetas(num_observations: int) -> np.ndarray:
    """n/log n × :data:`NBETA_FRACTIONS`."""
    base = num_observations / math.log(max(num_observations, 3))
    return np.array([base * f for f in NBETA_FRACTIONS])


def default_gammas(num_observations: int, curvature: float) -> np.ndarray:
    """One value, :data:`GAMMA_FRACTION`·nβ₀·h_max (at least 10⁻⁶ when the curvature is 0)."""
    base = num_observations / math.log(max(num_observations, 3))
    return np.array([max(GAMMA_FRACTION * base * abs(curvature), 1e-6)])


def default_step_sizes(nbetas: np.ndarray, gammas: np.ndarray, curvature: float
                       ) -> np.ndarray:
    """The factor-2 grid of the module docstring, largest first."""
    stiffest = float(np.min(nbetas)) * abs(curvature) + float(np.max(gammas))
    top = _round_down(2.0 / max(stiffest, 1e-30))
    halvings = HALVINGS + 2 * math.ceil(
        math.log2(float(np.max(nbetas)) / float(np.min(nbetas))) - 1e-9)
    return np.sort(top * 0.5 ** np.arange(halvings + 1))


def _round_down(value: float) -> float:
    """The largest of 1, 2 or 5 × 10^k that is at most ``value``."""
    power = 10.0 ** math.floor(math.log10(value))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * power <= value * (1 + 1e-12):
            return mantissa * power
    return power
