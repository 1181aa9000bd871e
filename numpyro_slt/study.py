"""The main job: per-component susceptibilities of a language model and their low-rank structure.

:func:`run_study` carries out the method of Baker, Wang, Hoogland and Murfet (2025) on an
attention-only transformer (notation of DESIGN.md section 2):

1. **Data.** The sampling distribution q is the model's training mixture: windows of the offline
   code, legal, prose and math corpora, a share of them carrying a repeated segment. The probe
   distributions q′ are held-out windows of each genre plus the synthetic patterns ``induction``
   (random tokens repeated twice) and ``brackets`` (nested bracket text).
2. **Sampling.** For every component C (each head "L:H", the embedding and the unembedding) the
   weight-restricted, tempered, localized posterior p(c) ∝ exp(−nβ·L_n(u*, c) − (γ/2)‖c − c*‖²)
   is sampled with :class:`~numpyro_slt.SGLD` inside ``numpyro.infer.MCMC``.
3. **Observables.** At every kept draw: L_q on a fixed evaluation set, φ_C = L_q(w) − L_q(w*) and
   ℓ_xy of every probe token (:func:`numpyro_slt.nn.observables.evaluate_observables`, batched
   over draws). They are stored with the draws in the run's ArviZ data.
4. **Estimators.** χ^C_xy = −Cov[φ_C, ℓ_xy − L_q] per token (raw and standardized), χ_C(q′) per
   probe, the response matrices (probe × component and token × component), the refined LLC of
   every component, and the PCA of the per-token matrix per layer and overall.

A component is sampled in segments of ``checkpoint_every`` draws; each segment's statistics and
observables are written under ``out/runs/.partial/`` as soon as it is sampled (parameter draws
are not kept: the estimators need only the observables). A finished component's run is written to
``out/runs/<component>.nc``. A rerun with the same settings and ``resume=True`` reads the finished
components back and continues the one in progress from its last segment, so an interrupted study
loses at most ``checkpoint_every`` draws, and ends with the same numbers, bit for bit, as an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr

from ._arviz import from_groups, posterior_group, sample_stats
from ._config import checked_fields
from ._io import atomic_write_path
from .diagnostics import ess_rhat
from .estimators.llc import llc
from .estimators.pca import per_layer_pca, response_pca
from .estimators.susceptibility import split_half_reliability, susceptibilities

__all__ = ["StudyConfig", "StudyResult", "run_study", "study_data", "default_components"]


@dataclass(frozen=True)
class StudyConfig:
    """Settings of :func:`run_study`. The defaults follow the paper's per-token runs (γ = 300,
    nβ = 30, ε = 1e-3, batch 16, 4 chains) with 200 draws kept every 10th step: on the default
    model, unthinned draws had an effective sample size of φ_C of only 12–86 per 800, thinned
    ones 500–940 per 800 (see docs/study.md).

    Attributes:
        components: components to sample (None: every head, ``"embed"`` and ``"unembed"``).
        nbeta: nβ of the tempered posterior.
        gamma: localization strength γ.
        step_size: SGLD step size ε.
        batch_size: sequences per SGLD minibatch.
        num_chains, num_draws: chains per component and kept draws per chain.
        num_warmup: SGLD steps discarded before the first kept draw.
        thinning: SGLD steps per kept draw.
        sampling_sequences: windows of the sampling distribution q the posterior conditions on.
        eval_sequences: windows of the fixed evaluation set for L_q.
        probe_sequences: windows per probe distribution.
        repeat_fraction, random_fraction: share of q's windows with a repeated segment, and share
            of those segments that are random tokens (the default model's training mixture).
        seed: seed of the data and of the chains.
        chain_method: ``"sequential"``, ``"vectorized"`` or ``"parallel"`` (NumPyro's).
        fast_path: cache what the frozen part of the network computes on the data once (for a
            head, its input and the rest of its layer's output; for a component downstream of
            layer L > 0, the residual stream x^L) and run only the sampled part and what lies
            downstream, per step and per draw (same estimates up to float rounding; see
            :func:`~numpyro_slt.nn.posterior.frozen_cache`).
        checkpoint_every: kept draws per segment of a component's run: the observables of each
            segment are evaluated and written to disk as soon as it is sampled, so an
            interrupted study loses at most this many draws of the component in progress.
    """

    components: tuple[str, ...] | None = None
    nbeta: float = 30.0
    gamma: float = 300.0
    step_size: float = 1e-3
    batch_size: int = 16
    num_chains: int = 4
    num_draws: int = 200
    num_warmup: int = 200
    thinning: int = 10
    sampling_sequences: int = 4096
    eval_sequences: int = 64
    probe_sequences: int = 16
    repeat_fraction: float = 0.5
    random_fraction: float = 0.5
    seed: int = 0
    chain_method: str = "vectorized"
    fast_path: bool = True
    checkpoint_every: int = 20

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_chains", "num_draws", "thinning", "sampling_sequences",
                     "eval_sequences", "probe_sequences", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"StudyConfig.{name} must be a positive int, got {v!r}.")
        for name in ("num_warmup", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"StudyConfig.{name} must be an int >= 0, got {v!r}.")
        for name in ("nbeta", "step_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, int | float) and np.isfinite(v) and v > 0):
                raise ValueError(f"StudyConfig.{name} must be a positive number, got {v!r}.")
        if isinstance(self.gamma, bool) or not (isinstance(self.gamma, int | float)
                                                and np.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"StudyConfig.gamma must be a number >= 0, got {self.gamma!r}.")
        for name in ("repeat_fraction", "random_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, int | float) and 0 <= v <= 1):
                raise ValueError(f"StudyConfig.{name} must lie in [0, 1], got {v!r}.")
        if self.batch_size > self.sampling_sequences:
            raise ValueError(f"StudyConfig.batch_size ({self.batch_size}) exceeds "
                             f"sampling_sequences ({self.sampling_sequences}).")
        if not isinstance(self.fast_path, bool):
            raise ValueError(f"StudyConfig.fast_path must be true or false, got "
                             f"{self.fast_path!r}.")
        if self.chain_method not in ("sequential", "vectorized", "parallel"):
            raise ValueError("StudyConfig.chain_method must be 'sequential', 'vectorized' or "
                             f"'parallel', got {self.chain_method!r}.")
        if self.components is not None:
            if not isinstance(self.components, tuple | list) or not self.components or not all(
                    isinstance(c, str) for c in self.components):
                raise ValueError("StudyConfig.components must be a non-empty tuple of component "
                                 f"names such as ('1:6', 'embed'), got {self.components!r}.")
            object.__setattr__(self, "components", tuple(self.components))

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """A small study (2 chains × 80 draws every 5th step, 8 sequences per probe) for a first
        look in a few minutes; its per-token estimates are noisy. (With 40 draws the induction
        heads 1:3, 1:4 of the default model separated for 2 of 3 seeds; with 80, for each seed
        tried.)"""
        settings = dict(num_chains=2, num_draws=80, thinning=5, num_warmup=50,
                        probe_sequences=8, eval_sequences=32, sampling_sequences=1024)
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["components"] = None if self.components is None else list(self.components)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        data = checked_fields(cls, data)
        if isinstance(data.get("components"), list):
            data["components"] = tuple(data["components"])
        return cls(**data)


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
        acceptance: the separation checks of :func:`separation_checks`.
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


def default_components(network) -> list[str]:
    """Every head ``"L:H"``, then ``"embed"`` and ``"unembed"``."""
    c = network.config
    return [f"{l}:{h}" for l in range(c.n_layers) for h in range(c.n_heads)] + ["embed", "unembed"]


# ---------------------------------------------------------------------------- data


def study_data(network, tokenizer, config: StudyConfig) -> dict[str, Any]:
    """The token arrays of a study: ``sampling`` (q, [N, n_ctx]), ``eval`` (the fixed L_q set) and
    ``probes`` (name → [P, length]), all deterministic functions of ``config.seed``."""
    from .data import GENRES, genre_texts
    from .data.datasets_io import chunk_ids
    from .data.probes import bracket_sequences, induction_sequences
    from .nn.train import induction_mixture

    n_ctx, vocab = network.config.n_ctx, network.config.d_vocab
    if tokenizer.get_vocab_size() > vocab:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the "
                         f"network's d_vocab={vocab}; pass the network's own tokenizer.")
    need = config.sampling_sequences + config.eval_sequences
    chars = max(50_000, 5 * n_ctx * need // len(GENRES))
    stream = np.concatenate([
        chunk_ids(genre_texts(g, max_chars=chars, seed=config.seed), tokenizer, n_ctx).reshape(-1)
        for g in GENRES
    ])
    windows = induction_mixture(config.seed + 7, stream, need, n_ctx,
                                repeat_fraction=config.repeat_fraction,
                                random_fraction=config.random_fraction, vocab_low=1,
                                vocab_high=vocab)
    probes: dict[str, np.ndarray] = {}
    held_out = config.seed + 1000  # a different shuffle of the corpora than the sampling data
    for g in GENRES:
        texts = genre_texts(g, max_chars=max(20_000, 6 * n_ctx * config.probe_sequences),
                            seed=held_out)
        ids = chunk_ids(texts, tokenizer, n_ctx, allow_partial=True)
        if len(ids) < config.probe_sequences:
            raise ValueError(f"the {g!r} corpus gives only {len(ids)} probe windows; lower "
                             "probe_sequences.")
        probes[g] = ids[: config.probe_sequences]
    probes["induction"] = induction_sequences(config.probe_sequences, n_ctx // 2, low=1,
                                              high=vocab, seed=held_out)
    probes["brackets"] = bracket_sequences(tokenizer, config.probe_sequences, n_ctx,
                                           seed=held_out)
    return {"sampling": windows[: config.sampling_sequences],
            "eval": windows[config.sampling_sequences:], "probes": probes}


# ---------------------------------------------------------------------------- one component


def _fingerprint(network) -> str:
    """SHA-256 of the network's weights: runs of another network are never resumed."""
    import equinox as eqx

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(eqx.filter(network, eqx.is_array)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def _file_name(component: str) -> str:
    return component.replace(":", "-").replace(" ", "_") + ".nc"


def _sample_component(network, component: str, data: dict[str, Any], config: StudyConfig,
                      key, directory: Path, resume: bool,
                      on_segment: Callable[[int], None] | None = None) -> Any:
    """Sample the restricted posterior of ``component`` in segments of
    ``config.checkpoint_every`` draws written to ``directory`` (observables evaluated per segment,
    no parameter draws kept); return its ArviZ data: the observables in the posterior group, the
    SGLD statistics in sample_stats."""
    from .checkpoint import load_observed, sample_checkpointed
    from .handlers import localize, temper
    from .kernels import SGLD
    from .nn.components import get_component
    from .nn.observables import ObservableEvaluator
    from .nn.posterior import (
        HeadCache,
        frozen_cache,
        head_offset_center,
        head_offset_model,
        head_weights_from_offsets,
        language_model,
        parameter_sites,
    )

    upstream = frozen_cache(network, data["sampling"], [component]) if config.fast_path else None
    if isinstance(upstream, HeadCache):
        # The head as its offset from w*, with w* as data: every head of a layer is then one
        # compiled program (shared through JAX's persistent compilation cache).
        trained = get_component(network, component)
        model = head_offset_model(network, upstream.layer, batch_size=config.batch_size)
        center = head_offset_center(network, upstream.layer)
        model_args: tuple = (data["sampling"], upstream, trained)

        def as_draws(draws: dict[str, Any]) -> dict[str, Any]:
            return head_weights_from_offsets(trained, draws, component)
    else:
        model = language_model(network, [component], batch_size=config.batch_size)
        center = parameter_sites(network, [component])
        model_args = (data["sampling"], upstream)

        def as_draws(draws: dict[str, Any]) -> dict[str, Any]:
            return draws
    posterior = localize(temper(model, config.nbeta), center, config.gamma)
    kernel = SGLD(posterior, config.step_size)

    # checks, frozen caches and L_q(w*) once per component, not once per segment
    evaluator = ObservableEvaluator(network, data["probes"], data["eval"], [component],
                                    fast_path=config.fast_path)

    def observe(draws: dict[str, Any]) -> xr.Dataset:
        return evaluator(as_draws(draws))

    mcmc = sample_checkpointed(
        kernel, key, *model_args, directory=directory,
        num_warmup=config.num_warmup, num_samples=config.num_draws * config.thinning,
        num_chains=config.num_chains, chain_method=config.chain_method,
        thinning=config.thinning, checkpoint_every=config.checkpoint_every, resume=resume,
        progress_bar=False, on_segment=on_segment, observe=observe, keep_draws=False,
        jit_model_args=True)
    stats = sample_stats(mcmc)
    stats = stats.assign_coords(chain=np.arange(stats.sizes["chain"]),
                                draw=np.arange(stats.sizes["draw"]))
    return from_groups(load_observed(directory), stats)


def _save_run(idata, path: Path, settings: str) -> None:
    """Write the ArviZ data to netCDF, with ``settings`` in the posterior group's attributes."""
    if hasattr(xr, "DataTree") and isinstance(idata, xr.DataTree):
        idata["posterior"].attrs["numpyro_slt_study"] = settings
    else:
        idata.posterior.attrs["numpyro_slt_study"] = settings
    atomic_write_path(path, lambda temporary: idata.to_netcdf(str(temporary), engine="h5netcdf"))


def _load_run(path: Path, settings: str):
    """The saved ArviZ data at ``path`` if it was made with ``settings``, else None."""
    import arviz as az

    if not path.is_file():
        return None
    try:
        if hasattr(az, "from_netcdf"):
            idata = az.from_netcdf(str(path), engine="h5netcdf")
        else:
            idata = xr.open_datatree(str(path), engine="h5netcdf")
        same = posterior_group(idata).attrs.get("numpyro_slt_study") == settings
    except Exception:  # an unreadable file is sampled again
        return None
    return idata if same else None


# ---------------------------------------------------------------------------- the study


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

    :param network: a trained :class:`~numpyro_slt.nn.AttentionOnlyTransformer`.
    :param tokenizer: its tokenizer (``tokenizers.Tokenizer``).
    :param config: a :class:`StudyConfig` (default: the paper's per-token settings).
    :param out: folder for the per-component ArviZ data (``out/runs/*.nc``); None keeps
        everything in memory.
    :param resume: with ``out``, reuse finished component runs made with the same settings and
        continue the component in progress from its last written segment.
    :param progress: show a progress bar over components.
    :param on_component: called as ``on_component(name, seconds)`` after each component.
    """
    from .data.labels import label_sequences
    from .nn.components import parse_component
    from .nn.induction import score_table

    config = StudyConfig() if config is None else config
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}.")
    components = list(config.components or default_components(network))
    for name in components:
        parse_component(name, network.config)  # unknown names: ValueError listing valid ones
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    data = study_data(network, tokenizer, config)
    seconds["data"] = time.perf_counter() - t0

    settings = json.dumps({"config": {k: v for k, v in config.to_dict().items()
                                      if k != "components"},
                           "model": network.config.to_dict(),
                           "weights": _fingerprint(network)}, sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    scratch = None
    if out is None:  # segments still go to disk, to a folder removed at the end
        scratch = tempfile.TemporaryDirectory(prefix="numpyro-slt-study-")
        run_dir, resume = None, False
        partial_dir = Path(scratch.name)
    else:
        run_dir = Path(out) / "runs"
        partial_dir = run_dir / ".partial"
    partial_dir.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(components), desc="components", dynamic_ncols=True)
    segments = -(-config.num_draws // config.checkpoint_every)
    runs: dict[str, Any] = {}
    paths: dict[str, str] = {}
    t_sampling = time.perf_counter()
    try:
        for index, name in enumerate(components):
            t_c = time.perf_counter()
            path = None if run_dir is None else run_dir / _file_name(name)
            idata = _load_run(path, settings) if (path is not None and resume) else None
            if idata is None:
                stem = _file_name(name)[:-3]
                segment_dir = partial_dir / f"{stem}-{digest}"
                for other in partial_dir.glob(f"{stem}-*"):
                    if other != segment_dir or not resume:  # other settings, or a fresh start
                        shutil.rmtree(other)

                def show(done: int, name: str = name) -> None:
                    if bar is not None:
                        bar.set_postfix({"component": name, "segment": f"{done}/{segments}"})

                key = jax.random.fold_in(jax.random.PRNGKey(config.seed), index)
                idata = _sample_component(network, name, data, config, key, segment_dir,
                                          resume=resume, on_segment=show)
                if path is not None:
                    _save_run(idata, path, settings)
                shutil.rmtree(segment_dir)
            runs[name] = idata
            if path is not None:
                paths[name] = str(path)
            if on_component is not None:
                on_component(name, time.perf_counter() - t_c)
            if bar is not None:
                bar.set_postfix({"last": name}, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if scratch is not None:
            scratch.cleanup()
    seconds["sampling"] = time.perf_counter() - t_sampling

    t_est = time.perf_counter()
    per_component = []
    llc_rows = []
    for name, idata in runs.items():
        post = posterior_group(idata)
        result = susceptibilities(idata)  # the observables in the run's posterior group
        per_component.append(result.assign_coords(component=[name]))
        estimate = llc(idata)
        stats = sample_stats(idata)
        phi_ess, phi_rhat = ess_rhat(post["phi"].values)
        reliability = (float(split_half_reliability(post["phi"], post["sampling_loss"],
                                                    post["token_loss"]).squeeze())
                       if post.sizes["chain"] >= 2 else float("nan"))
        llc_rows.append(xr.Dataset({
            "llc_mean": estimate["llc_mean"], "llc_std": estimate["llc_std"],
            "loss_ess": estimate["loss_ess"], "loss_rhat": estimate["loss_rhat"],
            "phi_ess": phi_ess, "phi_rhat": phi_rhat, "split_half_r": reliability,
            "mala_accept": float(np.mean(stats["mala_accept"])),
            "loss_trace": estimate["loss_trace"].drop_vars(["chain", "draw"]),
            "phi_trace": post["phi"].drop_vars(["chain", "draw"]),
        }).expand_dims(component=[name]))
    chi = xr.concat(per_component, dim="component")
    label_column, token_ids = [], []  # pattern label and id of every predicted probe token y
    for tokens in data["probes"].values():
        for row, row_labels in zip(tokens, label_sequences(tokens, tokenizer), strict=True):
            label_column.extend(row_labels[1:])
            token_ids.extend(int(t) for t in row[1:])
    chi = chi.assign_coords(label=("token", np.asarray(label_column)),
                            token_id=("token", np.asarray(token_ids)))
    llc_table = xr.concat(llc_rows, dim="component")
    matrix = chi["standardized"].transpose("token", "component")
    heads = [c for c in components if ":" in c]
    pca_layers = per_layer_pca(matrix.sel(component=heads), n_components=None) if heads else {}
    pca_all = response_pca(matrix, None)
    head_scores = score_table(network, jax.random.PRNGKey(12345), num_sequences=64, vocab_low=1)
    acceptance = separation_checks(pca_layers, head_scores, chi["label"].values)
    seconds["estimators"] = time.perf_counter() - t_est
    seconds["total"] = time.perf_counter() - t0
    return StudyResult(config=config, components=components, susceptibility=chi, llc=llc_table,
                       pca_layers=pca_layers, pca_all=pca_all, head_scores=head_scores,
                       probes=data["probes"], acceptance=acceptance, seconds=seconds, runs=paths)


# ---------------------------------------------------------------------------- acceptance


def prefix_matching_heads(head_scores: dict[str, Any], threshold: float = 0.3) -> list[str]:
    """Heads of layer ≥ 1 whose induction (prefix-matching attention) score is ≥ ``threshold``."""
    return [h["head"] for h in head_scores["heads"]
            if int(h["head"].split(":")[0]) >= 1 and h["induction"] >= threshold]


def induction_heads(head_scores: dict[str, Any], threshold: float = 0.3,
                    min_copy_share: float = 0.1) -> list[str]:
    """Induction heads in Olsson et al.'s sense: heads of layer ≥ 1 that both attend like one
    (induction score ≥ ``threshold``) and carry the copying (mean-ablating the head undoes at
    least ``min_copy_share`` of the in-context gain, ``copy_ablation`` of
    :func:`~numpyro_slt.nn.score_table`).

    A record without copy ablations (the network does not copy) has no induction heads.
    """
    if not 0.0 <= min_copy_share <= 1.0:
        raise ValueError(f"min_copy_share must lie in [0, 1], got {min_copy_share}.")
    by_name = {h["head"]: h for h in head_scores["heads"]}
    return [name for name in prefix_matching_heads(head_scores, threshold)
            if (by_name[name].get("copy_ablation") or 0.0) >= min_copy_share]


def separation_checks(pca_layers: dict[str, xr.Dataset], head_scores: dict[str, Any],
                      labels: Sequence[str], threshold: float = 0.3,
                      min_copy_share: float = 0.1) -> dict[str, Any]:
    """Does the layer-1 PCA separate the induction heads, and do induction tokens score apart?

    The induction heads are :func:`induction_heads` (attention and copying); the heads that only
    attend like one are listed as ``prefix_matching_heads`` and are not required to separate.

    For each of PC1..PC3 of layer 1: ``heads_gap`` = the distance between the induction heads' and
    the other layer-1 heads' loadings when all of one group lie on one side of all of the other
    (negative when they overlap), and ``separated_heads``, the induction heads whose loading lies
    beyond every other layer-1 head's on the induction heads' side. For the token scores:
    Cohen's d of the tokens labelled ``induction`` against all others on each PC (difference of
    means over the pooled standard deviation).
    """
    result: dict[str, Any] = {
        "prefix_matching_heads": prefix_matching_heads(head_scores, threshold),
        "induction_heads": induction_heads(head_scores, threshold, min_copy_share),
        "criteria": {"induction_score": threshold, "copy_share": min_copy_share},
    }
    layer = pca_layers.get("1")
    if layer is None:
        return result
    ind = [h for h in result["induction_heads"] if h in layer["component"].values]
    others = [str(c) for c in layer["component"].values if str(c) not in ind]
    labels = np.asarray(labels)
    is_ind = labels == "induction"
    per_pc = []
    for pc in layer["pc"].values[:3]:
        loadings = layer["loadings"].sel(pc=pc)
        entry: dict[str, Any] = {"pc": int(pc), "explained_variance_ratio":
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
        per_pc.append(entry)
    result["layer1"] = per_pc
    gaps = [e["heads_gap"] for e in per_pc if "heads_gap" in e]
    result["heads_separated"] = bool(gaps) and max(gaps) > 0
    ds = [abs(e.get("induction_tokens_cohens_d", 0.0)) for e in per_pc]
    result["induction_tokens_distinct"] = bool(ds) and max(ds) >= 0.5
    return result


