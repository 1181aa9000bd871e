"""Import Hugging Face GPT-2 and GPT-NeoX (Pythia) checkpoints as a
:class:`~numpyro_slt.nn.transformer.Transformer`.

:func:`from_pretrained` reads a folder written by ``model.save_pretrained(folder)`` (or a Hub
repository, downloaded with ``huggingface_hub``): ``config.json`` becomes a
:class:`~numpyro_slt.nn.config.TransformerConfig`, the safetensors weights become the network's
parameter arrays, and ``tokenizer.json`` (when present) a ``tokenizers.Tokenizer``. No torch is
needed. Layers and heads keep Hugging Face's numbering: HF layer l is layer l, and head h is the
h-th block of ``head_dim`` columns of the fused query/key/value projection.

Weight layouts (D = hidden size, H = heads, E = D / H, M = MLP width, V = vocabulary):

GPT-2 (``model_type: "gpt2"``). Every projection is a ``Conv1D``, whose weight is ``[in, out]``
(y = x W + b), i.e. the *transpose* of a torch ``Linear`` weight, so it is used as stored:

- ``wte.weight [V, D]`` → ``W_E``; ``wpe.weight [n_positions, D]`` → ``W_pos``.
- ``h.l.ln_1`` → ``ln_w[l], ln_b[l]``; ``h.l.ln_2`` → ``ln2_w[l], ln2_b[l]``;
  ``ln_f`` → ``ln_final_w, ln_final_b``.
- ``h.l.attn.c_attn.weight [D, 3D]``: columns ``[0, D)`` are the queries, ``[D, 2D)`` the keys,
  ``[2D, 3D)`` the values, and within each block head h owns columns ``[hE, (h+1)E)``:
  ``W_Q[l, h] = c_attn.weight[:, hE:(h+1)E]``, ``W_K[l, h] = c_attn.weight[:, D + hE: D +
  (h+1)E]``, … ``c_attn.bias [3D]`` splits the same way into ``b_Q, b_K, b_V``.
- ``h.l.attn.c_proj.weight [D, D]``: rows are the heads' concatenated values, so
  ``W_O[l, h] = c_proj.weight[hE:(h+1)E, :]``; ``c_proj.bias`` → ``b_O[l]``.
- ``h.l.mlp.c_fc.weight [D, M]`` → ``W_in[l]``, ``h.l.mlp.c_proj.weight [M, D]`` → ``W_out[l]``
  (with their biases ``b_in``, ``b_out``).
- the LM head is tied to ``wte`` (``tie_word_embeddings``, GPT-2's default; ``lm_head.weight``
  is then not needed and ignored when present): logits = LN_f(x) W_Eᵀ, with no bias. An untied
  GPT-2 takes ``lm_head.weight [V, D]`` → ``W_U = lm_head.weight.T``.

The ``transformer.`` prefix (``GPT2LMHeadModel``) is optional (a bare ``GPT2Model`` omits it).

GPT-NeoX (``model_type: "gpt_neox"``, Pythia). Projections are torch ``Linear`` layers, weight
``[out, in]`` (y = x Wᵀ + b), so they are transposed:

- ``gpt_neox.embed_in.weight [V, D]`` → ``W_E``; ``embed_out.weight [V, D]`` (older files and
  what transformers writes) or ``lm_head.weight`` → ``W_U = embed_out.weight.T``, no bias.
- ``layers.l.input_layernorm`` → ``ln_w, ln_b``; ``layers.l.post_attention_layernorm`` →
  ``ln2_w, ln2_b``; ``final_layer_norm`` → ``ln_final_w, ln_final_b``.
- ``layers.l.attention.query_key_value.weight [3D, D]`` is interleaved *per head*: its output
  rows are ordered (head, {query, key, value}, E), i.e. head h owns rows ``[3hE, 3(h+1)E)``, the
  first E of them its query, the next E its key, the last E its value:
  ``W_Q[l, h] = qkv.weight[3hE : 3hE + E, :].T``, ``W_K[l, h] = qkv.weight[3hE + E : 3hE + 2E,
  :].T``, ``W_V[l, h] = qkv.weight[3hE + 2E : 3(h+1)E, :].T``; the bias ``[3D]`` likewise.
- ``layers.l.attention.dense.weight [D, D]``: ``W_O[l, h] = dense.weight[:, hE:(h+1)E].T``.
- ``layers.l.mlp.dense_h_to_4h.weight [M, D]`` → ``W_in[l] = .T``;
  ``layers.l.mlp.dense_4h_to_h.weight [D, M]`` → ``W_out[l] = .T``.
- positions are rotary, no ``W_pos``: the first ``rotary_dim = int(E · rotary_pct)`` dims of each
  head's query and key are rotated in GPT-NeoX's rotate-half convention (the rotary part is
  split into halves [x1, x2], rotate_half(x) = [−x2, x1], frequency i = base^(−2i/rotary_dim)
  shared by dim i of both halves); the rest pass through. ``use_parallel_residual`` gives
  x ← x + attn(LN1 x) + mlp(LN2 x), otherwise the sequential GPT-2 form.

Buffers (``attn.bias``, ``attn.masked_bias``, ``attention.bias``, ``rotary_emb.inv_freq``) are
ignored; any other weight the conversion does not use is an error. Weights are converted to
float32 (bfloat16 exactly, float16 by widening).

Config keys that change the forward pass are all read, and a value this network does not
implement is refused with a ValueError rather than ignored: grouped-query attention
(``num_key_value_heads != num_attention_heads``), ``scale_attn_by_inverse_layer_idx``,
``scale_attn_weights=False``, ``add_cross_attention``, RoPE scaling (a ``rope_type`` other than
``"default"``), activations other than exact GELU, its tanh approximation and ReLU, and every
``model_type`` other than ``gpt2`` and ``gpt_neox`` (llama, bloom's ALiBi, …).
``reorder_and_upcast_attn`` is accepted: it changes only the order of float operations in
half precision, not the function, and this network computes in float32.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint_io import WeightTable, build_network, load_safetensors, load_torch_file

__all__ = ["SUPPORTED_MODEL_TYPES", "convert_checkpoint", "from_pretrained", "load_folder",
           "load_tokenizer", "transformer_config_kwargs"]

SUPPORTED_MODEL_TYPES = ("gpt2", "gpt_neox")
_SUPPORTED = "'gpt2' (GPT-2) and 'gpt_neox' (GPT-NeoX, e.g. EleutherAI's Pythia)"
_ARCHITECTURES = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
    "gpt_neox": ("GPTNeoXForCausalLM", "GPTNeoXModel"),
}
# Hugging Face activation names -> TransformerConfig.act_fn
_ACTIVATIONS = {
    "gelu": "gelu", "gelu_python": "gelu",
    "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "relu": "relu",
}
_DOWNLOAD_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json",
                      "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
_TORCH_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
_GPT2_BUFFERS = (r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$",)
_NEOX_BUFFERS = (r"(^|\.)layers\.\d+\.attention\.(bias|masked_bias)$", r"rotary_emb\.inv_freq$")


# ---------------------------------------------------------------------------- entry point


def from_pretrained(path_or_repo_id: str | os.PathLike, revision: str | None = None):
    """Load a Hugging Face GPT-2 or GPT-NeoX checkpoint as ``(network, tokenizer)``.

    Args:
        path_or_repo_id: a folder holding ``config.json`` and ``model.safetensors`` (or a sharded
            ``model.safetensors.index.json``), as written by ``save_pretrained``; or a Hub repo
            id such as ``"EleutherAI/pythia-14m"``, downloaded (config, safetensors, tokenizer
            only) with ``huggingface_hub.snapshot_download``. With ``HF_HUB_OFFLINE=1`` only the
            local Hub cache is used.
        revision: a branch, tag or commit of the Hub repo (e.g. Pythia's ``"step1000"``); an
            error with a local folder.

    Returns:
        ``(network, tokenizer)``: a float32 :class:`~numpyro_slt.nn.transformer.Transformer` whose
        ``token_losses`` equal the checkpoint's next-token losses, and a
        ``tokenizers.Tokenizer`` read from the folder's ``tokenizer.json`` (``None`` when there
        is none).

    Raises:
        ValueError: an unsupported ``model_type``, architecture or config value, a missing,
            misshapen or unexpected weight, or ``revision`` with a local folder.
        OSError: a repo id that cannot be downloaded (offline, no connection) and is not in
            the local cache; the message names the repo and says to pass a local folder.
    """
    folder = _resolve_folder(path_or_repo_id, revision)
    network = load_folder(folder)
    return network, load_tokenizer(folder)


def load_folder(folder: str | os.PathLike):
    """The network of a local checkpoint folder (``config.json`` + safetensors weights)."""
    folder = Path(folder)
    hf_config = _read_config(folder)  # refuses an unsupported config before reading weights
    weights = _load_weights(folder)
    kwargs, arrays = convert_checkpoint(hf_config, weights, source=str(folder))
    return build_network(kwargs, arrays)


def _read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, checked (:func:`transformer_config_kwargs` raises for anything
    unsupported)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder} has no config.json; pass the folder that save_pretrained wrote "
                         "(config.json next to model.safetensors).")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON: {err}") from None
    transformer_config_kwargs(hf_config, source=str(folder))
    return hf_config


def load_tokenizer(folder: str | os.PathLike):
    """``tokenizers.Tokenizer.from_file(folder / "tokenizer.json")``, or ``None`` without one."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


