"""Addressing components of a :class:`~numpyro_slt.nn.Transformer` by name.

Component names (canonical form first; devinterp's restriction names as aliases):

- ``"embed"``: the token embedding W_E (with a tied unembedding it is also W_Uᵀ);
- ``"pos"``: the learned positional embedding W_pos (a rotary model has none);
- ``"layer L"`` (also ``"L"``, devinterp's ``"lL"``): every parameter of block L, its attention
  and its MLP with their input LayerNorms;
- ``"L.attn"`` (devinterp ``"lL attn"``): the attention of block L: every head's W_Q, W_K, W_V,
  W_O, b_Q, b_K, b_V and the output bias b_O (its input LayerNorm belongs to the block, as in
  devinterp and TransformerLens);
- ``"L:H"`` (devinterp ``"lLhH"``): head H of layer L (W_Q, W_K, W_V, W_O, b_Q, b_K, b_V at
  index ``[L, H]``, also where an imported checkpoint fused them into one QKV matrix); the shared
  output bias b_O belongs to the attention, not to any head;
- ``"L.mlp"`` (devinterp ``"lL mlp"``): the MLP of block L (W_in, b_in, W_out, b_out; its
  input LayerNorm belongs to the block);
- ``"unembed"``: W_U and b_U and the final LayerNorm (only the LayerNorm and b_U when the
  unembedding is tied to W_E).

``embed``, ``pos``, the layers and ``unembed`` partition the parameters; a layer is its attention,
its MLP and their LayerNorms, an attention the union of its heads plus b_O. A selection of
several components is their union; components that overlap (a head and its layer) are an error.
On parameters, :func:`get_component` / :func:`set_component` read and replace a component's
slices (this is the weight split w = (u, c) of a restricted posterior). On activations,
:func:`head_outputs` and :func:`get_activation` give what a component writes to the residual stream:
for layer l of an attention-only model the residual stream satisfies

    x^{l+1} = x^l + Σ_h out_{l,h} + b_O[l],
    x^L = W_E[t] + W_pos + Σ_{l,h} out_{l,h} + Σ_l b_O[l],

(plus each layer's MLP write mlp_l with MLPs), which :func:`check_head_decomposition` verifies
numerically.
"""

# ruff: noqa: F722  (jaxtyping shape strings are not forward references)

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .config import TransformerConfig
from .transformer import ActivationCache, Transformer

__all__ = [
    "ComponentSpec",
    "canonical_components",
    "check_head_decomposition",
    "component_fields",
    "component_mask",
    "component_names",
    "component_size",
    "get_activation",
    "get_component",
    "get_components",
    "head_outputs",
    "named_parameters",
    "parse_component",
    "replace_parameters",
    "set_component",
    "set_components",
]

_HEAD_FIELDS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
_ATTN_FIELDS = _HEAD_FIELDS + ("b_O",)
_MLP_FIELDS = ("W_in", "b_in", "W_out", "b_out")
_BLOCK_NORMS = ("ln_w", "ln_b", "ln2_w", "ln2_b")
_UNEMBED_FIELDS = ("W_U", "b_U", "ln_final_w", "ln_final_b")
_PARAM_FIELDS = tuple(TransformerConfig(d_mlp=1).parameter_shapes())

Kind = Literal["embed", "pos", "layer", "attn", "head", "mlp", "unembed"]


class ComponentSpec(NamedTuple):
    """A parsed component name: ``kind`` and, for layers, attentions, MLPs and heads, ``layer``
    (and ``head``)."""

    kind: Kind
    layer: int | None = None
    head: int | None = None

    @property
    def name(self) -> str:
        """Canonical name: ``embed``, ``pos``, ``layer L``, ``L.attn``, ``L:H``, ``L.mlp`` or
        ``unembed``."""
        if self.kind == "head":
            return f"{self.layer}:{self.head}"
        if self.kind == "layer":
            return f"layer {self.layer}"
        if self.kind in ("attn", "mlp"):
            return f"{self.layer}.{self.kind}"
        return self.kind


def component_names(config: TransformerConfig, *, heads_only: bool = False) -> list[str]:
    """Canonical names of every component, in forward order.

    ``["embed", "pos", "layer 0", "0:0", ..., "0:H-1", "layer 1", ..., "unembed"]``; a model with
    MLPs also lists ``"L.attn"`` before layer L's heads and ``"L.mlp"`` after them, and a rotary
    model has no ``"pos"``. With ``heads_only=True`` only the ``"L:H"`` names.
    """
    names = [] if heads_only else ["embed"] + (["pos"] if config.positional == "learned" else [])
    for l in range(config.n_layers):
        mlp = config.d_mlp is not None
        if not heads_only:
            names.append(f"layer {l}")
            if mlp:
                names.append(f"{l}.attn")
        names.extend(f"{l}:{h}" for h in range(config.n_heads))
        if mlp and not heads_only:
            names.append(f"{l}.mlp")
    if not heads_only:
        names.append("unembed")
    return names


