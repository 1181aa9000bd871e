"""The whole-model SGLD workload that ``devinterp_compare.py`` and ``scaling.py`` both time, and how
each framework runs it.

The model is the shipped default ``AttentionOnlyTransformer`` (or a random one of another width,
:func:`network_of_width`), the data the token windows of
``numpyro_slt.study.study_data(...)["sampling"]``, and PyTorch runs a copy of the same weights
(``torch_port.py``). Both frameworks sample the localized tempered posterior of docs/formulas.md
with the update of its section "SGLD" (devinterp's convention),

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,   w ← w − (ε/2)·∇U(w) + √ε·ξ,

on a minibatch of B windows a step. numpyro-slt runs it as ``MCMC(slt.SGLD(...))``
(:func:`numpyro_mcmc`), devinterp as its own chain loop ``sample_single_chain``
(:func:`devinterp_chain`).

PyTorch, devinterp and ``datasets`` are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# the distributions whose versions a results file records
PACKAGES = ("numpyro-slt", "jax", "jaxlib", "numpyro", "equinox", "blackjax", "torch",
            "devinterp", "datasets", "zarr", "numpy")

# devinterp chains start with a fixed set-up (copying the model, building its optimizer and data
# loader); the cost of a step is taken from a chain of N steps and one of this many
DEVINTERP_WARMUP_STEPS = 5


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark run; the physics (nβ, γ, ε, B) is the same in every part."""

    nbeta: float = 30.0
    gamma: float = 300.0
    step_size: float = 1e-4
    batch_size: int = 16
    sampling_sequences: int = 1024
    steps: int = 200
    repeats: int = 3
    llc_chains: int = 4
    llc_draws: int = 300
    heads: tuple[str, ...] = ("0:1", "1:6")
    # numpyro-slt also samples one more head of each layer: with the persistent compilation
    # cache (what `numpyro-slt study` turns on) heads after the first of a layer compile nothing
    further_heads: tuple[str, ...] = ("0:2", "1:5")
    sus_chains: int = 4
    sus_draws: int = 100
    sus_warmup: int = 50
    eval_sequences: int = 64
    probe_sequences: int = 32
    scaling_draws: tuple[int, ...] = (100, 200, 400)
    seed: int = 0

    @classmethod
    def quick(cls) -> Settings:
        return cls(steps=100, llc_chains=2, llc_draws=100, heads=("1:6",),
                   further_heads=("1:5",), sus_chains=2,
                   sus_draws=40, sus_warmup=10, eval_sequences=32, probe_sequences=16,
                   scaling_draws=(50, 200))


@dataclass
class Workload:
    """The network, its PyTorch copy (None where only JAX runs), and the token arrays every
    framework uses; ``port_error`` is max |ℓ_torch − ℓ_jax| of the copy (NaN if unchecked)."""

    network: Any
    tokenizer: Any
    torch_model: Any
    data: dict[str, Any]
    port_error: float

    @property
    def windows(self) -> np.ndarray:
        return self.data["sampling"]


def study_config(settings: Settings, **overrides: Any):
    """The ``StudyConfig`` of ``settings`` (nβ, γ, ε, B, data sizes, seed), with ``overrides``."""
    from numpyro_slt.study import StudyConfig

    values = dict(nbeta=settings.nbeta, gamma=settings.gamma, step_size=settings.step_size,
                  batch_size=settings.batch_size, sampling_sequences=settings.sampling_sequences,
                  eval_sequences=settings.eval_sequences,
                  probe_sequences=settings.probe_sequences, seed=settings.seed)
    values.update(overrides)
    return StudyConfig(**values)


