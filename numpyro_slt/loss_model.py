"""A loss function as a NumPyro model: the Gibbs posterior of devinterp-style code.

devinterp samples ``exp(−nβ·L_n(w))`` for any loss ``evaluate(model, batch)``; numpyro-slt samples
NumPyro models. :func:`loss_model` turns a loss into such a model, so that everything built on
models (:func:`~numpyro_slt.temper`, :func:`~numpyro_slt.localize`, :func:`~numpyro_slt.restrict`,
the SG-MCMC kernels in ``numpyro.infer.MCMC``, :func:`~numpyro_slt.llc`) applies to it:

* every floating-point array leaf of ``params`` becomes a latent site, named by its path in the
  pytree (``{"layer": {"w": ...}}`` → ``"layer.w"``, an Equinox ``Linear`` → ``"weight"`` and
  ``"bias"``, a list → ``"0"``, ``"1"``, …);
* the loss enters as one likelihood site ``"loss"`` inside ``numpyro.plate("data", n,
  subsample_size=batch_size)`` over the leading axis of ``data``, with log-density −ℓ_i(w) per
  sample i. Its total over the data is −n·L_n(w), L_n(w) = (1/n)·Σ_i ℓ_i(w), so
  ``temper(model, nbeta)`` makes the potential nβ·L_n(w) and the kernels' ``loss`` is L_B(w), the
  mean loss of the minibatch;
* a per-batch loss ``loss_fn(params, batch) = (1/B)·Σ_{i∈B} ℓ_i(w)`` (what devinterp's
  ``evaluate`` returns) enters as that mean for every sample of the batch, which gives the same
  total B·L_B(w).

The prior of a latent site is flat and improper: the Gibbs posterior has no prior, and the
localization of :func:`~numpyro_slt.localize` (N(w*, γ^{-1/2}) around the trained parameters, the
``center`` of the model) is what makes it proper and what the LLC needs. A site that is neither
localized nor frozen cannot be drawn, and sampling one raises a ``ValueError`` saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["LossModel", "loss_model"]

PyTree = Any

PLATE = "data"
LIKELIHOOD = "loss"


class _FlatPrior(dist.ImproperUniform):
    """The flat prior of an un-localized site: log-density 0, and no draws (it is improper)."""

    pytree_aux_fields = ("site",)

    def __init__(self, site: str, shape: tuple[int, ...]):
        self.site = site
        super().__init__(constraints.real, (), shape)

    def sample(self, key, sample_shape=()):
        raise ValueError(
            f"site {self.site!r} of slt.loss_model has a flat, improper prior and cannot be "
            "sampled as it is: the Gibbs posterior exp(-nbeta * L_n(w)) needs a localization. "
            "Wrap the model with slt.localize(model, model.center, gamma) (gamma = 0 for a flat "
            "prior that starts at the center), and use "
            "slt.restrict outside it to sample only some sites"
        )


class _LossLikelihood(dist.Distribution):
    """The 'likelihood' exp(−ℓ_i) of a loss: ``log_prob(value) = −losses`` whatever the value.

    Its batch shape is the shape of ``losses`` (one entry per sample), so that
    :func:`~numpyro_slt.temper` counts one observation per sample.
    """

    arg_constraints = {"losses": constraints.real}
    support = constraints.real

    def __init__(self, losses: jnp.ndarray):
        self.losses = losses
        super().__init__(batch_shape=jnp.shape(losses), validate_args=False)

    def log_prob(self, value):
        return -self.losses

    def sample(self, key, sample_shape=()):
        raise ValueError(
            "the loss site of slt.loss_model is observed and has nothing to draw; do not "
            "un-observe it (e.g. with numpyro.infer.Predictive over 'loss')"
        )


class LossModel:
    """The NumPyro model of :func:`loss_model`; call it as ``model()`` or ``model(data)``.

    Attributes: ``center`` (site name → trained value, the w* for
    :func:`~numpyro_slt.localize`), ``sites`` (the latent site names in pytree order),
    ``num_data`` (n, the leading axis of the data), ``batch_size`` and ``per_sample``.
    """

    def __init__(self, loss_fn: Callable, params: PyTree, data: PyTree, *, per_sample: bool,
                 batch_size: int | None):
        self.loss_fn = loss_fn
        self.per_sample = per_sample
        self.data = data
        self.num_data = _leading_size(data, "data")
        self.batch_size = _check_batch_size(batch_size, self.num_data)
        arrays, self._static = eqx.partition(params, eqx.is_inexact_array)
        paths_and_leaves, self._treedef = jax.tree_util.tree_flatten_with_path(arrays)
        if not paths_and_leaves:
            raise ValueError(
                "params has no floating-point array to sample; pass the trained parameters as a "
                "dict of arrays or an Equinox module, e.g. {'w': jnp.zeros(3)}"
            )
        self.sites = tuple(_site_name(path) for path, _ in paths_and_leaves)
        _check_names(self.sites)
        self.center = {name: leaf for name, (_, leaf) in zip(self.sites, paths_and_leaves,
                                                              strict=True)}

    def params_of(self, values: Mapping[str, Any]) -> PyTree:
        """The ``params`` pytree with its array leaves replaced by ``values`` (site → array),
        e.g. a posterior draw; non-array parts of an Equinox module are kept."""
        missing = [name for name in self.sites if name not in values]
        if missing:
            raise ValueError(f"values misses the sites {missing}; it needs every site of "
                             f"{list(self.sites)}")
        arrays = jax.tree_util.tree_unflatten(self._treedef, [values[n] for n in self.sites])
        return eqx.combine(arrays, self._static)

    def __call__(self, data: PyTree = None) -> None:
        data = self.data if data is None else data
        num_data = _leading_size(data, "data")
        values = {name: numpyro.sample(name, _FlatPrior(name, tuple(jnp.shape(leaf))))
                  for name, leaf in self.center.items()}
        params = self.params_of(values)
        with numpyro.plate(PLATE, num_data, subsample_size=self.batch_size) as idx:
            if self.batch_size is None or self.batch_size == num_data:
                batch = data
            else:
                batch = jax.tree.map(lambda a: jnp.take(jnp.asarray(a), idx, axis=0), data)
            losses = self._losses(params, batch, jnp.shape(idx)[0])
            numpyro.sample(LIKELIHOOD, _LossLikelihood(losses), obs=jnp.zeros_like(losses))

    def _losses(self, params: PyTree, batch: PyTree, size: int) -> jnp.ndarray:
        """ℓ_i(w) for every sample of the batch, shape (B,)."""
        if self.per_sample:
            losses = jax.vmap(self.loss_fn, in_axes=(None, 0))(params, batch)
            if jnp.shape(losses) != (size,):
                raise ValueError(
                    f"loss_fn(params, x) must return a scalar per sample (per_sample=True), got "
                    f"shape {jnp.shape(losses)[1:]}; return the sample's loss, or pass "
                    "per_sample=False for a loss of the whole batch"
                )
            return losses
        mean = self.loss_fn(params, batch)
        if jnp.shape(mean) != ():
            raise ValueError(
                f"loss_fn(params, batch) must return the batch's mean loss, a scalar "
                f"(per_sample=False), got shape {jnp.shape(mean)}; reduce it with .mean(), or pass "
                "per_sample=True for a loss of one sample"
            )
        return jnp.broadcast_to(mean, (size,))

    def __repr__(self) -> str:
        return (f"LossModel(sites={list(self.sites)}, num_data={self.num_data}, "
                f"batch_size={self.batch_size}, per_sample={self.per_sample})")


def loss_model(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    data: PyTree,
    *,
    per_sample: bool = True,
    batch_size: int | None = None,
) -> LossModel:
    """A NumPyro model whose tempered potential is nβ·L_n(w) for a loss function.

    With ℓ_i(w) the loss of sample i of the n samples of ``data``, the model's log-density is
    −Σ_i ℓ_i(w) = −n·L_n(w) (flat prior), so ``localize(temper(model, nbeta), model.center,
    gamma)`` is the localized Gibbs posterior p(w) ∝ exp(−nβ·L_n(w) − (γ/2)‖w − w*‖²) of
    docs/formulas.md with w* = ``params``, and :func:`~numpyro_slt.llc` estimates
    λ̂ = nβ·(E_w[L_n(w)] − L_n(w*)).

    :param loss_fn: ``loss_fn(params, x) -> scalar``, the loss ℓ of one sample x (a slice of
        every leaf of ``data`` along its leading axis; ``per_sample=True``), or ``loss_fn(params,
        batch) -> scalar``, the mean loss of a batch (``per_sample=False``, what devinterp's
        ``evaluate(model, batch)`` returns). ``params`` is passed with the pytree structure given
        here. Use a loss that is a negative log-likelihood per sample when the scale matters:
        a mean squared error is 2× the Gaussian NLL with σ = 1 (minus ½·log 2π per sample), so
        at the same nβ it samples a posterior twice as sharp; docs/devinterp.md says how to map.
    :param params: the trained parameters w*: a dict (nested dicts, lists and tuples allowed) of
        arrays or an Equinox module. Every floating-point array leaf becomes a latent site named
        by its path (``"layer.w"``, ``"weight"``, ``"layers.0.bias"``); other leaves stay fixed.
    :param data: an array or a pytree (tuple, dict) of arrays sharing their leading axis n, the
        samples. Pass other data to the model as ``model(data)`` (e.g. ``mcmc.run(key, data)``):
        then they are an argument of the compiled programs instead of a constant in them.
    :param per_sample: True (default) for a per-sample loss, False for a per-batch mean loss.
    :param batch_size: the minibatch size B (a subsampled ``numpyro.plate`` over the samples,
        whose indices the kernel draws at every step); ``None`` (default) uses all n samples.
    :return: a :class:`LossModel`, callable as a NumPyro model, with ``center`` (w* by site) and
        ``params_of(values)`` (sites back to the ``params`` pytree).
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(params, x), got "
                         f"{type(loss_fn).__name__}")
    if not isinstance(per_sample, bool):
        raise ValueError(f"per_sample must be True (loss of one sample) or False (mean loss of a "
                         f"batch), got {per_sample!r}")
    params = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, params)
    return LossModel(loss_fn, params, data, per_sample=per_sample, batch_size=batch_size)


