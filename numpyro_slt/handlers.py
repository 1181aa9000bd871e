"""Model transforms: tempering, localization and weight restriction.

Each transform is a NumPyro effect handler (a :class:`numpyro.primitives.Messenger`), so it composes
with NumPyro's own handlers and with the others. Together they turn a model with likelihood
p(y | x, w) and any prior into the localized tempered posterior of docs/formulas.md,

    p(w) ∝ exp( −nβ·L_n(w) − (γ/2)·‖u(w) − u(w*)‖² ),

where L_n(w) = (1/n)·Σ_i ℓ_i(w) is the mean negative log-likelihood per observation and u(·) maps a
site to NumPyro's unconstrained coordinates (the identity for real-valued weights).

The handlers leave marks in ``msg["infer"]`` that the SGLD kernel and the estimators read:

* ``slt_nbeta``, ``slt_n`` (the n of L_n) and ``slt_site_n`` (the site's own count n_s) on every
  tempered likelihood term: an observed site, or a ``numpyro.factor`` site declared a likelihood
  (``temper(..., factors={name: n_s})``, which also marks it ``slt_factor="likelihood"``);
* ``slt_factor="prior"`` on a ``numpyro.factor`` site that ``temper`` was told to leave alone;
* ``slt_center`` (constrained value) and ``slt_gamma`` on every localized latent site;
* ``slt_frozen`` on every latent site frozen by :func:`restrict`, and ``slt_block_of`` on the
  sampled site ``"<name>.free"`` that holds the selected elements of a site restricted by a mask.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.primitives import Messenger

from ._validate import positive_float

__all__ = ["temper", "localize", "restrict", "is_likelihood_site", "is_latent_site",
           "is_factor_site", "FlatPrior", "MaskedPrior"]

# The factor sites NumPyro itself adds for a latent site: the log-Jacobian of the unconstraining
# transform (``potential_energy``, SGLD's energy) and the density of a reparametrised site. They
# belong to the prior of that site, never to the likelihood.
_NUMPYRO_FACTOR = re.compile(r"^_.+_log_(det|prob)$")


def is_factor_site(msg: Mapping[str, Any]) -> bool:
    """True for a ``numpyro.factor`` site (an observed site of the ``Unit`` distribution)."""
    return (msg["type"] == "sample" and bool(msg.get("is_observed"))
            and isinstance(msg["fn"], dist.Unit))


def is_likelihood_site(msg: Mapping[str, Any]) -> bool:
    """True for a likelihood term: an observed ``sample`` site, or a ``numpyro.factor`` site that
    :class:`temper` was told is a likelihood (``factors={name: n_s}``).

    Any other ``numpyro.factor`` site is a potential of the prior: not counted in L_n.
    """
    if msg["type"] != "sample" or not msg.get("is_observed"):
        return False
    if isinstance(msg["fn"], dist.Unit):
        return (msg.get("infer") or {}).get("slt_factor") == "likelihood"
    return True


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


Factors = Literal["prior"] | Mapping[str, int | Literal["prior"]] | None


class temper(Messenger):
    """Scale the likelihood so that its total is −nβ·L_n(w).

    Every likelihood term s of the wrapped model has its log-likelihood multiplied by
    β = nβ / n, so that the tempered total is β·Σ_s log p(y_s | w) = −nβ·L_n(w) with

        L_n(w) = (1/n)·Σ_s Σ_i ℓ_{s,i}(w),   the total negative log-likelihood divided by n.

    Each observed site counts n_s observations: the product of the *full* sizes of its enclosing
    plates times the remaining batch dimensions of its log-probability (so a ``(sequences,
    positions)`` array observed inside a plate over sequences counts tokens). Inside
    ``plate(size=N, subsample_size=B)`` NumPyro already scales the minibatch by N / B, so the
    tempered total stays an unbiased estimate of −nβ·L_n(w).

    What n is: ``n`` when given; otherwise the count n_s the likelihood terms share (one site, or
    several of one size, e.g. two observations per datum). Terms of different sizes without ``n``
    raise a ``ValueError`` naming them and their sizes: nβ means β·n, so the choice of n (all
    observations? tokens only?) is the user's; pass ``n=``.

    ``numpyro.factor`` terms: a factor is an arbitrary log-density, so ``temper`` cannot know
    whether it is likelihood (to be scaled by β and counted in L_n) or prior (left alone). A
    factor site therefore raises a ``ValueError`` naming it, unless ``factors`` says which:
    ``factors={"name": n_s}`` makes it a likelihood term of n_s observations (scaled by β, its
    negative value counted in L_n), ``factors={"name": "prior"}`` or ``factors="prior"`` (every
    factor) leaves it untempered, a prior term outside L_n. The log-Jacobian factors NumPyro adds
    itself (``_<site>_log_det``, ``_<site>_log_prob``) are prior terms of their latent site.

    :param fn: a NumPyro model (callable).
    :param nbeta: the inverse temperature times n, nβ > 0.
    :param n: optional number of observations n; required when the likelihood terms differ in
        size.
    :param factors: ``None`` (default: a factor site is an error), ``"prior"``, or a mapping
        from factor site name to its number of observations n_s (a likelihood term) or
        ``"prior"``.
    """

    def __init__(self, fn: Callable | None = None, nbeta: float = 1.0, n: int | None = None,
                 factors: Factors = None):
        nbeta = positive_float("nbeta", nbeta, "e.g. nbeta=30.0 (the paper's value)")
        if n is not None and (isinstance(n, bool) or int(n) != n or n <= 0):
            raise ValueError(
                f"n must be a positive integer (the number of observations), got {n!r}"
            )
        self.nbeta = nbeta
        self.n = None if n is None else int(n)
        self.factors = _check_factors(factors)
        self._plate_sizes: dict[str, int] = {}
        self._counts: dict[str, int] = {}  # n_s of the likelihood terms seen in this run
        self._prior_factors: set[str] = set()  # factor sites left alone as prior terms
        super().__init__(fn)

    def __enter__(self):
        self._counts, self._prior_factors = {}, set()
        return super().__enter__()

    def __exit__(self, exc_type, exc_value, traceback):
        result = super().__exit__(exc_type, exc_value, traceback)
        if exc_type is None and isinstance(self.factors, Mapping):
            unknown = sorted(set(self.factors) - set(self._counts) - self._prior_factors)
            if unknown:
                raise ValueError(f"factors names {unknown}, which are not numpyro.factor sites "
                                 f"of the model; remove or rename them")
        return result

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate":
            self._plate_sizes[msg["name"]] = int(msg["args"][0])
            return
        if msg["type"] != "sample" or not msg.get("is_observed"):
            return
        if is_factor_site(msg):
            n_site = self._factor_count(msg)
            if n_site is None:
                return
            _with_infer(msg, slt_factor="likelihood")
        else:
            n_site = self._observation_count(msg)
        self._counts[msg["name"]] = n_site
        if self.n is None and len(set(self._counts.values())) > 1:
            sizes = ", ".join(f"{name!r}: {count}" for name, count in self._counts.items())
            raise ValueError(
                f"the likelihood terms count different numbers of observations ({sizes}), so "
                f"n, and with it β = nβ/n, is ambiguous; say what n is: "
                f"slt.temper(model, nbeta, n={sum(self._counts.values())}) for all of them "
                f"together, or the count your nβ refers to"
            )
        n = self.n if self.n is not None else n_site
        beta = self.nbeta / n
        msg["scale"] = beta if msg.get("scale") is None else msg["scale"] * beta
        _with_infer(msg, slt_nbeta=self.nbeta, slt_n=n, slt_site_n=n_site)

    def _factor_count(self, msg: dict) -> int | None:
        """n_s of a factor declared a likelihood term; None for a prior factor (left alone)."""
        name = msg["name"]
        if _NUMPYRO_FACTOR.match(name):
            return None
        declared = self.factors.get(name) if isinstance(self.factors, Mapping) else self.factors
        if declared == "prior":
            self._prior_factors.add(name)
            _with_infer(msg, slt_factor="prior")
            return None
        if declared is None:
            raise ValueError(
                f"numpyro.factor site {name!r} is neither likelihood nor prior to temper: its "
                f"log-density would be left out of L_n and untempered, which biases the LLC. "
                f"Say what it is: slt.temper(model, nbeta, factors={{{name!r}: n_s}}) makes it "
                f"a likelihood term of n_s observations (tempered, counted in L_n); "
                f"factors={{{name!r}: 'prior'}} (or factors='prior' for every factor) keeps it "
                f"as an untempered prior term"
            )
        return declared

    def _observation_count(self, msg: dict) -> int:
        """n_s = Π(batch dims of the log-probability), each subsampled plate dim at full size."""
        batch_shape = tuple(msg["fn"].batch_shape)
        count = math.prod(batch_shape)
        for frame in msg.get("cond_indep_stack", ()):
            full = self._plate_sizes.get(frame.name, frame.size)
            if frame.size and full != frame.size:
                count = count // frame.size * full
        return max(int(count), 1)


def _check_factors(factors: Any) -> Factors:
    if factors is None or factors == "prior":
        return factors
    if not isinstance(factors, Mapping):
        raise ValueError(
            f"factors must be None, 'prior' or a dict {{factor site: number of observations or "
            f"'prior'}}, got {factors!r}"
        )
    for name, value in factors.items():
        if value == "prior":
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(
                f"factors[{name!r}] must be a positive integer (the number of observations the "
                f"factor stands for, when it is a likelihood term) or 'prior', got {value!r}"
            )
    return {name: value if value == "prior" else int(value) for name, value in factors.items()}


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
    ``center[name]``. With γ = 0 the prior becomes flat in u (improper, :class:`FlatPrior`): only
    the tempered likelihood remains, p(w) ∝ exp(−nβ·L_n(w)), and a draw from the flat prior (what
    inspecting the model and starting a chain need) is the center itself.

    A latent site inside a subsampled plate (a per-datum local variable) cannot be localized:
    its value would be one minibatch's worth of a different slice of the data at every step.
    It raises a ``ValueError``: marginalise it out of the likelihood, or do not subsample that
    plate.

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
        self._plate_sizes: dict[str, int] = {}
        super().__init__(fn, self.center)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate":
            self._plate_sizes[msg["name"]] = int(msg["args"][0])
            return
        if (not is_latent_site(msg) or msg["infer"].get("slt_frozen")
                or "slt_block_of" in msg["infer"]):
            return
        name = msg["name"]
        subsampled = subsampled_plates_of(msg, self._plate_sizes)
        if subsampled:
            raise ValueError(local_latent_message(name, subsampled))
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


def subsampled_plates_of(msg: Mapping[str, Any], plate_sizes: Mapping[str, int]) -> list[str]:
    """The subsampled plates around a site: those whose frame holds fewer items than the plate
    (``plate_sizes``: plate name → full size N)."""
    return [frame.name for frame in msg.get("cond_indep_stack", ())
            if frame.size and plate_sizes.get(frame.name, frame.size) != frame.size]


def local_latent_message(name: str, plates: Iterable[str]) -> str:
    """Why a latent site inside a subsampled plate is refused, and what to do instead."""
    plates = ", ".join(repr(p) for p in plates)
    return (
        f"latent site {name!r} lies inside the subsampled plate {plates}: it is a per-datum "
        f"local variable, and SG-MCMC would draw one minibatch's worth of it, for a different "
        f"minibatch at every step, so its draws (and the LLC) would mean nothing. Marginalise "
        f"it out of the likelihood (integrate it analytically, or enumerate a discrete one), "
        f"or do not subsample plate {plates} (subsample_size=None)"
    )


class FlatPrior(dist.ImproperUniform):
    """The flat prior of :func:`localize` at γ = 0: log-density 0 on ``support``, and a draw is
    ``point`` (the center), the one value a chain that knows nothing else should start from.

    NumPyro's ``ImproperUniform`` cannot be sampled (``NotImplementedError``), yet tracing a
    model (to read its sites) and initialising a chain draw from every prior once.
    """

    pytree_data_fields = ("point",)

    def __init__(self, support: constraints.Constraint, batch_shape: tuple[int, ...],
                 event_shape: tuple[int, ...], point: jnp.ndarray):
        self.point = point
        super().__init__(support, batch_shape, event_shape, validate_args=False)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        return jnp.broadcast_to(self.point, tuple(sample_shape) + self.shape())


def _localized_prior(prior: dist.Distribution, value: jnp.ndarray, gamma: float):
    """N(u*, γ^{-1/2}) in unconstrained coordinates, pushed forward to the prior's support; at
    γ = 0 the flat density in u (:class:`FlatPrior` at u*), pushed forward likewise."""
    support = prior.support
    batch_shape = prior.batch_shape
    transform = biject_to(support)
    unconstrained_center = transform.inv(value)
    event_ndim = jnp.ndim(unconstrained_center) - len(batch_shape)
    if gamma == 0.0:
        event_shape = tuple(jnp.shape(unconstrained_center))[len(batch_shape):]
        base = FlatPrior(constraints.real, batch_shape, event_shape, unconstrained_center)
    else:
        # not validated: NumPyro's check of a concrete center compiles a small program per site
        # shape each time the model runs eagerly; a non-finite center is caught by the kernel's
        # check that L_n(w*) is finite
        base = dist.Normal(unconstrained_center, gamma**-0.5,
                           validate_args=False).to_event(event_ndim)
    if _is_real(support):
        return base
    return dist.TransformedDistribution(base, transform)


def _is_real(support: Any) -> bool:
    from numpyro.distributions import constraints

    return support is constraints.real or (
        isinstance(support, constraints.independent) and support.base_constraint is constraints.real
    )


Selection = Iterable[str] | Mapping[str, Any]


class restrict(_NamesSites):
    """Sample only the selected latent sites, or selected elements of them; freeze the rest.

    This is the weight-restricted posterior of docs/formulas.md: with w = (u, c) and c the
    selected coordinates, p(c) ∝ exp(−nβ·L_n(u*, c) − (γ/2)‖c − c*‖²). A frozen value is
    ``values[name]`` when given, otherwise the site's localization center (so apply ``restrict``
    outside :func:`localize`).

    ``sites`` is either a list of site names (each named site is sampled whole, every other
    latent site is frozen), or a dict mapping a site name to ``True`` (the whole site) or to a
    boolean mask of the site's shape (``True`` = sample this element). A masked site ``w``
    with k selected elements becomes

    * a sampled site ``"w.free"`` of shape (k,): the selected elements, in row-major
      (``np.flatnonzero(mask)``) order, with the prior p_w(w(c)) conditioned on the frozen
      elements (for a localized site N(c*, γ^{-1/2}) on those elements); it carries the
      center ``center[w][mask]`` and γ, so the chain starts there and the LLC counts only the
      k selected coordinates;
    * a ``deterministic`` site ``"w"`` with the full value w(c), the frozen value with c written
      at the mask, which the model computes with.

    Frozen and masked full sites are not sampled, not collected (the draws hold ``"w.free"``, so
    a large weight is never kept) and carry no prior term. A mask needs a site outside any
    plate whose support acts element by element (real, positive, an interval, …).

    :param fn: a NumPyro model.
    :param sites: names of the latent sites to keep sampling, or a dict name → ``True`` or a
        boolean mask (at least one site, each mask with at least one ``True``).
    :param values: optional frozen values for the other latent sites (and for the frozen
        elements of a masked site).
    """

    unknown_message = "sites {unknown} are not latent sites of the model; valid names: {seen}"

    def __init__(
        self,
        fn: Callable | None = None,
        sites: Selection = (),
        values: Mapping[str, Any] | None = None,
    ):
        if isinstance(sites, str):
            sites = (sites,)
        if isinstance(sites, Mapping):
            self.masks = {name: _check_mask(name, selection) for name, selection in sites.items()}
        else:
            self.masks = {name: None for name in sites}
        self.sites = frozenset(self.masks)
        if not self.sites:
            raise ValueError("sites must name at least one latent site to sample, e.g. ['w'] "
                             "or {'w': mask}")
        # the flat indices of each mask, one object for the life of the handler (its identity
        # is part of the sampled site's distribution, a pytree that JAX compares)
        self._indices = {name: ArrayMark(np.flatnonzero(mask).astype(np.int32))
                         for name, mask in self.masks.items() if mask is not None}
        self.values = {k: jnp.asarray(v) for k, v in (values or {}).items()}
        super().__init__(fn, self.sites)

    def process_message(self, msg: dict) -> None:
        if not is_latent_site(msg) or "slt_block_of" in msg["infer"]:
            return
        name = msg["name"]
        self._seen.add(name)
        if name in self.sites and self.masks[name] is None:
            return
        value = self._frozen_value(msg)
        if name in self.sites:
            value = self._sample_selected(msg, value)
        msg["type"] = "deterministic"
        msg["value"] = value
        _with_infer(msg, slt_frozen=True)

    def _frozen_value(self, msg: dict) -> jnp.ndarray:
        name = msg["name"]
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
        return value

    def _sample_selected(self, msg: dict, frozen: jnp.ndarray) -> jnp.ndarray:
        """Sample the masked elements of the site as ``"<name>.free"``; return the full value."""
        name, prior = msg["name"], msg["fn"]
        mask = self.masks[name]
        if mask.shape != tuple(prior.shape()):
            raise ValueError(
                f"sites[{name!r}] is a mask of shape {mask.shape} but the site has shape "
                f"{tuple(prior.shape())}; pass a boolean array of the site's shape"
            )
        if msg.get("cond_indep_stack"):
            plates = [frame.name for frame in msg["cond_indep_stack"]]
            raise ValueError(
                f"restrict can mask only a site outside plates; {name!r} is inside plate(s) "
                f"{plates}: select the whole site (sites={{{name!r}: True}}), or write its "
                f"prior without the plate (dist.expand([...]).to_event())"
            )
        if _elementwise(prior.support) is None:
            raise ValueError(
                f"restrict can mask only a site whose elements are constrained one by one "
                f"(real, positive, an interval); {name!r} has support {prior.support}: select "
                f"the whole site instead"
            )
        block = MaskedPrior(prior, frozen, self._indices[name])
        infer = {"slt_block_of": name}
        if "slt_center" in msg["infer"]:
            # concrete, as localize's center is: the kernel reads it after the trace
            with jax.ensure_compile_time_eval():
                center = block.select(msg["infer"]["slt_center"].value)
            infer.update(slt_center=ArrayMark(center),
                         slt_gamma=msg["infer"]["slt_gamma"])
        free = numpyro.sample(f"{name}.free", block, infer=infer)
        return block.full_value(free)

    def full_value(self, name: str, free: Any, frozen: Any) -> jnp.ndarray:
        """The full value of the masked site ``name`` from draws of ``"<name>.free"`` (leading
        batch dimensions allowed, e.g. [chain, draw, k]): ``frozen`` (the site's frozen value,
        e.g. its center) with ``free`` written at the mask."""
        if self.masks.get(name) is None:
            raise ValueError(f"{name!r} is not a masked site of this restrict; masked sites: "
                             f"{sorted(self._indices)}")
        return _scatter(jnp.asarray(frozen), self._indices[name].value, jnp.asarray(free))


def _check_mask(name: str, selection: Any) -> np.ndarray | None:
    """``True`` → None (the whole site); a boolean array → that array (checked)."""
    if selection is True:
        return None
    if isinstance(selection, jax.core.Tracer):
        raise ValueError(f"sites[{name!r}] must be a concrete boolean array, not a traced value")
    if isinstance(selection, bool) or selection is None:
        raise ValueError(f"sites[{name!r}] must be True (the whole site) or a boolean mask of "
                         f"the site's shape, got {selection!r}; leave {name!r} out to freeze it")
    mask = np.asarray(selection)
    if mask.dtype != np.bool_:
        raise ValueError(
            f"sites[{name!r}] must be a boolean mask (True = sample this element), got an array "
            f"of dtype {mask.dtype}; build it with a comparison, e.g. np.arange(d) < k"
        )
    if not mask.any():
        raise ValueError(
            f"sites[{name!r}] selects no element (all False); select at least one, or leave "
            f"{name!r} out of sites to freeze the whole site"
        )
    return mask


def _elementwise(support: Any) -> Any:
    """The element-wise constraint of ``support`` (unwrapping ``independent``), or None when the
    support couples elements (simplex, positive definite, …)."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support if support.event_dim == 0 else None


