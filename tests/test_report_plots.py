"""The report figures and the HTML report writer, on small synthetic xarray inputs."""

from __future__ import annotations

import base64
import re
import warnings

import numpy as np
import pytest
import xarray as xr

from numpyro_slt.report.html import Section, Table, write_report
from numpyro_slt.report.plots import (
    plot_explained_variance,
    plot_llc,
    plot_loss_traces,
    plot_pca_loadings,
    plot_response_heatmap,
    plot_token_scores,
    plot_top_tokens,
)

COMPONENTS = ["embed"] + [f"{layer}:{head}" for layer in (0, 1) for head in range(8)] + ["unembed"]
PATTERNS = ["word start", "word part", "induction", "spacing", "left delimiter",
            "right delimiter", "formatting", "numeric", "other"]


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    assert len(data) > min_bytes, (path, len(data))


def pca(components, k, rng):
    ratio = np.sort(rng.random(k))[::-1]
    return xr.Dataset(
        {"explained_variance_ratio": ("pc", ratio / ratio.sum()),
         "loadings": (("component", "pc"), rng.normal(size=(len(components), k)))},
        coords={"pc": np.arange(1, k + 1), "component": components})


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def pcas(rng):
    return {"0": pca(COMPONENTS[1:9], 3, rng), "1": pca(COMPONENTS[9:17], 1, rng),
            "all": pca(COMPONENTS, 4, rng)}


def test_loss_traces(tmp_path, rng):
    loss = xr.DataArray(rng.normal(size=(18, 3, 40)).cumsum(-1),
                        dims=("component", "chain", "draw"), coords={"component": COMPONENTS})
    ess = xr.DataArray(rng.uniform(10, 500, 18), dims="component", coords={"component": COMPONENTS})
    rhat = xr.DataArray(rng.uniform(0.99, 1.3, 18), dims="component",
                        coords={"component": COMPONENTS})
    ess[2], rhat[3] = np.nan, np.nan
    out = plot_loss_traces(loss, ess, rhat, tmp_path / "new" / "dir" / "loss.png")
    assert out == tmp_path / "new" / "dir" / "loss.png"
    assert_png(out)
    with pytest.raises(ValueError, match=r"loss must have dims \(component, chain, draw\)"):
        plot_loss_traces(loss.isel(chain=0), ess, rhat, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="rhat has 17 components"):
        plot_loss_traces(loss, ess, rhat.isel(component=slice(1, None)), tmp_path / "bad.png")


def test_llc(tmp_path, rng):
    mean = xr.DataArray(rng.uniform(1, 20, 18), dims="component", coords={"component": COMPONENTS})
    std = xr.DataArray(rng.uniform(0, 2, 18), dims="component", coords={"component": COMPONENTS})
    std[0] = np.nan
    assert_png(plot_llc(mean, std, str(tmp_path / "llc.png")))
    with pytest.raises(ValueError, match="llc_std must have dims"):
        plot_llc(mean, std.expand_dims("x"), tmp_path / "bad.png")


def test_response_heatmap_few_and_many_rows(tmp_path, rng):
    probes = [f"probe {i}" for i in range(6)]
    few = xr.DataArray(rng.normal(size=(6, 18)), dims=("probe", "component"),
                       coords={"probe": probes, "component": COMPONENTS})
    assert_png(plot_response_heatmap(few.transpose("component", "probe"), tmp_path / "few.png"))
    probe = rng.choice(["$code$", "prose", "math"], 2000)
    tokens = xr.DataArray(rng.normal(size=(2000, 18)), dims=("token", "component"),
                          coords={"component": COMPONENTS, "probe": ("token", probe)})
    assert_png(plot_response_heatmap(tokens, tmp_path / "many.png", row_dim="token"))
    assert_png(plot_response_heatmap(tokens.drop_vars("probe"), tmp_path / "plain.png",
                                     row_dim="token"))
    with pytest.raises(ValueError, match=r"matrix must have dims \(probe, component\)"):
        plot_response_heatmap(tokens, tmp_path / "bad.png")


