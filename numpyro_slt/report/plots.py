"""Figures for the report: SGLD loss traces and step norms, LLC bars, response heatmaps, PCA
panels, top tokens.

Every function takes xarray inputs with named dims, writes one PNG at ``path`` (parent folders are
created; the file is replaced atomically) and returns its :class:`~pathlib.Path`. Figures are built
on :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so they work headless and
from threads. Components are named ``"L:H"`` for head H of layer L (``"0:3"``), or anything else
(``"embed"``, ``"unembed"``); heads are coloured by layer, other components grey.

The figures live by subject: :mod:`.chain_plots` (the sampling runs), :mod:`.response_plots` (a
response matrix itself) and :mod:`.pca_plots` (its PCA); this module gathers them in one place.
"""

from __future__ import annotations

from .chain_plots import plot_llc, plot_loss_traces, plot_step_norms
from .pca_plots import plot_explained_variance, plot_pca_loadings, plot_token_scores
from .response_plots import plot_response_heatmap, plot_top_tokens

__all__ = [
    "plot_loss_traces",
    "plot_step_norms",
    "plot_llc",
    "plot_response_heatmap",
    "plot_pca_loadings",
    "plot_token_scores",
    "plot_top_tokens",
    "plot_explained_variance",
]
