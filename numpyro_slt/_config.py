"""Reading settings dataclasses from plain data (JSON objects): one check for every config."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

__all__ = ["checked_fields"]


def checked_fields(cls: type, data: Any) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``: it must be a mapping with string
    keys, all of them fields of ``cls`` (an unknown key signals a mismatched or mistyped file)."""
    name = cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{name} must be given as a JSON object (a dict), got "
                         f"{type(data).__name__}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise ValueError(f"unknown {name} field(s) {unknown}; valid fields are {sorted(known)}.")
    return dict(data)
