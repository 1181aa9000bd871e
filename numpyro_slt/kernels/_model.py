"""What the SGLD kernel needs to know about a model, and how it evaluates the potential.

Inspection traces the model once, with every subsampled plate given the indices ``0..B-1``, and
reads the marks left by :mod:`numpyro_slt.handlers`: the likelihood sites and their nβ, the
latent sites and their localization centers, the ``numpyro.deterministic`` sites, and the
subsampled plates (full size N, minibatch size B). It refuses what SG-MCMC cannot sample: a
latent site inside a subsampled plate, and a prior that cannot be drawn from.

Evaluation follows NumPyro's ``potential_energy`` but splits the sum into its two parts,

    U(u) = nβ·L_B(w) + (−log prior(u)),

with u the unconstrained coordinates, w = T(u) the constrained ones, and L_B the minibatch mean
loss per observation (NumPyro's plate already scales a minibatch by N / B).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import _unconstrain_reparam
from numpyro.primitives import Messenger

from ..handlers import (
    is_latent_site,
    is_likelihood_site,
    local_latent_message,
    subsampled_plates_of,
    temper,
)

PyTree = Any


class plate_indices(Messenger):
    """Give subsampled plates the indices in ``indices``; others get a fixed batch.

    A subsampled plate not named in ``indices`` gets ``0..B-1`` when ``fallback="first"`` or a
    fixed random batch (drawn once with ``PRNGKey(0)``) when ``fallback="fixed"``. It also checks
    that no plate asks for a minibatch larger than its data.
    """

    def __init__(
        self,
        fn: Callable | None = None,
        indices: Mapping[str, jnp.ndarray] | None = None,
        fallback: str = "first",
    ):
        self.indices = dict(indices or {})
        self.fallback = fallback
        self.plates: dict[str, tuple[int, int]] = {}
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] != "plate":
            return
        size, subsample_size = msg["args"]
        if subsample_size is None or subsample_size == size:
            return
        if subsample_size > size:
            raise ValueError(
                f"plate {msg['name']!r} asks for subsample_size={subsample_size} but holds only "
                f"size={size} items; use subsample_size <= {size}"
            )
        self.plates[msg["name"]] = (int(size), int(subsample_size))
        if msg["name"] in self.indices:
            msg["value"] = self.indices[msg["name"]]
        elif self.fallback == "fixed":
            msg["value"] = fixed_batch(size, subsample_size)
        else:
            msg["value"] = jnp.arange(subsample_size)


def fixed_batch(size: int, batch: int) -> jnp.ndarray:
    """The fixed evaluation batch of a plate (N = ``size``, B = ``batch``): B distinct items drawn
    once with ``PRNGKey(0)``, what a replayed model (ArviZ, the kept draws' deterministic sites)
    sees."""
    return jax.random.choice(jax.random.PRNGKey(0), size, (batch,), replace=False)


@dataclass(frozen=True)
class ReplayModel:
    """``model`` with NumPy arguments made JAX arrays and a fixed batch for subsampled plates."""

    model: Callable

    def __call__(self, *args, **kwargs):
        args, kwargs = as_jax_arrays((args, kwargs))
        return plate_indices(self.model, fallback="fixed")(*args, **kwargs)

    # The replay of a model counts as that model: ``numpyro.infer.Gibbs`` requires the blocks'
    # ``kernel.model`` to be equal, and another block holds the model itself.
    def __eq__(self, other: object) -> bool:
        target = other.model if isinstance(other, ReplayModel) else other
        return target == self.model

    def __hash__(self) -> int:
        return hash(self.model)


@dataclass(frozen=True)
class ModelInfo:
    """The static facts the kernel reads off one trace of the (tempered, localized) model."""

    model: Callable
    nbeta: float
    likelihood_sites: tuple[str, ...]
    latent_sites: tuple[str, ...]
    supports: dict[str, Any] = field(repr=False)
    centers: dict[str, jnp.ndarray] = field(repr=False)  # constrained localization centers
    gamma: dict[str, float]
    subsampled_plates: dict[str, tuple[int, int]]
    # n, the observations L_n averages over: the count all tempered sites share (``slt_n``)
    n: float = float("nan")
    # the model's numpyro.deterministic sites (not the sites frozen by restrict), kept with the
    # draws
    deterministic_sites: tuple[str, ...] = ()

    @property
    def localized(self) -> bool:
        return len(self.centers) == len(self.latent_sites)


def inspect_model(model: Callable, model_args: tuple, model_kwargs: dict) -> ModelInfo:
    """Trace ``model`` once and collect the facts of :class:`ModelInfo`.

    A model whose observed sites carry no temper marks is the ordinary posterior, β = 1: it
    gets ``temper(model, nbeta=n, n=n, factors="prior")``, every log-likelihood unscaled
    (``numpyro.factor`` terms stay as they are). Here n is the count its observed sites share
    or, when they differ in size, their total Σ_s n_s, so that ``loss`` is the mean negative
    log-likelihood per observation and nβ·L_n the total.
    """
    trace, plates = _trace(model, model_args, model_kwargs)
    likelihood = [s for s in trace.values() if is_likelihood_site(s)]
    if not likelihood:
        raise ValueError(
            "model has no observed sites: SGLD needs a likelihood, i.e. at least one "
            "numpyro.sample(..., obs=data) site (or a numpyro.factor site declared a likelihood "
            "with slt.temper(model, nbeta, factors={name: n_s}))"
        )
    tempered = [s for s in likelihood if "slt_nbeta" in s["infer"]]
    if not tempered:
        counter = temper(model, 1.0, n=1, factors="prior")
        counts = [s["infer"]["slt_site_n"] for s in _trace(counter, model_args, model_kwargs)[0]
                  .values() if is_likelihood_site(s)]
        n = counts[0] if len(set(counts)) == 1 else sum(counts)
        model = temper(model, nbeta=float(n), n=n, factors="prior")
        trace, plates = _trace(model, model_args, model_kwargs)
        likelihood = [s for s in trace.values() if is_likelihood_site(s)]
        tempered = likelihood
    elif len(tempered) != len(likelihood):
        untempered = sorted(s["name"] for s in likelihood if "slt_nbeta" not in s["infer"])
        raise ValueError(f"observed sites {untempered} are not tempered; temper the whole model")
    nbetas = {float(s["infer"]["slt_nbeta"]) for s in tempered}
    counts = {int(s["infer"]["slt_n"]) for s in tempered}
    if len(nbetas) != 1:
        raise ValueError(f"observed sites were tempered with different nbeta values {nbetas}")
    latent = [s for s in trace.values() if is_latent_site(s)]
    if not latent:
        raise ValueError("model has no latent sites to sample (all frozen or observed)")
    full_sizes = {name: size for name, (size, _) in plates.items()}
    for site in latent:
        subsampled = subsampled_plates_of(site, full_sizes)
        if subsampled:
            raise ValueError(local_latent_message(site["name"], subsampled))
    return ModelInfo(
        model=model,
        nbeta=nbetas.pop(),
        likelihood_sites=tuple(s["name"] for s in likelihood),
        latent_sites=tuple(s["name"] for s in latent),
        supports={s["name"]: s["fn"].support for s in latent},
        centers={s["name"]: s["infer"]["slt_center"].value
                 for s in latent if "slt_center" in s["infer"]},
        gamma={s["name"]: s["infer"]["slt_gamma"] for s in latent if "slt_gamma" in s["infer"]},
        subsampled_plates=plates,
        n=float(counts.pop()) if len(counts) == 1 else float("nan"),
        deterministic_sites=tuple(
            name for name, s in trace.items()
            if s["type"] == "deterministic" and not (s.get("infer") or {}).get("slt_frozen")),
    )


_NEEDS_VALUES = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


def _trace(model: Callable, args: tuple, kwargs: dict):
    """One trace of ``model`` for its structure: site names, marks, supports and plates.

    The model runs abstractly (``jax.eval_shape``: shapes only, nothing computed or
    compiled); run eagerly, a network's forward pass would dispatch and compile op by op, a large
    share of a short run's fixed cost. A model that needs concrete values (Python
    control flow on its data) or whose supports depend on its data is traced eagerly instead.
    """
    captured: dict[str, Any] = {}

    def structure(rng_key):
        # the data stay concrete (closed over): checks of their values in the model still run
        captured["trace"], captured["plates"] = _eager_trace(model, args, kwargs, rng_key)

    try:
        jax.eval_shape(structure, jax.random.PRNGKey(0))
    except _NEEDS_VALUES:
        return _eager_trace(model, args, kwargs)
    trace = captured["trace"]
    try:  # a support computed from traced values is of no use outside the trace
        supports = [s["fn"].support for s in trace.values() if s["type"] == "sample"]
        traced = any(isinstance(leaf, jax.core.Tracer)
                     for leaf in jax.tree.leaves([getattr(c, "__dict__", {}) for c in supports]))
    except jax.errors.UnexpectedTracerError:
        traced = True
    if traced:
        return _eager_trace(model, args, kwargs)
    return trace, captured["plates"]


def _eager_trace(model: Callable, args: tuple, kwargs: dict, rng_key: Any = None):
    if rng_key is None:  # concrete values wanted, even when called while JAX traces
        with jax.ensure_compile_time_eval():
            return _eager_trace(model, args, kwargs, 0)
    indexed = plate_indices(model)
    watched = _current_site(handlers.seed(indexed, rng_seed=rng_key))
    try:
        trace = handlers.trace(watched).get_trace(*args, **kwargs)
    except NotImplementedError as error:
        site = watched.current
        if site is None:
            raise
        raise ValueError(
            f"the prior of latent site {site['name']!r} ({type(site['fn']).__name__}) cannot be "
            f"sampled (an improper prior such as ImproperUniform), and reading the model's "
            f"structure draws each prior once. Give {site['name']!r} a proper prior, or "
            f"localize it: slt.localize(model, center, gamma) (gamma=0 is a flat prior whose "
            f"draw is the center)"
        ) from error
    return trace, dict(indexed.plates)


class _current_site(Messenger):
    """Remembers the latent site being drawn (``current``: its message while NumPyro samples
    it), so that a failed draw can name its site."""

    def __init__(self, fn: Callable | None = None):
        self.current: dict | None = None
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if is_latent_site(msg) and msg.get("value") is None:
            self.current = msg

    def postprocess_message(self, msg: dict) -> None:
        self.current = None


def unconstrain(info: ModelInfo, values: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """u = T⁻¹(w) for each latent site."""
    return {k: biject_to(info.supports[k]).inv(jnp.asarray(values[k])) for k in info.latent_sites}


def constrain(info: ModelInfo, z: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """w = T(u) for each latent site."""
    return {k: biject_to(info.supports[k])(z[k]) for k in info.latent_sites}


def postprocess(info: ModelInfo, model_args: tuple,
                model_kwargs: dict) -> Callable[[Mapping[str, jnp.ndarray]], dict]:
    """What ``MCMC`` keeps of a position z: w = T(u) for each latent site and, as NUTS keeps
    them, the value of every ``numpyro.deterministic`` site of the model at w.

    The deterministic sites come from replaying the model at w (one forward pass per kept draw,
    only when the model has such sites), with every subsampled plate on its fixed evaluation
    batch (:func:`fixed_batch`, the batch ArviZ's replay sees). A deterministic inside a
    subsampled plate therefore holds B values, those of the same B items at every draw, so its
    draws can be compared and averaged; it is not a value over the full data. Sites frozen by
    :func:`~numpyro_slt.restrict` are not kept.
    """
    if not info.deterministic_sites:
        return partial(constrain, info)
    with jax.ensure_compile_time_eval():
        batch = {name: fixed_batch(size, b) for name, (size, b) in info.subsampled_plates.items()}
    model_args, model_kwargs = as_jax_arrays((model_args, model_kwargs))

    def draws(z: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        values = constrain(info, z)
        replay = handlers.substitute(plate_indices(info.model, indices=batch), data=values)
        trace = handlers.trace(replay).get_trace(*model_args, **model_kwargs)
        return {**values, **{name: trace[name]["value"] for name in info.deterministic_sites}}

    return draws


def energy_and_loss(
    info: ModelInfo,
    model_args: tuple,
    model_kwargs: dict,
    z: dict[str, jnp.ndarray],
    indices: Mapping[str, jnp.ndarray],
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Return (U(u), L_B(w)) on the minibatch given by the plate ``indices``.

    U includes the log-Jacobian of u ↦ w, exactly as NumPyro's ``potential_energy``; L_B is the
    untempered mean loss per observation, the tempered negative log-likelihood divided by nβ.
    """
    model_args, model_kwargs = as_jax_arrays((model_args, model_kwargs))
    model = plate_indices(info.model, indices=indices)
    model = handlers.substitute(model, substitute_fn=partial(_unconstrain_reparam, z))
    trace = handlers.trace(model).get_trace(*model_args, **model_kwargs)
    nll = jnp.zeros(())
    prior_energy = jnp.zeros(())
    for site in trace.values():
        if site["type"] != "sample":
            continue
        log_prob = _site_log_prob(site)
        if is_likelihood_site(site):
            nll = nll - log_prob
        else:
            prior_energy = prior_energy - log_prob
    return nll + prior_energy, nll / info.nbeta


def as_jax_arrays(tree: PyTree) -> PyTree:
    """NumPy arrays in model arguments become JAX arrays (traced minibatch indices index them)."""
    return jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, tree)


def _site_log_prob(site: dict) -> jnp.ndarray:
    if site["intermediates"]:
        log_prob = site["fn"].log_prob(site["value"], site["intermediates"])
    else:
        log_prob = site["fn"].log_prob(site["value"])
    if site.get("scale") is not None:
        log_prob = site["scale"] * log_prob
    return jnp.sum(log_prob)
