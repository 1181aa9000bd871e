"""What every SG-MCMC kernel of the package does, whatever its integrator.

A kernel samples the (tempered, localized) model with the minibatch potential of
docs/formulas.md,

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,

and :class:`SGMCMCKernel` holds the parts that do not depend on how a step moves: reading the
model, the reference point u* and L_n(w*) shared by all chains, the chains' starts, fresh minibatch
indices and the gradient estimate at every step, the control variate, the thinning-safe loss
statistics, divergence detection, the step norms, the bounding box and the conversion of draws.
A kernel module (``sgld.py``, ``sghmc.py``, ``sgnht.py``) adds its state type, the start of its
auxiliary variables (momentum, thermostat) and one move (:meth:`SGMCMCKernel._move`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from numpyro.infer import init_to_uniform
from numpyro.infer.gibbs import GIBBS_SITES_KWARG
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import is_prng_key

from .._validate import positive_float
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

__all__ = ["SGMCMCKernel", "MomentumKernel", "Move", "upgrade_state"]

PyTree = Any

# the fields that came after the first release of SGLDState (see ``upgrade_state``)
_ADDED_FIELDS = ("drift_norm", "localization_norm", "noise_norm", "num_observations")

# how a chain's own key is turned into the keys of its start (a key of the chain is split by
# the step itself; folding in a constant gives keys independent of that stream)
START_KEY, MOMENTUM_KEY = 1, 2


def upgrade_state(state: NamedTuple) -> NamedTuple:
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


class Move(NamedTuple):
    """What one integrator step returns to :meth:`SGMCMCKernel._sample_one`.

    - **z** – the proposed position, before the bounding box.
    - **noise** – the injected-noise term of the move, site by site, read off the move (its norm
      is ``noise_norm``); computed from the move instead of from ξ so that XLA does not generate
      the random numbers a second time.
    - **dynamics** – the kernel's own state fields after the move (momentum, thermostat).
    """

    z: dict[str, jnp.ndarray]
    noise: dict[str, jnp.ndarray]
    dynamics: dict[str, Any]


class SGMCMCKernel(MCMCKernel):
    """The integrator-independent part of the package's SG-MCMC kernels (see the module
    docstring). Subclasses set ``_state_type``, ``_extra_fields``, :meth:`_drift_scale`,
    :meth:`_langevin_step`, :meth:`_init_dynamics` and :meth:`_move`."""

    sample_field = "z"
    _state_type: type
    _extra_fields: tuple[str, ...] = ()

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
        if not callable(model):
            raise ValueError(f"model must be a callable NumPyro model, got {type(model).__name__}")
        step_size = positive_float(
            "step_size", step_size,
            "it scales as 1/(nβ times the curvature of L_n): the docs use 1e-5 at nβ = n/log n "
            "≈ 2,000 (quick start) and 1e-3 at nβ = 30 (a transformer head); check that "
            "mala_accept stays at 0.9 or above")
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
        try:
            sigma = float(noise_level) if not isinstance(noise_level, bool) else math.nan
        except (TypeError, ValueError):
            sigma = math.nan
        if not (sigma >= 0 and math.isfinite(sigma)):
            raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}; "
                             "1 (the default) samples the posterior, 0 gives the pure drift")
        if bounding_box is not None:
            bounding_box = positive_float(
                "bounding_box", bounding_box,
                "it is the half-width of the box u* ± bounding_box each coordinate is clamped "
                "to; pass None for no box")
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
        self.noise_level = sigma
        self.bounding_box = bounding_box
        self._info: _model.ModelInfo | None = None
        self._reference: tuple[dict[str, jnp.ndarray], float] | None = None
        self._setup_key: tuple | None = None
        self._num_warmup = 0
        self._sample_fn: Callable | None = None
        self._init_fns: tuple[Callable, Callable] | None = None

    # -- what a kernel module defines -----------------------------------------------------------

    @property
    def _drift_scale(self) -> float:
        """c of the drift term c·G⊙∇U of a move (ε/2 for SGLD, η for the momentum kernels)."""
        raise NotImplementedError

    @property
    def _langevin_step(self) -> float:
        """ε of the Langevin step whose MALA acceptance the state reports (``mala_accept``)."""
        raise NotImplementedError

    def _init_dynamics(self, key, z: dict[str, jnp.ndarray]) -> dict[str, Any]:
        """The kernel's own state fields at the start of a chain (``key``: the chain's key)."""
        return {}

    def _move(self, state: NamedTuple, metric: PyTree, noise: PyTree) -> Move:
        """One step from ``state`` with the metric G and the draw ξ ~ N(0, I)."""
        raise NotImplementedError

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
            *self._extra_fields,
        )

    @property
    def info(self) -> _model.ModelInfo:
        """Facts read off the model at ``init`` (nβ, sites, centers, subsampled plates)."""
        if self._info is None:
            raise RuntimeError("the kernel has not been initialised; call MCMC.run first")
        return self._info

    def get_diagnostics_str(self, state: NamedTuple) -> str:
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
        """u*: the localization centers, and for the other latent sites ``init_strategy``
        evaluated with ``PRNGKey(0)`` (shared by all chains)."""
        values = dict(info.centers)
        values.update(self._initial_values(info, 0, model_args, model_kwargs))
        return _model.unconstrain(info, values)

    def _initial_values(self, info, rng_key, model_args, model_kwargs) -> dict[str, jnp.ndarray]:
        """``init_strategy``'s constrained values, drawn with ``rng_key``, of the latent sites
        that have no localization center."""
        missing = [name for name in info.latent_sites if name not in info.centers]
        if not missing:
            return {}
        from numpyro import handlers

        seeded = handlers.seed(_model.plate_indices(info.model), rng_seed=rng_key)
        start = handlers.substitute(seeded, substitute_fn=self.init_strategy)
        trace = handlers.trace(start).get_trace(*model_args, **model_kwargs)
        return {name: trace[name]["value"] for name in missing}

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
        if init_params is not None and GIBBS_SITES_KWARG in model_kwargs:
            # a block of numpyro.infer.Gibbs is given its sites' constrained values
            z0 = _model.unconstrain(info, init_params)
        elif init_params is not None:
            z0 = dict(init_params)
        elif single:
            z0 = self._start(rng_key, model_args, model_kwargs)
        else:
            z0 = jax.vmap(self._start, in_axes=(0, None, None))(rng_key, model_args,
                                                                 model_kwargs)
        if single:
            state = self._init_fns[0](rng_key, z0, model_args, model_kwargs)
            self._sample_fn = self._sample_one
        else:
            state = self._init_fns[1](rng_key, z0, model_args, model_kwargs)
            self._sample_fn = jax.vmap(self._sample_one, in_axes=(0, None, None))
        return state

    def _start(self, key, model_args, model_kwargs) -> dict[str, jnp.ndarray]:
        """A chain's start: localized sites at their center u*, the others drawn by
        ``init_strategy`` with the chain's own key (folded with ``START_KEY``), so that the
        chains of a model that is not (wholly) localized start apart."""
        reference, _ = self._reference
        info = self.info
        drawn = self._initial_values(info, jax.random.fold_in(key, START_KEY), model_args,
                                     model_kwargs)
        if not drawn:
            return dict(reference)
        start = _model.unconstrain(info, {**info.centers, **drawn})
        return {name: start[name] if name in drawn else reference[name]
                for name in info.latent_sites}

    def _init_one(self, key, z, model_args, model_kwargs) -> NamedTuple:
        """The state of one chain at z: the loss and gradient on a first minibatch."""
        info = self.info
        reference, init_loss = self._reference
        chain_key = key
        key, batch_key = jax.random.split(key)
        value_and_grad = self._value_and_grad(info, model_args, model_kwargs)
        (energy, loss), grad = value_and_grad(z, self._draw_indices(info, batch_key))
        grad_sq = sq_norm(grad)
        finite = jnp.isfinite(energy) & jnp.isfinite(loss) & jnp.isfinite(grad_sq)
        return self._state_type(
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
            **self._init_dynamics(chain_key, z),
        )

    def sample(self, state: NamedTuple, model_args, model_kwargs) -> NamedTuple:
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

    def _metric(self, state: NamedTuple) -> tuple[PyTree, PyTree]:
        """(G, new preconditioner state). The preconditioner's statistics come from ∇U, or
        with ``statistics="likelihood"`` from its likelihood part ∇U − γ(z − u*) alone."""
        grads = state.z_grad
        if getattr(self.preconditioner, "statistics", "potential") == "likelihood":
            grads = self._likelihood_grad(state)
        return self.preconditioner.update(grads, state.precond_state)

    # -- a block of numpyro.infer.Gibbs ---------------------------------------------------------

    def wrap_model(self, wrapper: Callable) -> SGMCMCKernel:
        """A copy of the kernel on ``wrapper(model)`` (what ``numpyro.infer.Gibbs`` does to its
        blocks: the wrapped model is conditioned on the other blocks' sites); everything read
        off the old model is rebuilt at the copy's ``init``."""
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._info = kernel._reference = kernel._setup_key = None
        kernel._sample_fn = kernel._init_fns = None
        return kernel

    def refresh(self, state: NamedTuple, model_args, model_kwargs) -> NamedTuple:
        """The state at the same position with U, L_B and ∇U evaluated on the model for new
        arguments (a Gibbs block's new conditioning values) and a fresh minibatch; the chain
        does not move."""
        key, batch_key = jax.random.split(state.rng_key)
        value_and_grad = self._value_and_grad(self.info, model_args, model_kwargs or {})
        (energy, loss), grad = value_and_grad(state.z, self._draw_indices(self.info, batch_key))
        return state._replace(z_grad=grad, potential_energy=energy, loss=loss,
                              grad_norm=jnp.sqrt(sq_norm(grad)), rng_key=key)

    def get_constrain_fn(self, model_args, model_kwargs) -> Callable:
        """Unconstrained positions to constrained site values by the sites' transforms alone
        (what a Gibbs sibling is conditioned on; no replay of the model)."""
        info = self._info if self._info is not None else self._setup(model_args,
                                                                     model_kwargs or {})
        return lambda z: _model.constrain(info, z)

    def _likelihood_grad(self, state: NamedTuple) -> dict[str, jnp.ndarray]:
        """nβ·∇L_B(z) (with any factor term and unlocalized prior): ∇U minus γ(z − u*)."""
        reference, _ = self._reference
        gammas = self.info.gamma
        return {name: g - gammas[name] * (state.z[name] - reference[name])
                if gammas.get(name, 0.0) != 0.0 else g
                for name, g in state.z_grad.items()}

    def _sample_one(self, state: NamedTuple, model_args, model_kwargs) -> NamedTuple:
        info = self.info
        reference, _ = self._reference
        key, noise_key, batch_key = jax.random.split(state.rng_key, 3)

        metric, precond_state = self._metric(state)
        move = self._move(state, metric, normal_like(noise_key, state.z))
        z_new = self._clamp(move.z)
        drift_norm, localization_norm, noise_norm = self._step_norms(state, metric, move.noise)
        indices = self._draw_indices(info, batch_key)
        (energy, loss), grad = self._value_and_grad(info, model_args, model_kwargs)(z_new, indices)
        if self.control_variate:
            baseline = _model.energy_and_loss(info, model_args, model_kwargs, reference, indices)[1]
        else:
            baseline = state.init_loss
        grad_sq = sq_norm(grad)
        eps = self._langevin_step
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
        return self._state_type(
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
            **self._reflect(move),
        )

    # -- the bounding box ---------------------------------------------------------------------

    def _outside(self, z: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        """Per coordinate, whether z is not strictly inside the box u* ± ``bounding_box``."""
        reference, _ = self._reference
        return {name: jnp.abs(z[name] - reference[name]) >= self.bounding_box for name in z}

    def _clamp(self, z: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        """z clamped to u* ± ``bounding_box`` per coordinate (unconstrained coordinates), as
        devinterp's ``bounding_box_size``; z itself without a box."""
        if self.bounding_box is None:
            return z
        reference, _ = self._reference
        b = self.bounding_box
        return {name: jnp.clip(value, reference[name] - b, reference[name] + b)
                for name, value in z.items()}

    def _reflect(self, move: Move) -> dict[str, Any]:
        """The move's dynamics with the momentum of every coordinate that reached the box
        reversed (devinterp's SGNHT does so); unchanged without a box or a momentum."""
        if self.bounding_box is None or "momentum" not in move.dynamics:
            return move.dynamics
        outside = self._outside(move.z)
        momentum = {name: jnp.where(outside[name], -v, v)
                    for name, v in move.dynamics["momentum"].items()}
        return {**move.dynamics, "momentum": momentum}

    # -- diagnostics --------------------------------------------------------------------------

    def _step_norms(self, state: NamedTuple, metric, noise):
        """‖c·G⊙nβ∇L_B‖, ‖c·G⊙γ(z − u*)‖ and ‖noise‖ of the move from ``state.z`` (c the drift
        scale, ε/2 or η; ``noise`` the move's noise term); a few vector norms per step.

        The localization gradient γ(u − u*) is exact in unconstrained coordinates for every
        support: the localized prior is N(u*, γ^{-1/2}) in u, its log-Jacobian cancelling the
        one NumPyro adds; the likelihood part is the rest of ∇U. The noise term is read off the
        move by the kernel (see :class:`Move`): rounding in float32 limits that reading to a
        relative 6·10⁻⁸·|z| per coordinate.
        """
        reference, _ = self._reference
        c = self._drift_scale
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
                rows.append((likelihood, None if from_distance else pull, noise[name]))
            else:
                G = metric[name]
                rows.append((G * likelihood, None if pull is None else G * pull, noise[name]))
        likelihood_sq, pull_sq, noise_sq = sq_norms(rows)
        local = (c * shared.pop() * state.distance if from_distance
                 else c * jnp.sqrt(pull_sq))
        return c * jnp.sqrt(likelihood_sq), local, jnp.sqrt(noise_sq)


class MomentumKernel(SGMCMCKernel):
    """What SGHMC and SGNHT share: a momentum v moves the position, w ← w + v, with the drift
    η·G⊙∇U (η = ``step_size``), so their MALA diagnostic is SGLD's at ε = 2η; the momentum starts
    at √η·ξ, ξ ~ N(0, I), drawn with the chain's key."""

    @property
    def _drift_scale(self) -> float:
        return self.step_size

    @property
    def _langevin_step(self) -> float:
        return 2.0 * self.step_size

    def _init_dynamics(self, key, z: dict[str, jnp.ndarray]) -> dict[str, Any]:
        xi = normal_like(jax.random.fold_in(key, MOMENTUM_KEY), z)
        scale = math.sqrt(self.step_size)
        return {"momentum": jax.tree.map(lambda x: scale * x, xi)}