_HEAD_RE = re.compile(r"^(?:(\d+)\s*:\s*(\d+)|l(\d+)\s*h(\d+))$")
_PART_RE = re.compile(r"^(?:(\d+)\s*\.\s*|l(\d+)\s+)(attn|mlp)$")
_LAYER_RE = re.compile(r"^(?:layer\s*|l)?(\d+)$")


def _parse_name(s: str) -> ComponentSpec | None:
    if s in ("embed", "pos", "unembed"):
        return ComponentSpec(s)  # type: ignore[arg-type]
    if m := _HEAD_RE.match(s):
        layer, head = (m.group(1), m.group(2)) if m.group(1) is not None else m.group(3, 4)
        return ComponentSpec("head", int(layer), int(head))
    if m := _PART_RE.match(s):
        return ComponentSpec(m.group(3), int(m.group(1) or m.group(2)))  # type: ignore[arg-type]
    if m := _LAYER_RE.match(s):
        return ComponentSpec("layer", int(m.group(1)))
    return None


def parse_component(name: str | ComponentSpec, config: TransformerConfig) -> ComponentSpec:
    """Parse a component name (see the module docstring); ValueError lists the valid names."""
    if isinstance(name, ComponentSpec):
        spec = name
    elif not isinstance(name, str):
        raise ValueError(f"a component name must be a string, got {type(name).__name__}")
    else:
        spec = _parse_name(name.strip().lower())
    if spec is not None:
        layer_ok = spec.layer is None or 0 <= spec.layer < config.n_layers
        head_ok = spec.head is None or 0 <= spec.head < config.n_heads
        if layer_ok and head_ok:
            if spec.kind == "mlp" and config.d_mlp is None:
                raise ValueError(f"component {name!r}: this model is attention-only (d_mlp is "
                                 "None), so it has no MLP; valid names are "
                                 f"{component_names(config)}.")
            if spec.kind == "pos" and config.positional != "learned":
                raise ValueError("component 'pos': this model has rotary positions and no "
                                 "positional embedding; valid names are "
                                 f"{component_names(config)}.")
            return spec
    if isinstance(name, str) and name.strip().lower() == "full":
        raise ValueError("component 'full' (devinterp's whole model) is not a component: pass "
                         "components=None to sample every parameter.")
    raise ValueError(
        f"unknown component {name!r} for a model with {config.n_layers} layers of "
        f"{config.n_heads} heads; valid names are {component_names(config)} "
        "(also 'L.attn', and devinterp's 'lL', 'lLhH', 'lL attn', 'lL mlp'; a layer may be "
        "written as its bare number, e.g. '0')."
    )


def canonical_components(config: TransformerConfig,
                         components: str | Iterable[str]) -> tuple[str, ...]:
    """The canonical names of ``components`` (one name or several), in the given order; an
    empty selection, a component named twice or two overlapping components (a head and its
    layer) are a ValueError."""
    if isinstance(components, str):
        components = (components,)
    specs = [parse_component(name, config) for name in components]
    names = tuple(spec.name for spec in specs)
    if not names:
        raise ValueError("components must name at least one component, or be None for all")
    if len(set(names)) != len(names):
        raise ValueError(f"components {list(names)} name a component twice")
    _check_disjoint(specs, config)
    return names


def _check_disjoint(specs: list[ComponentSpec], config: TransformerConfig) -> None:
    """ValueError when two components share a parameter slice (one is part of the other)."""
    for i, a in enumerate(specs):
        for b in specs[i + 1:]:
            if _overlap(_slots(a, config), _slots(b, config)):
                raise ValueError(
                    f"overlapping components {a.name!r} and {b.name!r} (one is part of the other); "
                    "select either the larger component or some of its parts, each once.")


def _overlap(a, b) -> bool:
    for field_a, idx_a in a:
        for field_b, idx_b in b:
            n = min(len(idx_a), len(idx_b))
            if field_a == field_b and idx_a[:n] == idx_b[:n]:
                return True
    return False


def _slots(spec: ComponentSpec, config: TransformerConfig) -> list[tuple[str, tuple[int, ...]]]:
    """(field name, index) pairs of the parameter slices that make up a component (only the
    fields this architecture has)."""
    present = config.present_shapes()
    if spec.kind == "embed":
        fields, index = ("W_E",), ()
    elif spec.kind == "pos":
        fields, index = ("W_pos",), ()
    elif spec.kind == "unembed":
        fields, index = _UNEMBED_FIELDS, ()
    elif spec.kind == "head":
        fields, index = _HEAD_FIELDS, (spec.layer, spec.head)
    elif spec.kind == "attn":
        fields, index = _ATTN_FIELDS, (spec.layer,)
    elif spec.kind == "mlp":
        fields, index = _MLP_FIELDS, (spec.layer,)
    else:
        fields, index = _ATTN_FIELDS + _MLP_FIELDS + _BLOCK_NORMS, (spec.layer,)
    return [(f, index) for f in fields if f in present]


