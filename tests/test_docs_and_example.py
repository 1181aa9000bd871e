"""The documentation builds strictly and the example runs (smoke mode)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed in this environment (install the dev extra)")
    done = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
    # The API reference is generated from the docstrings (mkdocstrings).
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("numpyro_slt.SGLD", "numpyro_slt.llc", "numpyro_slt.nn.AttentionOnlyTransformer"):
        assert f'id="{name}"' in reference, name


def test_llc_example_smoke(tmp_path):
    done = subprocess.run(
        [sys.executable, "examples/llc_linear_models.py", "--quick", "--no-progress", "--out",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "reduced-rank regression" in done.stdout
    assert (tmp_path / "llc_traces.png").stat().st_size > 10_000
    rows = (tmp_path / "llc_results.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("model,lambda,llc_mean")