# ---------------------------------------------------------------------------- config


class _Config:
    """A config.json dict whose reads are checked: typed, with aliases, defaults and refusals."""

    def __init__(self, data: Mapping[str, Any], source: str):
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: config.json must hold a JSON object, got "
                             f"{type(data).__name__}.")
        self.data, self.source = dict(data), source

    def get(self, name: str, default: Any = None, *, aliases: tuple[str, ...] = ()) -> Any:
        found = {n: self.data[n] for n in (name, *aliases) if self.data.get(n) is not None}
        values = list(found.values())
        if any(v != values[0] for v in values[1:]):
            raise ValueError(f"{self.source}: config.json gives conflicting values {found}.")
        return values[0] if values else default

    def integer(self, name: str, *, aliases: tuple[str, ...] = (), default: Any = None,
                minimum: int = 1) -> int:
        value = self.get(name, default, aliases=aliases)
        if value is None:
            raise ValueError(f"{self.source}: config.json has no {name!r}; it is needed to shape "
                             "the network.")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{self.source}: config.json {name!r} must be an integer >= "
                             f"{minimum}, got {value!r}.")
        return value

    def number(self, name: str, default: float, *, aliases: tuple[str, ...] = ()) -> float:
        value = self.get(name, default, aliases=aliases)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{self.source}: config.json {name!r} must be a positive number, got "
                             f"{value!r}.")
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ValueError(f"{self.source}: config.json {name!r} must be true or false, got "
                             f"{value!r}.")
        return value

    def require(self, name: str, default: Any, allowed: tuple[Any, ...], why: str) -> Any:
        value = self.get(name, default)
        if value not in allowed:
            raise ValueError(
                f"{self.source}: config.json {name}={value!r} is not supported ({why}); "
                f"numpyro_slt imports only checkpoints with {name} in {list(allowed)}.")
        return value

    def activation(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if value not in _ACTIVATIONS:
            raise ValueError(
                f"{self.source}: config.json {name}={value!r} is not supported; supported are "
                f"{sorted(_ACTIVATIONS)} (exact GELU, its tanh approximation, ReLU).")
        return _ACTIVATIONS[value]

    def head_dim(self, d_model: int, n_heads: int) -> int:
        if d_model % n_heads:
            raise ValueError(f"{self.source}: hidden size {d_model} is not divisible by the "
                             f"{n_heads} attention heads.")
        d_head = d_model // n_heads
        kv = self.get("num_key_value_heads", n_heads, aliases=("n_kv_heads", "num_kv_heads"))
        if kv != n_heads:
            raise ValueError(
                f"{self.source}: grouped-query attention (num_key_value_heads={kv} with "
                f"num_attention_heads={n_heads}) is not supported; only multi-head attention "
                "with as many key/value heads as query heads is.")
        explicit = self.get("head_dim", d_head)
        if explicit != d_head:
            raise ValueError(f"{self.source}: config.json head_dim={explicit!r} differs from "
                             f"hidden_size / num_attention_heads = {d_head}; not supported.")
        return d_head


def transformer_config_kwargs(hf_config: Mapping[str, Any], *, source: str = "config.json"
                              ) -> dict[str, Any]:
    """The :class:`~numpyro_slt.nn.config.TransformerConfig` fields of a Hugging Face
    ``config.json`` (a dict), after refusing every setting the network does not implement."""
    cfg = _Config(hf_config, source)
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        what = "has no model_type" if model_type is None else f"has model_type {model_type!r}"
        raise ValueError(f"{source}: the checkpoint {what}, which is not supported; "
                         f"numpyro_slt.nn.from_pretrained imports {_SUPPORTED} checkpoints.")
    architectures = cfg.get("architectures") or []
    unknown = [a for a in architectures if a not in _ARCHITECTURES[model_type]]
    if unknown:
        raise ValueError(f"{source}: architecture {unknown} is not supported; for model_type "
                         f"{model_type!r} numpyro_slt imports {list(_ARCHITECTURES[model_type])}.")
    if cfg.get("is_encoder_decoder", False):
        raise ValueError(f"{source}: encoder-decoder models are not supported.")
    return _gpt2_kwargs(cfg) if model_type == "gpt2" else _neox_kwargs(cfg)


def _gpt2_kwargs(cfg: _Config) -> dict[str, Any]:
    d_model = cfg.integer("n_embd", aliases=("hidden_size",))
    n_heads = cfg.integer("n_head", aliases=("num_attention_heads",))
    d_head = cfg.head_dim(d_model, n_heads)
    cfg.require("scale_attn_weights", True, (True,),
                "attention scores unscaled by 1/sqrt(head_dim)")
    cfg.require("scale_attn_by_inverse_layer_idx", False, (False,),
                "attention scores of layer l divided by l + 1 as well")
    cfg.require("add_cross_attention", False, (False,), "cross-attention to an encoder")
    # reorder_and_upcast_attn: same function, computed in float32 here (see the module doc)
    cfg.flag("reorder_and_upcast_attn", False)
    return dict(
        n_layers=cfg.integer("n_layer", aliases=("num_hidden_layers",)),
        n_heads=n_heads, d_model=d_model, d_head=d_head,
        n_ctx=cfg.integer("n_positions", aliases=("max_position_embeddings",)),
        d_vocab=cfg.integer("vocab_size", minimum=2),
        layer_norm=True,
        ln_eps=cfg.number("layer_norm_epsilon", 1e-5),
        d_mlp=cfg.integer("n_inner", default=4 * d_model),
        act_fn=cfg.activation("activation_function", "gelu_new"),
        positional="learned",
        parallel_residual=False,
        tied_embeddings=cfg.flag("tie_word_embeddings", True),
        attn_bias=True, mlp_bias=True, unembed_bias=False,
    )


def _neox_kwargs(cfg: _Config) -> dict[str, Any]:
    d_model = cfg.integer("hidden_size")
    n_heads = cfg.integer("num_attention_heads")
    d_head = cfg.head_dim(d_model, n_heads)
    rotary_dim, base = _neox_rotary(cfg, d_head)
    return dict(
        n_layers=cfg.integer("num_hidden_layers"),
        n_heads=n_heads, d_model=d_model, d_head=d_head,
        n_ctx=cfg.integer("max_position_embeddings"),
        d_vocab=cfg.integer("vocab_size", minimum=2),
        layer_norm=True,
        ln_eps=cfg.number("layer_norm_eps", 1e-5),
        d_mlp=cfg.integer("intermediate_size"),
        act_fn=cfg.activation("hidden_act", "gelu"),
        positional="rotary", rotary_dim=rotary_dim, rotary_base=base,
        parallel_residual=cfg.flag("use_parallel_residual", True),
        tied_embeddings=cfg.flag("tie_word_embeddings", False),
        attn_bias=cfg.flag("attention_bias", True), mlp_bias=True, unembed_bias=False,
    )


def _neox_rotary(cfg: _Config, d_head: int) -> tuple[int, float]:
    """(rotary_dim, base) from any of the spellings transformers has written: ``rope_parameters``
    (transformers 5: rope_type, rope_theta, partial_rotary_factor), ``rope_scaling`` (the older
    name of that dict), ``rotary_pct`` / ``rotary_emb_base`` (the original GPT-NeoX names, in
    Pythia's config.json) and top-level ``rope_theta`` / ``partial_rotary_factor``. Values given
    in several places must agree; the defaults are GPTNeoXConfig's (0.25, 10000)."""
    merged: dict[str, Any] = {}
    for name in ("rope_parameters", "rope_scaling"):
        params = cfg.get(name)
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise ValueError(f"{cfg.source}: config.json {name} must be an object, got "
                             f"{params!r}.")
        for key, value in params.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"{cfg.source}: config.json rope_parameters and rope_scaling "
                                 f"disagree on {key!r} ({merged[key]!r} vs {value!r}).")
            merged[key] = value
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    if rope_type != "default":
        raise ValueError(
            f"{cfg.source}: RoPE scaling rope_type={rope_type!r} is not supported; numpyro_slt "
            "implements only the default rotary embedding (rope_type 'default').")
    spellings = _Config({
        "rope_parameters.rope_theta": merged.get("rope_theta"),
        "rotary_emb_base": cfg.data.get("rotary_emb_base"),
        "rope_theta": cfg.data.get("rope_theta"),
        "rope_parameters.partial_rotary_factor": merged.get("partial_rotary_factor"),
        "rotary_pct": cfg.data.get("rotary_pct"),
        "partial_rotary_factor": cfg.data.get("partial_rotary_factor"),
    }, cfg.source)
    base = spellings.number("rope_parameters.rope_theta", 10000.0,
                            aliases=("rotary_emb_base", "rope_theta"))
    pct = spellings.get("rope_parameters.partial_rotary_factor", 0.25,
                        aliases=("rotary_pct", "partial_rotary_factor"))
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 0 < pct <= 1:
        raise ValueError(f"{cfg.source}: config.json rotary_pct / partial_rotary_factor must be "
                         f"in (0, 1], got {pct!r}.")
    rotary_dim = int(d_head * pct)
    if rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(
            f"{cfg.source}: rotary_pct {pct} of head_dim {d_head} rotates {rotary_dim} dims; "
            "only an even number >= 2 is supported.")
    return rotary_dim, base


