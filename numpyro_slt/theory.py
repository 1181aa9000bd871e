"""Learning coefficients known in closed form: the ground truth of the LLC estimator's tests.

Regular models
--------------
A model whose Fisher information is non-degenerate at the truth has λ = d/2, with d the number of
parameters (multiplicity 1).

Normal crossing potentials
--------------------------
If near w* = 0 the population loss is K(w) = c·Π_i w_i^(2 k_i) (c > 0) and the prior is positive at
0, then λ = min_i 1/(2 k_i), with multiplicity the number of indices attaining the minimum.

Reduced-rank regression (Aoyagi & Watanabe 2005)
------------------------------------------------
Model: ``y = B A x + noise`` with input ``x`` in R^M, ``A`` an H x M matrix,
``B`` an N x H matrix (N = output dimension, H = hidden units), and a true map
``B0 A0`` of rank ``r`` (``0 <= r <= min(M, N, H)``). The model has
``d = H (M + N)`` parameters.

Theorem (Aoyagi & Watanabe, "Stochastic complexities of reduced rank regression
in Bayesian estimation", Neural Networks 18(7):924-933, 2005). The real log
canonical threshold (learning coefficient) ``lambda`` and its multiplicity ``m``
are:

1. If ``N + r <= M + H``, ``M + r <= N + H`` and ``H + r <= M + N``:

   a. ``M + H + N + r`` even:
      ``lambda = (2(H+r)(M+N) - (M-N)^2 - (H+r)^2) / 8``, ``m = 1``;
   b. ``M + H + N + r`` odd:
      ``lambda = (2(H+r)(M+N) - (M-N)^2 - (H+r)^2 + 1) / 8``, ``m = 2``.

   (The paper writes the numerator as
   ``-(H+r)^2 - M^2 - N^2 + 2(H+r)M + 2(H+r)N + 2MN``, which is the same.)

2. If ``M + H < N + r``: ``lambda = (HM - Hr + Nr) / 2``, ``m = 1``.
3. If ``N + H < M + r``: ``lambda = (HN - Hr + Mr) / 2``, ``m = 1``.
4. If ``M + N < H + r``: ``lambda = MN / 2``, ``m = 1``.

Cases 2-4 are the negations of the three inequalities of case 1; with
``r <= min(M, N, H)`` at most one of them can hold, so the four cases partition
all admissible shapes.

Cross-checked against the ``learnCoef`` method for reduced-rank regressions in
the ``sBIC`` R package (Drton & Plummer), which implements the same four cases
with ``M`` = number of covariates and ``N`` = number of responses, and against
Table 1 of Drton & Plummer (2017, JRSS-B, arXiv:1309.0911) for ``M = 3``,
``N = 5``.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = [
    "normal_crossing_expected_excess",
    "normal_crossing_learning_coefficient",
    "regular_learning_coefficient",
    "rrr_case",
    "rrr_learning_coefficient",
    "rrr_multiplicity",
]


def regular_learning_coefficient(num_parameters: int) -> float:
    """λ = d/2 for a regular model with d parameters."""
    d = operator.index(num_parameters)
    if d < 1:
        raise ValueError(f"num_parameters must be a positive integer, got {num_parameters!r}")
    return d / 2


def normal_crossing_expected_excess(
    powers: tuple[int, ...], scale: float, nbeta: float, gamma: float, num_points: int = 4001
) -> float:
    """E[nβ·K(w)] under p(w) ∝ exp(−nβ·K(w) − (γ/2)‖w‖²) with K(w) = scale·Π_i w_i^(2 k_i).

    This is exactly what the LLC estimator targets for a normal-crossing model localized at w* = 0
    at finite nβ and γ; it tends to λ as nβ → ∞ (slowly, like (m − 1)/log nβ, when the
    multiplicity m > 1). Computed by quadrature on a grid that is dense near the axes, for one or
    two parameters.
    """
    powers = tuple(operator.index(k) for k in powers)
    if len(powers) not in (1, 2) or min(powers) < 1:
        raise ValueError(f"powers must be one or two positive integers, got {powers!r}")
    if not (scale > 0 and nbeta > 0 and gamma > 0):
        raise ValueError("scale, nbeta and gamma must all be > 0")
    reach = 10.0 / np.sqrt(gamma)
    t = np.linspace(-1.0, 1.0, num_points)
    w = np.sinh(t * np.arcsinh(reach / 1e-6)) * 1e-6  # spacing 1e-6 at 0, growing outwards
    dw = np.gradient(w)
    grids = np.meshgrid(*([w] * len(powers)), indexing="ij")
    weights = np.prod(np.meshgrid(*([dw] * len(powers)), indexing="ij"), axis=0)
    energy = nbeta * scale * np.prod([g ** (2 * k) for g, k in zip(grids, powers, strict=True)],
                                     axis=0)
    log_density = -energy - 0.5 * gamma * sum(g**2 for g in grids)
    density = np.exp(log_density - log_density.max()) * weights
    return float((energy * density).sum() / density.sum())


def normal_crossing_learning_coefficient(powers: tuple[int, ...]) -> tuple[float, int]:
    """(λ, multiplicity) of K(w) = c·Π_i w_i^(2 k_i): λ = min_i 1/(2 k_i)."""
    powers = tuple(operator.index(k) for k in powers)
    if not powers or min(powers) < 1:
        raise ValueError(f"powers must be positive integers k_i, got {powers!r}")
    smallest = min(1 / (2 * k) for k in powers)
    return smallest, sum(1 for k in powers if 1 / (2 * k) == smallest)


def _check(M: int, N: int, H: int, r: int) -> tuple[int, int, int, int]:
    M, N, H, r = (operator.index(v) for v in (M, N, H, r))
    if M < 1 or N < 1 or H < 1:
        raise ValueError(f"M, N, H must be positive, got M={M}, N={N}, H={H}")
    if not 0 <= r <= min(M, N, H):
        raise ValueError(f"true rank r={r} must satisfy 0 <= r <= min(M, N, H)={min(M, N, H)}")
    return M, N, H, r


def rrr_case(M: int, N: int, H: int, r: int) -> int:
    """Which case (1..4, numbered as in Aoyagi & Watanabe 2005) of the theorem applies.

    Case 1 covers both parity sub-cases (1a even, 1b odd); see ``rrr_multiplicity``
    to tell them apart (multiplicity 1 vs. 2).
    """
    M, N, H, r = _check(M, N, H, r)
    if M + H < N + r:
        return 2
    if N + H < M + r:
        return 3
    if M + N < H + r:
        return 4
    return 1


def rrr_multiplicity(M: int, N: int, H: int, r: int) -> int:
    """Multiplicity of the learning coefficient (2 only in case 1 with odd parity)."""
    if rrr_case(M, N, H, r) == 1 and (M + H + N + r) % 2 == 1:
        return 2
    return 1


def rrr_learning_coefficient(M: int, N: int, H: int, r: int) -> float:
    """Exact learning coefficient of RRR: input dim M, output dim N, H hidden units, true rank r."""
    case = rrr_case(M, N, H, r)
    M, N, H, r = (operator.index(v) for v in (M, N, H, r))
    if case == 1:
        num = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
        num += (M + H + N + r) % 2
        return num / 8
    if case == 2:
        return (H * M - H * r + N * r) / 2
    if case == 3:
        return (H * N - H * r + M * r) / 2
    return M * N / 2
