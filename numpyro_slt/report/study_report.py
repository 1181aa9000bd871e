"""Writing a finished study to disk: plots, CSV tables, the data, and ``report.html``.

Layout of the output folder::

    report.html                 self-contained (images embedded), written last
    summary.json                settings, timings, LLCs, explained variances, separation checks
    susceptibility.nc           the per-token and global susceptibilities (xarray, netCDF)
    runs/<component>.nc         the ArviZ data of every component's run (draws + observables)
    plots/*.png                 every figure of the report
    tables/*.csv                response matrices, PCA loadings and explained variance, LLCs,
                                head scores, top tokens

``summary.json`` and ``report.html`` are removed first and written last, so a folder holding a
``report.html`` is a finished study.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._io import atomic_write, atomic_write_path
from ..estimators.tokens import top_tokens
from .html import Section, Table, write_report
from .plots import (
    plot_explained_variance,
    plot_llc,
    plot_loss_traces,
    plot_pca_loadings,
    plot_response_heatmap,
    plot_token_scores,
    plot_top_tokens,
)

__all__ = ["write_study"]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()), "wb")
    return path


def _matrix_csv(path: Path, matrix: xr.DataArray, row_dim: str) -> Path:
    columns = [str(c) for c in matrix["component"].values]
    values = matrix.transpose(row_dim, "component").values
    rows = [[str(r), *map(float, v)] for r, v in zip(matrix[row_dim].values, values, strict=True)]
    return _write_csv(path, [row_dim, *columns], rows)


def write_study(result, out: str | os.PathLike, tokenizer) -> Path:
    """Write ``result`` (a :class:`~numpyro_slt.study.StudyResult`) to ``out``; return the path
    of ``report.html``."""
    out = Path(out)
    plots, tables = out / "plots", out / "tables"
    for folder in (out, plots, tables):
        folder.mkdir(parents=True, exist_ok=True)
    for final in ("report.html", "summary.json"):
        (out / final).unlink(missing_ok=True)

    chi = result.susceptibility
    llc_table = result.llc
    tokens_matrix = chi["standardized"].transpose("token", "component")
    global_matrix = chi["global"].transpose("probe", "component")
    labels = chi["label"].values
    roles = result.acceptance["roles"]

    # data
    data = chi.reset_coords()
    for name in ("token_probe", "label"):
        data[name] = data[name].astype(str)
    atomic_write_path(out / "susceptibility.nc",
                      lambda temporary: data.to_netcdf(temporary, engine="h5netcdf"))

    # tables
    _matrix_csv(tables / "response_global.csv", global_matrix, "probe")
    components = [str(c) for c in chi["component"].values]
    decode = tokenizer.decode
    token_rows = []
    for i in range(chi.sizes["token"]):
        token_rows.append([int(i), str(chi["token_probe"].values[i]),
                           int(chi["sequence"].values[i]),
                           int(chi["position"].values[i]), int(chi["token_id"].values[i]),
                           decode([int(chi["token_id"].values[i])]), str(labels[i]),
                           *map(float, tokens_matrix.values[i])])
    _write_csv(tables / "response_tokens.csv",
               ["token", "probe", "sequence", "position", "token_id", "text", "label",
                *components], token_rows)
    variance_rows = []
    for layer, pca in {**result.pca_layers, "all": result.pca_all}.items():
        ratio = pca["explained_variance_ratio"].values
        variance_rows += [[layer, int(pc), float(r)] for pc, r in zip(pca["pc"].values, ratio,
                                                                      strict=True)]
        loadings = pca["loadings"].transpose("component", "pc")
        _write_csv(tables / f"pca_{'layer' + layer if layer != 'all' else 'all'}_loadings.csv",
                   ["component", *[f"PC{int(p)}" for p in pca["pc"].values]],
                   [[str(c), *map(float, v)] for c, v in zip(loadings["component"].values,
                                                             loadings.values, strict=True)])
    _write_csv(tables / "pca_explained_variance.csv", ["layer", "pc", "explained_variance_ratio"],
               variance_rows)
    columns = ["llc_mean", "llc_std", "loss_ess", "loss_rhat", "phi_ess", "phi_rhat",
               "split_half_r", "mala_accept"]
    llc_rows = [[c, *(float(llc_table[k].sel(component=c)) for k in columns)]
                for c in components]
    _write_csv(tables / "llc.csv", ["component", *columns], llc_rows)
    head_rows = [[h["head"], h["induction"], h["previous_token"], h.get("copy_ablation"),
                  roles.get(h["head"], "")] for h in result.head_scores["heads"]]
    _write_csv(tables / "head_scores.csv",
               ["head", "induction", "previous_token", "copy_ablation", "role"], head_rows)
    top = []
    for c in components:
        top += top_tokens(tokens_matrix, result.probes, decode, c, k=3)
    _write_csv(tables / "top_tokens.csv", ["component", "direction", "value", "probe",
                                           "sequence", "position", "context", "token"],
               [[r[k] for k in ("component", "direction", "value", "probe", "sequence",
                                "position", "context", "token")] for r in top])

    # plots
    images = {}
    images["loss"] = plot_loss_traces(llc_table["phi_trace"], llc_table["phi_ess"],
                                      llc_table["phi_rhat"], plots / "loss_traces.png",
                                      title="φ_C = L_q(w) − L_q(w*) on the fixed evaluation set, "
                                            "per chain")
    images["llc"] = plot_llc(llc_table["llc_mean"], llc_table["llc_std"], plots / "llc.png",
                             title="Refined LLC per component (weight-restricted runs)")
    images["global"] = plot_response_heatmap(global_matrix, plots / "response_global.png",
                                             row_dim="probe",
                                             title="Global susceptibility χ_C(q′) per probe")
    images["tokens"] = plot_response_heatmap(tokens_matrix, plots / "response_tokens.png",
                                             row_dim="token",
                                             title="Standardized per-token susceptibilities")
    pcas = dict(result.pca_layers)
    images["loadings"] = plot_pca_loadings(pcas, plots / "pca_loadings.png", highlight=roles,
                                           title="Per-layer PCA loadings of the heads")
    if all(p.sizes["pc"] >= 3 for p in pcas.values()):
        images["loadings13"] = plot_pca_loadings(pcas, plots / "pca_loadings_pc1_pc3.png",
                                                 highlight=roles, pcs=(1, 3),
                                                 title="Per-layer PCA loadings, PC1 vs PC3")
    images["variance"] = plot_explained_variance({**pcas, "all": result.pca_all},
                                                 plots / "explained_variance.png")
    pretty = xr.DataArray([str(x).replace("_", " ") for x in labels], dims="token")
    for layer, pca in pcas.items():
        if pca.sizes["pc"] >= 2:
            images[f"scores{layer}"] = plot_token_scores(
                pca["scores"], pretty, plots / f"token_scores_layer{layer}.png",
                title=f"Layer {layer}: token scores by pattern label")
    shown = [r for r in top if r["component"] in list(roles)[:6]] or top[:18]
    images["top"] = plot_top_tokens(shown, plots / "top_tokens.png",
                                    title="Top expressed / suppressed tokens in context")

    summary = _summary(result)
    text = json.dumps(summary, indent=1, default=float)
    report = _report(result, summary, images, roles, top)
    write_report(out / "report.html", title="numpyro-slt study", sections=report)
    atomic_write(out / "summary.json", lambda f: f.write(text.encode()), "wb")
    return out / "report.html"


def _summary(result) -> dict[str, Any]:
    llc_table = result.llc
    return {
        "config": result.config.to_dict(),
        "components": result.components,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
        "llc": {c: {"mean": float(llc_table["llc_mean"].sel(component=c)),
                    "std": float(llc_table["llc_std"].sel(component=c)),
                    "rhat": float(llc_table["loss_rhat"].sel(component=c)),
                    "ess": float(llc_table["loss_ess"].sel(component=c)),
                    "phi_ess": float(llc_table["phi_ess"].sel(component=c)),
                    "phi_rhat": float(llc_table["phi_rhat"].sel(component=c)),
                    "split_half_r": float(llc_table["split_half_r"].sel(component=c))}
                for c in result.components},
        "explained_variance": {
            layer: [float(x) for x in pca["explained_variance_ratio"].values[:3]]
            for layer, pca in {**result.pca_layers, "all": result.pca_all}.items()
        },
        "acceptance": result.acceptance,
        "head_scores": {h["head"]: {"induction": h["induction"],
                                    "previous_token": h["previous_token"],
                                    "copy_ablation": h.get("copy_ablation")}
                        for h in result.head_scores["heads"]},
        "tokens": int(result.susceptibility.sizes["token"]),
        "probes": {k: list(np.shape(v)) for k, v in result.probes.items()},
    }


def _report(result, summary, images, roles, top) -> list[Section]:
    c = result.config
    acc = result.acceptance
    settings = (f"Weight-restricted SGLD per component: nβ = {c.nbeta}, γ = {c.gamma}, "
                f"ε = {c.step_size}, batch {c.batch_size}, {c.num_chains} chains × "
                f"{c.num_draws} draws (thinning {c.thinning}, {c.num_warmup} warm-up steps), "
                f"{summary['tokens']} probe tokens. Total time "
                f"{summary['seconds'].get('total', float('nan')):.0f} s. "
                f"Sampling distribution: {c.data or 'the built-in mixture'} "
                f"({c.sampling_sequences} windows, {c.eval_sequences} more for L_q); probes: "
                + ", ".join(f"{name} {shape[0]} × {shape[1]} tokens"
                            for name, shape in summary["probes"].items()) + ".")
    variance = Table("Explained variance ratio of PC1–PC3",
                     ["layer", "PC1", "PC2", "PC3"],
                     [[k, *(v + [float("nan")] * (3 - len(v)))]
                      for k, v in summary["explained_variance"].items()])
    separation_rows = [[e["pc"], e["explained_variance_ratio"], e.get("heads_gap"),
                        ", ".join(e.get("separated_heads", [])),
                        e.get("induction_tokens_cohens_d")] for e in acc.get("layer1", [])]
    separation = Table("Layer-1 PCs: gap between induction heads and the other heads (> 0: "
                       "all separated), the induction heads that lie beyond every other head, "
                       "and Cohen's d of induction-labelled tokens",
                       ["PC", "explained variance", "heads gap", "separated induction heads",
                        "induction tokens d"], separation_rows)
    crit = acc.get("criteria", {})
    attend_only = [h for h in acc.get("prefix_matching_heads", [])
                   if h not in acc.get("induction_heads", [])]
    verdict = (f"Induction heads (layer ≥ 1, induction score ≥ {crit.get('induction_score')} "
               f"and mean ablation undoing ≥ {crit.get('copy_share', 0):.0%} of the copying "
               f"gain): {', '.join(acc.get('induction_heads', [])) or 'none'}. "
               + (f"Attending like an induction head without carrying the copying: "
                  f"{', '.join(attend_only)}. " if attend_only else "") +
               f"Separated from the other layer-1 heads along one of PC1–PC3: "
               f"{'yes' if acc.get('heads_separated') else 'no'}. Induction tokens score "
               f"distinctly (|d| ≥ 0.5 on one of PC1–PC3): "
               f"{'yes' if acc.get('induction_tokens_distinct') else 'no'}.")
    heads = Table("Mechanistic head scores on repeated random tokens (copy ablation: share of "
                  "the second-copy loss gain undone by mean-ablating the head)",
                  ["head", "induction", "previous token", "copy ablation", "role"],
                  [[h["head"], h["induction"], h["previous_token"], h.get("copy_ablation"),
                    roles.get(h["head"], "")] for h in result.head_scores["heads"]])
    llc_rows = [[k, v["mean"], v["std"], v["ess"], v["rhat"], v["phi_ess"], v["phi_rhat"],
                 v["split_half_r"]] for k, v in summary["llc"].items()]
    chains = Table("Refined LLC with the ESS and R̂ of its trace; ESS and R̂ of φ_C (what the "
                   "susceptibilities rest on); split-half reliability r of the per-token "
                   "susceptibilities (≈ 0: Monte Carlo noise)",
                   ["component", "LLC", "std", "ESS", "R̂", "φ ESS", "φ R̂", "split-half r"],
                   llc_rows)
    top_table = Table("Top tokens (χ < 0 expresses, > 0 suppresses)",
                      ["component", "direction", "χ", "probe", "context", "token"],
                      [[r["component"], r["direction"], r["value"], r["probe"],
                        r["context"][-40:], r["token"]] for r in top])
    return [
        Section("Settings", settings),
        Section("Chains", "φ_C at the kept draws of every chain, with its ESS and R̂. The "
                "per-token susceptibilities are covariances over these draws: their noise falls "
                "as 1/√ESS(φ), not 1/√draws.",
                images=[images["loss"], images["llc"]], tables=[chains]),
        Section("Response matrix", "Global susceptibility per probe distribution and the "
                "standardized per-token response matrix.",
                images=[images["global"], images["tokens"]]),
        Section("Principal components", verdict,
                images=[images[k] for k in ("variance", "loadings", "loadings13")
                        if k in images] + [images[k] for k in images if k.startswith("scores")],
                tables=[variance, separation]),
        Section("Heads", "Per-head induction and previous-token scores of the network.",
                tables=[heads]),
        Section("Top tokens in context", "", images=[images["top"]], tables=[top_table]),
    ]
