"""Stochastic-gradient Langevin dynamics as a NumPyro ``MCMCKernel``.

Update rule (the convention of devinterp; BlackJAX's ``step_size`` h equals ε/2), with U the
minibatch potential of the tempered, localized model,

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,
    w ← w − (ε/2)·G ⊙ ∇U(w) + √(ε·G) ⊙ ξ,   ξ ~ N(0, I),

where G is the diagonal metric of the preconditioner (G = 1 for plain SGLD, RMSProp for
``preconditioner=slt.rmsprop()``). Every step draws fresh minibatch indices for each subsampled
plate of the model and substitutes them, as HMCECS does.

References:

1. Welling, M. and Teh, Y. W. (2011), *Bayesian learning via stochastic gradient Langevin dynamics*.
2. Li, C., Chen, C., Carlson, D., Carin, L. (2016), *Preconditioned stochastic gradient Langevin
   dynamics for deep neural networks*.
3. Lau, E., Furman, Z., Wang, G., Murfet, D., Wei, S. (2023), *The local learning coefficient: a
   singularity-aware complexity measure*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from numpyro.infer import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from . import _model
from ._steps import (
    draw_indices,
    mala_acceptance,
    no_draws,
    norm,
    normal_like,
    reference_loss,
    sq_norm,
    sq_norms,
    weighted_sq_norm,
)
from .preconditioners import Preconditioner, _Identity, identity

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


_ADDED_FIELDS = ("drift_norm", "localization_norm", "noise_norm", "num_observations")


def upgrade_state(state: SGLDState) -> SGLDState:
    """``state`` with the fields added after it was saved filled in: the step norms 0 (as at the
    start of a chain), ``num_observations`` NaN (the kernel writes n at its next step). A state
    that has them is returned unchanged. Use it before ``mcmc.post_warmup_state = state`` for a
    state unpickled from an older version; :func:`numpyro_slt.sample_checkpointed` calls it."""
    missing = {name: None for name in _ADDED_FIELDS if getattr(state, name) is None}
    if not missing:
        return state
    loss = jnp.asarray(state.loss)
    fill = {name: jnp.full_like(loss, jnp.nan if name == "num_observations" else 0.0)
            for name in missing}
    return state._replace(**fill)


class SGLD(MCMCKernel):
    """Stochastic-gradient Langevin dynamics for a (tempered, localized) NumPyro model.

    Wrap a model with :func:`numpyro_slt.temper` and :func:`numpyro_slt.localize` and sample it with
    ``numpyro.infer.MCMC(SGLD(model, step_size), num_warmup=..., num_samples=...)``. ``num_warmup``
    steps are burn-in: their draws are not kept and their losses do not enter the LLC. Chains start
    at the localization center unless ``init_params`` is given to ``MCMC.run``. A model that was not
    tempered is sampled at β = 1 (nβ = n), i.e. ordinary SGLD on its posterior.

    The MALA acceptance estimate of each move from z to z' is min(1, exp(a)) with
    a = −ΔU + log q(z | z') − log q(z' | z), q the Gaussian proposal of the update, and ΔU estimated
    by the trapezoid rule ½·(∇U(z) + ∇U(z'))·(z' − z), exact for quadratic potentials; this
    simplifies to a = (ε/8)·Σ G⊙(∇U(z)² − ∇U(z')²). It costs no extra evaluation of the model;
    values far below 0.9 mean ε is too large.

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
    :param init_strategy: start values for latent sites that are not localized (NumPyro init
        strategy; evaluated with ``PRNGKey(0)`` so that all chains share the reference point).
    :param max_excess_loss: a step whose excess loss L_B(z) − L_n(w*) exceeds this has exploded
        and counts as a divergence (``diverged_at``), like a NaN. The default,
        10³·(1 + |L_n(w*)|), is far above anything a localized chain reaches (its mean excess
        is λ/nβ).
    """

    sample_field = "z"

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
    ):
        if not callable(model):
            raise ValueError(f"model must be a callable NumPyro model, got {type(model).__name__}")
        try:
            step_size = float(step_size)
        except (TypeError, ValueError):
            raise ValueError(f"step_size must be a number > 0, got {step_size!r}") from None
        if not (step_size > 0.0 and math.isfinite(step_size)):
            raise ValueError(
                f"step_size must be finite and > 0, got {step_size!r}; it scales as 1/(nβ times "
                "the curvature of L_n): the docs use 1e-5 at nβ = n/log n ≈ 2,000 (quick start) "
                "and 1e-3 at nβ = 30 (a transformer head); check that mala_accept stays at 0.9 or "
                "above"
            )
        if minibatch not in ("with_replacement", "without_replacement"):
            raise ValueError(
                f"minibatch must be 'with_replacement' or 'without_replacement', got {minibatch!r}"
            )
        if init_loss is not None and not math.isfinite(float(init_loss)):
            raise ValueError(f"init_loss must be a finite number, got {init_loss!r}")
        if init_loss_batches is not None and (
            int(init_loss_batches) != init_loss_batches or init_loss_batches < 1
        ):
            raise ValueError(
                f"init_loss_batches must be a positive integer or None, got {init_loss_batches!r}"
            )
        if max_excess_loss is not None and not (
                isinstance(max_excess_loss, int | float) and not isinstance(max_excess_loss, bool)
                and max_excess_loss > 0 and math.isfinite(max_excess_loss)):
            raise ValueError(f"max_excess_loss must be a finite number > 0 or None, got "
                             f"{max_excess_loss!r}")
        self.max_excess_loss = None if max_excess_loss is None else float(max_excess_loss)
        self._model = model
        self.step_size = step_size
        self.preconditioner = identity() if preconditioner is None else preconditioner
        self._identity_metric = isinstance(self.preconditioner, _Identity)
        self.minibatch = minibatch
        self._init_loss = None if init_loss is None else float(init_loss)
        self.init_loss_batches = init_loss_batches
        self.control_variate = bool(control_variate)
        self.keep_draws = bool(keep_draws)
        self.init_strategy = init_strategy
        self._info: _model.ModelInfo | None = None
        self._reference: tuple[dict[str, jnp.ndarray], float] | None = None
        self._setup_key: tuple | None = None
        self._num_warmup = 0
        self._sample_fn: Callable | None = None
        self._init_fns: tuple[Callable, Callable] | None = None

    # -- what MCMC and ArviZ read -------------------------------------------------------------

    @property
    def model(self) -> Callable:
        """The model as the kernel samples it, for replaying (ArviZ, ``Predictive``).

        Replayed without a random key, each subsampled plate sees a fixed evaluation batch (drawn
        once with ``PRNGKey(0)``), so ``az.from_numpyro`` can build its ``log_likelihood`` group.
        """
        target = self._info.model if self._info is not None else self._model
        return _model.ReplayModel(target)

    @property
    def default_fields(self) -> tuple[str, ...]:
        return (
            "z",
            "i",
            "loss",
            "mean_excess_loss",
            "mean_count",
            "init_loss",
            "nbeta",
            "grad_norm",
            "distance",
            "mala_accept",
            "diverging",
            "diverged_at",
            "drift_norm",
            "localization_norm",
            "noise_norm",
            "num_observations",
        )

    @property
    def info(self) -> _model.ModelInfo:
        """Facts read off the model at ``init`` (nβ, sites, centers, subsampled plates)."""
        if self._info is None:
            raise RuntimeError("the kernel has not been initialised; call MCMC.run first")
        return self._info

    def get_diagnostics_str(self, state: SGLDState) -> str:
        return (
            f"loss {float(state.loss):.4g}, dist {float(state.distance):.3g}, "
            f"mala {float(state.mala_accept):.2f}"
        )

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict | None) -> Callable:
        traced = any(isinstance(x, jax.core.Tracer)
                     for x in jax.tree.leaves((model_args, model_kwargs)))
        if traced and self._info is not None:
            # MCMC(jit_model_args=True) traces the data; the sites and their transforms were
            # read from the concrete data in ``init``
            info = self._info
        else:
            info = self._setup(model_args, model_kwargs or {})
        if not self.keep_draws:
            return no_draws
        return _model.postprocess(info, model_args, model_kwargs or {})

    # -- setup shared by all chains -----------------------------------------------------------

    def _setup(self, model_args: tuple, model_kwargs: dict) -> _model.ModelInfo:
        """Inspect the model and compute the reference point u* and L_n(w*), once per data."""
        key = tuple(id(x) for x in jax.tree.leaves((model_args, model_kwargs)))
        if self._info is not None and self._setup_key == key:
            return self._info
        info = _model.inspect_model(self._model, model_args, model_kwargs)
        with jax.ensure_compile_time_eval():
            reference = self._reference_point(info, model_args, model_kwargs)
            init_loss = self._init_loss
            if init_loss is None:
                init_loss = self._reference_loss(info, reference, model_args, model_kwargs)
        if not math.isfinite(init_loss):
            raise FloatingPointError(
                f"the loss at the center, L_n(w*) = {init_loss}, is not finite; check the center "
                "and the data"
            )
        self._info, self._reference, self._setup_key = info, (reference, init_loss), key
        self._init_fns = None  # jitted per-chain init, built for these model arguments
        return info

    def _reference_point(self, info, model_args, model_kwargs) -> dict[str, jnp.ndarray]:
        values = dict(info.centers)
        missing = [name for name in info.latent_sites if name not in values]
        if missing:
            from numpyro import handlers

            seeded = handlers.seed(_model.plate_indices(info.model), rng_seed=0)
            start = handlers.substitute(seeded, substitute_fn=self.init_strategy)
            trace = handlers.trace(start).get_trace(*model_args, **model_kwargs)
            values.update({name: trace[name]["value"] for name in missing})
        return _model.unconstrain(info, values)

    def _reference_loss(self, info, reference, model_args, model_kwargs) -> float:
        """L_n(w*) on the full data (chunked by the plates' minibatch sizes) or on k batches."""
        return reference_loss(info, reference, model_args, model_kwargs,
                              batches=self.init_loss_batches, minibatch=self.minibatch)

    def _draw_indices(self, info: _model.ModelInfo, rng_key) -> dict[str, jnp.ndarray]:
        return draw_indices(info.subsampled_plates, self.minibatch, rng_key)

    # -- MCMCKernel ---------------------------------------------------------------------------

    def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
        model_kwargs = model_kwargs or {}
        info = self._setup(model_args, model_kwargs)
        self._num_warmup = int(num_warmup)
        reference, _ = self._reference
        if self._init_fns is None:
            # Arrays in the model arguments are passed to the compiled init, not closed over: a
            # closed-over array is embedded in the program as a constant, which for a study's
            # cached activations (tens of MB) dominates the compile time.
            self._init_fns = (
                eqx.filter_jit(self._init_one),
                eqx.filter_jit(eqx.filter_vmap(self._init_one, in_axes=(0, 0, None, None))),
            )
        if init_params is not None:
            unknown = set(init_params) ^ set(info.latent_sites)
            if unknown:
                raise ValueError(
                    f"init_params must have exactly the latent sites {list(info.latent_sites)} "
                    f"(unconstrained values); mismatched names: {sorted(unknown)}"
                )
        single = is_prng_key(rng_key)
        if single:
            z0 = reference if init_params is None else dict(init_params)
            state = self._init_fns[0](rng_key, z0, model_args, model_kwargs)
            self._sample_fn = self._sample_one
        else:
            num_chains = rng_key.shape[0]
            if init_params is None:
                z0 = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains, *x.shape)), reference)
            else:
                z0 = dict(init_params)
            state = self._init_fns[1](rng_key, z0, model_args, model_kwargs)
            self._sample_fn = jax.vmap(self._sample_one, in_axes=(0, None, None))
        return state

    def _init_one(self, key, z, model_args, model_kwargs) -> SGLDState:
        """The state of one chain at z: the loss and gradient on a first minibatch."""
        info = self.info
        reference, init_loss = self._reference
        key, batch_key = jax.random.split(key)
        value_and_grad = self._value_and_grad(info, model_args, model_kwargs)
        (energy, loss), grad = value_and_grad(z, self._draw_indices(info, batch_key))
        grad_sq = sq_norm(grad)
        finite = jnp.isfinite(energy) & jnp.isfinite(loss) & jnp.isfinite(grad_sq)
        return SGLDState(
            i=jnp.array(0, dtype=jnp.int32),
            z=z,
            z_grad=grad,
            potential_energy=energy,
            loss=loss,
            mean_excess_loss=jnp.zeros_like(loss),
            mean_count=jnp.array(0, dtype=jnp.int32),
            init_loss=jnp.asarray(init_loss, dtype=loss.dtype),
            nbeta=jnp.asarray(info.nbeta, dtype=loss.dtype),
            grad_norm=jnp.sqrt(grad_sq),
            distance=norm(jax.tree.map(jnp.subtract, z, reference)),
            mala_accept=jnp.ones_like(loss),
            diverging=~finite,
            diverged_at=jnp.where(finite, -1, 0).astype(jnp.int32),
            precond_state=self.preconditioner.init(z),
            rng_key=key,
            drift_norm=jnp.zeros_like(loss),
            localization_norm=jnp.zeros_like(loss),
            noise_norm=jnp.zeros_like(loss),
            num_observations=jnp.asarray(info.n, dtype=loss.dtype),
        )

    def sample(self, state: SGLDState, model_args, model_kwargs) -> SGLDState:
        return self._sample_fn(upgrade_state(state), model_args, model_kwargs or {})

    def _explosion_threshold(self, init_loss: jnp.ndarray) -> jnp.ndarray | float:
        """The excess loss beyond which a step counts as exploded (see ``max_excess_loss``);
        computed from the state's L_n(w*), so that it is not a constant of the program."""
        if self.max_excess_loss is not None:
            return self.max_excess_loss
        return 1e3 * (1.0 + jnp.abs(init_loss))

    def _value_and_grad(self, info, model_args, model_kwargs):
        def energy(z, indices):
            return _model.energy_and_loss(info, model_args, model_kwargs, z, indices)

        return jax.value_and_grad(energy, has_aux=True)

    def _sample_one(self, state: SGLDState, model_args, model_kwargs) -> SGLDState:
        info = self.info
        reference, _ = self._reference
        eps = self.step_size
        key, noise_key, batch_key = jax.random.split(state.rng_key, 3)

        metric, precond_state = self.preconditioner.update(state.z_grad, state.precond_state)
        noise = normal_like(noise_key, state.z)
        z_new = jax.tree.map(
            lambda z, g, G, xi: z - 0.5 * eps * G * g + jnp.sqrt(eps * G) * xi,
            state.z, state.z_grad, metric, noise,
        )
        drift_norm, localization_norm, noise_norm = self._step_norms(state, metric, z_new)
        indices = self._draw_indices(info, batch_key)
        (energy, loss), grad = self._value_and_grad(info, model_args, model_kwargs)(z_new, indices)
        if self.control_variate:
            baseline = _model.energy_and_loss(info, model_args, model_kwargs, reference, indices)[1]
        else:
            baseline = state.init_loss
        grad_sq = sq_norm(grad)
        if self._identity_metric:
            mala_accept = mala_acceptance(jnp.square(state.grad_norm), grad_sq, eps)
        else:
            mala_accept = mala_acceptance(weighted_sq_norm(metric, state.z_grad),
                                           weighted_sq_norm(metric, grad), eps)

        i = state.i + 1
        counted = i > self._num_warmup
        count = jnp.where(counted, state.mean_count + 1, 0).astype(jnp.int32)
        excess = loss - baseline
        mean_excess_loss = jnp.where(
            counted,
            state.mean_excess_loss + (excess - state.mean_excess_loss) / jnp.maximum(count, 1),
            0.0,
        ).astype(loss.dtype)
        finite = (jnp.isfinite(energy) & jnp.isfinite(loss) & jnp.isfinite(grad_sq)
                  & (loss - state.init_loss <= self._explosion_threshold(state.init_loss)))
        diverged_at = jnp.where((state.diverged_at < 0) & ~finite, i, state.diverged_at)
        return SGLDState(
            i=i,
            z=z_new,
            z_grad=grad,
            potential_energy=energy,
            loss=loss,
            mean_excess_loss=mean_excess_loss,
            mean_count=count,
            init_loss=state.init_loss,
            nbeta=state.nbeta,
            grad_norm=jnp.sqrt(grad_sq),
            distance=norm(jax.tree.map(jnp.subtract, z_new, reference)),
            mala_accept=mala_accept,
            diverging=~finite,
            diverged_at=diverged_at.astype(jnp.int32),
            precond_state=precond_state,
            rng_key=key,
            drift_norm=drift_norm.astype(loss.dtype),
            localization_norm=localization_norm.astype(loss.dtype),
            noise_norm=noise_norm.astype(loss.dtype),
            num_observations=jnp.asarray(info.n, dtype=loss.dtype),
        )

    def _step_norms(self, state: SGLDState, metric, z_new):
        """‖(ε/2)·G⊙nβ∇L_B‖, ‖(ε/2)·G⊙γ(z − u*)‖ and ‖√(εG)⊙ξ‖ of the move from ``state.z`` to
        ``z_new``; a few vector norms per step.

        The localization gradient γ(u − u*) is exact in unconstrained coordinates for every
        support: the localized prior is N(u*, γ^{-1/2}) in u, its log-Jacobian cancelling the
        one NumPyro adds; the likelihood part is the rest of ∇U. The noise is read off the move,
        √(εG)⊙ξ = z_new − z + (ε/2)·G⊙∇U(z): a norm of ξ itself would make XLA generate the
        random numbers a second time (it duplicates the generator into every consumer), which
        on a 10⁵-parameter network costs more than the three norms. Rounding z_new in float32
        limits that reading to a relative 6·10⁻⁸·|z|/√(εG) per coordinate.
        """
        reference, _ = self._reference
        eps = self.step_size
        gammas = self.info.gamma
        identity_metric = self._identity_metric
        shared = {gammas.get(name) for name in state.z}
        # one γ for every site (what localize gives) and no preconditioner: ‖γ(z − u*)‖ is
        # γ·distance, which the state holds, so the localization costs no pass over the weights
        from_distance = identity_metric and len(shared) == 1 and None not in shared
        rows = []
        for name, z in state.z.items():
            g = state.z_grad[name]
            gamma = gammas.get(name, 0.0)
            pull = gamma * (z - reference[name]) if gamma != 0.0 else None
            likelihood = g if pull is None else g - pull
            if identity_metric:
                rows.append((likelihood, None if from_distance else pull,
                             z_new[name] - z + 0.5 * eps * g))
            else:
                G = metric[name]
                rows.append((G * likelihood, None if pull is None else G * pull,
                             z_new[name] - z + 0.5 * eps * G * g))
        likelihood_sq, pull_sq, noise_sq = sq_norms(rows)
        local = (0.5 * eps * shared.pop() * state.distance if from_distance
                 else 0.5 * eps * jnp.sqrt(pull_sq))
        return 0.5 * eps * jnp.sqrt(likelihood_sq), local, jnp.sqrt(noise_sq)