def component_fields(config: TransformerConfig, name: str | ComponentSpec) -> tuple[str, ...]:
    """The field names of a component's parameter slices, in :func:`get_component` order."""
    return tuple(f for f, _ in _slots(parse_component(name, config), config))


def component_size(config: TransformerConfig, name: str | ComponentSpec) -> int:
    """Number of scalar parameters in a component (e.g. 4·d_model·d_head + 3·d_head for a head)."""
    spec = parse_component(name, config)
    shapes = config.parameter_shapes()
    return sum(int(np.prod(shapes[f][len(idx) :])) for f, idx in _slots(spec, config))


def get_component(
    model: Transformer, name: str | ComponentSpec
) -> dict[str, Float[Array, "*shape"]]:
    """The parameter slices of a component, keyed by field name.

    E.g. ``get_component(model, "1:6")`` is ``{"W_Q": model.W_Q[1, 6], ..., "b_V": model.b_V[1,
    6]}`` with shapes ``[d_model, d_head]`` (W_Q/W_K/W_V), ``[d_head, d_model]`` (W_O) and
    ``[d_head]`` (biases).
    """
    spec = parse_component(name, model.config)
    return {f: _take(getattr(model, f), idx) for f, idx in _slots(spec, model.config)}


def _take(array, index):
    """``array[index]``; a concrete array is sliced on the host (eager JAX slicing would compile
    a small program for every new index)."""
    if isinstance(array, jax.core.Tracer):
        return array[index]
    return jnp.asarray(np.asarray(array)[index])


def get_components(
    model: Transformer, names: Iterable[str | ComponentSpec]
) -> dict[str, dict[str, Float[Array, "*shape"]]]:
    """``{canonical name: get_component(model, name)}`` for several components."""
    return {parse_component(n, model.config).name: get_component(model, n) for n in names}


def set_component(
    model: Transformer,
    name: str | ComponentSpec,
    values: Mapping[str, Float[Array, "*shape"]],
    *,
    partial: bool = False,
) -> Transformer:
    """A new model with the component's parameter slices replaced by ``values``.

    ``values`` has the keys and shapes that :func:`get_component` returns (all of them unless
    ``partial=True``); a missing or unknown key or a wrong shape is a ValueError. Values are cast
    to the parameter's dtype. Works under ``jit`` and ``grad`` (it is a functional
    ``.at[idx].set``), so the gradient with respect to ``values`` flows through the model.
    """
    spec = parse_component(name, model.config)
    slots = dict(_slots(spec, model.config))
    unknown = sorted(set(values) - set(slots))
    missing = sorted(set(slots) - set(values))
    if unknown:
        raise ValueError(
            f"component {spec.name!r} has no parameter(s) {unknown}; its parameters are "
            f"{list(slots)}."
        )
    if missing and not partial:
        raise ValueError(
            f"values for component {spec.name!r} lack {missing}; pass all of {list(slots)} "
            "or use partial=True."
        )
    fields, new_leaves = [], []
    for f, idx in slots.items():
        if f not in values:
            continue
        old = getattr(model, f)
        expected = old.shape[len(idx) :]
        v = jnp.asarray(values[f])
        if v.shape != expected:
            raise ValueError(
                f"component {spec.name!r}: value for {f} has shape {tuple(v.shape)}, expected "
                f"{tuple(expected)}."
            )
        v = v.astype(old.dtype)
        fields.append(f)
        new_leaves.append(v if not idx else old.at[idx].set(v))
    return eqx.tree_at(lambda m: [getattr(m, f) for f in fields], model, new_leaves)


def set_components(
    model: Transformer,
    values: Mapping[str | ComponentSpec, Mapping[str, Float[Array, "*shape"]]],
) -> Transformer:
    """Apply :func:`set_component` for several non-overlapping components.

    A head together with its own layer overlaps and is a ValueError.
    """
    specs = [parse_component(n, model.config) for n in values]
    canonical_components(model.config, [spec.name for spec in specs])
    for spec, v in zip(specs, values.values(), strict=True):
        model = set_component(model, spec, v)
    return model


