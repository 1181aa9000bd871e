"""The main job: per-component susceptibilities of a language model and their low-rank structure.

:func:`run_study` carries out the method of Baker, Wang, Hoogland and Murfet (2025) on a
transformer, in four steps, each in its own module:

1. :mod:`~numpyro_slt.study.data`: the sampling distribution q, the evaluation set of L_q and the
   probe distributions q′.
2. :mod:`~numpyro_slt.study.sampling`: for every component C, the weight-restricted, tempered,
   localized posterior sampled with SGLD, its observables (L_q, φ_C = L_q(w) − L_q(w*), ℓ_xy of
   every probe token) evaluated at every kept draw and written to disk as they are sampled;
   resumable.
3. :mod:`~numpyro_slt.study.analysis`: susceptibilities per token and per probe, the response
   matrices, refined LLCs and the PCA of the per-token matrix per layer and overall.
4. The acceptance checks (:func:`~numpyro_slt.study.analysis.separation_checks`): does the layer-1
   PCA separate the induction heads?

Settings are a :class:`StudyConfig`. The formulas are in docs/formulas.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .analysis import analyse, separation_checks
from .config import StudyConfig, default_components
from .data import study_data
from .sampling import RunStore, sample_components, study_settings

__all__ = ["StudyConfig", "StudyResult", "run_study", "study_data", "default_components",
           "separation_checks"]


@dataclass
class StudyResult:
    """What :func:`run_study` returns.

    Attributes:
        config: the settings.
        components: the sampled components, in order.
        susceptibility: :func:`~numpyro_slt.susceptibilities` over all components: ``per_token``
            and ``standardized`` (component, token), ``global`` (component, probe), ``phi_mean``;
            token coordinates ``token_probe``, ``sequence``, ``position``, ``token_id``, ``label``.
        llc: per component ``llc_mean``, ``llc_std``, ``loss_ess``, ``loss_rhat`` (of the LLC
            trace), ``phi_ess``, ``phi_rhat`` (of φ_C on the fixed evaluation set: the number of
            independent draws the susceptibilities rest on), ``split_half_r`` (see
            :func:`~numpyro_slt.estimators.susceptibility.split_half_reliability`),
            ``mala_accept``, ``loss_trace`` and ``phi_trace`` (component, chain, draw).
        pca_layers: per-layer PCA of the standardized per-token matrix (layer → Dataset).
        pca_all: PCA over all components.
        head_scores: :func:`~numpyro_slt.nn.score_table` of the network (induction and
            previous-token score per head).
        probes: probe name → token array [sequences, length].
        acceptance: the separation checks of :func:`separation_checks`, with the heads' roles.
        seconds: wall time per stage.
        runs: component → path of its ArviZ data on disk (when ``out`` was given).
    """

    config: StudyConfig
    components: list[str]
    susceptibility: xr.Dataset
    llc: xr.Dataset
    pca_layers: dict[str, xr.Dataset]
    pca_all: xr.Dataset
    head_scores: dict[str, Any]
    probes: dict[str, np.ndarray]
    acceptance: dict[str, Any]
    seconds: dict[str, float]
    runs: dict[str, str]


def run_study(
    network,
    tokenizer,
    config: StudyConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    on_component: Callable[[str, float], None] | None = None,
) -> StudyResult:
    """Run the whole study on ``network`` (see the module docstring).

    :param network: a trained transformer of :mod:`numpyro_slt.nn`.
    :param tokenizer: its tokenizer (``tokenizers.Tokenizer``).
    :param config: a :class:`StudyConfig` (default: the paper's per-token settings).
    :param out: folder for the per-component ArviZ data (``out/runs/*.nc``); None keeps
        everything in memory.
    :param resume: with ``out``, reuse finished component runs made with the same settings and
        continue the component in progress from its last written segment.
    :param progress: show a progress bar over components.
    :param on_component: called as ``on_component(name, seconds)`` after each component.
    """
    config = _checked_config(config)
    components = _checked_components(network, config)
    seconds: dict[str, float] = {}
    with _timed(seconds, "total"):
        with _timed(seconds, "data"):
            data = study_data(network, tokenizer, config)
        with (RunStore(out, study_settings(network, config, data), resume) as store,
              _timed(seconds, "sampling")):
            runs = sample_components(network, components, data, config, store,
                                     progress=progress, on_component=on_component)
        with _timed(seconds, "estimators"):
            found = analyse(network, tokenizer, runs, data["probes"])
    return StudyResult(config=config, components=components, probes=data["probes"],
                       seconds=seconds, runs=store.paths(components), **found)


def _checked_config(config: StudyConfig | None) -> StudyConfig:
    config = StudyConfig() if config is None else config
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}.")
    return config


def _checked_components(network, config: StudyConfig) -> list[str]:
    """The components to sample; an unknown name raises a ValueError listing the valid ones."""
    from ..nn.components import parse_component

    components = list(config.components or default_components(network))
    for name in components:
        parse_component(name, network.config)
    return components


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = time.perf_counter() - start
