"""Stochastic-gradient Hamiltonian Monte Carlo as a NumPyro ``MCMCKernel``.

Update rule (Chen, Fox, Guestrin 2014, in their "practical" parametrisation, eq. 15), with U the
minibatch potential of the tempered, localized model of docs/formulas.md,

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,
    v ← (1 − α)·v − η·G ⊙ ∇U(w) + σ·√(2αη·G) ⊙ ξ,   ξ ~ N(0, I),
    w ← w + v,

with the step size η = ``step_size``, the friction α ∈ (0, 1] = ``friction``, G the diagonal
metric of the preconditioner (1 by default) and σ the ``noise_level``. The momentum v is a
displacement (units of w); it starts at v₀ = √η·ξ₀, its stationary scale, drawn with the chain's
own key, and it persists across steps (no resampling). With ``bounding_box`` = b every coordinate
of w is clamped to u* ± b after the move and the momentum of a coordinate that reached the box is
reversed. With α = 1 the update is w ← w − η·G⊙∇U + √(2ηG)⊙ξ: SGLD with ε = 2η, and this kernel
then draws what ``SGLD(model, 2η)`` draws from the same key (to float rounding).

Parameters in other libraries. BlackJAX's ``sghmc`` (``step_size`` h, ``alpha`` a) integrates
dθ = p dt, dp = (∇log p − a·p) dt + √(2a) dW with p of unit scale and updates the position with
the momentum *before* the gradient step; in the variables here that is η = h², α = a·h and
v = h·p, and BlackJAX resamples p at every call of its step. devinterp offers no SGHMC.

References:

1. Chen, T., Fox, E. B., Guestrin, C. (2014), *Stochastic gradient Hamiltonian Monte Carlo*.
2. Ma, Y.-A., Chen, T., Fox, E. B. (2015), *A complete recipe for stochastic gradient MCMC*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer import init_to_uniform

from ._base import MomentumKernel, Move
from .preconditioners import Preconditioner
from .sgld import SGLDState

__all__ = ["SGHMC", "SGHMCState"]

SGHMCState = NamedTuple(
    "SGHMCState",
    [*SGLDState.__annotations__.items(), ("momentum", dict[str, jnp.ndarray])],
)
SGHMCState.__doc__ = """State of one SGHMC chain: the fields of :class:`~numpyro_slt.SGLDState`
(with η·G in place of (ε/2)·G in the step norms, and √(2αηG)⊙ξ as the noise), and

- **momentum** – v, the momentum after the move that produced z (a dict like ``z``).
"""


def _friction(friction: float) -> float:
    """``friction`` as a float in (0, 1], or a ValueError naming the argument."""
    try:
        value = float(friction)
    except (TypeError, ValueError):
        raise ValueError(f"friction must be a number in (0, 1], got {friction!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"friction must lie in (0, 1], got {friction!r}; 1 is SGLD with "
                         "ε = 2·step_size, 0.1 keeps a momentum for about 10 steps")
    return value


class SGHMC(MomentumKernel):
    """Stochastic-gradient HMC for a (tempered, localized) NumPyro model; the update is in the
    module docstring. Use it as :class:`~numpyro_slt.SGLD`: ``numpyro.infer.MCMC(SGHMC(model,
    step_size), num_warmup=..., num_samples=...)`` and :func:`numpyro_slt.llc` of the run.

    ``mala_accept`` is the MALA acceptance estimate of the Langevin step with ε = 2η between the
    gradients at consecutive positions (see :class:`~numpyro_slt.SGLD`): with α = 1 it is exactly
    the acceptance of the move; with α < 1 it is a step-size diagnostic on the same scale (the
    move is not a Langevin proposal), far below 0.9 when η is too large for the curvature.

    :param model: a NumPyro model with at least one observed site.
    :param step_size: η > 0.
    :param friction: α ∈ (0, 1] (default 0.1).
    :param preconditioner: as for :class:`~numpyro_slt.SGLD`; G scales the drift and the noise.

    The other keyword arguments (``minibatch``, ``init_loss``, ``init_loss_batches``,
    ``control_variate``, ``keep_draws``, ``init_strategy``, ``max_excess_loss``,
    ``noise_level``, ``bounding_box``) are those of :class:`~numpyro_slt.SGLD`.
    """

    _state_type = SGHMCState

    def __init__(
        self,
        model: Callable,
        step_size: float,
        *,
        friction: float = 0.1,
        preconditioner: Preconditioner | None = None,
        minibatch: str = "with_replacement",
        init_loss: float | None = None,
        init_loss_batches: int | None = None,
        control_variate: bool = False,
        keep_draws: bool = True,
        init_strategy: Callable = init_to_uniform,
        max_excess_loss: float | None = None,
        noise_level: float = 1.0,
        bounding_box: float | None = None,
    ):
        self.friction = _friction(friction)
        super().__init__(model, step_size, preconditioner=preconditioner, minibatch=minibatch,
                         init_loss=init_loss, init_loss_batches=init_loss_batches,
                         control_variate=control_variate, keep_draws=keep_draws,
                         init_strategy=init_strategy, max_excess_loss=max_excess_loss,
                         noise_level=noise_level, bounding_box=bounding_box)

    def _move(self, state: SGHMCState, metric, noise) -> Move:
        """v' = (1 − α)v − ηG⊙∇U + σ√(2αηG)⊙ξ, w' = w + v'; the noise term read off it is
        v' − (1 − α)v + ηG⊙∇U."""
        eta, alpha = self.step_size, self.friction
        if self.noise_level != 1.0:
            noise = jax.tree.map(lambda xi: self.noise_level * xi, noise)
        momentum = jax.tree.map(
            lambda v, g, G, xi: (1.0 - alpha) * v - eta * G * g + jnp.sqrt(2.0 * alpha * eta * G)
            * xi,
            state.momentum, state.z_grad, metric, noise,
        )
        z_new = jax.tree.map(jnp.add, state.z, momentum)
        terms = {name: v - (1.0 - alpha) * state.momentum[name]
                 + eta * metric[name] * state.z_grad[name]
                 for name, v in momentum.items()}
        return Move(z_new, terms, {"momentum": momentum})
