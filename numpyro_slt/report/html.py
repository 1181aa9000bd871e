"""A self-contained HTML report: sections of text, embedded images and tables.

:func:`write_report` writes one HTML file with inline CSS, a table of contents, and every image
embedded as a base64 ``data:`` URI, so the file can be mailed or archived on its own (no external
files, links or JavaScript). All text is HTML-escaped. :class:`Section` and :class:`Table` describe
the content; floats in tables are shown to 4 significant digits.
"""

from __future__ import annotations

import base64
import html
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_write

__all__ = ["Section", "Table", "write_report"]

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .15em; margin-top: 2em; }
nav ol { columns: 2; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: .85em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: .3em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
footer { color: #888; font-size: .8em; margin-top: 3em; }
"""


@dataclass(frozen=True)
class Table:
    """A table: a caption, column names and rows (each as long as ``columns``)."""

    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(tuple(r) for r in self.rows))
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"rows[{i}] of table {self.caption!r} has {len(row)} cells, "
                                 f"expected {len(self.columns)} (one per column)")


@dataclass(frozen=True)
class Section:
    """A report section: a heading, plain text (blank lines split paragraphs), images, tables."""

    heading: str
    text: str = ""
    images: Sequence[str | os.PathLike] = ()
    tables: Sequence[Table] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        object.__setattr__(self, "tables", tuple(self.tables))
        for table in self.tables:
            if not isinstance(table, Table):
                raise ValueError(f"tables of section {self.heading!r} must be Table objects, "
                                 f"got {type(table).__name__}")


def _cell(value: object) -> tuple[str, bool]:
    """A table cell as escaped text, and whether it is numeric (right-aligned)."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return format(float(value), ".4g"), True
    return html.escape(str(value)), False


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = (_cell(v) for v in row)
        body.append("<tr>" + "".join(f'<td class="num">{t}</td>' if num else f"<td>{t}</td>"
                                     for t, num in cells) + "</tr>")
    return (f"<table>\n<caption>{html.escape(table.caption)}</caption>\n"
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>")


def _image(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"report image not found: {path}")
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"image {path} must be one of {sorted(_MIME)}, got {path.suffix!r}")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>")


def _paragraphs(text: str) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join("<p>" + "<br>\n".join(html.escape(line) for line in p.splitlines())
                     + "</p>" for p in paragraphs)


def _anchor(index: int, heading: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")
    return f"s{index}-{slug}" if slug else f"s{index}"


def write_report(path: str | os.PathLike, *, title: str, sections: Sequence[Section]) -> Path:
    """Write a self-contained HTML report to ``path`` (atomically) and return its Path.

    Images are read from disk and embedded as base64 data URIs; a missing image raises
    ``FileNotFoundError`` naming it. Text is escaped, so any string is safe to pass.
    """
    if not isinstance(title, str):
        raise ValueError(f"title must be a str, got {type(title).__name__}")
    sections = list(sections)
    for i, section in enumerate(sections):
        if not isinstance(section, Section):
            raise ValueError(f"sections[{i}] must be a Section, got {type(section).__name__}")
    anchors = [_anchor(i + 1, s.heading) for i, s in enumerate(sections)]
    toc = "\n".join(f'<li><a href="#{a}">{html.escape(s.heading)}</a></li>'
                    for a, s in zip(anchors, sections, strict=True))
    body = []
    for anchor, section in zip(anchors, sections, strict=True):
        parts = [f'<section id="{anchor}">', f"<h2>{html.escape(section.heading)}</h2>"]
        if section.text:
            parts.append(_paragraphs(section.text))
        parts += [_image(p) for p in section.images]
        parts += [_table(t) for t in section.tables]
        parts.append("</section>")
        body.append("\n".join(parts))
    document = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<nav><h2>Contents</h2>\n<ol>\n{toc}\n</ol></nav>" if sections else "",
        *body,
        "<footer>Generated by numpyro_slt.</footer>",
        "</body>",
        "</html>",
        "",
    ])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: stream.write(document.encode("utf-8")), "wb")
    return path
