"""A PyTorch port of :class:`numpyro_slt.nn.AttentionOnlyTransformer`, for the devinterp benchmark.

The module computes, for a batch of token sequences t ([batch, seq]), the same forward pass as the
Equinox model (see ``numpyro_slt/nn/transformer.py``):

    x⁰_s = W_E[t_s] + W_pos[s]
    for each layer l:
        a = LN_l(xˡ)                                   (pre-LN; identity without layer norm)
        q_h = a W_Q[l,h] + b_Q[l,h],  k_h = a W_K[l,h] + b_K[l,h],  v_h = a W_V[l,h] + b_V[l,h]
        out_h = softmax(q_h k_hᵀ / √d_head + causal mask) v_h W_O[l,h]
        xˡ⁺¹ = xˡ + Σ_h out_h + b_O[l]
    logits = LN_final(x^L) W_U + b_U

with ``torch.nn.functional.scaled_dot_product_attention`` for the attention. The parameters carry
the Equinox field names and shapes (``W_Q`` is ``[n_layers, n_heads, d_model, d_head]``), so that
head ``l:h`` is the index ``[l, h]`` of the per-head arrays in both frameworks, and a devinterp
weight restriction to a head is a 0/1 mask on those arrays (:func:`head_masks`).

``forward`` returns logits (what devinterp's default loss function calls); :meth:`token_losses`
is the per-token next-token loss ℓ_s = −log softmax(logits_s)[t_{s+1}], s = 1..S−1.

Run this file to check the port: it copies the shipped default model into PyTorch and compares
the per-token losses of a batch with ``network.token_losses`` (tolerance 1e-4)::

    python benchmarks/torch_port.py
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEAD_FIELDS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")
TOLERANCE = 1e-4


class TorchAttentionOnly(nn.Module):
    """Attention-only transformer with the parameter layout of the Equinox model.

    :param config: a :class:`numpyro_slt.nn.config.TransformerConfig` (shapes, ``layer_norm``,
        ``ln_eps``). Parameters start at zero; fill them with :func:`from_equinox`.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        shapes = config.parameter_shapes()
        for name, shape in shapes.items():
            if name.startswith("ln_") and not config.layer_norm:
                continue
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))

    def _norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), weight, bias, self.config.ln_eps)

    def _attention(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """The layer's write Σ_h out_h + b_O[l] to the residual stream x ([batch, seq, d])."""
        a = self._norm(x, self.ln_w[layer], self.ln_b[layer]) if self.config.layer_norm else x
        q = torch.einsum("bsd,hde->bhse", a, self.W_Q[layer]) + self.b_Q[layer][:, None, :]
        k = torch.einsum("bsd,hde->bhse", a, self.W_K[layer]) + self.b_K[layer][:, None, :]
        v = torch.einsum("bsd,hde->bhse", a, self.W_V[layer]) + self.b_V[layer][:, None, :]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           scale=1.0 / math.sqrt(self.config.d_head))
        return torch.einsum("bhse,hed->bsd", z, self.W_O[layer]) + self.b_O[layer]

    def residual(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Residual stream after the last layer, ``[batch, seq, d_model]``."""
        seq = input_ids.shape[-1]
        x = self.W_E[input_ids] + self.W_pos[:seq]
        for layer in range(self.config.n_layers):
            x = x + self._attention(layer, x)
        return x

    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.layer_norm:
            x = self._norm(x, self.ln_final_w, self.ln_final_b)
        return x @ self.W_U + self.b_U

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, seq, d_vocab]``; row s predicts token s+1."""
        return self.unembed(self.residual(input_ids))

    def token_losses(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ℓ ``[batch, seq − 1]``: next-token cross-entropy (last position's logits skipped)."""
        logits = self.unembed(self.residual(input_ids)[:, :-1])
        targets = input_ids[:, 1:]
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               reduction="none")
        return flat.reshape(targets.shape)


def from_equinox(network) -> TorchAttentionOnly:
    """A :class:`TorchAttentionOnly` holding a copy of the Equinox ``network``'s weights."""
    module = TorchAttentionOnly(network.config)
    with torch.no_grad():
        for name, param in module.named_parameters():
            value = np.asarray(getattr(network, name), dtype=np.float32)
            if value.shape != tuple(param.shape):
                raise ValueError(f"{name}: Equinox shape {value.shape}, torch {tuple(param.shape)}")
            param.copy_(torch.from_numpy(value.copy()))
    return module


def head_masks(module: TorchAttentionOnly, layer: int, head: int) -> dict[str, torch.Tensor]:
    """devinterp ``param_masks`` restricting sampling to head ``layer:head``: a 0/1 mask on each
    per-head array (W_Q, W_K, W_V, W_O, b_Q, b_K, b_V at ``[layer, head]``), the same parameters
    as the numpyro-slt component ``"layer:head"``."""
    masks = {}
    for name in HEAD_FIELDS:
        mask = torch.zeros_like(getattr(module, name))
        mask[layer, head] = 1.0
        masks[name] = mask
    return masks


def max_loss_difference(network, module: TorchAttentionOnly, tokens: np.ndarray) -> float:
    """max |ℓ_torch − ℓ_jax| over every token of ``tokens`` ([batch, seq])."""
    import jax

    jax_losses = np.asarray(jax.vmap(network.token_losses)(np.asarray(tokens, np.int32)))
    with torch.no_grad():
        torch_losses = module.token_losses(torch.as_tensor(np.asarray(tokens, np.int64))).numpy()
    return float(np.max(np.abs(jax_losses - torch_losses)))


def check_port(network, module: TorchAttentionOnly, tokens: np.ndarray,
               tolerance: float = TOLERANCE) -> float:
    """Raise AssertionError unless the per-token losses agree within ``tolerance``; return the
    largest difference."""
    difference = max_loss_difference(network, module, tokens)
    if not difference <= tolerance:
        raise AssertionError(f"torch port disagrees with the Equinox model: max |Δℓ| = "
                             f"{difference:.2e} > {tolerance:.0e}")
    return difference


def main() -> int:
    from numpyro_slt.nn.default import load_default
    from numpyro_slt.study import StudyConfig, study_data

    network, tokenizer, _ = load_default()
    data = study_data(network, tokenizer, StudyConfig(sampling_sequences=64, eval_sequences=16,
                                                      probe_sequences=4))
    module = from_equinox(network)
    difference = check_port(network, module, data["sampling"][:16])
    print(f"torch port: max |ℓ_torch − ℓ_jax| = {difference:.2e} on 16 × 63 tokens "
          f"(tolerance {TOLERANCE:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