def network_of_width(d_model: int | None = None):
    """(network, tokenizer): the shipped default network, or with ``d_model`` a randomly
    initialised one of that width (d_head = d_model / 4, every other size the default's)."""
    from numpyro_slt.nn import AttentionOnlyTransformer
    from numpyro_slt.nn.default import load_default

    network, tokenizer, _ = load_default()
    if d_model:
        config = replace(network.config, d_model=d_model, d_head=d_model // 4)
        network = AttentionOnlyTransformer(config, key=jax.random.PRNGKey(0))
    return network, tokenizer


def load_workload(settings: Settings, d_model: int | None = None, *, torch: bool = True,
                  check: bool = True) -> Workload:
    """Network, data and (with ``torch``) the PyTorch copy, checked against the Equinox model on
    one minibatch of windows when ``check`` (``torch_port.check_port`` raises if they disagree)."""
    from numpyro_slt.study import study_data

    network, tokenizer = network_of_width(d_model)
    data = study_data(network, tokenizer, study_config(settings))
    module, error = None, float("nan")
    if torch:
        from torch_port import check_port, from_equinox

        module = from_equinox(network)
        if check:
            error = check_port(network, module, data["sampling"][: settings.batch_size])
    return Workload(network, tokenizer, module, data, error)


# -- numpyro-slt and JAX ----------------------------------------------------------------------


def jax_loss(work: Workload) -> Callable[[dict, jax.Array], jax.Array]:
    """L_B(w): mean next-token loss of the windows ``idx`` at the site values ``w``."""
    from numpyro_slt.nn.posterior import network_at

    windows = jnp.asarray(work.windows)

    def loss(w: dict, idx: jax.Array) -> jax.Array:
        net = network_at(work.network, w)
        return jnp.mean(jax.vmap(net.token_losses)(windows[idx]))

    return loss


def jax_potential(work: Workload, settings: Settings) -> Callable:
    """(w, idx) ↦ (U(w), L_B(w)) with U = nβ·L_B + (γ/2)·‖w − w*‖²."""
    from numpyro_slt.nn.posterior import parameter_sites

    center = parameter_sites(work.network)
    loss_fn = jax_loss(work)

    def potential(w: dict, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        loss = loss_fn(w, idx)
        prior = sum(jnp.sum((w[k] - center[k]) ** 2) for k in w)
        return settings.nbeta * loss + 0.5 * settings.gamma * prior, loss

    return potential


def numpyro_posterior(work: Workload, settings: Settings, components=None):
    """The tempered, localized NumPyro model of the network (``components``: None, the whole)."""
    import numpyro_slt as slt
    from numpyro_slt.nn.posterior import language_model, parameter_sites

    model = language_model(work.network, components, batch_size=settings.batch_size)
    center = parameter_sites(work.network, components)
    return slt.localize(slt.temper(model, settings.nbeta), center, settings.gamma)


def numpyro_mcmc(work: Workload, settings: Settings, draws: int, chains: int = 1, *,
                 keep_draws: bool = False, chain_method: str = "sequential"):
    """``MCMC(slt.SGLD(model, ε, keep_draws=...), num_warmup=0)`` over the whole model; run it
    with ``(PRNGKey(seed), windows)``."""
    from numpyro.infer import MCMC

    import numpyro_slt as slt

    kernel = slt.SGLD(numpyro_posterior(work, settings), settings.step_size,
                      keep_draws=keep_draws)
    return MCMC(kernel, num_warmup=0, num_samples=draws, num_chains=chains,
                chain_method=chain_method, progress_bar=False)


# -- devinterp --------------------------------------------------------------------------------


def hf_dataset(tokens: np.ndarray):
    """A HuggingFace ``Dataset`` with an ``input_ids`` column, as devinterp expects."""
    import datasets

    return datasets.Dataset.from_dict({"input_ids": np.asarray(tokens, np.int64)}) \
        .with_format("torch")


@contextlib.contextmanager
def quiet_devinterp() -> Iterator[None]:
    """Silence devinterp's per-chain progress bars and its deprecation/no-output-path warnings."""
    import devinterp.slt.sampler as sampler
    from tqdm.auto import trange

    original = sampler.trange
    sampler.trange = lambda *args, **kwargs: trange(*args, **{**kwargs, "disable": True})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sampler.trange = original


def sgld_kwargs(settings: Settings) -> dict[str, Any]:
    """devinterp ``SGMCMC.sgld`` arguments for ε, nβ and γ."""
    return dict(lr=settings.step_size, nbeta=settings.nbeta, localization=settings.gamma,
                noise_level=1.0, weight_decay=0.0, bounding_box_size=None, save_metrics=False)


def devinterp_chain(work: Workload, settings: Settings, steps: int) -> Callable[[], Any]:
    """devinterp's own chain loop (``sample_single_chain``) over the whole model."""
    from devinterp.slt.config import SAMPLING_METHODS
    from devinterp.slt.lm_loss import make_evaluate_fn
    from devinterp.slt.sampler import sample_single_chain

    dataset = hf_dataset(work.windows)
    masks = {name: None for name, _ in work.torch_model.named_parameters()}

    def run() -> None:
        with quiet_devinterp():
            sample_single_chain(work.torch_model, dataset, make_evaluate_fn(None), masks,
                                num_draws=steps, sampling_method=SAMPLING_METHODS["sgmcmc_sgld"],
                                sampling_method_kwargs=sgld_kwargs(settings), seed=settings.seed,
                                dataloader_seed=settings.seed, batch_size=settings.batch_size)

    return run


def devinterp_step_seconds(seconds: float, warmup_seconds: float, steps: int) -> float:
    """Seconds of one more devinterp step, (t_N − t_w) / (N − w), from a chain of N = ``steps``
    steps and one of w = ``DEVINTERP_WARMUP_STEPS``: each chain starts with a fixed set-up that
    is not per-step work."""
    return (seconds - warmup_seconds) / (steps - DEVINTERP_WARMUP_STEPS)