# ---------------------------------------------------------------------------- weights


def convert_checkpoint(hf_config: Mapping[str, Any], weights: Mapping[str, Any], *,
                       source: str = "checkpoint") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(TransformerConfig fields, parameter arrays)`` of a Hugging Face checkpoint: its
    ``config.json`` dict and its state dict (name -> array; numpy, torch or anything
    ``np.asarray`` takes). The arrays are float32, keyed by the network's field names and shaped
    as :meth:`TransformerConfig.parameter_shapes` says; the module docstring gives the map."""
    kwargs = transformer_config_kwargs(hf_config, source=source)
    if hf_config["model_type"] == "gpt2":
        arrays = _gpt2_arrays(kwargs, weights, source)
    else:
        arrays = _neox_arrays(kwargs, weights, source)
    return kwargs, arrays


def _stack(per_layer: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([layer[k] for layer in per_layer]) for k in per_layer[0]}


def _gpt2_arrays(c: dict[str, Any], weights: Mapping[str, Any], source: str
                 ) -> dict[str, np.ndarray]:
    L, H, D, E, M, V = (c["n_layers"], c["n_heads"], c["d_model"], c["d_head"], c["d_mlp"],
                        c["d_vocab"])
    w = WeightTable(weights, source=source, prefix="transformer.", ignore=_GPT2_BUFFERS)

    def heads(block: np.ndarray) -> np.ndarray:  # [D, H·E] columns -> [H, D, E]
        return block.reshape(D, H, E).transpose(1, 0, 2)

    layers = []
    for l in range(L):
        p = f"h.{l}."
        qkv = w.take(p + "attn.c_attn.weight", (D, 3 * D), what="Conv1D, [in, out]")
        qkv_b = w.take(p + "attn.c_attn.bias", (3 * D,))
        layers.append(dict(
            ln_w=w.take(p + "ln_1.weight", (D,)), ln_b=w.take(p + "ln_1.bias", (D,)),
            W_Q=heads(qkv[:, :D]), W_K=heads(qkv[:, D:2 * D]), W_V=heads(qkv[:, 2 * D:]),
            b_Q=qkv_b[:D].reshape(H, E), b_K=qkv_b[D:2 * D].reshape(H, E),
            b_V=qkv_b[2 * D:].reshape(H, E),
            W_O=w.take(p + "attn.c_proj.weight", (D, D)).reshape(H, E, D),
            b_O=w.take(p + "attn.c_proj.bias", (D,)),
            ln2_w=w.take(p + "ln_2.weight", (D,)), ln2_b=w.take(p + "ln_2.bias", (D,)),
            W_in=w.take(p + "mlp.c_fc.weight", (D, M)), b_in=w.take(p + "mlp.c_fc.bias", (M,)),
            W_out=w.take(p + "mlp.c_proj.weight", (M, D)),
            b_out=w.take(p + "mlp.c_proj.bias", (D,)),
        ))
    arrays = _stack(layers)
    arrays["W_E"] = w.take("wte.weight", (V, D))
    arrays["W_pos"] = w.take("wpe.weight", (c["n_ctx"], D))
    arrays["ln_final_w"] = w.take("ln_f.weight", (D,))
    arrays["ln_final_b"] = w.take("ln_f.bias", (D,))
    if c["tied_embeddings"]:
        w.mark_used("lm_head.weight", bare=True)  # tied: transformers uses wte in its place
    else:
        arrays["W_U"] = w.take("lm_head.weight", (V, D), bare=True, what="untied LM head").T
    w.check_all_used("A GPT-2 checkpoint with extra modules is not supported.")
    return arrays


def _neox_arrays(c: dict[str, Any], weights: Mapping[str, Any], source: str
                 ) -> dict[str, np.ndarray]:
    L, H, D, E, M, V = (c["n_layers"], c["n_heads"], c["d_model"], c["d_head"], c["d_mlp"],
                        c["d_vocab"])
    w = WeightTable(weights, source=source, prefix="gpt_neox.", ignore=_NEOX_BUFFERS)
    layers = []
    for l in range(L):
        p = f"layers.{l}."
        # rows ordered (head, {q, k, v}, E); a torch Linear weight is [out, in]
        qkv = w.take(p + "attention.query_key_value.weight", (3 * D, D),
                     what="Linear, [out, in]").reshape(H, 3, E, D)
        layer = dict(
            ln_w=w.take(p + "input_layernorm.weight", (D,)),
            ln_b=w.take(p + "input_layernorm.bias", (D,)),
            W_Q=qkv[:, 0].transpose(0, 2, 1), W_K=qkv[:, 1].transpose(0, 2, 1),
            W_V=qkv[:, 2].transpose(0, 2, 1),
            W_O=w.take(p + "attention.dense.weight", (D, D)).T.reshape(H, E, D),
            ln2_w=w.take(p + "post_attention_layernorm.weight", (D,)),
            ln2_b=w.take(p + "post_attention_layernorm.bias", (D,)),
            W_in=w.take(p + "mlp.dense_h_to_4h.weight", (M, D)).T,
            b_in=w.take(p + "mlp.dense_h_to_4h.bias", (M,)),
            W_out=w.take(p + "mlp.dense_4h_to_h.weight", (D, M)).T,
            b_out=w.take(p + "mlp.dense_4h_to_h.bias", (D,)),
        )
        if c["attn_bias"]:
            qkv_b = w.take(p + "attention.query_key_value.bias", (3 * D,)).reshape(H, 3, E)
            layer.update(b_Q=qkv_b[:, 0], b_K=qkv_b[:, 1], b_V=qkv_b[:, 2],
                         b_O=w.take(p + "attention.dense.bias", (D,)))
        layers.append(layer)
    arrays = _stack(layers)
    arrays["W_E"] = w.take("embed_in.weight", (V, D))
    arrays["ln_final_w"] = w.take("final_layer_norm.weight", (D,))
    arrays["ln_final_b"] = w.take("final_layer_norm.bias", (D,))
    heads = [k for k in ("embed_out.weight", "lm_head.weight") if w.has(k, bare=True)]
    if c["tied_embeddings"]:
        for k in heads:
            w.mark_used(k, bare=True)
    else:
        if len(heads) == 2:
            raise ValueError(f"{source}: both 'embed_out.weight' and 'lm_head.weight' are "
                             "present; expected one LM head.")
        arrays["W_U"] = w.take(heads[0] if heads else "embed_out.weight", (V, D), bare=True,
                               what="the untied LM head").T
    w.check_all_used("A GPT-NeoX checkpoint with extra modules is not supported.")
    return arrays


def _load_weights(folder: Path) -> dict[str, np.ndarray]:
    """The folder's state dict: ``model.safetensors``, a sharded ``model.safetensors.index.json``,
    other ``*.safetensors`` files, or (only when torch is installed) ``pytorch_model.bin``."""
    files, read = _weight_files(folder)
    weights: dict[str, np.ndarray] = {}
    for path in files:
        weights.update(read(path))
    return weights


def _weight_files(folder: Path):
    """(files, reader) of the folder's weights, in the order of :func:`_load_weights`."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single], load_safetensors
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        names = sorted(set(weight_map.values()))
        for name in names:
            if not (folder / name).is_file():
                raise ValueError(f"{index} names the shard {name!r}, which is not in {folder}.")
        return [folder / name for name in names], load_safetensors
    if files := sorted(folder.glob("*.safetensors")):
        return files, load_safetensors
    if bins := sorted(folder.glob("pytorch_model*.bin")):
        return bins, load_torch_file
    raise ValueError(f"{folder} has no model.safetensors (nor a sharded "
                     "model.safetensors.index.json); save the model with "
                     "model.save_pretrained(folder), which writes safetensors.")