def test_pca_panels(tmp_path, pcas):
    highlight = {"1:3": "induction", "0:2": "previous-token", "1:5": "induction"}
    assert_png(plot_pca_loadings(pcas, tmp_path / "loadings.png", highlight=highlight))
    assert_png(plot_pca_loadings({"0": pcas["0"]}, tmp_path / "one.png", pcs=(2, 3)))
    assert_png(plot_explained_variance(pcas, tmp_path / "ev.png"))
    with pytest.raises(ValueError, match="has no PC 5"):
        plot_pca_loadings(pcas, tmp_path / "bad.png", pcs=(5, 1))
    with pytest.raises(ValueError, match="has no variable 'loadings'"):
        plot_explained_variance({"0": pcas["0"].drop_vars("loadings")}, tmp_path / "bad.png")


def test_token_scores(tmp_path, rng):
    scores = xr.DataArray(rng.normal(size=(3000, 3)), dims=("token", "pc"),
                          coords={"pc": [1, 2, 3]})
    labels = xr.DataArray(rng.choice(PATTERNS + ["unheard-of"], 3000), dims="token")
    assert_png(plot_token_scores(scores, labels, tmp_path / "scores.png"))
    assert_png(plot_token_scores(scores.sel(pc=[1]), labels, tmp_path / "one_pc.png"))
    with pytest.raises(ValueError, match="labels has 10 tokens"):
        plot_token_scores(scores, labels[:10], tmp_path / "bad.png")


def test_top_tokens_awkward_strings(tmp_path):
    rows = [{"component": c, "direction": d, "value": v, "context": ctx, "token": tok}
            for c in ("0:3", "1:6")
            for d, v in (("expresses", 0.8), ("suppresses", -0.3))
            for ctx, tok in (("costs $5 and $6\nthen", " $x$"),
                             ("a very long context " * 5, "\t<script>"),
                             ("", "\n"))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no missing glyphs, no mathtext errors
        assert_png(plot_top_tokens(rows, tmp_path / "top.png"))
        assert_png(plot_top_tokens([], tmp_path / "empty.png"), min_bytes=1_000)
    with pytest.raises(ValueError, match=r"rows\[0\]\['direction'\]"):
        plot_top_tokens([{**rows[0], "direction": "up"}], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"rows\[1\] must be a dict"):
        plot_top_tokens([rows[0], {"component": "0:3"}], tmp_path / "bad.png")


def test_html_report(tmp_path, rng):
    mean = xr.DataArray(rng.uniform(1, 20, 18), dims="component", coords={"component": COMPONENTS})
    llc_png = plot_llc(mean, mean * 0.1, tmp_path / "img" / "llc.png")
    ev_png = plot_explained_variance({"all": pca(COMPONENTS, 2, rng)}, tmp_path / "img" / "ev.png")
    table = Table("LLC <per> component", ["component", "llc", "n", "note"],
                  [["0:3", 0.123456, 7, None], ["<script>", float("nan"), np.int64(3), "a & b"]])
    sections = [
        Section("Loss & health", "First paragraph <script>alert(1)</script>.\n\nSecond one.",
                images=[llc_png]),
        Section("Tables", tables=[table], images=[str(ev_png)]),
        Section("Empty"),
    ]
    out = write_report(tmp_path / "out" / "report.html", title="Run <1>", sections=sections)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "Run &lt;1&gt;" in text and "Loss &amp; health" in text and "a &amp; b" in text
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [base64.b64decode(u) for u in uris] == [llc_png.read_bytes(), ev_png.read_bytes()]
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # nothing external
    assert "llc.png\"" not in text and "http" not in text
    for anchor in re.findall(r'href="#([^"]+)"', text):
        assert f'id="{anchor}"' in text
    assert len(re.findall(r'href="#', text)) == 3
    assert "<table>" in text and "LLC &lt;per&gt; component" in text
    assert '<td class="num">0.1235</td>' in text and '<td class="num">7</td>' in text
    assert '<td class="num">nan</td>' in text and '<td class="num">3</td>' in text
    assert "<p>First paragraph" in text and "<p>Second one.</p>" in text
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp file left

    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_report(tmp_path / "r2.html", title="t",
                     sections=[Section("s", images=[tmp_path / "missing.png"])])
    assert not (tmp_path / "r2.html").exists()
    with pytest.raises(ValueError, match=r"rows\[0\] of table 'bad' has 1 cells"):
        Table("bad", ["a", "b"], [[1]])
