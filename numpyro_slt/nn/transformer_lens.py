"""Import a TransformerLens ``HookedTransformer`` state dict as a
:class:`~numpyro_slt.nn.transformer.Transformer`.

:func:`from_transformer_lens` takes the state dict (``model.state_dict()``, a mapping name ->
array, or a ``.safetensors`` / ``.pt`` file) and the model's config in
``HookedTransformerConfig`` naming (the config object itself or a dict such as
``cfg.to_dict()``). TransformerLens already stores every weight per head in this network's
layout, so the map is one to one (L layers, H heads, D = d_model, E = d_head, M = d_mlp,
V = d_vocab); layer and head numbers are kept:

- ``embed.W_E [V, D]`` → ``W_E``; ``pos_embed.W_pos [n_ctx, D]`` → ``W_pos`` (absent with
  ``positional_embedding_type="rotary"``).
- ``blocks.l.attn.W_Q``, ``W_K``, ``W_V`` ``[H, D, E]`` → ``W_Q[l]``, …; ``blocks.l.attn.W_O
  [H, E, D]`` → ``W_O[l]``; ``b_Q``, ``b_K``, ``b_V`` ``[H, E]`` and ``b_O [D]`` likewise.
- ``blocks.l.ln1.w``, ``.b`` → ``ln_w[l]``, ``ln_b[l]``; ``ln_final.w``, ``.b`` →
  ``ln_final_w``, ``ln_final_b``; with ``normalization_type="LNPre"`` (LayerNorm weights folded
  into the next matrices) the LayerNorms centre and scale only, so their weights are ones and
  their biases zeros; with ``None`` there is no LayerNorm.
- MLP blocks (``attn_only=False``): ``blocks.l.ln2`` → ``ln2_w``, ``ln2_b``;
  ``blocks.l.mlp.W_in [D, M]``, ``b_in [M]``, ``W_out [M, D]``, ``b_out [D]`` → ``W_in[l]``, ….
- ``unembed.W_U [D, V]`` → ``W_U``, ``unembed.b_U [V]`` → ``b_U``.
- rotary: the first ``rotary_dim`` dims of each head's query and key rotate in GPT-NeoX's
  rotate-half convention (TransformerLens' default ``rotary_adjacent_pairs=False``), base
  ``rotary_base``.

Buffers (``blocks.l.attn.IGNORE``, ``mask``, ``rotary_sin``, ``rotary_cos``) are ignored; any
other weight the conversion does not use is an error. Settings that change the forward pass and
that the network does not implement are refused (ValueError), among them grouped-query
attention (``n_key_value_heads``), RMSNorm, gated MLPs, SoLU, local attention, ALiBi and
shortformer positions, soft caps, RoPE scaling, a custom ``attn_scale`` and
``scale_attn_by_inverse_layer_idx``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint_io import WeightTable, build_network, load_safetensors, load_torch_file

__all__ = ["convert_state_dict", "from_transformer_lens", "transformer_config_kwargs"]

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_BUFFERS = (r"^blocks\.\d+\.attn\.(IGNORE|mask|rotary_sin|rotary_cos)$",)
_POST_NORM = ("Olmo2ForCausalLM", "Olmo3ForCausalLM")
# (field, value the network implements, what a different value means)
_MUST_BE: tuple[tuple[str, Any, str], ...] = (
    ("gated_mlp", False, "gated MLPs"),
    ("uses_rms_norm", False, "RMSNorm"),
    ("final_rms", False, "RMSNorm before the unembedding"),
    ("scale_attn_by_inverse_layer_idx", False, "attention scores divided by layer + 1"),
    ("use_qk_norm", False, "normalised queries and keys"),
    ("clip_qkv", None, "clamped queries, keys and values"),
    ("use_logn_attn", False, "log-n query scaling"),
    ("use_dynamic_ntk_rope", False, "dynamic NTK RoPE"),
    ("use_local_attn", False, "local (sliding-window) attention"),
    ("attention_dir", "causal", "non-causal attention"),
    ("post_embedding_ln", False, "a LayerNorm after the embedding"),
    ("rotary_adjacent_pairs", False, "GPT-J style rotary on adjacent pairs"),
    ("rotary_scaling_factor", 1.0, "linearly scaled RoPE"),
    ("use_NTK_by_parts_rope", False, "NTK-by-parts RoPE"),
    ("use_yarn_rope", False, "YaRN RoPE"),
    ("use_attention_sinks", False, "attention sinks"),
    ("num_experts", None, "mixture-of-experts MLPs"),
    ("use_normalization_before_and_after", False, "normalisation after each sublayer too"),
)


def from_transformer_lens(state_dict: Mapping[str, Any] | str | os.PathLike, config: Any):
    """A float32 :class:`~numpyro_slt.nn.transformer.Transformer` with the weights of a
    TransformerLens ``HookedTransformer``.

    Args:
        state_dict: name -> array (numpy arrays, torch tensors, or anything ``np.asarray``
            takes), e.g. ``model.state_dict()``; or the path of a ``.safetensors`` file, or of a
            ``.pt`` / ``.pth`` file (read with ``torch.load``, only when torch is installed).
        config: the ``HookedTransformerConfig`` (or any object with its attribute names) or a
            dict with its keys (``n_layers``, ``d_model``, ``d_head``, ``n_heads``, ``n_ctx``,
            ``d_vocab``, ``d_mlp``, ``act_fn``, ``normalization_type``, ``attn_only``,
            ``positional_embedding_type``, ``rotary_dim``, ``rotary_base``,
            ``parallel_attn_mlp``, ``eps``, …). Missing keys take TransformerLens' defaults;
            ``d_vocab=-1`` is read from ``embed.W_E``.

    Raises:
        ValueError: a setting the network does not implement, or a missing, misshapen or
            unexpected weight (the message names the key and the expected shape).
        ImportError: a ``.pt`` file without torch installed.
    """
    weights, source = _read_state_dict(state_dict)
    kwargs, arrays = convert_state_dict(weights, config, source=source)
    return build_network(kwargs, arrays)


def _read_state_dict(state_dict: Any) -> tuple[Mapping[str, Any], str]:
    if isinstance(state_dict, (str, os.PathLike)):
        path = Path(state_dict).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no state dict file {str(path)!r}.")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return load_safetensors(path), str(path)
        if suffix in (".pt", ".pth", ".bin"):
            return load_torch_file(path), str(path)
        raise ValueError(f"{path}: a state dict file must end in .safetensors, .pt or .pth.")
    if not isinstance(state_dict, Mapping):
        raise TypeError("state_dict must be a mapping name -> array or a file path, got "
                        f"{type(state_dict).__name__}.")
    return state_dict, "TransformerLens state dict"


class _TLConfig:
    """Reads HookedTransformerConfig fields from a dict or an object, with TL's defaults."""

    def __init__(self, config: Any):
        if config is None:
            raise TypeError("config is required: the HookedTransformerConfig or its dict.")
        self._config = config

    def get(self, name: str, default: Any = None) -> Any:
        if isinstance(self._config, Mapping):
            return self._config.get(name, default)
        return getattr(self._config, name, default)

    def integer(self, name: str, default: Any = None) -> int:
        value = self.get(name, default)
        if value is None:
            raise ValueError(f"TransformerLens config has no {name!r}; it is needed to shape the "
                             "network.")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"TransformerLens config {name}={value!r} must be a positive "
                             "integer.")
        return int(value)