# ---------------------------------------------------------------------------- where from

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")


def _resolve_folder(path_or_repo_id: str | os.PathLike, revision: str | None) -> Path:
    if isinstance(path_or_repo_id, os.PathLike):
        local, text = True, os.fspath(path_or_repo_id)
    elif isinstance(path_or_repo_id, str):
        local, text = False, path_or_repo_id
    else:
        raise TypeError("path_or_repo_id must be a folder path or a Hugging Face Hub repo id "
                        f"(str), got {type(path_or_repo_id).__name__}.")
    path = Path(text).expanduser()
    if path.is_dir():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} was passed with the local folder {text!r}; revision= "
                "selects a commit of a Hugging Face Hub repository and has no meaning for a "
                "folder. Drop revision=, or pass the repo id instead of the folder.")
        return path
    if path.exists():
        raise ValueError(f"{text!r} is a file; pass the folder that holds config.json and the "
                         "model.safetensors weights.")
    if local or text.startswith(("/", ".", "~")) or "\\" in text or not _REPO_ID.match(text):
        raise FileNotFoundError(f"{text!r} is neither an existing folder nor a Hugging Face Hub "
                                "repo id ('owner/name').")
    return _download(text, revision)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _download(repo_id: str, revision: str | None) -> Path:
    """``snapshot_download`` of the files the import needs; offline (``HF_HUB_OFFLINE=1``) it
    looks in the local cache only. A failure is an OSError naming the repo."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:
        raise ImportError(f"downloading {repo_id!r} needs huggingface_hub (pip install "
                          "huggingface_hub); or pass a local folder.") from None
    offline = _env_true("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)
    unavailable: tuple[type[BaseException], ...] = (
        LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)
    for client in ("httpx2", "httpx"):  # the HTTP client of huggingface_hub 2.x / 1.x
        try:
            unavailable += (importlib.import_module(client).TransportError,)
        except (ImportError, AttributeError):
            pass

    def fetch(patterns: list[str]) -> Path:
        try:
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                          local_files_only=offline))
        except unavailable as err:
            how = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
                   if offline else f"the download failed ({type(err).__name__}: {err})")
            at = "" if revision is None else f" at revision {revision!r}"
            raise OSError(
                f"cannot load the Hugging Face Hub repo {repo_id!r}{at}: {how}. Download the "
                "model folder on a machine with network access (e.g. `huggingface-cli download "
                f"{repo_id}`, or save_pretrained), copy it here and pass the local folder path "
                "to from_pretrained instead of the repo id.") from None

    _read_config(fetch(["config.json"]))  # an unsupported model is refused before its weights
    folder = fetch(_DOWNLOAD_PATTERNS)
    if not any(folder.glob("*.safetensors")):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError(
                f"the Hub repo {repo_id!r}{'' if revision is None else f'@{revision}'} has no "
                "safetensors weights (only pytorch_model.bin, which needs torch to read). "
                "Install torch, or convert the checkpoint to safetensors elsewhere and pass the "
                "folder.") from None
        folder = fetch(_TORCH_PATTERNS)
    return folder

