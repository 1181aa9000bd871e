"""The estimators over a study's finished runs, and its acceptance checks.

From each component's run (observables in the posterior group, SGLD statistics in sample_stats):
χ^C_xy = −Cov[φ_C, ℓ_xy − L_q] per token (raw and standardized) and χ_C(q′) per probe
(:func:`~numpyro_slt.susceptibilities`), the refined LLC with its diagnostics
(:func:`~numpyro_slt.llc`, ESS and R̂ of φ_C, split-half reliability), and the PCA of the
standardized per-token response matrix per layer and over all components (docs/formulas.md).
The acceptance checks ask whether the layer-1 PCA separates the induction heads, whose roles come
from :func:`numpyro_slt.nn.roles.head_roles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import jax
import numpy as np
import xarray as xr

from .._arviz import posterior_group, sample_stats
from ..diagnostics import ess_rhat
from ..estimators.llc import llc
from ..estimators.pca import per_layer_pca, response_pca
from ..estimators.susceptibility import split_half_reliability, susceptibilities

__all__ = ["analyse", "susceptibility_table", "llc_table", "separation_checks"]

#: Seed of the random sequences on which the mechanistic head scores are measured.
HEAD_SCORE_SEED = 12345


def analyse(network, tokenizer, runs: dict[str, Any], probes: dict[str, np.ndarray]
            ) -> dict[str, Any]:
    """Everything :class:`~numpyro_slt.study.StudyResult` holds beyond the runs: the
    susceptibilities, the LLC table, the PCAs, the head scores and the acceptance checks."""
    from ..nn.induction import score_table

    chi = susceptibility_table(runs, probes, tokenizer)
    matrix = chi["standardized"].transpose("token", "component")
    heads = [c for c in runs if ":" in c]
    pca_layers = per_layer_pca(matrix.sel(component=heads), n_components=None) if heads else {}
    head_scores = score_table(network, jax.random.PRNGKey(HEAD_SCORE_SEED), num_sequences=64,
                              vocab_low=1)
    return {"susceptibility": chi, "llc": llc_table(runs), "pca_layers": pca_layers,
            "pca_all": response_pca(matrix, None), "head_scores": head_scores,
            "acceptance": separation_checks(pca_layers, head_scores, chi["label"].values)}


def susceptibility_table(runs: dict[str, Any], probes: dict[str, np.ndarray],
                         tokenizer) -> xr.Dataset:
    """:func:`~numpyro_slt.susceptibilities` of every run, stacked along ``component``, with the
    pattern label and id of every predicted probe token y as token coordinates."""
    from ..data.labels import label_sequences

    chi = xr.concat([susceptibilities(run).assign_coords(component=[name])
                     for name, run in runs.items()], dim="component")
    labels, token_ids = [], []
    for tokens in probes.values():
        for row, row_labels in zip(tokens, label_sequences(tokens, tokenizer), strict=True):
            labels.extend(row_labels[1:])
            token_ids.extend(int(t) for t in row[1:])
    return chi.assign_coords(label=("token", np.asarray(labels)),
                             token_id=("token", np.asarray(token_ids)))


def llc_table(runs: dict[str, Any]) -> xr.Dataset:
    """Per component: ``llc_mean``, ``llc_std``, ``loss_ess``, ``loss_rhat`` (of the LLC trace),
    ``phi_ess``, ``phi_rhat`` (of φ_C), ``split_half_r``, ``mala_accept``, ``loss_trace`` and
    ``phi_trace`` (component, chain, draw)."""
    rows = []
    for name, run in runs.items():
        post = posterior_group(run)
        estimate = llc(run)
        phi_ess, phi_rhat = ess_rhat(post["phi"].values)
        reliability = (float(split_half_reliability(post["phi"], post["sampling_loss"],
                                                    post["token_loss"]).squeeze())
                       if post.sizes["chain"] >= 2 else float("nan"))
        rows.append(xr.Dataset({
            "llc_mean": estimate["llc_mean"], "llc_std": estimate["llc_std"],
            "loss_ess": estimate["loss_ess"], "loss_rhat": estimate["loss_rhat"],
            "phi_ess": phi_ess, "phi_rhat": phi_rhat, "split_half_r": reliability,
            "mala_accept": float(np.mean(sample_stats(run)["mala_accept"])),
            "loss_trace": estimate["loss_trace"].drop_vars(["chain", "draw"]),
            "phi_trace": post["phi"].drop_vars(["chain", "draw"]),
        }).expand_dims(component=[name]))
    return xr.concat(rows, dim="component")


def separation_checks(pca_layers: dict[str, xr.Dataset], head_scores: dict[str, Any],
                      labels: Sequence[str], criteria=None) -> dict[str, Any]:
    """Does the layer-1 PCA separate the induction heads, and do induction tokens score apart?

    The heads' roles are :func:`~numpyro_slt.nn.roles.head_roles` under ``criteria`` (default
    :class:`~numpyro_slt.nn.roles.RoleCriteria`): the induction heads attend and copy; the
    heads that only attend like one are listed as ``prefix_matching_heads`` and are not required
    to separate.

    For each of PC1..PC3 of layer 1: ``heads_gap`` = the distance between the induction heads' and
    the other layer-1 heads' loadings when all of one group lie on one side of all of the other
    (negative when they overlap), and ``separated_heads``, the induction heads whose loading lies
    beyond every other layer-1 head's on the induction heads' side. For the token scores:
    Cohen's d of the tokens labelled ``induction`` against all others on each PC (difference of
    means over the pooled standard deviation).
    """
    from ..nn.roles import RoleCriteria, head_roles, induction_heads, prefix_matching_heads

    criteria = RoleCriteria() if criteria is None else criteria
    result: dict[str, Any] = {
        "prefix_matching_heads": prefix_matching_heads(head_scores, criteria),
        "induction_heads": induction_heads(head_scores, criteria),
        "roles": head_roles(head_scores, criteria),
        "criteria": asdict(criteria),
    }
    layer = pca_layers.get("1")
    if layer is None:
        return result
    ind = [h for h in result["induction_heads"] if h in layer["component"].values]
    others = [str(c) for c in layer["component"].values if str(c) not in ind]
    is_ind = np.asarray(labels) == "induction"
    per_pc = [_separation_on(layer, int(pc), ind, others, is_ind)
              for pc in layer["pc"].values[:3]]
    result["layer1"] = per_pc
    gaps = [e["heads_gap"] for e in per_pc if "heads_gap" in e]
    result["heads_separated"] = bool(gaps) and max(gaps) > 0
    ds = [abs(e.get("induction_tokens_cohens_d", 0.0)) for e in per_pc]
    result["induction_tokens_distinct"] = bool(ds) and max(ds) >= 0.5
    return result


def _separation_on(layer: xr.Dataset, pc: int, ind: list[str], others: list[str],
                   is_ind: np.ndarray) -> dict[str, Any]:
    """The heads gap, the separated induction heads and Cohen's d of induction tokens on one
    PC of a layer's PCA."""
    loadings = layer["loadings"].sel(pc=pc)
    entry: dict[str, Any] = {"pc": pc, "explained_variance_ratio":
                             float(layer["explained_variance_ratio"].sel(pc=pc))}
    if ind and others:
        a = loadings.sel(component=ind).values
        b = loadings.sel(component=others).values
        entry["heads_gap"] = float(max(a.min() - b.max(), b.min() - a.max()))
        side = 1.0 if a.mean() >= b.mean() else -1.0  # the induction heads' side
        entry["separated_heads"] = [h for h, x in zip(ind, a, strict=True)
                                    if side * x > max(side * b)]
    scores = layer["scores"].sel(pc=pc).values
    if is_ind.any() and (~is_ind).any():
        x, y = scores[is_ind], scores[~is_ind]
        pooled = np.sqrt((x.var() + y.var()) / 2)
        entry["induction_tokens_cohens_d"] = float((x.mean() - y.mean()) / pooled) \
            if pooled > 0 else float("nan")
    return entry