def _scatter(frozen: jnp.ndarray, indices: np.ndarray, free: jnp.ndarray) -> jnp.ndarray:
    """``frozen`` with ``free`` (leading batch dims allowed) written at the flat ``indices``."""
    batch = jnp.shape(free)[:-1]
    flat = jnp.broadcast_to(jnp.reshape(frozen, (-1,)), batch + (frozen.size,))
    flat = flat.at[..., indices].set(free.astype(flat.dtype))
    return jnp.reshape(flat, batch + jnp.shape(frozen))


class MaskedPrior(dist.Distribution):
    """The prior of the selected elements c = w[mask] of a site whose other elements are frozen:

        log p(c) = log p_w(w(c)),   w(c) = the frozen value with c written at the mask,

    the site's prior conditioned on its frozen elements, up to a constant (exactly
    N(c*, γ^{-1/2}) for a localized site). Its support is the site's element-wise constraint, so
    NumPyro unconstrains c element by element as it would the whole site. A draw is the prior's
    draw at the mask.
    """

    pytree_data_fields = ("prior", "frozen")
    pytree_aux_fields = ("indices",)

    def __init__(self, prior: dist.Distribution, frozen: jnp.ndarray, indices: ArrayMark):
        self.prior = prior
        self.frozen = jnp.asarray(frozen)
        self.indices = indices
        super().__init__(batch_shape=(), event_shape=(len(indices.value),), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(_elementwise(self.prior.support), 1)

    def select(self, value: jnp.ndarray) -> jnp.ndarray:
        """value[mask] in row-major order (leading batch dimensions allowed)."""
        shape = jnp.shape(value)
        batch = shape[:len(shape) - jnp.ndim(self.frozen)]
        return jnp.reshape(value, batch + (-1,))[..., self.indices.value]

    def full_value(self, free: jnp.ndarray) -> jnp.ndarray:
        return _scatter(self.frozen, self.indices.value, free)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        return self.select(self.prior.sample(key, sample_shape))

    def log_prob(self, value: jnp.ndarray) -> jnp.ndarray:
        log_prob = self.prior.log_prob(self.full_value(value))
        prior_batch = len(self.prior.batch_shape)
        return jnp.sum(log_prob, axis=tuple(range(jnp.ndim(log_prob) - prior_batch,
                                                  jnp.ndim(log_prob))))
