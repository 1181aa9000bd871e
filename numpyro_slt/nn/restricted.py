"""The weight-restricted posterior of one component: the one entry point for sampling it.

:func:`restricted_posterior` returns what a sampler needs for component C of a trained network
(notation of docs/formulas.md): the NumPyro model with w_C latent and the rest frozen at w*, the
center w*_C in the model's coordinates, the model's arguments, and the map from the model's
draws back to the component's weights. Which form of the model that is, is decided here:

- one head, fast path: :func:`~numpyro_slt.nn.posterior.head_offset_model` on the head's
  :class:`~numpyro_slt.nn.caches.HeadCache`, sampling the offset δ = c − c* (every head of a
  layer is one compiled program); draws map to c* + δ;
- a component downstream of layer L > 0, fast path: :func:`~numpyro_slt.nn.posterior.
  language_model` on the cached residual stream x^L;
- otherwise (or with ``fast_path=False``): :func:`~numpyro_slt.nn.posterior.language_model` on
  the tokens.

All forms give the same losses at corresponding points up to float rounding, so the same LLC
and observables.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jaxtyping import Array, Int

from .caches import HeadCache, frozen_cache
from .heads import HeadWeights
from .posterior import (
    head_offset_center,
    head_offset_model,
    head_weights_from_offsets,
    language_model,
    parameter_sites,
)
from .transformer import AttentionOnlyTransformer

__all__ = ["RestrictedPosterior", "restricted_posterior"]


@dataclass(frozen=True)
class RestrictedPosterior:
    """The restricted posterior of one component, ready for ``temper``/``localize`` and a kernel.

    :ivar model: the NumPyro model (placeholder priors: wrap it in :func:`numpyro_slt.temper`
        and :func:`numpyro_slt.localize`).
    :ivar center: site → array, the localization center in the model's coordinates.
    :ivar model_args: the model's arguments, passed after the random key to ``MCMC.run`` or
        :func:`numpyro_slt.sample_checkpointed`.
    :ivar component: the canonical component name.
    :ivar form: ``"head_offset"``, ``"upstream"`` (cached x^L) or ``"plain"``.
    :ivar trained: c*, the head's trained weights, in the ``"head_offset"`` form (else None).
    """

    model: Callable[..., None]
    center: dict[str, Array]
    model_args: tuple[Any, ...]
    component: str
    form: Literal["head_offset", "upstream", "plain"]
    trained: HeadWeights | None = None

    def component_weights(self, draws: Mapping[str, Any]) -> Mapping[str, Any]:
        """Draws of the model's sites (any leading axes, e.g. [chain, draw]) as the component's
        weights ``"<component>.<field>"`` → array, the names
        :class:`~numpyro_slt.nn.observables.ObservableEvaluator` expects: c* + δ in the
        ``"head_offset"`` form, the draws themselves otherwise."""
        if self.trained is None:
            return draws
        return head_weights_from_offsets(self.trained, draws, self.component)


def restricted_posterior(
    network: AttentionOnlyTransformer,
    component: str,
    tokens: Int[Array, "sequences context"],
    batch_size: int | None,
    *,
    fast_path: bool = True,
) -> RestrictedPosterior:
    """The restricted posterior of ``component`` (``"1:6"``, ``"embed"``, ``"unembed"``, …) of
    ``network`` given the sampling data ``tokens`` ([sequences, context]) with minibatches of
    ``batch_size`` sequences (None: all).

    :param fast_path: cache the frozen part of the network once
        (:func:`~numpyro_slt.nn.caches.frozen_cache`) and, for one head, sample its offset from
        the trained weights; False: the plain model on the tokens.
    """
    upstream = frozen_cache(network, tokens, [component]) if fast_path else None
    if isinstance(upstream, HeadCache):
        trained = HeadWeights.of(network, upstream.component)
        return RestrictedPosterior(
            model=head_offset_model(network, upstream.layer, batch_size=batch_size),
            center=head_offset_center(network, upstream.layer),
            model_args=(tokens, upstream, trained),
            component=upstream.component, form="head_offset", trained=trained)
    model = language_model(network, [component], batch_size=batch_size)
    (name,) = model.components
    return RestrictedPosterior(
        model=model, center=parameter_sites(network, [name]), model_args=(tokens, upstream),
        component=name, form="plain" if upstream is None else "upstream")
