"""numpyro_slt.data imports one way and loads ``datasets`` only with the Hub loader."""

import ast
import subprocess
import sys
from pathlib import Path

import numpyro_slt.data

DATA = Path(numpyro_slt.data.__file__).parent
ROOT = DATA.parents[1]
# synthetic ← corpora ← tokenizer ← windows ← probes, hub; labels stands alone.
LAYER = {"synthetic": 0, "labels": 0, "corpora": 1, "tokenizer": 2, "windows": 3, "probes": 4,
         "hub": 4}


def _data_imports(path: Path) -> set[str]:
    """The sibling modules of ``numpyro_slt.data`` that ``path`` imports, at any level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "numpyro_slt.data."):
            found.add(node.module.split(".")[2])
    return found


def test_data_modules_import_one_way():
    modules = {p.stem for p in DATA.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(LAYER)
    for name in modules:
        for dep in _data_imports(DATA / f"{name}.py"):
            assert LAYER[dep] < LAYER[name], f"data.{name} imports data.{dep}"


def test_only_the_hub_loader_imports_datasets():
    for path in DATA.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        names |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.level == 0}
        assert ("datasets" in names) == (path.stem == "hub"), path.name


def test_import_does_not_load_datasets_until_a_hub_name_is_used():
    code = (
        "import sys\n"
        "import numpyro_slt.data\n"
        "import numpyro_slt.data.synthetic, numpyro_slt.data.corpora, numpyro_slt.data.windows\n"
        "import numpyro_slt.data.probes, numpyro_slt.data.labels\n"
        "assert 'datasets' not in sys.modules, 'datasets imported'\n"
        "assert callable(numpyro_slt.data.load_hub_dataset)\n"
        "assert 'datasets' in sys.modules\n"
        "from numpyro_slt.data import to_dataset, validate_input_ids\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
