"""Diagonal preconditioners for SGLD and SGHMC, in the style of Optax: a pair of pure functions.

A preconditioner turns a gradient g into a diagonal metric G (one positive number per
coordinate). The SGLD update of docs/formulas.md then reads

    w ← w − (ε/2)·G ⊙ ∇U(w) + √(ε·G) ⊙ ξ,   ξ ~ N(0, I).

g is ∇U(w) unless the preconditioner has ``statistics = "likelihood"``: then the kernel feeds it
the likelihood part of the gradient alone, nβ·∇L_B(w) = ∇U(w) − γ(w − w*).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

__all__ = ["Preconditioner", "identity", "rmsprop", "RMSPropState"]

PyTree = Any


class Preconditioner(Protocol):
    """``init(params) -> state`` and ``update(grads, state) -> (metric G, new state)``; an
    optional attribute ``statistics = "likelihood"`` asks the kernel for the likelihood part of
    the gradient instead of ∇U (see the module docstring)."""

    def init(self, params: PyTree) -> PyTree: ...

    def update(self, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]: ...


class _Identity(NamedTuple):
    def init(self, params: PyTree) -> PyTree:
        return ()

    def update(self, grads: PyTree, state: PyTree) -> tuple[PyTree, PyTree]:
        return jax.tree.map(jnp.ones_like, grads), state


class RMSPropState(NamedTuple):
    """v: the exponential moving average of g² (one entry per coordinate)."""

    v: PyTree


class _RMSProp(NamedTuple):
    alpha: float
    delta: float
    statistics: str = "potential"

    def init(self, params: PyTree) -> RMSPropState:
        return RMSPropState(jax.tree.map(jnp.zeros_like, params))

    def update(self, grads: PyTree, state: RMSPropState) -> tuple[PyTree, RMSPropState]:
        v = jax.tree.map(lambda v, g: self.alpha * v + (1.0 - self.alpha) * g * g, state.v, grads)
        metric = jax.tree.map(lambda v: 1.0 / (self.delta + jnp.sqrt(v)), v)
        return metric, RMSPropState(v)


def identity() -> Preconditioner:
    """G = I: plain SGLD."""
    return _Identity()


def rmsprop(alpha: float = 0.99, delta: float = 1e-5, *,
            statistics: str = "potential") -> Preconditioner:
    """RMSProp preconditioning (Li et al. 2016): v ← αv + (1−α)g², G = 1/(δ + √v).

    v starts at 0 and is updated before each step, as in devinterp, so α = 1 keeps v = 0: the
    constant metric G = 1/δ (SGLD at the step size ε/δ).

    :param alpha: decay of the squared-gradient average, 0 < α ≤ 1.
    :param delta: regulariser δ > 0 that bounds G by 1/δ.
    :param statistics: which gradient g the average v is taken of: ``"potential"`` (default),
        ∇U = nβ·∇L_B + γ(w − w*), or ``"likelihood"``, nβ·∇L_B alone, so that the localization
        pull does not shrink the metric of the coordinates it holds. ``"likelihood"`` is the
        recommended choice (as in arXiv 2507.21449): on the known-answer models of
        :mod:`numpyro_slt.known_models` (minibatches, γ = 10) the two agree within Monte Carlo
        error, and where the localization dominates the gradient (a full-batch linear model with
        γ = 2,000 against a likelihood curvature of 400) ``"likelihood"`` had a third of the bias
        of ``"potential"`` (figures in docs/benchmarks.md, "RMSProp statistics"). The default
        stays ``"potential"`` so that existing runs keep their draws.
    """
    try:
        alpha, delta = float(alpha), float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"alpha and delta must be numbers, got {alpha!r} and {delta!r}") from None
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}; the usual value is 0.99 "
                         "(1 gives the constant metric 1/delta)")
    if not (delta > 0.0 and math.isfinite(delta)):
        raise ValueError(f"delta must be finite and > 0, got {delta!r}; the usual value is 1e-5")
    if statistics not in ("potential", "likelihood"):
        raise ValueError(f"statistics must be 'potential' or 'likelihood', got {statistics!r}")
    return _RMSProp(alpha, delta, statistics)
