"""Offline genre corpora assembled at run time from files every Python installation has.

Nothing here is committed to the repository: each call reads the running interpreter's own files,
so the output is identical on the same Python installation (same version, same installed
packages) and may differ between installations.

Genres (:data:`GENRES`):

``"code"``
    Whole standard-library ``.py`` source files from ``sysconfig.get_paths()["stdlib"]`` (test
    suites, ``site-packages``, ``idlelib``, ``turtledemo`` and bundled wheels excluded).
    Licence: Python Software Foundation License Version 2 (PSF-2.0), the licence of CPython.
``"legal"``
    Licence texts found on the machine: the interpreter's own ``LICENSE.txt`` (PSF-2.0 history and
    terms) and the ``LICENSE*``/``LICENCE*``/``COPYING*``/``NOTICE*`` files shipped in the
    ``*.dist-info`` folders of the installed packages (the site-packages of ``sysconfig`` and of
    ``site``). Each licence text is distributed by its package precisely so that it can be
    reproduced verbatim; the provenance records the package it came from and the licence that
    package declares in its ``METADATA``.
``"prose"``
    Reference documentation: module, class and function docstrings of the standard library,
    extracted with :mod:`ast` from the sources (no module is imported, so nothing runs).
    Licence: PSF-2.0.
``"math"``
    Synthetic DM-Mathematics-style arithmetic questions with their answers, generated from the seed
    by :func:`numpyro_slt.data.synthetic.arithmetic_problems`. No third-party text; no licence.

Order: the candidate files are sorted, then shuffled with ``random.Random(seed)``; texts are taken
in that order until ``max_chars`` characters are collected (the last one cut to fit).
"""

from __future__ import annotations

import ast
import os
import random
import site
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from .._validate import positive_int
from .synthetic import arithmetic_texts

GENRES: tuple[str, ...] = ("code", "legal", "prose", "math")

_EXCLUDED_DIRS = {
    "site-packages", "dist-packages", "test", "tests", "idlelib", "turtledemo", "__pycache__",
    "_bundled", "lib2to3", "ensurepip",
}
_LICENSE_PREFIXES = ("license", "licence", "copying", "notice")
_PSF = "PSF-2.0"


@dataclass
class Corpus:
    """A genre corpus: ``texts`` (one string per source) and ``provenance`` (one dict per text with
    keys ``source`` (file path or generator), ``package`` and ``license``) and ``num_chars``
    (total characters)."""

    genre: str
    texts: list[str] = field(default_factory=list)
    provenance: list[dict[str, str]] = field(default_factory=list)
    num_chars: int = 0


def check_genre(genre: str) -> str:
    """Return ``genre`` if it is one of :data:`GENRES`, else raise ``ValueError`` listing them."""
    if genre not in GENRES:
        raise ValueError(
            f"genre={genre!r} is not a known genre; pass one of {', '.join(map(repr, GENRES))}."
        )
    return genre


def _check_budget(max_chars: int | None) -> int | None:
    """``max_chars`` as a positive int (a character budget), or None for the whole corpus."""
    return None if max_chars is None else positive_int("max_chars", max_chars)


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(rel: Path) -> bool:
    return any(part in _EXCLUDED_DIRS or part.startswith("config-") for part in rel.parts[:-1])


def stdlib_sources() -> list[Path]:
    """Return the sorted standard-library ``.py`` files used by the code and prose genres."""
    root = _stdlib_dir()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        if _excluded(rel_dir / "x"):
            dirnames[:] = []
            continue
        for name in sorted(filenames):
            if name.endswith(".py") and not name.startswith("test_"):
                files.append(Path(dirpath) / name)
    return sorted(files)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _site_dirs() -> list[Path]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenv's site module
        pass
    return sorted(Path(d) for d in dirs if os.path.isdir(d))


def _declared_license(dist_info: Path) -> str:
    meta = _read(dist_info / "METADATA")
    if not meta:
        return "unknown"
    classifier = None
    for line in meta.splitlines():
        if not line.strip():
            break  # end of the header block
        if line.startswith("License-Expression:"):
            return line.split(":", 1)[1].strip()
        if line.startswith("License:") and line.split(":", 1)[1].strip():
            value = line.split(":", 1)[1].strip()
            if len(value) <= 60 and "\n" not in value:
                return value
        if line.startswith("Classifier: License ::") and classifier is None:
            classifier = line.split("::")[-1].strip()
    return classifier or "unknown"


