"""Stochastic-gradient Langevin dynamics as a NumPyro ``MCMCKernel``.

Update rule (the convention of devinterp; BlackJAX's ``step_size`` h equals ε/2), with U the
minibatch potential of the tempered, localized model,

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,
    w ← w − (ε/2)·G ⊙ ∇U(w) + σ·√(ε·G) ⊙ ξ,   ξ ~ N(0, I),

then, with ``bounding_box`` = b, every coordinate of w is clamped to u* ± b. G is the diagonal
metric of the preconditioner (G = 1 for plain SGLD, RMSProp for ``preconditioner=slt.rmsprop()``)
and σ the ``noise_level`` (1 samples the posterior; 0 is the pure drift, gradient descent on U).
Every step draws fresh minibatch indices for each subsampled plate of the model and substitutes
them, as HMCECS does.

Parameters in other libraries: devinterp's ``SGMCMC.sgld`` / ``rmsprop_sgld`` take ``lr`` = ε,
``nbeta`` = nβ, ``localization`` = γ, ``noise_level`` = σ and ``bounding_box_size`` = b, and
clamp around the parameters the chain started from, which in devinterp is w* (here u*, the
center, whatever the start). Its RMSProp (``alpha``, ``eps`` = δ) takes its statistics from ∇L_B
without nβ: ``slt.rmsprop(alpha, δ·nβ, statistics="likelihood")`` at ε·nβ is the same chain.
BlackJAX's ``sgld`` moves by h·∇log p + √(2h)·ξ: its ``step_size`` h is ε/2.

References:

1. Welling, M. and Teh, Y. W. (2011), *Bayesian learning via stochastic gradient Langevin dynamics*.
2. Li, C., Chen, C., Carlson, D., Carin, L. (2016), *Preconditioned stochastic gradient Langevin
   dynamics for deep neural networks*.
3. Lau, E., Furman, Z., Wang, G., Murfet, D., Wei, S. (2023), *The local learning coefficient: a
   singularity-aware complexity measure*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from numpyro.infer import init_to_uniform

from ._base import Move, SGMCMCKernel, upgrade_state
from .preconditioners import Preconditioner

__all__ = ["SGLD", "SGLDState", "upgrade_state"]

PyTree = Any


class SGLDState(NamedTuple):
    """State of one SGLD chain. Every per-step field refers to the position ``z``.

    - **i** – number of steps taken.
    - **z** – position, in unconstrained coordinates (a dict keyed by latent site).
    - **z_grad** – ∇U(z) on the minibatch drawn for ``z``.
    - **potential_energy** – U(z) on that minibatch.
    - **loss** – untempered minibatch loss L_B(z), the mean negative log-likelihood per observation.
    - **mean_excess_loss** – running mean of L_B − L_n(w*) over every post-burn-in step up to this
      one (zero during burn-in). The LLC estimator reads the loss of every step from it, so
      thinning loses no loss information.
    - **mean_count** – how many steps ``mean_excess_loss`` averages (i minus the burn-in steps).
    - **init_loss** – L_n(w*), the low-noise loss at the center, the same for every chain.
    - **nbeta** – nβ of the tempered model.
    - **grad_norm** – ‖∇U(z)‖.
    - **distance** – ‖u − u*‖, the distance from the localization center in unconstrained
      coordinates.
    - **mala_accept** – Metropolis-adjusted acceptance probability of the move that produced z
      (see :class:`SGLD`).
    - **diverging** – True when U, L_B or ∇U is not finite at z, or the loss exploded:
      L_B(z) − L_n(w*) > ``max_excess_loss``.
    - **diverged_at** – the first step at which the chain diverged, −1 while it never did.
    - **precond_state** – the preconditioner's state.
    - **rng_key** – random key for the next step.

    The norms of the three terms of the update that produced z (docs/formulas.md, "Step norms"),
    from the previous position z₋ and its gradient ∇U(z₋), split into likelihood and
    localization:

    - **drift_norm** – ‖(ε/2)·G ⊙ (∇U(z₋) − γ(z₋ − u*))‖, the likelihood drift: nβ·∇L_B, plus
      the gradient of any ``numpyro.factor`` term and of the prior of a site without a
      localization center.
    - **localization_norm** – ‖(ε/2)·G ⊙ γ(z₋ − u*)‖, the pull of the localization prior
      (γ of each site; 0 for a site that is not localized or has γ = 0).
    - **noise_norm** – ‖√(ε·G) ⊙ ξ‖, the injected Gaussian noise.

    G = 1 without a preconditioner. They are diagnostics only: the update does not read them.
    A kept draw's values are those of the step that produced it (with ``thinning`` > 1, not an
    average over the skipped steps); all three are 0 in the state at the start (i = 0).

    - **num_observations** – n, the number of observations L_n averages over (NaN when the
      observed sites count different numbers and ``temper`` was given no ``n``); read by
      :func:`numpyro_slt.wbic`.

    These four fields came after the others; a state pickled before them (a checkpoint of an
    older version) loads with them ``None``: :func:`upgrade_state` fills them, and
    :func:`numpyro_slt.sample_checkpointed` does so when it resumes.
    """

    i: jnp.ndarray
    z: dict[str, jnp.ndarray]
    z_grad: dict[str, jnp.ndarray]
    potential_energy: jnp.ndarray
    loss: jnp.ndarray
    mean_excess_loss: jnp.ndarray
    mean_count: jnp.ndarray
    init_loss: jnp.ndarray
    nbeta: jnp.ndarray
    grad_norm: jnp.ndarray
    distance: jnp.ndarray
    mala_accept: jnp.ndarray
    diverging: jnp.ndarray
    diverged_at: jnp.ndarray
    precond_state: PyTree
    rng_key: jnp.ndarray
    # added after the first release: defaults so that older pickled states still load
    drift_norm: jnp.ndarray | None = None
    localization_norm: jnp.ndarray | None = None
    noise_norm: jnp.ndarray | None = None
    num_observations: jnp.ndarray | None = None


class SGLD(SGMCMCKernel):
    """Stochastic-gradient Langevin dynamics for a (tempered, localized) NumPyro model.

    Wrap a model with :func:`numpyro_slt.temper` and :func:`numpyro_slt.localize` and sample it with
    ``numpyro.infer.MCMC(SGLD(model, step_size), num_warmup=..., num_samples=...)``. ``num_warmup``
    steps are burn-in: their draws are not kept and their losses do not enter the LLC. Chains start
    at the localization center unless ``init_params`` is given to ``MCMC.run`` (sites without a
    center start at ``init_strategy``'s value for each chain's key). A model that was not
    tempered is sampled at β = 1 (nβ = n), i.e. ordinary SGLD on its posterior.

    The MALA acceptance estimate of each move from z to z' is min(1, exp(a)) with
    a = −ΔU + log q(z | z') − log q(z' | z), q the Gaussian proposal of the update, and ΔU estimated
    by the trapezoid rule ½·(∇U(z) + ∇U(z'))·(z' − z), exact for quadratic potentials; this
    simplifies to a = (ε/8)·Σ G⊙(∇U(z)² − ∇U(z')²). It costs no extra evaluation of the model;
    values far below 0.9 mean ε is too large (it assumes σ = 1 and no clamping).

    :param model: a NumPyro model with at least one observed site.
    :param step_size: ε > 0.
    :param preconditioner: :func:`numpyro_slt.identity` (default) or :func:`numpyro_slt.rmsprop`.
    :param minibatch: ``"with_replacement"`` (default, B uniform draws, O(B)) or
        ``"without_replacement"`` (a uniform B-subset, O(N)).
    :param init_loss: L_n(w*) if already known; otherwise computed once at the center.
    :param init_loss_batches: ``None`` (default) computes L_n(w*) on the full data, in chunks of the
        plates' minibatch sizes; an integer k averages k minibatches drawn with ``PRNGKey(0)``.
    :param control_variate: if True, the excess loss of each step is L_B(w) − L_B(w*) on the *same*
        minibatch instead of L_B(w) − L_n(w*). Because E_B[L_B(w*)] = L_n(w*) the LLC keeps its
        expectation, while the minibatch noise shared by w and w* cancels (on a linear regression
        with n = 20,000 and B = 500 the per-step standard deviation of nβ·excess drops from about
        60 to about 1). Costs one extra forward pass at w* per step.
    :param keep_draws: if False, ``MCMC`` keeps no parameter draws (``get_samples()`` is empty),
        only the per-draw statistics (loss, running mean, diagnostics): memory grows with draws ×
        statistics, never draws × parameters. What an LLC of a large network needs.
    :param init_strategy: values for latent sites that are not localized (NumPyro init
        strategy): evaluated with ``PRNGKey(0)`` for the reference point u* that all chains
        share, and with each chain's own key for that chain's start, so that the chains start
        apart. Localized sites start at their center.
    :param max_excess_loss: a step whose excess loss L_B(z) − L_n(w*) exceeds this has exploded
        and counts as a divergence (``diverged_at``), like a NaN. The default,
        10³·(1 + |L_n(w*)|), is far above anything a localized chain reaches (its mean excess
        is λ/nβ).
    :param noise_level: σ ≥ 0, the factor of the injected noise (devinterp's ``noise_level``);
        only σ = 1 samples the posterior.
    :param bounding_box: b > 0 or None (default): clamp every coordinate, in unconstrained
        coordinates, to u* ± b after each step (devinterp's ``bounding_box_size``).
    """


    _state_type = SGLDState

    def __init__(
        self,
        model: Callable,
        step_size: float,
        *,
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
        super().__init__(model, step_size, preconditioner=preconditioner, minibatch=minibatch,
                         init_loss=init_loss, init_loss_batches=init_loss_batches,
                         control_variate=control_variate, keep_draws=keep_draws,
                         init_strategy=init_strategy, max_excess_loss=max_excess_loss,
                         noise_level=noise_level, bounding_box=bounding_box)

    @property
    def _drift_scale(self) -> float:
        return 0.5 * self.step_size

    @property
    def _langevin_step(self) -> float:
        return self.step_size

    def _move(self, state: SGLDState, metric, noise) -> Move:
        """w − (ε/2)·G⊙∇U(w) + σ·√(εG)⊙ξ; the noise term read off it is
        w' − w + (ε/2)·G⊙∇U(w)."""
        eps = self.step_size
        if self.noise_level != 1.0:
            noise = jax.tree.map(lambda xi: self.noise_level * xi, noise)
        z_new = jax.tree.map(
            lambda z, g, G, xi: z - 0.5 * eps * G * g + jnp.sqrt(eps * G) * xi,
            state.z, state.z_grad, metric, noise,
        )
        if self._identity_metric:
            terms = {name: z_new[name] - z + 0.5 * eps * state.z_grad[name]
                     for name, z in state.z.items()}
        else:
            terms = {name: z_new[name] - z + 0.5 * eps * metric[name] * state.z_grad[name]
                     for name, z in state.z.items()}
        return Move(z_new, terms, {})