def component_mask(
    model: Transformer, names: Iterable[str | ComponentSpec]
) -> Transformer:
    """A model-shaped pytree of bool arrays, True on the parameters of the given components.

    Useful to freeze everything else (e.g. multiply a gradient by the mask) or to count the
    selected parameters, ``sum(m.sum() for m in jax.tree.leaves(mask))``.
    """
    mask = jax.tree.map(lambda x: jnp.zeros(x.shape, bool), model)
    for n in names:
        spec = parse_component(n, model.config)
        ones = {
            f: jnp.ones(getattr(model, f)[idx].shape, bool) for f, idx in _slots(spec, model.config)
        }
        mask = set_component(mask, spec, ones)
    return mask


def named_parameters(model: Transformer) -> dict[str, Float[Array, "*shape"]]:
    """All parameter arrays keyed by field name (``W_E``, ``W_pos``, ``W_Q``, …; absent LayerNorm
    fields are omitted)."""
    return {f: getattr(model, f) for f in _PARAM_FIELDS if getattr(model, f) is not None}


def replace_parameters(
    model: Transformer, params: Mapping[str, Float[Array, "*shape"]]
) -> Transformer:
    """A new model with whole parameter arrays replaced (any subset of :func:`named_parameters`)."""
    current = named_parameters(model)
    unknown = sorted(set(params) - set(current))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; the model has {list(current)}.")
    fields, leaves = [], []
    for f, v in params.items():
        v = jnp.asarray(v)
        if v.shape != current[f].shape:
            raise ValueError(
                f"parameter {f} has shape {tuple(current[f].shape)}, got {tuple(v.shape)}."
            )
        fields.append(f)
        leaves.append(v.astype(current[f].dtype))
    return eqx.tree_at(lambda m: [getattr(m, f) for f in fields], model, leaves)


# ---------------------------------------------------------------------------- activations


def head_outputs(
    model: Transformer, tokens: Int[Array, " seq"]
) -> Float[Array, "layer head seq d_model"]:
    """What each head writes to the residual stream, out_{l,h} = A_{l,h} v_{l,h} W_O[l,h]."""
    return model.run_with_cache(tokens).head_out


def get_activation(
    model: Transformer,
    tokens: Int[Array, " seq"],
    name: str | ComponentSpec,
    *,
    cache: ActivationCache | None = None,
) -> Float[Array, "seq dim"]:
    """The activation of a component on one sequence.

    head ``L:H``: its output out_{L,H} ``[seq, d_model]``; ``L.attn``: the attention's write
    Σ_h out_{L,h} + b_O[L]; ``L.mlp``: the MLP's write; ``layer L``: the block's whole write
    x^{L+1} − x^L (all ``[seq, d_model]``); ``embed``: W_E[t]; ``pos``: W_pos[:seq];
    ``unembed``: the logits ``[seq, d_vocab]``. Pass ``cache`` (from ``model.run_with_cache``)
    to avoid recomputing the forward pass.
    """
    spec = parse_component(name, model.config)
    if cache is None:
        cache = model.run_with_cache(tokens)
    if spec.kind == "head":
        return cache.head_out[spec.layer, spec.head]
    if spec.kind == "attn":
        return cache.attn_out[spec.layer]
    if spec.kind == "mlp":
        return cache.mlp_out[spec.layer]
    if spec.kind == "layer":
        return cache.resid[spec.layer + 1] - cache.resid[spec.layer]
    if spec.kind == "embed":
        return cache.embed
    if spec.kind == "pos":
        return cache.pos
    return cache.logits


def check_head_decomposition(
    model: Transformer, tokens: Int[Array, " seq"]
) -> Float[Array, ""]:
    """Largest absolute violation of the residual-stream identities.

    Checks x^{l+1} = x^l + Σ_h out_{l,h} + b_O[l] (+ mlp_l) for every layer and
    x^L = W_E[t] + W_pos + Σ_{l,h} out_{l,h} + Σ_l b_O[l] (+ Σ_l mlp_l), where x^{l+1} is the
    layer output of
    the ordinary forward pass (:meth:`~Transformer.apply_layer`) and out_{l,h} comes
    from :func:`head_outputs`. Returns ``max |lhs − rhs|`` (≈ float32 round-off when the identity
    holds).
    """
    cache = model.run_with_cache(tokens)
    mlp = 0.0 if cache.mlp_out is None else cache.mlp_out
    errs, total = [], cache.embed + cache.pos
    for l in range(model.config.n_layers):
        layer_out = model.apply_layer(l, cache.resid[l])
        write = cache.head_out[l].sum(axis=0) + model.output_bias(l)
        if cache.mlp_out is not None:
            write = write + mlp[l]
        errs.append(jnp.max(jnp.abs(layer_out - (cache.resid[l] + write))))
        total = total + write
    final = model.residual_from(0, model.embed(tokens))
    errs.append(jnp.max(jnp.abs(final - total)))
    return jnp.max(jnp.stack(errs))
