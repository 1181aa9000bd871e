"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_path", "sha256_of"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "wb"
                 ) -> None:
    """Call ``write(stream)`` on a temporary file next to ``path``, sync it, then rename it over
    ``path`` (``os.replace`` is atomic on POSIX)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(handle, mode) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_path(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` for writers that take a file name rather than a stream
    (netCDF, tokenizers), then rename the file over ``path``; on failure the temporary file is
    removed and ``path`` is left as it was."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
