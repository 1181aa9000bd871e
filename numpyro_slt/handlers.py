"""Model transforms: tempering, localization and weight restriction.

Each transform is a NumPyro effect handler (a :class:`numpyro.primitives.Messenger`), so it composes
with NumPyro's own handlers and with the others. Together they turn a model with likelihood
p(y | x, w) and any prior into the localized tempered posterior of docs/formulas.md,

    p(w) ∝ exp( −nβ·L_n(w) − (γ/2)·‖u(w) − u(w*)‖² ),

where L_n(w) = (1/n)·Σ_i ℓ_i(w) is the mean negative log-likelihood per observation and u(·) maps a
site to NumPyro's unconstrained coordinates (the identity for real-valued weights).

The handlers leave marks in ``msg["infer"]`` that the SGLD kernel and the estimators read:

* ``slt_nbeta`` and ``slt_n`` on every tempered observed site;
* ``slt_center`` (constrained value) and ``slt_gamma`` on every localized latent site;
* ``slt_frozen`` on every latent site frozen by :func:`restrict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions.transforms import biject_to
from numpyro.primitives import Messenger

__all__ = ["temper", "localize", "restrict", "is_likelihood_site", "is_latent_site"]


def is_likelihood_site(msg: Mapping[str, Any]) -> bool:
    """True for an observed ``sample`` site that is a likelihood term.

    ``numpyro.factor`` sites (observed sites of the ``Unit`` distribution) are potentials, not
    observations: they are neither tempered nor counted in L_n.
    """
    return (
        msg["type"] == "sample"
        and bool(msg.get("is_observed"))
        and not isinstance(msg["fn"], dist.Unit)
    )


def is_latent_site(msg: Mapping[str, Any]) -> bool:
    """True for a latent (unobserved) ``sample`` site."""
    return msg["type"] == "sample" and not msg.get("is_observed")


class ArrayMark:
    """An array carried in a site's ``infer`` dict (the center of :class:`localize`).

    JAX compares pytree metadata with ``==`` (a NumPyro trace's ``infer`` dicts are metadata when
    the trace is flattened, e.g. by ``az.from_numpyro``'s ``jax.eval_shape``), and arrays cannot
    be compared that way; a mark compares by identity instead. Read the array as ``.value``.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def _with_infer(msg: dict, **marks: Any) -> None:
    msg["infer"] = {**(msg.get("infer") or {}), **marks}


class temper(Messenger):
    """Scale the likelihood so that its total is −nβ·L_n(w).

    Every observed site s of the wrapped model has its log-likelihood multiplied by β_s = nβ / n_s,
    where n_s is the number of observations the site stands for: the product of the *full* sizes
    of its enclosing plates times the remaining batch dimensions of its log-probability (so a
    ``(sequences, positions)`` array observed inside a plate over sequences counts tokens). Inside
    ``plate(size=N, subsample_size=B)`` NumPyro already scales the minibatch by N / B, so the
    tempered total stays an unbiased estimate of −nβ·L_n(w).

    With several observed sites of one size n, L_n is the total negative log-likelihood divided by
    n. When the sites differ in size, pass ``n`` explicitly; otherwise each site is normalised by
    its own count, i.e. L_n = Σ_s (mean NLL of site s).

    :param fn: a NumPyro model (callable).
    :param nbeta: the inverse temperature times n, nβ > 0.
    :param n: optional number of observations n; defaults to each site's own count.
    """

    def __init__(self, fn: Callable | None = None, nbeta: float = 1.0, n: int | None = None):
        nbeta = _positive_float(nbeta, "nbeta", "e.g. nbeta=30.0 (the paper's value)")
        if n is not None and (int(n) != n or n <= 0):
            raise ValueError(
                f"n must be a positive integer (the number of observations), got {n!r}"
            )
        self.nbeta = nbeta
        self.n = None if n is None else int(n)
        self._plate_sizes: dict[str, int] = {}
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate":
            self._plate_sizes[msg["name"]] = int(msg["args"][0])
            return
        if not is_likelihood_site(msg):
            return
        n_site = self.n if self.n is not None else self._observation_count(msg)
        beta = self.nbeta / n_site
        msg["scale"] = beta if msg.get("scale") is None else msg["scale"] * beta
        _with_infer(msg, slt_nbeta=self.nbeta, slt_n=n_site)

    def _observation_count(self, msg: dict) -> int:
        """n_s = Π(batch dims of the log-probability), each subsampled plate dim at full size."""
        batch_shape = tuple(msg["fn"].batch_shape)
        count = math.prod(batch_shape)
        for frame in msg.get("cond_indep_stack", ()):
            full = self._plate_sizes.get(frame.name, frame.size)
            if frame.size and full != frame.size:
                count = count // frame.size * full
        return max(int(count), 1)


class _NamesSites(Messenger):
    """A handler given site names by the user (``names``): it records the latent sites it sees in
    one run of the model and, when the run ends without error, raises a ValueError for the names
    that matched none (the message is ``unknown_message`` filled with the unknown names and the
    latent sites seen)."""

    unknown_message = "{unknown} are not latent sites of the model; latent sites: {seen}"

    def __init__(self, fn: Callable | None, names: Iterable[str]):
        self._names = set(names)
        self._seen: set[str] = set()
        super().__init__(fn)

    def __enter__(self):
        self._seen = set()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        result = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            unknown = sorted(self._names - self._seen)
            if unknown:
                raise ValueError(self.unknown_message.format(unknown=unknown,
                                                             seen=sorted(self._seen)))
        return result


class localize(_NamesSites):
    """Replace the prior of each latent site by a Gaussian around the center, N(u*, γ^{-1/2}·I).

    The Gaussian lives in NumPyro's unconstrained coordinates u (the identity for real-valued
    weights), so its potential is (γ/2)·‖u − u*‖² with u* the unconstrained image of
    ``center[name]``. With γ = 0 the prior becomes flat (improper) and only the tempered
    likelihood remains.

    :param fn: a NumPyro model.
    :param center: mapping site name → value w* (constrained, the shape of the site). Every latent
        site of the model must be named, and every name must be a latent site.
    :param gamma: localization strength γ ≥ 0.
    """

    unknown_message = ("center names {unknown} that are not latent sites of the model; latent "
                       "sites seen: {seen}. Remove or rename them.")

    def __init__(
        self,
        fn: Callable | None = None,
        center: Mapping[str, Any] | None = None,
        gamma: float = 1.0,
    ):
        if center is None or not isinstance(center, Mapping) or len(center) == 0:
            raise ValueError(
                "center must be a non-empty dict {site name: value}, e.g. the trained parameters "
                "w* returned by MAP/SGD; got " + repr(type(center).__name__)
            )
        try:
            gamma = float(gamma)
        except (TypeError, ValueError):
            raise ValueError(f"gamma must be a number >= 0, got {gamma!r}") from None
        if not (gamma >= 0.0 and math.isfinite(gamma)):
            raise ValueError(
                f"gamma must be finite and >= 0 (localization strength), got {gamma!r}"
            )
        self.center = {name: jnp.asarray(value) for name, value in center.items()}
        self.gamma = gamma
        super().__init__(fn, self.center)

    def process_message(self, msg: dict) -> None:
        if not is_latent_site(msg) or msg["infer"].get("slt_frozen"):
            return
        name = msg["name"]
        if name not in self.center:
            raise ValueError(
                f"center misses the latent site {name!r}; add center[{name!r}] (its trained value)"
            )
        self._seen.add(name)
        prior = msg["fn"]
        value = self.center[name]
        if tuple(value.shape) != tuple(prior.shape()):
            raise ValueError(
                f"center[{name!r}] has shape {tuple(value.shape)} but the site has shape "
                f"{tuple(prior.shape())}; pass a value of the site's shape"
            )
        msg["fn"] = _localized_prior(prior, value, self.gamma)
        _with_infer(msg, slt_center=ArrayMark(value), slt_gamma=self.gamma)


def _localized_prior(prior: dist.Distribution, value: jnp.ndarray, gamma: float):
    """N(u*, γ^{-1/2}) in unconstrained coordinates, pushed forward to the prior's support."""
    support = prior.support
    batch_shape, event_shape = prior.batch_shape, prior.event_shape
    if gamma == 0.0:
        return dist.ImproperUniform(support, batch_shape, event_shape)
    transform = biject_to(support)
    unconstrained_center = transform.inv(value)
    event_ndim = jnp.ndim(unconstrained_center) - len(batch_shape)
    # not validated: NumPyro's check of a concrete center compiles a small program per site
    # shape each time the model runs eagerly; a non-finite center is caught by the kernel's
    # check that L_n(w*) is finite
    base = dist.Normal(unconstrained_center, gamma**-0.5, validate_args=False).to_event(event_ndim)
    if _is_real(support):
        return base
    return dist.TransformedDistribution(base, transform)


def _is_real(support: Any) -> bool:
    from numpyro.distributions import constraints

    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


class restrict(_NamesSites):
    """Sample only the latent sites in ``sites``; freeze every other latent site.

    This is the weight-restricted posterior of docs/formulas.md: with w = (u, c) and c the
    selected sites, p(c) ∝ exp(−nβ·L_n(u*, c) − (γ/2)‖c − c*‖²). A frozen site becomes a
    ``deterministic`` site whose value is ``values[name]`` when given, otherwise its localization
    center (so apply ``restrict`` outside :func:`localize`). Frozen sites are not sampled, not
    collected and carry no prior term.

    :param fn: a NumPyro model.
    :param sites: names of the latent sites to keep sampling (at least one).
    :param values: optional frozen values for the other latent sites.
    """

    unknown_message = "sites {unknown} are not latent sites of the model; valid names: {seen}"

    def __init__(
        self,
        fn: Callable | None = None,
        sites: Iterable[str] = (),
        values: Mapping[str, Any] | None = None,
    ):
        if isinstance(sites, str):
            sites = (sites,)
        self.sites = frozenset(sites)
        if not self.sites:
            raise ValueError("sites must name at least one latent site to sample, e.g. ['w']")
        self.values = {k: jnp.asarray(v) for k, v in (values or {}).items()}
        super().__init__(fn, self.sites)

    def process_message(self, msg: dict) -> None:
        if not is_latent_site(msg):
            return
        name = msg["name"]
        self._seen.add(name)
        if name in self.sites:
            return
        if name in self.values:
            value = self.values[name]
        elif "slt_center" in msg["infer"]:
            value = msg["infer"]["slt_center"].value
        else:
            raise ValueError(
                f"restrict cannot freeze {name!r}: no value. Apply restrict outside localize "
                f"(restrict(localize(model, center, gamma), sites)) "
                f"or pass values={{{name!r}: ...}}"
            )
        if tuple(jnp.shape(value)) != tuple(msg["fn"].shape()):
            raise ValueError(
                f"values[{name!r}] has shape {tuple(jnp.shape(value))}, the site has shape "
                f"{tuple(msg['fn'].shape())}"
            )
        msg["type"] = "deterministic"
        msg["value"] = value
        _with_infer(msg, slt_frozen=True)


def _positive_float(value: Any, name: str, hint: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}; {hint}") from None
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}; {hint}")
    return value
