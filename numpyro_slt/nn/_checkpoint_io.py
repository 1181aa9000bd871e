"""Shared pieces of the checkpoint importers (:mod:`.hf`, :mod:`.transformer_lens`): reading
safetensors files with numpy only, a tracked table of named weights that names the key and the
expected shape in every error, and the last step from converted arrays to a network.

Nothing here imports torch; :func:`load_torch_file` imports it when called and says clearly when
it is missing.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["WeightTable", "build_network", "load_safetensors", "load_torch_file", "to_numpy"]

def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of one ``.safetensors`` file as a numpy array (no torch).

    Tensors of the dtypes numpy knows are read with ``safetensors.safe_open(framework="numpy")``;
    bfloat16 tensors (which numpy cannot represent, and safetensors' numpy reader refuses) are
    read from the file's bytes and widened exactly to float32 (a bfloat16 is the upper half of a
    float32).
    """
    from safetensors import safe_open

    path = Path(path)
    header, data_start = _safetensors_header(path)
    bf16 = {k for k, v in header.items() if k != "__metadata__" and v.get("dtype") == "BF16"}
    out: dict[str, np.ndarray] = {}
    with safe_open(str(path), framework="numpy") as f:
        for key in f.keys():
            if key not in bf16:
                out[key] = f.get_tensor(key)
    if bf16:
        with path.open("rb") as fh:
            for key in sorted(bf16):
                begin, end = header[key]["data_offsets"]
                fh.seek(data_start + begin)
                bits = np.frombuffer(fh.read(end - begin), dtype="<u2")
                widened = bits.astype(np.uint32) << 16
                out[key] = widened.view(np.float32).reshape(header[key]["shape"])
    return out


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file (name -> {dtype, shape, data_offsets}) and the byte
    offset where the tensor data begins."""
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than its 8-byte header).")
        (size,) = struct.unpack("<Q", head)
        if size > 100_000_000:
            raise ValueError(f"{path} is not a safetensors file (header size {size}).")
        try:
            return json.loads(fh.read(size)), 8 + size
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a safetensors file ({err}).") from None


def load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.pt`` / ``.pth`` / ``.bin`` state dict read with ``torch.load(weights_only=True)``.

    torch is not a dependency of numpyro-slt: it is imported here, and its absence is an error
    that says to install it or to save the weights as safetensors instead.
    """
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs PyTorch (torch.load), which is not installed; numpyro-slt does "
            "not depend on it. Either `pip install torch`, or save the weights as safetensors "
            "where torch is available (safetensors.torch.save_file(state_dict, 'model.safetensors'"
            ") or model.save_pretrained(folder)) and pass that file or folder."
        ) from None
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(
            state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not a state dict (name -> tensor).")
    return {str(k): to_numpy(v) for k, v in state.items()}


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device or dtype, bfloat16 widened to
    float32) or anything ``np.asarray`` accepts. torch is never imported here."""
    if type(value).__module__.startswith("torch"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(value)


class WeightTable:
    """Named weights of one checkpoint, handed out at most once each.

    ``take(key, shape)`` returns the weight as float32 after checking its shape; a missing key or
    a wrong shape raises ValueError naming the key (as the file spells it) and the expected
    shape. Keys are looked up with and without ``prefix`` (``"transformer."`` for GPT-2, which a
    bare ``GPT2Model`` omits); ``bare=True`` looks a key up exactly (the LM head outside the
    prefix). :meth:`check_all_used` raises for keys nobody took and no ``ignore`` pattern
    (regular expressions, searched) matched, so a weight the conversion does not understand is
    never silently dropped.
    """

    def __init__(self, weights: Mapping[str, Any], *, source: str, prefix: str = "",
                 ignore: Iterable[str] = ()):
        self.source = source
        self._weights = {str(k): v for k, v in weights.items()}
        self._prefix = prefix
        self._ignore = [re.compile(p) for p in ignore]
        self._used: set[str] = set()
        if prefix:
            both = sorted(k for k in self._weights
                          if k.startswith(prefix) and k[len(prefix):] in self._weights)
            if both:
                raise ValueError(
                    f"{source}: {both[0]!r} and {both[0][len(prefix):]!r} are both present; "
                    "the file holds two copies of the same weight under different prefixes.")
        self._prefixed = bool(prefix) and any(k.startswith(prefix) for k in self._weights)

    def stored_name(self, key: str, *, bare: bool = False) -> str:
        """The name under which the file holds ``key`` (or would, when it is missing)."""
        if bare or not self._prefix:
            return key
        if self._prefix + key in self._weights:
            return self._prefix + key
        if key in self._weights or not self._prefixed:
            return key
        return self._prefix + key

    def __contains__(self, key: str) -> bool:
        return self.stored_name(key) in self._weights

    def has(self, key: str, *, bare: bool = False) -> bool:
        return self.stored_name(key, bare=bare) in self._weights

    def take(self, key: str, shape: tuple[int, ...], *, bare: bool = False,
             what: str = "") -> np.ndarray:
        name = self.stored_name(key, bare=bare)
        if name not in self._weights:
            hint = f" ({what})" if what else ""
            raise ValueError(
                f"{self.source}: weight {name!r}{hint} is missing; expected an array of shape "
                f"{list(shape)}. {self._near(name)}")
        value = to_numpy(self._weights[name])
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"{self.source}: weight {name!r} has shape {list(value.shape)}, expected "
                f"{list(shape)}; the weights do not match the config.")
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise ValueError(f"{self.source}: weight {name!r} has dtype {value.dtype}, expected "
                             "floating point numbers.")
        self._used.add(name)
        return np.asarray(value, dtype=np.float32)

    def mark_used(self, key: str, *, bare: bool = False) -> None:
        """Accept ``key`` without reading it (e.g. an LM head tied to the embedding)."""
        name = self.stored_name(key, bare=bare)
        if name in self._weights:
            self._used.add(name)

    def _near(self, name: str) -> str:
        stem = name.rsplit(".", 1)[0]
        similar = sorted(k for k in self._weights if k.startswith(stem))[:5]
        if similar:
            return f"Keys that start like it: {similar}."
        return f"The weights have {len(self._weights)} keys, e.g. {sorted(self._weights)[:5]}."

    def check_all_used(self, explain: str) -> None:
        left = sorted(k for k in self._weights if k not in self._used
                      and not any(p.search(k) for p in self._ignore))
        if left:
            shown = ", ".join(repr(k) for k in left[:8]) + (" …" if len(left) > 8 else "")
            raise ValueError(
                f"{self.source}: {len(left)} weight(s) that the conversion does not use: {shown}. "
                f"{explain}")


def build_network(config_kwargs: Mapping[str, Any], arrays: Mapping[str, np.ndarray]):
    """``Transformer.from_parameters(TransformerConfig(**config_kwargs), arrays)`` (float32)."""
    from .config import TransformerConfig
    from .transformer import Transformer

    return Transformer.from_parameters(TransformerConfig(**config_kwargs), arrays)
