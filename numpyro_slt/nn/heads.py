"""The weights of one attention head as a typed object.

A head L:H of an :class:`~numpyro_slt.nn.transformer.AttentionOnlyTransformer` is the index
``[L, H]`` into its stacked per-head arrays; :class:`HeadWeights` holds those seven slices
c = (W_Q, W_K, W_V, W_O, b_Q, b_K, b_V) (the biases None for a network without attention
biases) and computes what the head writes to the residual stream,
out(a; c) = softmax(causal(q kᵀ/√d_head)) v W_O from its input a = LN_L(x^L). Because the
weights are data, not an index baked into the code, the same compiled program serves the trained
head, a sampled head and every other head of the layer.

As NumPyro sites the fields are named ``"<prefix>.<field>"`` (``"1:6.W_Q"``, ``"head.b_V"``):
:meth:`HeadWeights.sites` and :meth:`HeadWeights.from_sites` convert both ways.
"""

# ruff: noqa: F722

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx
import jax
from jaxtyping import Array, Float

from .components import get_component, parse_component
from .transformer import Rotary, Transformer, attention_head, attention_values

__all__ = ["HEAD_FIELDS", "HeadWeights"]

HEAD_FIELDS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
"""The fields of a head, in the order of :func:`~numpyro_slt.nn.components.get_component`."""
_WEIGHTS = HEAD_FIELDS[:4]
_BIASES = HEAD_FIELDS[4:]


def _head_fields(names, what: str, prefix: str = "") -> tuple[str, ...]:
    """The head fields among ``names``: all four matrices and either all three biases or none
    (a network without attention biases); anything else is a ValueError naming what is
    missing (``prefix`` + field)."""
    have = [f for f in HEAD_FIELDS if f in names]
    missing = [f for f in _WEIGHTS if f not in have]
    if any(f in have for f in _BIASES):
        missing += [f for f in _BIASES if f not in have]
    if missing:
        raise ValueError(f"{what} lack {[prefix + f for f in missing]}: a head holds "
                         f"{list(_WEIGHTS)} and either all or none of {list(_BIASES)}; got "
                         f"{sorted(names)}.")
    return tuple(have)


class HeadWeights(eqx.Module):
    """c = (W_Q, W_K, W_V ``[d_model, d_head]``, W_O ``[d_head, d_model]``, b_Q, b_K, b_V
    ``[d_head]``) of one head; leading axes (chain, draw) broadcast through :meth:`__add__`."""

    W_Q: Float[Array, "*batch d_model d_head"]
    W_K: Float[Array, "*batch d_model d_head"]
    W_V: Float[Array, "*batch d_model d_head"]
    W_O: Float[Array, "*batch d_head d_model"]
    b_Q: Float[Array, "*batch d_head"] | None = None
    b_K: Float[Array, "*batch d_head"] | None = None
    b_V: Float[Array, "*batch d_head"] | None = None

    @classmethod
    def of(cls, network: Transformer, component: str) -> HeadWeights:
        """The trained weights of head ``component`` (``"L:H"``) of ``network``."""
        if parse_component(component, network.config).kind != "head":
            raise ValueError(f"a head's weights need one head 'L:H', got {component!r}")
        return cls(**get_component(network, component))

    @classmethod
    def from_sites(cls, values: Mapping[str, Array], prefix: str) -> HeadWeights:
        """The head held by sites ``"<prefix>.W_Q"``, …, ``"<prefix>.b_V"`` of ``values`` (other
        sites are ignored; the bias sites are absent for a network without attention biases); a
        missing one is a ValueError naming the sites found."""
        found = {name[len(prefix) + 1:] for name in values if name.startswith(f"{prefix}.")}
        fields = _head_fields(found, f"the sites '{prefix}.*' of a head", f"{prefix}.")
        return cls(**{f: values[f"{prefix}.{f}"] for f in fields})

    @classmethod
    def coerce(cls, weights: HeadWeights | Mapping[str, Array]) -> HeadWeights:
        """``weights`` as HeadWeights; a mapping must hold the head's fields by name (the four
        matrices, and the three biases where the network has them)."""
        if isinstance(weights, HeadWeights):
            return weights
        if not isinstance(weights, Mapping) or set(weights) - set(HEAD_FIELDS):
            got = sorted(weights) if isinstance(weights, Mapping) else type(weights).__name__
            raise ValueError(f"a head's weights must be HeadWeights or a mapping of "
                             f"{sorted(HEAD_FIELDS)} (get_component(network, 'L:H')), got {got}.")
        fields = _head_fields(set(weights), "a head's weights")
        return cls(**{f: weights[f] for f in fields})

    def fields(self) -> dict[str, Array]:
        """Field name → array, in :data:`HEAD_FIELDS` order (absent biases left out)."""
        return {f: getattr(self, f) for f in HEAD_FIELDS if getattr(self, f) is not None}

    def sites(self, prefix: str) -> dict[str, Array]:
        """Site name ``"<prefix>.<field>"`` → array, in :data:`HEAD_FIELDS` order."""
        return {f"{prefix}.{f}": v for f, v in self.fields().items()}

    def __add__(self, other: HeadWeights) -> HeadWeights:
        """Field-wise c + δ (a center plus an offset)."""
        return jax.tree.map(lambda c, d: c + d, self, other)

    def output(self, normed: Float[Array, "seq d_model"], rotary: Rotary = None
               ) -> Float[Array, "seq d_model"]:
        """out(a; c), the head's write to the residual stream from its input a (queries and
        keys rotated by ``rotary`` = ``network.rotary(seq)`` in a rotary network)."""
        return attention_head(normed, W_Q=self.W_Q, W_K=self.W_K, W_V=self.W_V, W_O=self.W_O,
                              b_Q=self.b_Q, b_K=self.b_K, b_V=self.b_V, rotary=rotary)

    def mixed_values(self, normed: Float[Array, "seq d_model"], rotary: Rotary = None
                     ) -> Float[Array, "seq d_head"]:
        """z = softmax(causal(q kᵀ/√d_head)) v, the output before W_O."""
        return attention_values(normed, W_Q=self.W_Q, W_K=self.W_K, W_V=self.W_V, b_Q=self.b_Q,
                                b_K=self.b_K, b_V=self.b_V, rotary=rotary)
