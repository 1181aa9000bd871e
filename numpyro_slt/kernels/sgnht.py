"""Stochastic-gradient Nosé–Hoover thermostat as a NumPyro ``MCMCKernel``.

Update rule (Ding, Fang, Babbush, Chen, Skeel, Neven 2014, the variant devinterp offers), with U
the minibatch potential of the tempered, localized model of docs/formulas.md,

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,
    v ← (1 − ζ)·v − η·∇U(w) + σ·√(2Aη)·ξ,   ξ ~ N(0, I),
    w ← w + v,
    ζ ← ζ + (vᵀv/d − η),

with the step size η = ``step_size``, the diffusion A = ``diffusion``, σ the ``noise_level`` and
d the number of sampled coordinates. The thermostat ζ is an adaptive friction: it grows while the
kinetic energy vᵀv/d is above its target η and shrinks below it, which absorbs the unknown
minibatch-gradient noise. A chain starts at ζ₀ = A and v₀ = √η·ξ₀ (drawn with the chain's own
key), as in devinterp and BlackJAX. With ``bounding_box`` = b every coordinate of w is clamped to
u* ± b after the move and the momentum of a coordinate that reached the box is reversed (as
devinterp's SGNHT does).

Parameters in other libraries. devinterp's ``SGNHT`` / ``SGMCMC.sgnht`` (``lr`` = η,
``diffusion_factor`` = A, ``nbeta`` = nβ, ``bounding_box_size`` = b) has no localization term
(use γ = 0 for its target) and applies the friction after the gradient step,
v ← (1 − ζ)(v − η∇U) + √(2Aη)ξ, which differs from the update here by ζη∇U. BlackJAX's
``sgnht`` (``step_size`` h, ``alpha`` a) integrates dθ = p dt, dp = (∇log p − ξp) dt + √(2a) dW,
dξ = (pᵀp/d − 1) dt with p of unit scale, updating the position before the momentum; in the
variables here η = h², A = a·h, ζ = ξ·h and v = h·p.

References:

1. Ding, N., Fang, Y., Babbush, R., Chen, C., Skeel, R. D., Neven, H. (2014), *Bayesian sampling
   using stochastic gradient thermostats*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer import init_to_uniform

from .._validate import positive_float
from ._base import MomentumKernel, Move
from ._steps import sq_norm
from .sgld import SGLDState

__all__ = ["SGNHT", "SGNHTState"]

SGNHTState = NamedTuple(
    "SGNHTState",
    [*SGLDState.__annotations__.items(), ("momentum", dict[str, jnp.ndarray]),
     ("thermostat", jnp.ndarray)],
)
SGNHTState.__doc__ = """State of one SGNHT chain: the fields of :class:`~numpyro_slt.SGLDState`
(with η in place of ε/2 in the step norms, √(2Aη)·ξ as the noise, and ``precond_state`` empty),
and

- **momentum** – v, the momentum after the move that produced z (a dict like ``z``);
- **thermostat** – ζ after that move (collected by default, so it is in ArviZ's
  ``sample_stats``).
"""


class SGNHT(MomentumKernel):
    """Stochastic-gradient Nosé–Hoover thermostat for a (tempered, localized) NumPyro model; the
    update is in the module docstring. Use it as :class:`~numpyro_slt.SGLD`:
    ``numpyro.infer.MCMC(SGNHT(model, step_size), ...)`` and :func:`numpyro_slt.llc` of the run.

    ``mala_accept`` is the MALA acceptance estimate of the Langevin step with ε = 2η between the
    gradients at consecutive positions (see :class:`~numpyro_slt.SGLD`): a step-size diagnostic
    on the scale of SGLD's (the move is not a Langevin proposal), far below 0.9 when η is too
    large for the curvature.

    :param model: a NumPyro model with at least one observed site.
    :param step_size: η > 0.
    :param diffusion: A > 0 (default 0.01, devinterp's and BlackJAX's default), the thermostat's
        start ζ₀ and the scale of the injected noise.

    The other keyword arguments (``minibatch``, ``init_loss``, ``init_loss_batches``,
    ``control_variate``, ``keep_draws``, ``init_strategy``, ``max_excess_loss``,
    ``noise_level``, ``bounding_box``) are those of :class:`~numpyro_slt.SGLD`.
    """

    _state_type = SGNHTState
    _extra_fields = ("thermostat",)

    def __init__(
        self,
        model: Callable,
        step_size: float,
        *,
        diffusion: float = 0.01,
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
        self.diffusion = positive_float("diffusion", diffusion, "devinterp's default is 0.01")
        super().__init__(model, step_size, minibatch=minibatch, init_loss=init_loss,
                         init_loss_batches=init_loss_batches, control_variate=control_variate,
                         keep_draws=keep_draws, init_strategy=init_strategy,
                         max_excess_loss=max_excess_loss, noise_level=noise_level,
                         bounding_box=bounding_box)

    def _init_dynamics(self, key, z):
        dtype = jnp.result_type(*jax.tree.leaves(z))
        return {**super()._init_dynamics(key, z),
                "thermostat": jnp.asarray(self.diffusion, dtype=dtype)}

    def _move(self, state: SGNHTState, metric, noise) -> Move:
        """v' = (1 − ζ)v − η∇U + σ√(2Aη)ξ, w' = w + v', ζ' = ζ + v'ᵀv'/d − η; the noise term
        read off it is v' − (1 − ζ)v + η∇U."""
        eta, zeta = self.step_size, state.thermostat
        scale = self.noise_level * math.sqrt(2.0 * self.diffusion * eta)
        momentum = jax.tree.map(
            lambda v, g, xi: (1.0 - zeta) * v - eta * g + scale * xi,
            state.momentum, state.z_grad, noise,
        )
        z_new = jax.tree.map(jnp.add, state.z, momentum)
        size = sum(math.prod(v.shape) for v in jax.tree.leaves(momentum))
        thermostat = zeta + (sq_norm(momentum) / size - eta)
        terms = {name: v - (1.0 - zeta) * state.momentum[name] + eta * state.z_grad[name]
                 for name, v in momentum.items()}
        return Move(z_new, terms, {"momentum": momentum, "thermostat": thermostat})