def license_sources() -> list[tuple[Path, str, str]]:
    """Return sorted ``(path, package, declared_licence)`` for every licence file on the machine."""
    found: dict[Path, tuple[str, str]] = {}
    py_license = _stdlib_dir() / "LICENSE.txt"
    if py_license.is_file():
        found[py_license] = (f"python-{sys.version_info.major}.{sys.version_info.minor}", _PSF)
    for site_dir in _site_dirs():
        for dist_info in sorted(site_dir.glob("*.dist-info")):
            package = dist_info.name[: -len(".dist-info")]
            declared = None
            for path in sorted(dist_info.rglob("*")):
                if path.is_file() and path.name.lower().startswith(_LICENSE_PREFIXES):
                    if declared is None:
                        declared = _declared_license(dist_info)
                    found.setdefault(path.resolve(), (package, declared))
    return sorted((p, pkg, lic) for p, (pkg, lic) in found.items())


def _docstrings(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    docs = []
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if isinstance(node, nodes):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 40:
                docs.append(doc)
    return docs


def _take(corpus: Corpus, text: str, prov: dict[str, str], max_chars: int | None) -> bool:
    """Append ``text`` within the budget; return True when the budget is exhausted."""
    if max_chars is not None:
        room = max_chars - corpus.num_chars
        if room <= 0:
            return True
        text = text[:room]
    if text:
        corpus.texts.append(text)
        corpus.provenance.append(prov)
        corpus.num_chars += len(text)
    return max_chars is not None and corpus.num_chars >= max_chars


def genre_corpus(genre: str, max_chars: int | None = 200_000, seed: int = 0) -> Corpus:
    """Assemble the corpus of ``genre`` with at most ``max_chars`` characters (None: everything).

    Returns a :class:`Corpus` whose ``provenance[i]`` records where ``texts[i]`` came from (file
    path or generator), the package and the licence (see the module docstring). Deterministic
    given ``seed`` and the Python installation.
    """
    check_genre(genre)
    max_chars = _check_budget(max_chars)
    rng = random.Random(seed)
    corpus = Corpus(genre)
    if genre == "math":
        target = max_chars if max_chars is not None else 200_000
        batch = 0
        while corpus.num_chars < target:
            texts = arithmetic_texts(500, seed=seed * 100_003 + batch)
            batch += 1
            for i, text in enumerate(texts):
                prov = {"source": f"numpyro_slt.data.synthetic.arithmetic_texts(seed={seed}, "
                        f"batch={batch - 1}, index={i})", "package": "numpyro-slt",
                        "license": "synthetic (no third-party text)"}
                if _take(corpus, text, prov, target):
                    return corpus
        return corpus
    if genre == "legal":
        sources = license_sources()
        rng.shuffle(sources)
        for path, package, declared in sources:
            text = _read(path)
            if text and text.strip():
                prov = {"source": str(path), "package": package, "license": declared}
                if _take(corpus, text, prov, max_chars):
                    break
        return corpus
    files = stdlib_sources()
    rng.shuffle(files)
    python = f"python-{sys.version_info.major}.{sys.version_info.minor}"
    for path in files:
        source = _read(path)
        if not source:
            continue
        prov = {"source": str(path), "package": python, "license": _PSF}
        if genre == "code":
            if _take(corpus, source, prov, max_chars):
                break
        else:  # prose
            done = False
            for doc in _docstrings(source):
                if _take(corpus, doc, prov, max_chars):
                    done = True
                    break
            if done:
                break
    return corpus


def genre_texts(genre: str, max_chars: int | None = 200_000, seed: int = 0) -> list[str]:
    """Return the texts of :func:`genre_corpus` (a list of strings, ``max_chars`` in total at
    most). Use :func:`genre_corpus` for the provenance of each text."""
    return genre_corpus(genre, max_chars=max_chars, seed=seed).texts