def transformer_config_kwargs(config: Any, weights: Mapping[str, Any] | None = None
                              ) -> dict[str, Any]:
    """The :class:`~numpyro_slt.nn.config.TransformerConfig` fields of a TransformerLens config,
    after refusing the settings the network does not implement. ``weights`` (the state dict) is
    consulted only for ``d_vocab=-1``."""
    cfg = _TLConfig(config)
    d_model = cfg.integer("d_model")
    d_head = cfg.integer("d_head")
    if cfg.get("n_heads", -1) in (-1, None):
        if d_model % d_head:
            raise ValueError(f"TransformerLens config: d_model {d_model} is not divisible by "
                             f"d_head {d_head} (needed for n_heads=-1).")
        n_heads = d_model // d_head
    else:
        n_heads = cfg.integer("n_heads")
    for name, wanted, meaning in _MUST_BE:
        value = cfg.get(name, wanted)
        if value != wanted:
            raise ValueError(f"TransformerLens config {name}={value!r} ({meaning}) is not "
                             f"supported; numpyro_slt needs {name}={wanted!r}.")
    kv = cfg.get("n_key_value_heads")
    if kv is not None and kv != n_heads:
        raise ValueError(f"TransformerLens config n_key_value_heads={kv!r} with n_heads={n_heads} "
                         "(grouped-query attention) is not supported; only multi-head attention "
                         "(n_key_value_heads None) is.")
    for name in ("attn_scores_soft_cap", "output_logits_soft_cap"):
        cap = cfg.get(name)
        if cap is not None and cap > 0:
            raise ValueError(f"TransformerLens config {name}={cap!r} (a tanh soft cap) is not "
                             "supported; use a value <= 0 (disabled).")
    arch = cfg.get("original_architecture")
    if arch in _POST_NORM:
        raise ValueError(f"TransformerLens config original_architecture={arch!r} is post-norm, "
                         "which is not supported.")
    if cfg.get("use_attn_scale", True) is not True:
        raise ValueError("TransformerLens config use_attn_scale=False (unscaled attention "
                         "scores) is not supported; scores are q·k/sqrt(d_head).")
    scale = cfg.get("attn_scale", -1.0)
    if scale not in (None, -1, -1.0) and not math.isclose(float(scale), math.sqrt(d_head),
                                                           rel_tol=1e-6):
        raise ValueError(f"TransformerLens config attn_scale={scale!r} is not supported; only "
                         f"sqrt(d_head) = {math.sqrt(d_head):.6g} is.")

    normalization = cfg.get("normalization_type", "LN")
    if normalization not in ("LN", "LNPre", None):
        raise ValueError(f"TransformerLens config normalization_type={normalization!r} is not "
                         "supported; supported are 'LN', 'LNPre' and None.")
    positional = cfg.get("positional_embedding_type", "standard")
    if positional not in ("standard", "rotary"):
        raise ValueError(f"TransformerLens config positional_embedding_type={positional!r} is "
                         "not supported; supported are 'standard' (learned) and 'rotary'.")

    if cfg.get("d_vocab", -1) in (-1, None):
        if weights is None or "embed.W_E" not in weights:
            raise ValueError("TransformerLens config d_vocab=-1 and no embed.W_E to read it "
                             "from; pass d_vocab.")
        d_vocab = int(np.shape(weights["embed.W_E"])[0])
    else:
        d_vocab = cfg.integer("d_vocab")
    d_vocab_out = cfg.get("d_vocab_out", -1)
    if d_vocab_out not in (-1, None, d_vocab):
        raise ValueError(f"TransformerLens config d_vocab_out={d_vocab_out!r} differs from "
                         f"d_vocab={d_vocab}; not supported (the unembedding predicts the "
                         "embedded vocabulary).")

    attn_only = cfg.get("attn_only", False)
    kwargs: dict[str, Any] = dict(
        n_layers=cfg.integer("n_layers"), n_heads=n_heads, d_model=d_model, d_head=d_head,
        n_ctx=cfg.integer("n_ctx"), d_vocab=d_vocab,
        layer_norm=normalization is not None, ln_eps=float(cfg.get("eps", 1e-5)),
        parallel_residual=False, tied_embeddings=False,
        attn_bias=True, mlp_bias=True, unembed_bias=True,
    )
    if not attn_only:
        act = cfg.get("act_fn", "relu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"TransformerLens config act_fn={act!r} is not supported; "
                             f"supported are {sorted(_ACTIVATIONS)}.")
        d_mlp = cfg.get("d_mlp")
        kwargs.update(d_mlp=cfg.integer("d_mlp", 4 * d_model if d_mlp in (None, -1) else d_mlp),
                      act_fn=_ACTIVATIONS[act],
                      parallel_residual=bool(cfg.get("parallel_attn_mlp", False)))
    if positional == "rotary":
        rotary_dim = cfg.get("rotary_dim") or d_head
        if not isinstance(rotary_dim, int) or rotary_dim % 2 or not 2 <= rotary_dim <= d_head:
            raise ValueError(f"TransformerLens config rotary_dim={rotary_dim!r} must be an even "
                             f"number between 2 and d_head={d_head}.")
        kwargs.update(positional="rotary", rotary_dim=rotary_dim,
                      rotary_base=float(cfg.get("rotary_base", 10000)))
    return kwargs


