"""The center w*: a local minimum of the loss, where :func:`~numpyro_slt.localize` centers.

The LLC λ̂(w*) = nβ·(E_w[L_n(w)] − L_n(w*)) of docs/formulas.md is defined at a local minimum of
L_n; at a point with a non-zero gradient the localized posterior drifts downhill and λ̂ is biased
(it can even turn negative). :func:`find_center` finds such a point for any NumPyro model and
checks that the gradient vanishes there.

Objectives (full batch, every subsampled plate evaluated on all of its data):

* ``method="map"``:  maximize log p(w) + Σ_i log p(y_i | x_i, w)  (the log joint; ``numpyro.factor``
  terms included);
* ``method="mle"``:  maximize Σ_i log p(y_i | x_i, w) = −n·L_n(w)  (observed sites only; priors
  and factors ignored).

Both are optimized in NumPyro's unconstrained coordinates u (w = T(u) with T = ``biject_to`` of
the site's support) but *without* the log-Jacobian of T, so the optimum is the MAP / MLE of w
itself, not of u. Adam runs first, then L-BFGS polishes the result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.util import log_density
from numpyro.primitives import Messenger

from ._validate import nonnegative_int, positive_int, positive_number
from .handlers import is_latent_site, is_likelihood_site

__all__ = ["find_center"]

METHODS = ("map", "mle")


class full_batch(Messenger):
    """Give every subsampled plate all of its indices 0..N−1 (and hence the scale 1).

    ``numpyro.plate(name, N, subsample_size=B)`` asks the handler stack for B random indices and
    scales its sites by N / B; here it gets ``arange(N)`` with ``subsample_size = N``.
    """

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "plate":
            return
        size, subsample_size = msg["args"]
        if subsample_size is not None and subsample_size != size:
            msg["args"] = (size, size)
            msg["value"] = jnp.arange(size)


def find_center(
    model: Callable,
    *model_args: Any,
    method: str = "map",
    num_steps: int = 2_000,
    learning_rate: float = 1e-2,
    lbfgs_steps: int = 200,
    init: Mapping[str, Any] | None = None,
    rng_key: jax.Array | None = None,
    guide: AutoDelta | None = None,
    guide_params: Any = None,
    tolerance: float = 1e-3,
    **model_kwargs: Any,
) -> dict[str, jnp.ndarray]:
    """The center w* of ``model``: its MAP or maximum-likelihood point, checked to be a minimum.

    The objective, evaluated on the full data (every ``numpyro.plate(..., subsample_size=B)``
    gets all of its N indices), is

    * ``method="map"``: maximize log p(w) + Σ_i log p(y_i | x_i, w) (the log joint);
    * ``method="mle"``: maximize Σ_i log p(y_i | x_i, w) = −n·L_n(w), the likelihood alone, so
      that w* minimizes the empirical loss L_n of docs/formulas.md (priors and ``numpyro.factor``
      terms are ignored).

    It is optimized in NumPyro's unconstrained coordinates u (w = T(u), T = ``biject_to`` of the
    site's support) without T's log-Jacobian, so the optimum is the MAP / MLE of w itself:
    ``num_steps`` Adam steps at ``learning_rate``, then up to ``lbfgs_steps`` L-BFGS steps. The
    loss minimized is f(u) = −objective / n, with n the number of observations of the largest
    observed site (1 without observed site), so the step sizes do not depend on n.

    **Minimum check.** At the result, the gradient of f with respect to each site's unconstrained
    coordinates is computed; a site whose root-mean-square gradient ‖∂f/∂u_site‖ / √d_site
    (d_site its number of unconstrained coordinates) exceeds ``tolerance`` gets a
    ``UserWarning`` naming the site, its gradient norm and the fix. For ``method="mle"``,
    ∂f/∂w = ∇L_n(w), the quantity whose non-zero value biases λ̂(w*).

    With ``guide`` (a fitted :class:`~numpyro.infer.autoguide.AutoDelta`) and ``guide_params``
    (its ``svi_result.params``, or the ``SVIRunResult`` itself), no optimization runs: the
    result is ``guide.median(guide_params)``, checked the same way with ``method``'s objective.

    :param model: a NumPyro model (plain: before :func:`~numpyro_slt.temper` /
        :func:`~numpyro_slt.localize`).
    :param model_args: positional arguments of ``model`` (the data).
    :param method: ``"map"`` or ``"mle"``.
    :param num_steps: Adam steps, ≥ 1.
    :param learning_rate: Adam's learning rate, > 0.
    :param lbfgs_steps: L-BFGS steps after Adam, ≥ 0 (0 skips it).
    :param init: optional starting values {site: constrained value}; the other sites start
        uniformly in (−2, 2) in unconstrained coordinates (NumPyro's ``init_to_uniform``).
    :param rng_key: key for that random start (default ``PRNGKey(0)``).
    :param guide: optional fitted ``AutoDelta`` guide of ``model``.
    :param guide_params: its parameters (required with ``guide``).
    :param tolerance: largest accepted RMS gradient per site of f, > 0.
    :param model_kwargs: keyword arguments of ``model``. A model keyword with the name of one
        of the options above must be bound with ``functools.partial`` first.
    :return: {site name: constrained value of the site's shape} for every latent site, the
        ``center`` that ``slt.localize(slt.temper(model, nbeta), center, gamma)`` expects.
    """
    method = _check_method(method)
    num_steps = positive_int("num_steps", num_steps)
    learning_rate = positive_number("learning_rate", learning_rate)
    lbfgs_steps = nonnegative_int("lbfgs_steps", lbfgs_steps)
    tolerance = positive_number("tolerance", tolerance)
    rng_key = jax.random.PRNGKey(0) if rng_key is None else rng_key

    fullbatch_model = full_batch(model)
    sites, start, n = _latent_sites(fullbatch_model, model_args, model_kwargs, init, rng_key)
    loss = _loss(fullbatch_model, model_args, model_kwargs, sites, method, n)

    if guide is not None:
        u = _from_guide(guide, guide_params, sites)
    else:
        u = _optimize(*loss, start, num_steps, learning_rate, lbfgs_steps)
    _check_minimum(*loss, u, tolerance, method)
    return {name: sites[name].transform(value) for name, value in u.items()}


class _Site:
    """A latent site: its constrained shape and the bijection T from unconstrained space."""

    def __init__(self, msg: Mapping[str, Any]):
        self.name = msg["name"]
        support = msg["fn"].support
        if support.is_discrete:
            raise ValueError(
                f"model has the discrete latent site {self.name!r}; find_center optimizes "
                "continuous sites only: observe, enumerate out or fix it with "
                "numpyro.handlers.condition first"
            )
        self.transform = biject_to(support)
        self.shape = tuple(jnp.shape(msg["value"]))


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {METHODS} ('map': maximize the log joint, 'mle': the "
            f"likelihood alone), got {method!r}"
        )
    return method


def _latent_sites(model, model_args, model_kwargs, init, rng_key):
    """One trace of the model at the starting point: its latent sites and their start u₀."""
    if init is not None and not isinstance(init, Mapping):
        raise ValueError(
            f"init must be a dict {{site name: constrained value}}, got {type(init).__name__}"
        )
    seeded = handlers.substitute(handlers.seed(model, rng_key), substitute_fn=init_to_uniform)
    trace = handlers.trace(seeded).get_trace(*model_args, **model_kwargs)
    latent = [msg for msg in trace.values() if is_latent_site(msg)]
    if not latent:
        raise ValueError(
            "model has no latent sample site, so there is no center to find; check that model "
            "samples its parameters with numpyro.sample (without obs=)"
        )
    sites = {msg["name"]: _Site(msg) for msg in latent}
    init = dict(init or {})
    unknown = sorted(set(init) - set(sites))
    if unknown:
        raise ValueError(
            f"init names {unknown} that are not latent sites of the model; latent sites: "
            f"{sorted(sites)}"
        )
    for name, value in init.items():
        if tuple(jnp.shape(value)) != sites[name].shape:
            raise ValueError(
                f"init[{name!r}] has shape {tuple(jnp.shape(value))} but the site has shape "
                f"{sites[name].shape}"
            )
    counts = [math.prod(msg["fn"].batch_shape) for msg in trace.values()
              if is_likelihood_site(msg)]
    n = max(counts, default=1)
    start = {name: site.transform.inv(jnp.asarray(init.get(name, trace[name]["value"])))
             for name, site in sites.items()}
    return sites, start, n


def _loss(model, model_args, model_kwargs, sites, method, n):
    """f(u, arrays) = −objective(T(u)) / n and the model's array arguments ``arrays``.

    The arrays are passed to every compiled program as arguments (not baked in as constants); the
    other arguments (sizes, flags) stay Python values.
    """
    leaves, treedef = jax.tree.flatten((model_args, model_kwargs))
    is_array = [isinstance(leaf, jax.Array | np.ndarray) for leaf in leaves]
    arrays = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]

    def objective(u, arrays):
        it = iter(arrays)
        args, kwargs = jax.tree.unflatten(
            treedef, [next(it) if a else leaf for leaf, a in zip(leaves, is_array, strict=True)])
        w = {name: sites[name].transform(value) for name, value in u.items()}
        conditioned = handlers.substitute(handlers.seed(model, 0), data=w)
        if method == "mle":
            conditioned = handlers.block(
                conditioned,
                hide_fn=lambda msg: msg["type"] == "sample" and not is_likelihood_site(msg))
        log_p, _ = log_density(conditioned, args, kwargs, {})
        return -log_p / n

    return objective, arrays


def _optimize(loss, arrays, u0, num_steps, learning_rate, lbfgs_steps):
    """Adam for ``num_steps``, then L-BFGS; the best finite iterate of L-BFGS is kept."""
    value = jax.jit(loss)
    if not jnp.isfinite(value(u0, arrays)):
        raise ValueError(
            "the objective is not finite at the starting point; pass init= with values inside "
            "the model's support (or another rng_key)"
        )
    adam = optax.adam(learning_rate)

    @jax.jit
    def run_adam(u, arrays):
        def step(carry, _):
            u, state = carry
            grads = jax.grad(loss)(u, arrays)
            updates, state = adam.update(grads, state, u)
            return (optax.apply_updates(u, updates), state), None

        (u, _), _ = jax.lax.scan(step, (u, adam.init(u)), None, length=num_steps)
        return u

    u = run_adam(u0, arrays)
    if not jnp.isfinite(value(u, arrays)):
        raise FloatingPointError(
            f"the objective became non-finite during {num_steps} Adam steps at "
            f"learning_rate={learning_rate}; lower learning_rate"
        )
    if lbfgs_steps:
        u = _lbfgs(loss, arrays, u, lbfgs_steps)
    return u


def _lbfgs(loss, arrays, u, num_steps):
    solver = optax.lbfgs()

    @jax.jit
    def run(u, arrays):
        def f(u):
            return loss(u, arrays)

        value_and_grad = optax.value_and_grad_from_state(f)

        def step(carry, _):
            u, state, best, best_value = carry
            value, grads = value_and_grad(u, state=state)
            updates, state = solver.update(grads, state, u, value=value, grad=grads, value_fn=f)
            u = optax.apply_updates(u, updates)
            value = f(u)
            better = jnp.isfinite(value) & (value <= best_value)
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old), u, best)
            return (u, state, best, jnp.where(better, value, best_value)), None

        carry = (u, solver.init(u), u, f(u))
        (_, _, best, _), _ = jax.lax.scan(step, carry, None, length=num_steps)
        return best

    return run(u, arrays)


def _from_guide(guide, guide_params, sites):
    if not isinstance(guide, AutoDelta):
        raise ValueError(
            f"guide must be a fitted numpyro.infer.autoguide.AutoDelta, got "
            f"{type(guide).__name__}; for another guide, pass its point estimate as init="
        )
    if guide_params is None:
        raise ValueError("guide_params is required with guide: pass svi_result.params")
    params = getattr(guide_params, "params", guide_params)
    median = guide.median(params)
    missing = sorted(set(sites) - set(median))
    if missing:
        raise ValueError(
            f"guide has no value for the latent sites {missing}; fit the AutoDelta guide on "
            "this model"
        )
    u = {}
    for name, site in sites.items():
        value = jnp.asarray(median[name])
        if tuple(value.shape) != site.shape:
            raise ValueError(
                f"guide's value of {name!r} has shape {tuple(value.shape)}, the site has shape "
                f"{site.shape}; fit the guide on this model and data"
            )
        u[name] = site.transform.inv(value)
    return u


def _check_minimum(loss, arrays, u, tolerance, method):
    """Warn for every site whose RMS gradient of f exceeds ``tolerance``."""
    grads = jax.jit(jax.grad(loss))(u, arrays)
    for name, grad in grads.items():
        norm = float(jnp.linalg.norm(jnp.ravel(grad)))
        size = max(int(np.size(grad)), 1)
        if not math.isfinite(norm) or norm > tolerance * math.sqrt(size):
            warnings.warn(
                f"find_center: site {name!r} is not at a minimum of the {method.upper()} "
                f"objective: its gradient norm is {norm:.3g} (> tolerance·√d = "
                f"{tolerance * math.sqrt(size):.3g}, d = {size}). An LLC at this point is "
                "biased; raise num_steps or lbfgs_steps, or try another learning_rate",
                UserWarning,
                stacklevel=3,
            )
