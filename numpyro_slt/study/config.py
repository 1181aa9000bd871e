"""The settings of a study (:class:`StudyConfig`) and the components it samples by default."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from .._config import checked_fields
from .._validate import fraction, nonnegative_int, nonnegative_number, positive_int, positive_number

__all__ = ["StudyConfig", "default_components"]

CHAIN_METHODS = ("sequential", "vectorized", "parallel")


@dataclass(frozen=True)
class StudyConfig:
    """Settings of :func:`~numpyro_slt.study.run_study`. The defaults follow the paper's per-token
    runs (γ = 300, nβ = 30, ε = 1e-3, batch 16, 4 chains), with 200 draws kept every 10th step
    so that the draws of φ_C are close to independent (docs/study.md).

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
        fast_path: cache what the frozen part of the network computes on the data once and run
            only the sampled part and what lies downstream, per step and per draw (same
            estimates up to float rounding; see :func:`~numpyro_slt.nn.restricted_posterior`).
        checkpoint_every: kept draws per segment of a component's run: the observables of each
            segment are evaluated and written to disk as soon as it is sampled, so an
            interrupted study loses at most this many draws of the component in progress.
        data: source of the sampling distribution q and of the evaluation set: a folder saved
            with ``Dataset.save_to_disk``, a data file (``.jsonl``, ``.json``, ``.csv``,
            ``.parquet``, ``.txt``), a folder of text or data files, or a Hub dataset name
            (see :func:`~numpyro_slt.data.token_windows`). None: the built-in mixture.
            ``repeat_fraction`` and ``random_fraction`` apply to the built-in mixture only.
        probes: the probe distributions as ``(name, source)`` pairs (names unique Python
            identifiers, sources as for ``data``; a dict ``{name: source}`` is accepted too).
            None: the built-in probes.
        context_length: tokens per window of q, of the evaluation set and of every probe, at
            most the network's ``n_ctx``. None: ``n_ctx``.
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
    data: str | None = None
    probes: tuple[tuple[str, str], ...] | None = None
    context_length: int | None = None

    def __post_init__(self) -> None:
        checks = {
            positive_int: ("batch_size", "num_chains", "num_draws", "thinning",
                           "sampling_sequences", "eval_sequences", "probe_sequences",
                           "checkpoint_every"),
            nonnegative_int: ("num_warmup", "seed"),
            positive_number: ("nbeta", "step_size"),
            nonnegative_number: ("gamma",),
            fraction: ("repeat_fraction", "random_fraction"),
        }
        for check, names in checks.items():
            for name in names:
                check(f"StudyConfig.{name}", getattr(self, name))
        if self.batch_size > self.sampling_sequences:
            raise ValueError(f"StudyConfig.batch_size ({self.batch_size}) exceeds "
                             f"sampling_sequences ({self.sampling_sequences}).")
        if not isinstance(self.fast_path, bool):
            raise ValueError(f"StudyConfig.fast_path must be true or false, got "
                             f"{self.fast_path!r}.")
        if self.chain_method not in CHAIN_METHODS:
            raise ValueError("StudyConfig.chain_method must be 'sequential', 'vectorized' or "
                             f"'parallel', got {self.chain_method!r}.")
        if self.components is not None:
            if not isinstance(self.components, tuple | list) or not self.components or not all(
                    isinstance(c, str) for c in self.components):
                raise ValueError("StudyConfig.components must be a non-empty tuple of component "
                                 f"names such as ('1:6', 'embed'), got {self.components!r}.")
            object.__setattr__(self, "components", tuple(self.components))
        if self.data is not None:
            object.__setattr__(self, "data", _source("StudyConfig.data", self.data))
        if self.probes is not None:
            object.__setattr__(self, "probes", _probe_sources(self.probes))
        if self.context_length is not None:
            positive_int("StudyConfig.context_length", self.context_length)
            if self.context_length < 2:
                raise ValueError("StudyConfig.context_length must be an integer >= 2 (tokens "
                                 f"per window), got {self.context_length!r}.")

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """A small study (2 chains × 80 draws every 5th step, 8 sequences per probe) for a first
        look in a few minutes; its per-token estimates are noisy."""
        settings = dict(num_chains=2, num_draws=80, thinning=5, num_warmup=50,
                        probe_sequences=8, eval_sequences=32, sampling_sequences=1024)
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def from_calibration(cls, calibration: Any, *, quick: bool = False,
                         **overrides: Any) -> StudyConfig:
        """The settings with the step size, nβ and γ that :func:`numpyro_slt.calibrate`
        recommends (``calibration`` is the :class:`~numpyro_slt.Calibration` or its
        ``recommended`` dict); ``quick=True`` starts from :meth:`quick`, and ``overrides`` set
        other fields. Same as ``StudyConfig(**calibration.recommended)``, with a clear error when
        the calibration recommends nothing."""
        recommended = getattr(calibration, "recommended", calibration)
        if recommended is None:
            raise ValueError("the calibration recommends no setting: every setting of its sweep "
                             "failed a criterion; read its reasons (print(calibration)) and "
                             "calibrate again with what they suggest.")
        keys = {"step_size", "nbeta", "gamma"}
        if not isinstance(recommended, dict) or set(recommended) != keys:
            raise ValueError("calibration must be a numpyro_slt.Calibration or its recommended "
                             f"dict with the keys {sorted(keys)}, got {recommended!r}.")
        settings = {**{k: float(v) for k, v in recommended.items()}, **overrides}
        return cls.quick(**settings) if quick else cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["components"] = None if self.components is None else list(self.components)
        out["probes"] = (None if self.probes is None
                         else [[name, source] for name, source in self.probes])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyConfig:
        data = checked_fields(cls, data)
        if isinstance(data.get("components"), list):
            data["components"] = tuple(data["components"])
        return cls(**data)


def _source(name: str, value: Any) -> str:
    """A data source of the config: a non-empty string (a path is turned into one)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a path or a Hub dataset name (a non-empty string), "
                         f"got {value!r}.")
    return value


def _probe_sources(value: Any) -> tuple[tuple[str, str], ...]:
    """``probes`` as a tuple of ``(name, source)`` pairs with unique identifier names."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    usage = ("StudyConfig.probes must be a non-empty list of [name, source] pairs such as "
             "[['code', 'code.jsonl'], ['prose', 'books/']]")
    if not isinstance(pairs, list | tuple) or not pairs:
        raise ValueError(f"{usage}, got {value!r}.")
    out = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"{usage}, got the entry {pair!r}.")
        name, source = pair
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"StudyConfig.probes: the probe name {name!r} must be an identifier "
                             "(letters, digits and _, not starting with a digit).")
        out.append((name, _source(f"StudyConfig.probes[{name!r}]", source)))
    names = [name for name, _ in out]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"StudyConfig.probes names the probe(s) {repeated} more than once; "
                         "give each probe its own name.")
    return tuple(out)


def default_components(network) -> list[str]:
    """Every head ``"L:H"``, then every MLP ``"L.mlp"`` (a model with MLPs), then ``"embed"``
    and ``"unembed"``."""
    c = network.config
    heads = [f"{l}:{h}" for l in range(c.n_layers) for h in range(c.n_heads)]
    mlps = [] if c.d_mlp is None else [f"{l}.mlp" for l in range(c.n_layers)]
    return heads + mlps + ["embed", "unembed"]
