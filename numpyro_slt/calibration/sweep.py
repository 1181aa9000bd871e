"""SGLD at many settings (ε, nβ, γ) in one compiled program.

The settings of a calibration differ only in three numbers, so they are traced values of one
program: for every chain, a ``lax.scan`` over the steps advances the positions of all S settings
at once (``vmap`` over settings), and the chains are a ``vmap`` over random keys. The potential of
setting s is built from the untempered model,

    U_s(u) = nβ_s·L_B(u) + (γ_s/2)·‖u − u*‖²   (+ any ``numpyro.factor`` terms of the model),

evaluated as U₁(u) + (nβ_s − 1)·L_B(u) + ((γ_s − 1)/2)·‖u − u*‖² with U₁ the potential of
``localize(temper(model, 1), center, 1)`` from the kernel's own evaluation
(:func:`numpyro_slt.kernels._model.energy_and_loss`). The update, the MALA acceptance, the loss
statistics and the divergence test are those of :class:`~numpyro_slt.SGLD` (docs/formulas.md).

Random numbers follow the kernel's scheme exactly (the chain keys of
``MCMC(num_chains=C).run(PRNGKey(seed))``, one split per step into the next key, the noise key
and the minibatch key), and are shared by the settings of a chain: chain c of every setting sees
the same minibatches and the same Gaussian noise ξ, i.e. each setting's chains are those that
``MCMC(SGLD(...))`` draws with the same seed. These common random numbers make the comparison of
two settings (λ̂ at ε against λ̂ at ε/2) much less noisy than independent runs would, and they
let one minibatch gather and one forward pass at w* (the control variate) serve all settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..handlers import is_likelihood_site, localize, temper
from ..kernels import _model
from ..kernels._steps import (
    draw_indices,
    mala_acceptance,
    normal_like,
    reference_loss,
    sq_norm,
    weighted_sq_norm,
)
from ..kernels.preconditioners import Preconditioner, _Identity

__all__ = ["SweepTarget", "Runs", "run_sweep", "top_curvature", "evaluation_indices"]

#: The per-draw statistics of a sweep, with the meaning of the SGLD state fields of that name.
FIELDS = ("mean_excess_loss", "mean_count", "mala_accept", "distance", "diverged_at",
          "observable")


@dataclass(frozen=True)
class SweepTarget:
    """A plain model prepared for sweeping: the facts every setting shares.

    ``info`` describes ``localize(temper(model, 1), center, 1)``; ``reference`` is u*, the center
    in unconstrained coordinates; ``init_loss`` is L_n(w*) (computed as the kernel computes it);
    ``num_observations`` is n, the largest count of an observed site; ``num_params`` is d, the
    number of sampled coordinates.
    """

    info: _model.ModelInfo
    reference: dict[str, jnp.ndarray] = field(repr=False)
    init_loss: float
    num_observations: int
    num_params: int

    @classmethod
    def of(cls, model: Callable, center: Mapping[str, Any], model_args: tuple,
           model_kwargs: dict, *, minibatch: str = "with_replacement",
           init_loss_batches: int | None = None) -> SweepTarget:
        _check_plain(model, model_args, model_kwargs)
        unit = localize(temper(model, 1.0), center, 1.0)
        info = _model.inspect_model(unit, model_args, model_kwargs)
        with jax.ensure_compile_time_eval():
            reference = _model.unconstrain(info, info.centers)
            init_loss = reference_loss(info, reference, model_args, model_kwargs,
                                       batches=init_loss_batches, minibatch=minibatch)
        if not math.isfinite(init_loss):
            raise FloatingPointError(
                f"the loss at the center, L_n(w*) = {init_loss}, is not finite; check the center "
                "and the data")
        trace, _ = _model._trace(info.model, model_args, model_kwargs)
        counts = [int(s["infer"]["slt_n"]) for s in trace.values() if is_likelihood_site(s)]
        num_params = sum(int(np.size(v)) for v in reference.values())
        return cls(info, reference, float(init_loss), max(counts), num_params)


@dataclass(frozen=True)
class Runs:
    """The raw statistics of a sweep ([setting, chain, draw] per field, settings in the order
    of ``np.meshgrid(step_sizes, nbetas, gammas, indexing="ij")``) and what judging them needs."""

    stats: dict[str, np.ndarray] = field(repr=False)
    step_sizes: np.ndarray
    nbetas: np.ndarray
    gammas: np.ndarray
    init_loss: float
    num_params: int


def _check_plain(model: Callable, model_args: tuple, model_kwargs: dict) -> None:
    """The model must be the plain one: no site carries a mark of temper or localize."""
    trace, _ = _model._trace(model, model_args, model_kwargs)
    marked = sorted(name for name, site in trace.items()
                    if {"slt_nbeta", "slt_center"} & set(site.get("infer") or {}))
    if marked:
        raise ValueError(
            f"model is already tempered or localized (sites {marked}); pass the plain model: "
            "calibrate applies temper and localize itself, at every nbeta and gamma it sweeps")


def top_curvature(target: SweepTarget, model_args: tuple, model_kwargs: dict,
                  iterations: int = 30) -> float:
    """h_max, the largest |eigenvalue| of the Hessian of L_B at u* on one fixed minibatch (the
    evaluation batch E of :func:`evaluation_indices`), by power iteration on Hessian-vector
    products."""
    info, reference = target.info, target.reference
    indices = evaluation_indices(info.subsampled_plates)
    flat, unravel = ravel_pytree(reference)

    @eqx.filter_jit
    def power(flat, args, kwargs):
        def loss(v):
            return _model.energy_and_loss(info, args, kwargs, unravel(v), indices)[1]

        def hvp(v):
            return jax.jvp(jax.grad(loss), (flat,), (v,))[1]

        def body(_, carry):
            v, _ = carry
            w = hvp(v)
            size = jnp.linalg.norm(w)
            return w / jnp.maximum(size, 1e-30), size

        start = jnp.ones_like(flat) / jnp.sqrt(flat.size)
        return jax.lax.fori_loop(0, iterations, body, (start, jnp.zeros((), flat.dtype)))[1]

    return float(power(flat, *_model.as_jax_arrays((model_args, model_kwargs))))


def evaluation_indices(plates: dict[str, tuple[int, int]]) -> dict[str, jnp.ndarray]:
    """The fixed evaluation batch E of the observable: for every subsampled plate (N, B), B
    distinct items drawn with ``PRNGKey(0)`` (the batch a replayed SGLD model sees)."""
    return {name: jax.random.choice(jax.random.PRNGKey(0), size, (batch,), replace=False)
            for name, (size, batch) in plates.items()}


class _Chains(eqx.Module):
    """The state of one chain at every setting (leading axis: setting), and the chain's key."""

    z: dict
    grad: dict
    grad_sq: jnp.ndarray
    mean_excess_loss: jnp.ndarray
    mean_count: jnp.ndarray
    diverged_at: jnp.ndarray
    precond_state: Any
    i: jnp.ndarray
    key: jnp.ndarray