def _leading_size(data: PyTree, argument: str) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError(f"{argument} must be an array or a pytree of arrays (the samples), got "
                         f"{type(data).__name__} with no arrays")
    shapes = [jnp.shape(leaf) for leaf in leaves]
    if any(len(shape) == 0 for shape in shapes):
        raise ValueError(f"{argument} must have a leading sample axis; got a scalar leaf among "
                         f"shapes {shapes}")
    sizes = {shape[0] for shape in shapes}
    if len(sizes) != 1:
        raise ValueError(f"every array of {argument} must have the same leading size n (the "
                         f"number of samples), got shapes {shapes}")
    return int(sizes.pop())


def _check_batch_size(batch_size: int | None, num_data: int) -> int | None:
    if batch_size is None:
        return None
    if (isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)
            or not 1 <= batch_size <= num_data):
        raise ValueError(f"batch_size must be None (all samples) or an integer in [1, "
                         f"{num_data}] (the data hold {num_data} samples), got {batch_size!r}")
    return int(batch_size)


def _site_name(path: tuple) -> str:
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return ".".join(parts) if parts else "params"


def _check_names(sites: tuple[str, ...]) -> None:
    duplicates = sorted({name for name in sites if sites.count(name) > 1})
    if duplicates:
        raise ValueError(f"params gives several leaves the site name(s) {duplicates} (a key "
                         "containing '.' can clash with a nested path); rename the keys")
    reserved = [name for name in sites if name in (PLATE, LIKELIHOOD)]
    if reserved:
        raise ValueError(f"params may not have a leaf named {reserved}: the model uses "
                         f"'{PLATE}' for its plate and '{LIKELIHOOD}' for its likelihood site; "
                         "rename the key")
