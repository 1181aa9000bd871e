"""Sampling the restricted posterior of every component of a study, resumably.

One component C is sampled as p(c) ∝ exp(−nβ·L_n(u*, c) − (γ/2)‖c − c*‖²) with
:class:`~numpyro_slt.SGLD` (the posterior from :func:`~numpyro_slt.nn.restricted_posterior`), in
segments of ``checkpoint_every`` kept draws. After each segment its observables (L_q on the
evaluation set, φ_C and ℓ_xy of every probe token, :class:`~numpyro_slt.nn.ObservableEvaluator`)
are written to disk; parameter draws are not kept, since the estimators need only the
observables.

Run files (:class:`RunStore`): a finished component's ArviZ data goes to
``out/runs/<component>.nc``, with the study's settings in its attributes; the segments of the
component in progress live in ``out/runs/.partial/<component>-<digest>/``. A rerun with the same
settings and ``resume=True`` reads the finished components back and continues the one in progress
from its last segment, so an interrupted study loses at most ``checkpoint_every`` draws and ends
with the same numbers, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .. import checkpoint
from .._arviz import posterior_group, read_run, write_run
from .config import StudyConfig

__all__ = ["RunStore", "sample_component", "sample_components", "study_settings"]

SETTINGS_ATTR = "numpyro_slt_study"


#: StudyConfig fields left out of the settings while None, so that the settings of a study on the
#: built-in data are those of the releases before the fields existed.
_OPTIONAL_FIELDS = ("data", "probes", "context_length")


def study_settings(network, config: StudyConfig, data: dict[str, Any] | None = None) -> str:
    """What a finished run must have been made with to be reused: the settings (but the
    component list), the architecture and a SHA-256 of the weights, as canonical JSON. With the
    user's own data or probes (``config.data``, ``config.probes``) and the study's token arrays
    ``data``, a SHA-256 of those arrays too, so that a changed file is not mistaken for the one
    the runs were made on."""
    settings = {k: v for k, v in config.to_dict().items()
                if k != "components" and not (k in _OPTIONAL_FIELDS and v is None)}
    found = {"config": settings, "model": network.config.to_dict(),
             "weights": _fingerprint(network)}
    if data is not None and (config.data is not None or config.probes is not None):
        found["data"] = _data_fingerprint(data)
    return json.dumps(found, sort_keys=True)


def _data_fingerprint(data: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    arrays = [("sampling", data["sampling"]), ("eval", data["eval"]),
              *((f"probe:{k}", v) for k, v in data["probes"].items())]
    for name, tokens in arrays:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        digest.update(f"{name}{tokens.shape}".encode())
        digest.update(tokens.tobytes())
    return digest.hexdigest()


def _fingerprint(network) -> str:
    import equinox as eqx

    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(eqx.filter(network, eqx.is_array)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


class RunStore:
    """Where a study keeps its component runs (see the module docstring). Without ``out`` the
    segments go to a temporary folder, removed by :meth:`close`, and nothing is resumed."""

    def __init__(self, out, settings: str, resume: bool) -> None:
        self.settings = settings
        self.digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
        self._scratch = None
        if out is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="numpyro-slt-study-")
            self.run_dir, self.resume = None, False
            self.partial_dir = Path(self._scratch.name)
        else:
            self.run_dir, self.resume = Path(out) / "runs", resume
            self.partial_dir = self.run_dir / ".partial"
        self.partial_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def file_name(component: str) -> str:
        return component.replace(":", "-").replace(" ", "_") + ".nc"

    def path(self, component: str) -> Path | None:
        """The finished run's file (None without ``out``)."""
        return None if self.run_dir is None else self.run_dir / self.file_name(component)

    def finished(self, component: str) -> Any | None:
        """The finished run of ``component`` made with these settings, if resuming and there is
        one; an unreadable file counts as none (the component is sampled again)."""
        path = self.path(component)
        if path is None or not self.resume or not path.is_file():
            return None
        try:
            data = read_run(path)
            same = posterior_group(data).attrs.get(SETTINGS_ATTR) == self.settings
        except Exception:
            return None
        return data if same else None

    def segments(self, component: str) -> Path:
        """The segment folder of ``component`` under these settings; folders of other settings
        (and, for a fresh start, this one) are removed."""
        folder = self._segment_folder(component)
        for other in self.partial_dir.glob(f"{self._stem(component)}-*"):
            if other != folder or not self.resume:
                shutil.rmtree(other)
        return folder

    def save(self, component: str, data: Any) -> None:
        """Write the finished run (when there is an ``out``) and drop its segments."""
        path = self.path(component)
        if path is not None:
            write_run(data, path, {SETTINGS_ATTR: self.settings})
        shutil.rmtree(self._segment_folder(component))

    def _stem(self, component: str) -> str:
        return self.file_name(component)[:-3]

    def _segment_folder(self, component: str) -> Path:
        return self.partial_dir / f"{self._stem(component)}-{self.digest}"

    def paths(self, components: Sequence[str]) -> dict[str, str]:
        """Component → its finished run's file (empty without ``out``)."""
        return {name: str(self.path(name)) for name in components
                if self.path(name) is not None}

    def close(self) -> None:
        """Remove the temporary segment folder (without ``out``)."""
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def sample_component(network, component: str, data: dict[str, Any], config: StudyConfig,
                     key, directory: Path, resume: bool,
                     on_segment: Callable[[int], None] | None = None) -> Any:
    """Sample the restricted posterior of ``component`` in segments written to ``directory``;
    return its ArviZ data: the observables in the posterior group, the SGLD statistics in
    sample_stats."""
    from ..handlers import localize, temper
    from ..kernels import SGLD
    from ..nn import ObservableEvaluator, restricted_posterior

    restricted = restricted_posterior(network, component, data["sampling"], config.batch_size,
                                      fast_path=config.fast_path)
    posterior = localize(temper(restricted.model, config.nbeta), restricted.center, config.gamma)
    kernel = SGLD(posterior, config.step_size)
    evaluator = ObservableEvaluator(network, data["probes"], data["eval"], [component],
                                    fast_path=config.fast_path)

    def observe(draws: dict[str, Any]):
        return evaluator(restricted.component_weights(draws))

    run = checkpoint.sample_checkpointed(
        kernel, key, *restricted.model_args, directory=directory,
        num_warmup=config.num_warmup, num_samples=config.num_draws * config.thinning,
        num_chains=config.num_chains, chain_method=config.chain_method,
        thinning=config.thinning, checkpoint_every=config.checkpoint_every, resume=resume,
        progress_bar=False, on_segment=on_segment, observe=observe, keep_draws=False,
        jit_model_args=True)
    return run.to_arviz()


def sample_components(network, components: Sequence[str], data: dict[str, Any],
                      config: StudyConfig, store: RunStore, *, progress: bool = True,
                      on_component: Callable[[str, float], None] | None = None
                      ) -> dict[str, Any]:
    """Component → ArviZ data of its run, read back when finished earlier, else sampled (chain
    keys: the study seed folded with the component's index), with a progress bar over
    components showing the segment in progress."""
    import time

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(components), desc="components", dynamic_ncols=True)
    segments = -(-config.num_draws // config.checkpoint_every)
    runs: dict[str, Any] = {}
    try:
        for index, name in enumerate(components):
            start = time.perf_counter()
            run = store.finished(name)
            if run is None:
                def show(done: int, name: str = name) -> None:
                    if bar is not None:
                        bar.set_postfix({"component": name, "segment": f"{done}/{segments}"})

                key = jax.random.fold_in(jax.random.PRNGKey(config.seed), index)
                run = sample_component(network, name, data, config, key, store.segments(name),
                                       resume=store.resume, on_segment=show)
                store.save(name, run)
            runs[name] = run
            if on_component is not None:
                on_component(name, time.perf_counter() - start)
            if bar is not None:
                bar.set_postfix({"last": name}, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return runs

