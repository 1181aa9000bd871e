"""Reading a per-token response matrix: the tokens a component most expresses or suppresses.

Sign convention of docs/formulas.md: χ^C_xy < 0 means component C *expresses* token y in
context x (moving C along the posterior lowers that token's loss together with the sampling
loss); χ^C_xy > 0 means C *suppresses* it. So the top expressing tokens are the most negative
entries of a column and the top suppressing tokens the most positive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._validate import nonnegative_int, positive_int

__all__ = ["top_tokens"]


def top_tokens(
    matrix: xr.DataArray,
    probes: Mapping[str, np.ndarray],
    decode: Callable[[Sequence[int]], str],
    component: str,
    k: int = 5,
    *,
    context_tokens: int = 12,
) -> list[dict[str, Any]]:
    """The ``k`` most expressing and ``k`` most suppressing tokens of ``component``.

    :param matrix: per-token susceptibilities with dims (token, component) (or (component,
        token)) and token coordinates ``token_probe``, ``sequence`` and ``position`` (as written by
        :func:`numpyro_slt.nn.observables.token_coordinates`).
    :param probes: probe name → token array [sequences, length], the sequences the tokens come
        from.
    :param decode: turns token ids into text (e.g. ``tokenizer.decode``).
    :param component: the column to read.
    :param k: tokens per direction.
    :param context_tokens: how many preceding tokens to show as context.
    :returns: rows ``{"component", "direction" ("expresses" | "suppresses"), "value", "probe",
        "sequence", "position", "context", "token"}``, expressing first (most negative value
        first), then suppressing (most positive first).
    """
    if "token" not in matrix.dims or "component" not in matrix.dims:
        raise ValueError(f"matrix must have dims (token, component), got {matrix.dims}.")
    for coord in ("token_probe", "sequence", "position"):
        if coord not in matrix.coords:
            raise ValueError(f"matrix lacks the token coordinate {coord!r}; build it with "
                             "numpyro_slt.nn.observables.token_coordinates.")
    names = [str(c) for c in matrix["component"].values]
    if component not in names:
        raise ValueError(f"component {component!r} is not in the matrix; it holds {names}.")
    k = positive_int("k", k)
    context_tokens = nonnegative_int("context_tokens", context_tokens)
    column = matrix.sel(component=component).values.astype(np.float64)
    order = np.argsort(column, kind="stable")
    picks = [("expresses", i) for i in order[:k]] + [("suppresses", i) for i in order[::-1][:k]]
    probe = matrix["token_probe"].values
    sequence = matrix["sequence"].values
    position = matrix["position"].values
    rows = []
    for direction, i in picks:
        name = str(probe[i])
        if name not in probes:
            raise ValueError(f"probe {name!r} of token {i} is not in probes ({list(probes)}).")
        row = np.asarray(probes[name])[int(sequence[i])]
        pos = int(position[i])
        start = max(0, pos - context_tokens)
        rows.append({
            "component": component, "direction": direction, "value": float(column[i]),
            "probe": name, "sequence": int(sequence[i]), "position": pos,
            "context": decode([int(t) for t in row[start:pos]]),
            "token": decode([int(row[pos])]),
        })
    return rows
