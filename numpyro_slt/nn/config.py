"""Shape and initialisation settings of the attention-only transformer.

The defaults are the shape of the model studied by Baker, Wang, Hoogland and Murfet, *Studying
Small Language Models with Susceptibilities* (arXiv 2504.18274): 2 attention-only layers with 8
heads each, d_model 256, d_head 32, a vocabulary of 5,000 tokens and a context of 1,024, with a
learned positional embedding. That is about 3.36M parameters (2.56M of them in the embedding
and unembedding).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .._config import checked_fields
from .._validate import positive_int, positive_number

__all__ = ["TransformerConfig"]

_POSITIVE_INTS = ("n_layers", "n_heads", "d_model", "d_head", "n_ctx", "d_vocab")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of an :class:`~numpyro_slt.nn.AttentionOnlyTransformer`.

    Attributes:
        n_layers: number of attention layers.
        n_heads: heads per layer.
        d_model: width of the residual stream.
        d_head: width of each head's query, key and value vectors.
        n_ctx: maximum sequence length (rows of the learned positional embedding).
        d_vocab: vocabulary size (rows of the token embedding, columns of the unembedding).
        layer_norm: if ``True``, a LayerNorm (with learned scale and shift) is applied to the input
            of every attention layer and to the residual stream before the unembedding (pre-LN);
            if ``False`` (the default) the model has no normalisation at all.
        ln_eps: the ε of LayerNorm, ``(x - mean) / sqrt(var + ε)``; unused without layer norm.
        init_std: standard deviation of the normal initialisation of every weight matrix
            (embeddings, W_Q, W_K, W_V, W_O, W_U); ``None`` means ``0.8 / sqrt(d_model)``
            (the GPT-2-style range also used by TransformerLens). Biases start at zero and
            LayerNorm scales at one.

    The positional embedding is always learned (a ``[n_ctx, d_model]`` parameter).
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
        if not isinstance(self.layer_norm, bool):
            raise ValueError(
                f"TransformerConfig.layer_norm must be True or False, got {self.layer_norm!r}."
            )
        self._store("ln_eps", positive_number, "; use e.g. ln_eps=1e-5")
        if self.init_std is not None:
            self._store("init_std", positive_number,
                        "; use None for the default 0.8 / sqrt(d_model)")

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
    def n_params(self) -> int:
        """Number of scalar parameters of a model of this shape.

        embed d_vocab·d_model + pos n_ctx·d_model + per layer (4·n_heads·d_model·d_head weights,
        3·n_heads·d_head + d_model biases, 2·d_model LayerNorm if on) + unembed d_model·d_vocab +
        d_vocab (+ 2·d_model final LayerNorm if on).
        """
        hd = self.n_heads * self.d_head
        per_layer = 4 * hd * self.d_model + 3 * hd + self.d_model
        if self.layer_norm:
            per_layer += 2 * self.d_model
        total = (self.d_vocab + self.n_ctx) * self.d_model
        total += self.n_layers * per_layer
        total += self.d_model * self.d_vocab + self.d_vocab
        if self.layer_norm:
            total += 2 * self.d_model
        return total

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every parameter array, keyed by the model's field name (the LayerNorm fields
        ``ln_*`` exist only with ``layer_norm``; the table lists them regardless)."""
        L, H, D, E = self.n_layers, self.n_heads, self.d_model, self.d_head
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
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-serialisable), for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a mismatched file)."""
        return cls(**checked_fields(cls, data))


def _default(name: str) -> Any:
    return next(f.default for f in fields(TransformerConfig) if f.name == name)

