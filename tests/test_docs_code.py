"""Every ```python block of README.md and docs/*.md runs here, one test per block.

A test's id is the file and the line of the block's opening fence, e.g. ``docs/quickstart.md:18``.
The blocks of one file run in order in one namespace, so a later block uses the names of an
earlier one; each file starts with a fresh namespace and its own temporary working directory
(relative output paths such as ``out/full`` land there). Running one block first runs the earlier
blocks of its file that have not run yet, so that ``-k`` keeps each block's context; this catch-up
leaves out blocks marked slow (unless the block itself is slow) and expected failures, so a
block must not need the names of a slow block unless it is slow too. Other fences (bash, plain
text) are not run. Network access raises inside a block. A traceback names a block as
``<docs/quickstart.md:18>`` and counts lines from the fence.

HTML comments on the lines just before a block's fence steer it; they do not render:

- ``<!-- not-tested: reason -->``: the block is not run (the reason is required).
- ``<!-- docs-smoke: OLD => NEW; OLD2 => NEW2 -->``: smoke size. Before running the block the
  test replaces the text OLD by NEW (each OLD must occur in the block, or the test fails), e.g.
  ``num_samples=5_000 => num_samples=200``. The page shows the real example; the test runs the
  same code with a smaller budget.
- ``<!-- slow -->``: the block's test is marked ``slow`` (left out of the Python 3.12 half of
  ``make test``). The study and the language-model LLC are: each compiles SGLD loops of the
  default model, a minute or two on 2 shared cores even at smoke size.

Run time on the 2-core machine: the non-slow blocks about 40 s, the two slow ones 1-3 minutes
together (most of it XLA compilation, which smaller budgets do not shorten).
"""

import linecache
import os
import re
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Blocks that fail today because the library lacks a name the docs show; (file, text in the
# block) -> reason. Remove an entry once the name exists.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {}

FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*(not-tested|docs-smoke|slow)\s*(?::\s*(.*?))?\s*-->\s*$")


class Block:
    def __init__(self, path, line, code, directives):
        self.file = path.relative_to(ROOT).as_posix()
        self.line, self.code, self.directives = line, code, directives

    @property
    def id(self):
        return f"{self.file}:{self.line}"

    def source(self):
        code = self.code
        for rule in self.directives.get("docs-smoke", "").split(";"):
            if not rule.strip():
                continue
            old, sep, new = (part.strip() for part in rule.partition("=>"))
            assert sep and old in code, f"{self.id}: docs-smoke text {old!r} is not in the block"
            code = code.replace(old, new)
        return code


def parse(path):
    """The python blocks of one markdown file, with the directives just above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if match.group(1) == "python":
            directives, j = {}, i - 1
            while j >= 0 and (found := DIRECTIVE.match(lines[j])):
                directives[found.group(1)] = found.group(2) or ""
                j -= 1
            if "not-tested" in directives:
                assert directives["not-tested"], f"{path}:{i + 1}: not-tested needs a reason"
            blocks.append(Block(path, i + 1, "\n".join(lines[i + 1:end]) + "\n", directives))
        i = end + 1
    return blocks


BLOCKS = [block for path in FILES for block in parse(path)]


def _expected_failure(block):
    for (file, text), reason in EXPECTED_FAILURES.items():
        if block.file == file and text in block.code:
            return reason
    return None


def _param(block):
    marks = [pytest.mark.slow] if "slow" in block.directives else []
    if (reason := _expected_failure(block)) is not None:
        marks.append(pytest.mark.xfail(reason=reason, strict=False))
    return pytest.param(block, id=block.id, marks=marks)


def _no_network(*args, **kwargs):
    raise OSError("a docs code block tried to use the network")


class FileRun:
    """The shared namespace of one markdown file and how far its blocks have run."""

    def __init__(self, workdir):
        self.workdir, self.namespace = workdir, {"__name__": "__docs__"}
        self.done = set()

    def run(self, block, monkeypatch):
        if block.id in self.done:
            return
        self.done.add(block.id)
        if "not-tested" in block.directives:
            return
        filename = f"<{block.id}>"
        source = block.source()
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        with monkeypatch.context() as patch:
            patch.chdir(self.workdir)
            patch.setattr(socket.socket, "connect", _no_network)
            patch.setattr(socket, "create_connection", _no_network)
            exec(compile(source, filename, "exec"), self.namespace)


_runs = {}


@pytest.fixture(autouse=True, scope="module")
def _docs_environment():
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield
    _runs.clear()


@pytest.mark.parametrize("block", [_param(block) for block in BLOCKS])
def test_docs_block(block, tmp_path_factory, monkeypatch):
    if "not-tested" in block.directives:
        pytest.skip(f"not-tested: {block.directives['not-tested']}")
    if block.file not in _runs:
        _runs[block.file] = FileRun(tmp_path_factory.mktemp(block.file.replace("/", "_")))
    run = _runs[block.file]
    for earlier in BLOCKS:
        if (earlier.file == block.file and earlier.line < block.line
                and _expected_failure(earlier) is None
                and ("slow" not in earlier.directives or "slow" in block.directives)):
            run.run(earlier, monkeypatch)
    run.run(block, monkeypatch)


def test_every_file_is_collected():
    assert {block.file for block in BLOCKS} >= {"README.md", "docs/quickstart.md"}