def convert_state_dict(state_dict: Mapping[str, Any], config: Any, *,
                       source: str = "TransformerLens state dict"
                       ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(TransformerConfig fields, parameter arrays)`` of a TransformerLens state dict: float32
    arrays keyed by the network's field names (the module docstring gives the map)."""
    kwargs = transformer_config_kwargs(config, state_dict)
    normalization = _TLConfig(config).get("normalization_type", "LN")
    L, H, D, E, V = (kwargs[k] for k in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab"))
    M = kwargs.get("d_mlp")
    w = WeightTable(state_dict, source=source, ignore=_BUFFERS)
    ones, zeros = np.ones(D, np.float32), np.zeros(D, np.float32)

    def norm(name: str) -> tuple[np.ndarray, np.ndarray]:
        if normalization == "LN":
            return w.take(name + ".w", (D,)), w.take(name + ".b", (D,))
        return ones, zeros  # LNPre: centre and scale only

    layers = []
    for l in range(L):
        a = f"blocks.{l}.attn."
        layer = {f: w.take(a + f, (H, D, E)) for f in ("W_Q", "W_K", "W_V")}
        layer["W_O"] = w.take(a + "W_O", (H, E, D))
        layer.update({f: w.take(a + f, (H, E)) for f in ("b_Q", "b_K", "b_V")})
        layer["b_O"] = w.take(a + "b_O", (D,))
        if normalization is not None:
            layer["ln_w"], layer["ln_b"] = norm(f"blocks.{l}.ln1")
        if M is not None:
            m = f"blocks.{l}.mlp."
            if normalization is not None:
                layer["ln2_w"], layer["ln2_b"] = norm(f"blocks.{l}.ln2")
            layer.update(W_in=w.take(m + "W_in", (D, M)), b_in=w.take(m + "b_in", (M,)),
                         W_out=w.take(m + "W_out", (M, D)), b_out=w.take(m + "b_out", (D,)))
        layers.append(layer)
    arrays = {k: np.stack([layer[k] for layer in layers]) for k in layers[0]}
    arrays["W_E"] = w.take("embed.W_E", (V, D))
    if kwargs.get("positional", "learned") == "learned":
        arrays["W_pos"] = w.take("pos_embed.W_pos", (kwargs["n_ctx"], D))
    if normalization is not None:
        arrays["ln_final_w"], arrays["ln_final_b"] = norm("ln_final")
    arrays["W_U"] = w.take("unembed.W_U", (D, V))
    arrays["b_U"] = w.take("unembed.b_U", (V,))
    w.check_all_used("Check that the config matches the model (attn_only, normalization_type, "
                     "positional_embedding_type); other modules are not supported.")
    return kwargs, arrays
