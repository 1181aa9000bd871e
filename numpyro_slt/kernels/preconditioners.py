"""Diagonal preconditioners for SGLD, in the style of Optax: a pair of pure functions.

A preconditioner turns the gradient g = ∇U(w) into a diagonal metric G (one positive number per
coordinate). The SGLD update of docs/formulas.md then reads

    w ← w − (ε/2)·G ⊙ ∇U(w) + √(ε·G) ⊙ ξ,   ξ ~ N(0, I).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

__all__ = ["Preconditioner", "identity", "rmsprop", "RMSPropState"]

PyTree = Any


class Preconditioner(Protocol):
    """``init(params) -> state`` and ``update(grads, state) -> (metric G, new state)``."""

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

    def init(self, params: PyTree) -> RMSPropState:
        return RMSPropState(jax.tree.map(jnp.zeros_like, params))

    def update(self, grads: PyTree, state: RMSPropState) -> tuple[PyTree, RMSPropState]:
        v = jax.tree.map(lambda v, g: self.alpha * v + (1.0 - self.alpha) * g * g, state.v, grads)
        metric = jax.tree.map(lambda v: 1.0 / (self.delta + jnp.sqrt(v)), v)
        return metric, RMSPropState(v)


def identity() -> Preconditioner:
    """G = I: plain SGLD."""
    return _Identity()


def rmsprop(alpha: float = 0.99, delta: float = 1e-5) -> Preconditioner:
    """RMSProp preconditioning (Li et al. 2016): v ← αv + (1−α)g², G = 1/(δ + √v).

    :param alpha: decay of the squared-gradient average, 0 < α < 1.
    :param delta: regulariser δ > 0 that bounds G by 1/δ.
    """
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}; the usual value is 0.99")
    if not float(delta) > 0.0:
        raise ValueError(f"delta must be > 0, got {delta!r}; the usual value is 1e-5")
    return _RMSProp(float(alpha), float(delta))