def run_sweep(target: SweepTarget, step_size: np.ndarray, nbeta: np.ndarray, gamma: np.ndarray,
              model_args: tuple, model_kwargs: dict, *, num_chains: int, num_warmup: int,
              num_samples: int, thinning: int = 1, control_variate: bool = True,
              preconditioner: Preconditioner | None = None,
              minibatch: str = "with_replacement", max_excess_loss: float | None = None,
              seed: int = 0) -> dict[str, np.ndarray]:
    """SGLD at the S settings (``step_size[s]``, ``nbeta[s]``, ``gamma[s]``), ``num_chains``
    chains each, ``num_warmup`` burn-in steps then ``num_samples`` steps of which every
    ``thinning``-th is kept, all in one compiled program.

    Returns the fields of :data:`FIELDS` as arrays [setting, chain, draw], with the meaning of
    the SGLD state fields of those names, except ``mala_accept``, the mean over the steps since
    the previous kept draw (same expectation, less noise), and ``observable``, the low-noise
    observable φ(w) = L_E(w) − L_E(w*) at the kept draw: the excess loss on one fixed
    evaluation batch E (:func:`evaluation_indices`), free of minibatch noise.
    """
    from ..kernels.preconditioners import identity

    info, reference, init_loss = target.info, target.reference, target.init_loss
    precond = identity() if preconditioner is None else preconditioner
    plain_metric = isinstance(precond, _Identity)
    plates = info.subsampled_plates
    threshold = (1e3 * (1.0 + abs(init_loss)) if max_excess_loss is None
                 else float(max_excess_loss))
    num_draws = num_samples // thinning
    warmup_blocks = -(-num_warmup // thinning)
    pad = warmup_blocks * thinning - num_warmup
    evaluation = evaluation_indices(plates)

    def potential(z, indices, nb, ga, args, kwargs):
        unit_energy, loss = _model.energy_and_loss(info, args, kwargs, z, indices)
        distance_sq = sq_norm(jax.tree.map(jnp.subtract, z, reference))
        return unit_energy + (nb - 1.0) * loss + 0.5 * (ga - 1.0) * distance_sq, loss

    value_and_grad = jax.value_and_grad(potential, has_aux=True)

    def move(z, grad, grad_sq, precond_state, eps, nb, ga, noise, indices, baseline, args,
             kwargs):
        """One SGLD step of one setting from z; the minibatch and the noise are given."""
        metric, precond_state = precond.update(grad, precond_state)
        if plain_metric:
            z_new = jax.tree.map(lambda z, g, xi: z - 0.5 * eps * g + jnp.sqrt(eps) * xi,
                                 z, grad, noise)
        else:
            z_new = jax.tree.map(
                lambda z, g, G, xi: z - 0.5 * eps * G * g + jnp.sqrt(eps * G) * xi,
                z, grad, metric, noise)
        (energy, loss), grad_new = value_and_grad(z_new, indices, nb, ga, args, kwargs)
        grad_new_sq = sq_norm(grad_new)
        if plain_metric:
            accept = mala_acceptance(grad_sq, grad_new_sq, eps)
        else:
            accept = mala_acceptance(weighted_sq_norm(metric, grad),
                                     weighted_sq_norm(metric, grad_new), eps)
        finite = (jnp.isfinite(energy) & jnp.isfinite(loss) & jnp.isfinite(grad_new_sq)
                  & (loss - init_loss <= threshold))
        return z_new, grad_new, grad_new_sq, precond_state, loss - baseline, accept, finite

    moves = jax.vmap(move, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None, None, None))

    def chain(key, eps, nb, ga, args, kwargs, reference_eval):
        num_settings = eps.shape[0]
        key, batch_key = jax.random.split(key)
        indices = draw_indices(plates, minibatch, batch_key)
        (_, _), grad = jax.vmap(
            lambda n_, g_: value_and_grad(reference, indices, n_, g_, args, kwargs))(nb, ga)
        z = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_settings, *x.shape)), reference)
        state = _Chains(
            z=z, grad=grad, grad_sq=jax.vmap(sq_norm)(grad),
            mean_excess_loss=jnp.zeros(num_settings, jnp.result_type(float)),
            mean_count=jnp.zeros(num_settings, jnp.int32),
            diverged_at=jnp.full(num_settings, -1, jnp.int32),
            precond_state=jax.vmap(precond.init)(z), i=jnp.zeros((), jnp.int32), key=key)

        def step(state: _Chains, active):
            """One SGLD step at every setting; an inactive step (padding) changes nothing."""
            key, noise_key, batch_key = jax.random.split(state.key, 3)
            noise = normal_like(noise_key, reference)
            indices = draw_indices(plates, minibatch, batch_key)
            if control_variate:
                baseline = _model.energy_and_loss(info, args, kwargs, reference, indices)[1]
            else:
                baseline = jnp.asarray(init_loss)
            z, grad, grad_sq, precond_state, excess, accept, finite = moves(
                state.z, state.grad, state.grad_sq, state.precond_state, eps, nb, ga, noise,
                indices, baseline, args, kwargs)
            i = state.i + 1
            counted = i > num_warmup
            count = jnp.where(counted, state.mean_count + 1, state.mean_count)
            mean = jnp.where(
                counted,
                state.mean_excess_loss + (excess - state.mean_excess_loss) / jnp.maximum(count, 1),
                state.mean_excess_loss)
            diverged_at = jnp.where((state.diverged_at < 0) & ~finite, i, state.diverged_at)
            new = _Chains(z, grad, grad_sq, mean.astype(state.mean_excess_loss.dtype), count,
                          diverged_at.astype(jnp.int32), precond_state, i, key)
            new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
            return new, jnp.where(active, accept, 0.0)

        def block(state, b):
            """``thinning`` steps, then the statistics of the position reached."""
            def inner(carry, k):
                state, accept_sum = carry
                state, accept = step(state, b * thinning + k >= pad)
                return (state, accept_sum + accept), None

            (state, accept_sum), _ = jax.lax.scan(
                inner, (state, jnp.zeros(num_settings)), jnp.arange(thinning))
            distance = jnp.sqrt(jax.vmap(sq_norm)(
                jax.tree.map(lambda z, r: z - r, state.z, reference)))
            observable = jax.vmap(
                lambda z: _model.energy_and_loss(info, args, kwargs, z, evaluation)[1])(state.z)
            return state, (state.mean_excess_loss, state.mean_count, accept_sum / thinning,
                           distance, state.diverged_at, observable - reference_eval)

        # one loop over blocks of ``thinning`` steps, burn-in included, so that the step is
        # compiled once; the burn-in is padded at its start with inactive steps to whole blocks
        _, out = jax.lax.scan(block, state, jnp.arange(warmup_blocks + num_draws))
        out = jax.tree.map(lambda x: x[warmup_blocks:], out)
        return out  # each [draw, setting]

    @eqx.filter_jit
    def program(keys, eps, nb, ga, args, kwargs):
        reference_eval = _model.energy_and_loss(info, args, kwargs, reference, evaluation)[1]
        return jax.vmap(chain, in_axes=(0, None, None, None, None, None, None))(
            keys, eps, nb, ga, args, kwargs, reference_eval)

    dtype = jnp.result_type(float)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_chains)
    args, kwargs = _model.as_jax_arrays((model_args, model_kwargs))
    out = program(keys, jnp.asarray(step_size, dtype), jnp.asarray(nbeta, dtype),
                  jnp.asarray(gamma, dtype), args, kwargs)
    # [chain, draw, setting] -> [setting, chain, draw]
    return {name: np.moveaxis(np.asarray(value), 2, 0) for name, value in zip(FIELDS, out,
                                                                             strict=True)}
