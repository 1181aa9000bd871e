"""Shape, architecture and initialisation settings of the decoder-only transformer.

One dataclass describes every architecture the network implements: attention-only or with an
MLP per layer, pre-LayerNorm or none, learned absolute or rotary positions, sequential or
parallel residual, tied or untied unembedding, with or without biases. GPT-2 and GPT-NeoX
(Pythia) checkpoints and TransformerLens models are configurations of it (``numpyro_slt.nn.hf``,
``numpyro_slt.nn.transformer_lens``).

The defaults are the shape of the model studied by Baker, Wang, Hoogland and Murfet, *Studying
Small Language Models with Susceptibilities* (arXiv 2504.18274): 2 attention-only layers with 8
heads each, d_model 256, d_head 32, a vocabulary of 5,000 tokens and a context of 1,024, with a
learned positional embedding. That is about 3.36M parameters (2.56M of them in the embedding
and unembedding).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .._config import checked_fields
from .._validate import positive_int, positive_number

__all__ = ["TransformerConfig"]

_POSITIVE_INTS = ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
"""MLP nonlinearities: exact (erf) GELU, its tanh approximation (GPT-2's ``gelu_new``), ReLU."""
POSITIONALS = ("learned", "rotary")
_ARCHITECTURE_FIELDS = ("d_mlp", "act_fn", "positional", "rotary_dim", "rotary_base",
                        "parallel_residual", "tied_embeddings", "attn_bias", "mlp_bias",
                        "unembed_bias")
_FLAGS = ("layer_norm", "parallel_residual", "tied_embeddings", "attn_bias", "mlp_bias",
          "unembed_bias")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and architecture of a :class:`~numpyro_slt.nn.Transformer`.

    Attributes:
        n_layers: number of transformer blocks.
        n_heads: attention heads per block.
        d_model: width of the residual stream.
        d_head: width of each head's query, key and value vectors.
        n_ctx: maximum sequence length (rows of the learned positional embedding; the longest
            sequence a rotary model accepts).
        d_vocab: vocabulary size (rows of the token embedding, columns of the unembedding).
        layer_norm: if ``True``, a LayerNorm (with learned scale and shift) is applied to the input
            of every attention layer and MLP and to the residual stream before the unembedding
            (pre-LN); if ``False`` (the default) the model has no normalisation at all.
        ln_eps: the ε of LayerNorm, ``(x - mean) / sqrt(var + ε)``; unused without layer norm.
        init_std: standard deviation of the normal initialisation of every weight matrix
            (embeddings, W_Q, W_K, W_V, W_O, W_in, W_out, W_U); ``None`` means
            ``0.8 / sqrt(d_model)`` (the GPT-2-style range also used by TransformerLens). Biases
            start at zero and LayerNorm scales at one.
        d_mlp: hidden width of each block's MLP, ``None`` (the default) for an attention-only
            model.
        act_fn: the MLP's nonlinearity, one of :data:`ACTIVATIONS`.
        positional: ``"learned"`` (an ``[n_ctx, d_model]`` embedding added to the token
            embedding) or ``"rotary"`` (queries and keys rotated by position, GPT-NeoX style; no
            positional parameters).
        rotary_dim: how many leading dimensions of each head's query and key are rotated (even,
            at most d_head; ``None``: all of d_head). GPT-NeoX's ``rotary_pct`` is
            rotary_dim / d_head.
        rotary_base: the base b of the rotary frequencies b^(−2i/rotary_dim).
        parallel_residual: ``x ← x + attn(LN₁ x) + mlp(LN₂ x)`` (GPT-NeoX) instead of the
            sequential ``x ← x + attn(LN₁ x); x ← x + mlp(LN₂ x)`` (GPT-2).
        tied_embeddings: the unembedding is W_Eᵀ (no W_U parameter), as in GPT-2.
        attn_bias: attention has the biases b_Q, b_K, b_V and b_O.
        mlp_bias: the MLP has the biases b_in and b_out.
        unembed_bias: the unembedding has a bias b_U.
    """

    n_layers: int = 2
    n_heads: int = 8
    d_model: int = 256
    d_head: int = 32
    n_ctx: int = 1024
    d_vocab: int = 5000
    layer_norm: bool = False
    ln_eps: float = 1e-5
    init_std: float | None = None
    d_mlp: int | None = None
    act_fn: Literal["gelu", "gelu_tanh", "relu"] = "gelu"
    positional: Literal["learned", "rotary"] = "learned"
    rotary_dim: int | None = None
    rotary_base: float = 10000.0
    parallel_residual: bool = False
    tied_embeddings: bool = False
    attn_bias: bool = True
    mlp_bias: bool = True
    unembed_bias: bool = True

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                # the shared check would say "a positive int"; an int below 1 is told its bound
                raise ValueError(
                    f"TransformerConfig.{name} must be >= 1, got {value}; "
                    f"pass a positive size, e.g. {name}={_default(name)}."
                )
            self._store(name, positive_int,
                        f" (type {type(value).__name__}); pass e.g. {name}={_default(name)}")
        if self.d_vocab < 2:
            raise ValueError(
                f"TransformerConfig.d_vocab must be >= 2 for next-token prediction to mean "
                f"anything, got {self.d_vocab}; pass the tokenizer's vocabulary size."
            )
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TransformerConfig.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}.")
        self._store("ln_eps", positive_number, "; use e.g. ln_eps=1e-5")
        if self.init_std is not None:
            self._store("init_std", positive_number,
                        "; use None for the default 0.8 / sqrt(d_model)")
        self._check_architecture()

    def _check_architecture(self) -> None:
        if self.d_mlp is not None:
            self._store("d_mlp", positive_int, "; use None for an attention-only model")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"TransformerConfig.act_fn must be one of {list(ACTIVATIONS)}, got "
                             f"{self.act_fn!r}.")
        if self.positional not in POSITIONALS:
            raise ValueError(f"TransformerConfig.positional must be one of {list(POSITIONALS)}, "
                             f"got {self.positional!r}.")
        if self.rotary_dim is not None:
            self._store("rotary_dim", positive_int, "; use None to rotate all of d_head")
            if self.rotary_dim % 2 or self.rotary_dim > self.d_head:
                raise ValueError(f"TransformerConfig.rotary_dim must be even and at most d_head="
                                 f"{self.d_head}, got {self.rotary_dim}.")
            if self.positional != "rotary":
                raise ValueError("TransformerConfig.rotary_dim is set but positional is "
                                 f"{self.positional!r}; pass positional='rotary' or drop it.")
        elif self.positional == "rotary" and self.d_head % 2:
            raise ValueError(f"a rotary model rotates pairs of dimensions, but d_head={self.d_head}"
                             " is odd; pass an even rotary_dim.")
        self._store("rotary_base", positive_number, "; use e.g. rotary_base=10000")
        if self.parallel_residual and self.d_mlp is None:
            raise ValueError("TransformerConfig.parallel_residual needs an MLP (d_mlp); an "
                             "attention-only block has nothing to run in parallel.")

    def _store(self, name: str, check, hint: str) -> None:
        """Replace field ``name`` by ``check``'s canonical value (a plain ``int`` or ``float``, so
        that :meth:`to_dict` stays JSON-serialisable), or raise ``check``'s error plus ``hint``."""
        try:
            value = check(f"TransformerConfig.{name}", getattr(self, name))
        except ValueError as err:
            raise ValueError(f"{str(err).rstrip('.')}{hint}.") from None
        object.__setattr__(self, name, value)

    @property
    def weight_std(self) -> float:
        """The standard deviation actually used to initialise weight matrices."""
        return 0.8 / math.sqrt(self.d_model) if self.init_std is None else float(self.init_std)

    @property
    def head_rotary_dim(self) -> int:
        """Dimensions of each query and key that are rotated: 0 with learned positions."""
        if self.positional != "rotary":
            return 0
        return self.d_head if self.rotary_dim is None else self.rotary_dim

    @property
    def n_params(self) -> int:
        """Number of scalar parameters of a model of this shape: the sum of the sizes of
        :meth:`present_shapes` (embeddings, per-layer attention, MLP and LayerNorm weights and
        biases, the unembedding, each only where the architecture has it)."""
        return sum(math.prod(shape) for shape in self.present_shapes().values())

    def present_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter array this architecture has, keyed by field name (the
        entries of :meth:`parameter_shapes` whose field is not None in the network)."""
        absent = set()
        if self.positional != "learned":
            absent.add("W_pos")
        if not self.attn_bias:
            absent.update(("b_Q", "b_K", "b_V", "b_O"))
        if not self.layer_norm:
            absent.update(("ln_w", "ln_b", "ln_final_w", "ln_final_b", "ln2_w", "ln2_b"))
        if self.d_mlp is None:
            absent.update(("ln2_w", "ln2_b", "W_in", "b_in", "W_out", "b_out"))
        if not self.mlp_bias:
            absent.update(("b_in", "b_out"))
        if self.tied_embeddings:
            absent.add("W_U")
        if not self.unembed_bias:
            absent.add("b_U")
        return {f: s for f, s in self.parameter_shapes().items() if f not in absent}

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter array a network may have, keyed by the model's field name,
        in field order (:meth:`present_shapes` keeps those of this architecture)."""
        L, H, D, E = self.n_layers, self.n_heads, self.d_model, self.d_head
        M = 0 if self.d_mlp is None else self.d_mlp
        return {
            "W_E": (self.d_vocab, D),
            "W_pos": (self.n_ctx, D),
            "W_Q": (L, H, D, E),
            "W_K": (L, H, D, E),
            "W_V": (L, H, D, E),
            "W_O": (L, H, E, D),
            "b_Q": (L, H, E),
            "b_K": (L, H, E),
            "b_V": (L, H, E),
            "b_O": (L, D),
            "ln_w": (L, D),
            "ln_b": (L, D),
            "ln_final_w": (D,),
            "ln_final_b": (D,),
            "W_U": (D, self.d_vocab),
            "b_U": (self.d_vocab,),
            "ln2_w": (L, D),
            "ln2_b": (L, D),
            "W_in": (L, D, M),
            "b_in": (L, M),
            "W_out": (L, M, D),
            "b_out": (L, D),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable), for checkpoints. The architecture fields
        (d_mlp onwards) are left out where they hold their defaults, so the dict of an
        attention-only model is what it was before those fields existed: its checkpoints, and
        the run fingerprints of studies on it, stay valid."""
        out = asdict(self)
        for f in fields(self):
            if f.name in _ARCHITECTURE_FIELDS and out[f.name] == f.default:
                del out[f.name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a mismatched file)."""
        return cls(**checked_fields(cls, data))


def _default(name: str) -> Any:
    return next(f.default for f in fields(TransformerConfig) if f.name == name)

