"""numpyro-slt against devinterp 2.0.1's ``susceptibilities()`` on an imported GPT-NeoX of
Pythia-14M's shape: time and peak memory per component, and the float32 floors of both.

The model is a *random* ``GPTNeoXForCausalLM`` of Pythia-14M's shape (6 layers, d_model 128,
4 heads of 32, d_mlp 512, vocabulary 50,304, rotary on 25 % of each head (8 dims), parallel
residual, 2,048 positions, exact GELU, untied unembedding, transformers' default initialisation
with ``initializer_range`` 0.02, ``torch.manual_seed(seed)``; 14,067,712 parameters), written
with ``save_pretrained`` into ``build/pythia_shape/model`` and read back by numpyro-slt with
``numpyro_slt.nn.from_pretrained``. Before anything is timed, the imported network's per-token
losses must match devinterp's own loss (``compute_per_token_loss`` on the torch model) on
``check_sequences`` windows within 1e-5 relative.

Data (``build/pythia_shape/data.npz``): token windows drawn uniformly from the vocabulary with
``numpy.random.default_rng(seed)``: ``sampling_sequences`` × ``context`` for SGLD, a fixed
evaluation set of the sampling distribution (``eval_sequences``) and one probe
(``probe_sequences``) whose every predicted token is an observable. Both libraries get the same
arrays, hyperparameters and sizes (:class:`Settings`): nβ, γ, ε, minibatch B, chains × draws,
burn-in, thinning; the update is U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,
w ← w − (ε/2)·∇U(w) + √ε·ξ, restricted to the component (devinterp: a 0/1 mask from
``create_param_masks``; numpyro-slt: only the component's weights are latent).

Components (numpyro-slt name / devinterp restriction): the first head of layer 0 ("0:0" /
"l0h0"), the first head of the last layer ("5:0" / "l5h0") and the MLP of layer 2 ("2.mlp" /
"l2 mlp"). What runs, each in a fresh process pinned to one core (the least busy when it
starts), torch with one intra-op thread, XLA with ``common.ONE_THREAD_XLA_FLAGS``:

- **devinterp**: one call of ``devinterp.slt.susceptibilities.susceptibilities`` with the
  weight restrictions ``full`` (which its estimator needs: an unrestricted run with the same
  observables) and the three components, observables ``{"eval": (eval set, E/B batches),
  "probe": (probe, P/B batches)}`` (every token's loss at every draw), ``sampling_task="eval"``,
  ``num_init_loss_batches`` = E/B, a zarr store per restriction. Each restriction's ``sample()``
  is timed by wrapping it (peak memory reset before it), and within it the time of
  ``_write_init_loss`` and of the observables (``Observable.compute_loss``); the rest is the
  SGLD chain loop (forward, backward, optimizer step, zarr writes).
- **numpyro-slt**, one process per component, as ``numpyro-slt study`` samples a component
  (``study.sampling.sample_component``): ``restricted_posterior(network, component, tokens, B)``
  (the frozen part cached once: a head's input and the rest of its layer, or x^L), an
  ``ObservableEvaluator`` (eval set + probe), ``SGLD`` of the tempered localized model in
  ``sample_checkpointed`` (``chain_method`` as in :class:`Settings`, ``jit_model_args``,
  ``keep_draws=False``; L_n(w*) on E/B minibatches, ``init_loss_batches``, as devinterp's
  ``num_init_loss_batches``, where the study uses the whole sampling data) in segments of
  ``checkpoint_every`` draws with the observables evaluated and written after each segment,
  then ``slt.susceptibilities`` on the observables. The first
  segment includes every compilation of the run; the later ones run compiled programs only,
  so ``steady`` figures are per-draw costs of those segments. Peak resident memory (VmHWM) is
  taken for the set-up (caches, evaluator and its L_q(w*)), the first segment (XLA's one-off
  compilation memory) and the later segments separately, the peak reset between them.
- **floors**, after the runs in the same processes: a hand-written SGLD step of the restricted
  loss on B windows (plain forward from the tokens, gradient for the component only, the
  update above), ``floor_steps`` steps, median of ``floor_repeats`` runs after a warm-up: in
  JAX one jitted ``lax.scan`` (``network_at`` of the component's weights), in torch the HF
  model's forward and backward with ``requires_grad`` only on the component's parameters and
  the masked update. And the observables of one draw without a library: the per-token losses of
  the E + P windows, a jitted forward in JAX, ``torch.no_grad`` forward in batches of B in torch.

Step times are per chain-step: numpyro-slt's steady sampling seconds over (draws × thinning ×
chains); devinterp's sample() seconds minus its init-loss and observables seconds, over
(draws × thinning + burn-in) × chains.

Usage (needs the ``build/venv-bench`` environment of ``make bench``)::

    python benchmarks/pythia_shape.py            # the full run: 21 min at load 5-6 on 2 cores
    python benchmarks/pythia_shape.py --quick    # fewer draws and windows, a smoke run
    python benchmarks/pythia_shape.py --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from common import (  # noqa: E402  (after the environment variables above)
    ONE_THREAD_XLA_FLAGS,
    environment,
    jitted_runner,
    load_line,
    memory_status,
    normal_like,
    reset_peak,
    run_json_child,
    sq_norm,
    time_round_robin,
    write_results,
)
from workloads import PACKAGES, hf_dataset, quiet_devinterp  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "pythia_shape.json"
DEFAULT_FOLDER = HERE.parent / "build" / "pythia_shape"

# numpyro-slt's name of each component, and devinterp's weight restriction
COMPONENTS = (("0:0", "l0h0"), ("5:0", "l5h0"), ("2.mlp", "l2 mlp"))

# EleutherAI/pythia-14m's config.json, as GPTNeoXConfig arguments
PYTHIA_14M = dict(vocab_size=50304, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                  intermediate_size=512, rotary_pct=0.25, rotary_emb_base=10000,
                  use_parallel_residual=True, max_position_embeddings=2048, hidden_act="gelu",
                  layer_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=True)


@dataclass(frozen=True)
class Settings:
    """The hyperparameters and sizes both libraries run with."""

    nbeta: float = 30.0
    gamma: float = 300.0
    step_size: float = 1e-4
    batch_size: int = 8
    chains: int = 2
    draws: int = 25
    burn_in: int = 0
    thinning: int = 1
    checkpoint_every: int = 5  # numpyro-slt's segments (kept draws each)
    chain_method: str = "vectorized"  # numpyro-slt's, the study's default
    sampling_sequences: int = 256
    context: int = 64
    eval_sequences: int = 16
    probe_sequences: int = 16
    check_sequences: int = 4
    floor_steps: int = 5
    floor_repeats: int = 3
    init_std: float = 0.02
    seed: int = 0

    @classmethod
    def quick(cls) -> Settings:
        return cls(draws=10, sampling_sequences=64, eval_sequences=8, probe_sequences=8,
                   floor_steps=3, floor_repeats=1)

    @property
    def chain_steps(self) -> int:
        """SGLD steps of one chain: burn-in, then draws × thinning."""
        return self.burn_in + self.draws * self.thinning


# -- the model and the data (the parent process) ----------------------------------------------


def build_model(settings: Settings, folder: Path):
    """A random GPT-NeoX of Pythia-14M's shape, saved with ``save_pretrained`` in ``folder``."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(settings.seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_14M,
                                             initializer_range=settings.init_std)).eval()
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    return model


def make_data(settings: Settings) -> dict[str, np.ndarray]:
    """Token windows drawn uniformly from the vocabulary: sampling, evaluation and probe sets."""
    rng = np.random.default_rng(settings.seed)
    sizes = {"sampling": settings.sampling_sequences, "eval": settings.eval_sequences,
             "probe": settings.probe_sequences}
    for name in ("eval", "probe"):
        if sizes[name] % settings.batch_size:
            raise ValueError(f"{name}_sequences must be a multiple of the batch "
                             f"{settings.batch_size} (devinterp evaluates whole batches)")
    return {name: rng.integers(0, PYTHIA_14M["vocab_size"], (n, settings.context), np.int32)
            for name, n in sizes.items()}


def load_data(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "data.npz") as data:
        return {k: data[k] for k in data.files}


def check_import(model, folder: Path, data: dict[str, np.ndarray],
                 settings: Settings) -> dict[str, Any]:
    """``from_pretrained`` of the saved folder against devinterp's per-token loss of the torch
    model on the first ``check_sequences`` evaluation windows; raises beyond 1e-5 relative."""
    import jax
    import jax.numpy as jnp
    import torch
    from devinterp.slt.lm_loss import compute_per_token_loss

    from numpyro_slt.nn import from_pretrained

    start = time.perf_counter()
    network, tokenizer = from_pretrained(folder)
    import_s = time.perf_counter() - start
    tokens = data["eval"][: settings.check_sequences]
    with torch.no_grad():
        theirs = compute_per_token_loss(model, torch.as_tensor(tokens, dtype=torch.int64)).numpy()
    ours = np.asarray(jax.vmap(network.token_losses)(jnp.asarray(tokens)))
    relative = float(np.max(np.abs(ours - theirs) / np.abs(theirs)))
    if not relative <= 1e-5:
        raise RuntimeError(f"imported network disagrees with torch: max relative |Δℓ| = "
                           f"{relative:.2e} > 1e-5 on {tokens.shape} windows")
    center_eval = float(np.mean(jax.vmap(network.token_losses)(jnp.asarray(data["eval"]))))
    return {"max_relative_loss_difference": relative,
            "max_abs_loss_difference": float(np.max(np.abs(ours - theirs))),
            "loss_mean": float(theirs.mean()), "loss_std": float(theirs.std()),
            "tokens_checked": int(theirs.size), "from_pretrained_s": import_s,
            "tokenizer": tokenizer is not None, "config": network.config.to_dict(),
            "n_params": int(network.config.n_params), "eval_loss_at_center": center_eval}


# -- devinterp (a child process) --------------------------------------------------------------


def devinterp_child(settings: Settings, folder: Path) -> dict[str, Any]:
    """devinterp's ``susceptibilities()`` over ``full`` and the components, each restriction's
    ``sample()`` timed with its peak memory; then the torch floors."""
    import devinterp.slt.observables as observables_module
    import devinterp.slt.sampling as sampling_module
    import devinterp.slt.susceptibilities as sus_module
    import torch
    from devinterp.slt.weight_restrictions import create_param_masks
    from transformers import GPTNeoXForCausalLM

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = GPTNeoXForCausalLM.from_pretrained(folder / "model")
    data = load_data(folder)
    B = settings.batch_size
    dataset = hf_dataset(data["sampling"])
    observables = {name: (hf_dataset(data[name]), len(data[name]) // B)
                   for name in ("eval", "probe")}
    restrictions = {"full": None, **{theirs: create_param_masks(model, theirs)
                                     for _, theirs in COMPONENTS}}
    load_s = time.perf_counter() - start
    baseline = memory_status()

    records: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    originals = (sus_module.sample, sampling_module._write_init_loss,
                 observables_module.Observable.compute_loss, sus_module.compute_susceptibilities)
    sample, write_init_loss, compute_loss, estimator = originals

    def timed_sample(**kwargs: Any):
        name = Path(kwargs["output_path"]).stem.removeprefix("samples_")
        record = current["record"] = {"init_loss_s": 0.0, "observables_s": 0.0,
                                      "observable_calls": 0}
        record["rss_before_mb"] = memory_status()["VmRSS"]
        record["peak_reset"] = reset_peak()
        t0 = time.perf_counter()
        tree = sample(**kwargs)
        record["seconds"] = time.perf_counter() - t0
        record["peak_mb"] = memory_status()["VmHWM"]
        ds = tree.dataset
        per_chain = ds["loss_eval"].values.astype(np.float64).mean(axis=(1, 2, 3))
        record["eval_loss_chain_means"] = per_chain.tolist()
        record["init_loss"] = float(ds["init_loss"].values.astype(np.float64).mean())
        records[name] = record
        return tree

    def timed_init_loss(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        write_init_loss(*args, **kwargs)
        current["record"]["init_loss_s"] += time.perf_counter() - t0

    def timed_compute_loss(self, model):
        t0 = time.perf_counter()
        out = compute_loss(self, model)
        current["record"]["observables_s"] += time.perf_counter() - t0
        current["record"]["observable_calls"] += 1
        return out

    def timed_estimator(*args: Any, **kwargs: Any):
        t0 = time.perf_counter()
        out = estimator(*args, **kwargs)
        current["estimator_s"] = time.perf_counter() - t0
        return out

    sus_module.sample = timed_sample
    sampling_module._write_init_loss = timed_init_loss
    observables_module.Observable.compute_loss = timed_compute_loss
    sus_module.compute_susceptibilities = timed_estimator
    try:
        with tempfile.TemporaryDirectory(dir=folder) as work, quiet_devinterp():
            t0 = time.perf_counter()
            tree = sus_module.susceptibilities(
                model, dataset, observables, restrictions, sampling_task="eval",
                lr=settings.step_size, n_beta=settings.nbeta, localization=settings.gamma,
                num_chains=settings.chains, num_draws=settings.draws, batch_size=B,
                num_burnin_steps=settings.burn_in, num_steps_bw_draws=settings.thinning,
                num_init_loss_batches=settings.eval_sequences // B, init_seed=settings.seed,
                device="cpu", output_path=Path(work) / "samples.zarr")
            total = time.perf_counter() - t0
            sus = tree["susceptibilities"].to_dataset()["sus"]
            shape = list(sus.shape)
            finite = bool(np.isfinite(sus.values).all())
    finally:
        (sus_module.sample, sampling_module._write_init_loss,
         observables_module.Observable.compute_loss, sus_module.compute_susceptibilities) = \
            originals
    for record in records.values():
        steps = settings.chains * settings.chain_steps
        record["sgld_s"] = record["seconds"] - record["init_loss_s"] - record["observables_s"]
        record["ms_per_step"] = 1e3 * record["sgld_s"] / steps
        record["ms_per_draw_observables"] = \
            1e3 * record["observables_s"] / (settings.chains * settings.draws)
    return {"load_s": load_s, "baseline": baseline, "seconds_total": total,
            "estimator_s": current.get("estimator_s"), "restrictions": records,
            "sus_shape": shape, "sus_finite": finite,
            "masked_parameters": {name: mask_size(model, masks) for name, masks in
                                  restrictions.items() if masks is not None},
            "floors": torch_floors(model, data, settings)}


def mask_size(model, masks: dict[str, Any]) -> int:
    """Number of sampled scalars of a devinterp restriction (a mask's nonzero entries, or the
    whole parameter where its mask is None)."""
    params = dict(model.named_parameters())
    return int(sum(params[name].numel() if m is None else int(m.count_nonzero())
                   for name, m in masks.items()))


def torch_floors(model, data: dict[str, np.ndarray], settings: Settings) -> dict[str, Any]:
    """ms per SGLD step of each component's restricted loss, and ms per draw of the observables,
    written by hand in torch (no library), median of ``floor_repeats`` runs."""
    import copy

    import torch
    from devinterp.slt.lm_loss import compute_per_token_loss
    from devinterp.slt.weight_restrictions import create_param_masks

    windows = torch.as_tensor(data["sampling"], dtype=torch.int64)
    probes = torch.as_tensor(np.concatenate([data["eval"], data["probe"]]), dtype=torch.int64)
    B, steps = settings.batch_size, settings.floor_steps
    eps, nbeta, gamma = settings.step_size, settings.nbeta, settings.gamma

    def step_runner(restriction: str) -> Callable[[], None]:
        net = copy.deepcopy(model).train()
        masks = create_param_masks(net, restriction)
        params = dict(net.named_parameters())
        for name, p in params.items():
            p.requires_grad_(name in masks)
        chosen = {name: (params[name], None if m is None else m.to(params[name].dtype))
                  for name, m in masks.items()}
        center = {name: p.detach().clone() for name, (p, _) in chosen.items()}
        generator = torch.Generator().manual_seed(settings.seed)

        def run() -> None:
            for _ in range(steps):
                idx = torch.randint(0, len(windows), (B,), generator=generator)
                net.zero_grad(set_to_none=True)
                compute_per_token_loss(net, windows[idx]).mean().backward()
                with torch.no_grad():
                    for name, (p, mask) in chosen.items():
                        drift = nbeta * p.grad + gamma * (p - center[name])
                        noise = torch.randn(p.shape, generator=generator)
                        if mask is not None:
                            drift, noise = drift * mask, noise * mask
                        p.add_(drift, alpha=-0.5 * eps)
                        p.add_(noise, alpha=eps ** 0.5)

        return run

    def observables() -> None:
        with torch.no_grad():
            for s in range(0, len(probes), B):
                compute_per_token_loss(model, probes[s:s + B])

    fns = {ours: step_runner(theirs) for ours, theirs in COMPONENTS}
    fns["observables"] = observables
    times = time_round_robin(fns, settings.floor_repeats)
    out = {name: 1e3 * statistics.median(t) / steps for name, t in times.items()
           if name != "observables"}
    return {"ms_per_step": out, "ms_per_draw_observables":
            1e3 * statistics.median(times["observables"]), "seconds": times}


# -- numpyro-slt (a child process per component) ----------------------------------------------


def numpyro_child(settings: Settings, folder: Path, component: str) -> dict[str, Any]:
    """One component as the study samples it, with the set-up, the first (compiling) segment
    and the later segments timed and their peak memory apart; then the JAX floors."""
    import jax

    import numpyro_slt as slt
    from numpyro_slt import checkpoint
    from numpyro_slt.nn import ObservableEvaluator, from_pretrained, restricted_posterior

    start = time.perf_counter()
    network, _ = from_pretrained(folder / "model")
    data = load_data(folder)
    load_s = time.perf_counter() - start
    baseline = memory_status()

    reset_peak()
    t0 = time.perf_counter()
    restricted = restricted_posterior(network, component, data["sampling"],
                                      settings.batch_size)
    jax.block_until_ready(restricted.model_args)
    restricted_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    evaluator = ObservableEvaluator(network, {"probe": data["probe"]}, data["eval"],
                                    [component])
    evaluator_s = time.perf_counter() - t0
    setup_peak = memory_status()["VmHWM"]

    posterior = slt.localize(slt.temper(restricted.model, settings.nbeta), restricted.center,
                             settings.gamma)
    # L_n(w*) on as many minibatches as devinterp's num_init_loss_batches (the study's default
    # is the full sampling data)
    kernel = slt.SGLD(posterior, settings.step_size,
                      init_loss_batches=settings.eval_sequences // settings.batch_size)
    segments: list[dict[str, float]] = []
    clock: dict[str, float] = {}

    def observe(draws: dict[str, Any]):
        jax.block_until_ready(draws)  # the sampling is asynchronous: wait for it first
        clock["sampled"] = time.perf_counter()
        out = evaluator(restricted.component_weights(draws))
        clock["observed"] = time.perf_counter()
        return out

    def on_segment(done: int) -> None:
        now = time.perf_counter()
        segments.append({"seconds": now - clock["start"],
                         "sampling_s": clock["sampled"] - clock["start"],
                         "observables_s": clock["observed"] - clock["sampled"],
                         "peak_mb": memory_status()["VmHWM"],
                         "rss_mb": memory_status()["VmRSS"]})
        reset_peak()
        clock["start"] = time.perf_counter()

    with tempfile.TemporaryDirectory(dir=folder) as work:
        run_dir = Path(work) / "run"
        reset_peak()
        clock["start"] = time.perf_counter()
        checkpoint.sample_checkpointed(
            kernel, jax.random.PRNGKey(settings.seed), *restricted.model_args,
            directory=run_dir, num_warmup=settings.burn_in,
            num_samples=settings.draws * settings.thinning, num_chains=settings.chains,
            chain_method=settings.chain_method, thinning=settings.thinning,
            checkpoint_every=settings.checkpoint_every, progress_bar=False,
            on_segment=on_segment, observe=observe, keep_draws=False, jit_model_args=True)
        t0 = time.perf_counter()
        observed = checkpoint.load_observed(run_dir)
        chi = slt.susceptibilities(observed["phi"], observed["sampling_loss"],
                                   observed["token_loss"])
        per_token = np.asarray(chi["per_token"])
        estimator_s = time.perf_counter() - t0
    eval_means = observed["sampling_loss"].values.astype(np.float64).mean(axis=1)

    first, later = segments[0], segments[1:]
    draws_per_segment = settings.chains * settings.checkpoint_every
    later_draws = settings.chains * settings.draws - draws_per_segment
    steady = {key: sum(s[key] for s in later) for key in ("seconds", "sampling_s",
                                                         "observables_s")}
    return {
        "component": component, "form": restricted.form, "load_s": load_s,
        "baseline": baseline, "restricted_posterior_s": restricted_s,
        "evaluator_s": evaluator_s, "setup_peak_mb": setup_peak,
        "segments": segments, "first_segment_s": first["seconds"],
        "first_segment_peak_mb": first["peak_mb"],
        "steady_peak_mb": max(s["peak_mb"] for s in later) if later else None,
        "rss_after_first_segment_mb": first["rss_mb"],
        "estimator_s": estimator_s,
        "seconds": restricted_s + evaluator_s + sum(s["seconds"] for s in segments)
        + estimator_s,
        # per-draw costs of the segments after the first (compiled programs only)
        "steady_s_per_draw": steady["seconds"] / later_draws if later else None,
        "ms_per_step": 1e3 * steady["sampling_s"] / (later_draws * settings.thinning)
        if later else None,
        "ms_per_draw_observables": 1e3 * steady["observables_s"] / later_draws
        if later else None,
        # the first segment beyond what a compiled segment of its length costs
        "compile_s": first["seconds"] - steady["seconds"] / later_draws * draws_per_segment
        if later else None,
        "eval_loss_chain_means": eval_means.tolist(),
        "eval_loss_at_center": evaluator.center_loss,
        "chi_finite": bool(np.isfinite(per_token).all()),
        "n_sampled": int(sum(np.size(v) for v in restricted.center.values())),
        "floors": jax_floors(network, component, data, settings),
    }


def jax_floors(network, component: str, data: dict[str, np.ndarray],
               settings: Settings) -> dict[str, Any]:
    """The hand-written JAX floors (module docstring): a jitted ``lax.scan`` of ``floor_steps``
    SGLD steps of the restricted loss from the tokens, and one draw's observables."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from numpyro_slt.nn.posterior import network_at, parameter_sites

    center = parameter_sites(network, [component])
    windows = jnp.asarray(data["sampling"])
    probes = jnp.asarray(np.concatenate([data["eval"], data["probe"]]))
    eps, n, batch = settings.step_size, len(windows), settings.batch_size

    def potential(w: dict, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        net = network_at(network, w, [component])
        loss = jnp.mean(jax.vmap(net.token_losses)(windows[idx]))
        prior = sq_norm({k: w[k] - center[k] for k in w})
        return settings.nbeta * loss + 0.5 * settings.gamma * prior, loss

    value_and_grad = jax.value_and_grad(potential, has_aux=True)

    def step(carry: tuple, _: None) -> tuple[tuple, jax.Array]:
        w, key = carry
        key, batch_key, noise_key = jax.random.split(key, 3)
        idx = jax.random.randint(batch_key, (batch,), 0, n)
        (_, loss), g = value_and_grad(w, idx)
        noise = normal_like(noise_key, w)
        w = {k: w[k] - 0.5 * eps * g[k] + np.sqrt(eps) * noise[k] for k in w}
        return (w, key), loss

    t0 = time.perf_counter()
    run = jax.jit(lambda key: jax.lax.scan(step, (center, key), None,
                                           length=settings.floor_steps))
    steps = jitted_runner(run, settings.seed)
    compile_s = time.perf_counter() - t0
    # the network and tokens are arguments, not constants XLA could fold
    losses = eqx.filter_jit(lambda net, tokens: jax.vmap(net.token_losses)(tokens))
    times = time_round_robin({"step": steps, "observables": lambda: losses(network, probes)},
                             settings.floor_repeats)
    return {"ms_per_step": 1e3 * statistics.median(times["step"]) / settings.floor_steps,
            "ms_per_draw_observables": 1e3 * statistics.median(times["observables"]),
            "step_compile_s": compile_s, "seconds": times}


# -- the parent: set-up, children, report -----------------------------------------------------


def child_env() -> dict[str, str]:
    return {"JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
            "XLA_FLAGS": ONE_THREAD_XLA_FLAGS, "OMP_NUM_THREADS": "1"}


def run_child(role: str, settings: Settings, folder: Path, component: str = "") -> dict[str, Any]:
    return run_json_child([str(Path(__file__).resolve()), "--child", role, "--settings",
                           json.dumps(asdict(settings)), "--folder", str(folder),
                           "--component", component], pin=True, env=child_env(),
                          timeout=1800, what=f"{role} {component}".strip())


def summary(settings: Settings, check: dict[str, Any], theirs: dict[str, Any],
            ours: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per component: the figures of the tables, with their ratios."""
    rows = {}
    center = check["eval_loss_at_center"]
    for name, restriction in COMPONENTS:
        t, o = theirs["restrictions"][restriction], ours[name]
        jf, tf = o["floors"], theirs["floors"]
        steady_total = o["restricted_posterior_s"] + o["evaluator_s"] + o["estimator_s"] \
            + o["steady_s_per_draw"] * settings.chains * settings.draws
        phi_o = np.asarray(o["eval_loss_chain_means"]) - o["eval_loss_at_center"]
        phi_t = np.asarray(t["eval_loss_chain_means"]) - center
        rows[name] = {
            "devinterp": restriction, "sampled_parameters": o["n_sampled"],
            "devinterp_masked_parameters": theirs["masked_parameters"][restriction],
            "numpyro_form": o["form"],
            "devinterp_s": t["seconds"], "numpyro_s": o["seconds"],
            "numpyro_steady_s": steady_total, "numpyro_compile_s": o["compile_s"],
            "time_ratio": o["seconds"] / t["seconds"],
            "steady_time_ratio": steady_total / t["seconds"],
            "ms_per_step": {"devinterp": t["ms_per_step"], "numpyro-slt": o["ms_per_step"],
                            "torch floor": tf["ms_per_step"][name],
                            "JAX floor": jf["ms_per_step"]},
            "ms_per_draw_observables": {
                "devinterp": t["ms_per_draw_observables"],
                "numpyro-slt": o["ms_per_draw_observables"],
                "torch floor": tf["ms_per_draw_observables"],
                "JAX floor": jf["ms_per_draw_observables"]},
            "peak_mb": {"devinterp baseline": theirs["baseline"]["VmRSS"],
                        "devinterp": t["peak_mb"],
                        "numpyro-slt baseline": o["baseline"]["VmRSS"],
                        "numpyro-slt set-up": o["setup_peak_mb"],
                        "numpyro-slt first segment (compiles)": o["first_segment_peak_mb"],
                        "numpyro-slt after first segment": o["rss_after_first_segment_mb"],
                        "numpyro-slt steady": o["steady_peak_mb"]},
            "breakdown": {
                "devinterp": {k: t[k] for k in ("init_loss_s", "observables_s", "sgld_s")},
                "numpyro-slt": {
                    **{k: o[k] for k in ("restricted_posterior_s", "evaluator_s",
                                         "first_segment_s", "estimator_s")},
                    "later_segments_s": sum(x["seconds"] for x in o["segments"][1:])}},
            # E_r[φ] = E_r[L_q] − L_q(w*) and its standard error from the chain means
            "phi_mean": {"numpyro-slt": chain_mean(phi_o), "devinterp": chain_mean(phi_t)},
        }
    full = theirs["restrictions"]["full"]
    return {"components": rows, "devinterp_full_s": full["seconds"],
            "devinterp_full_peak_mb": full["peak_mb"], "devinterp_estimator_s":
            theirs["estimator_s"], "devinterp_total_s": theirs["seconds_total"]}


def chain_mean(per_chain: np.ndarray) -> list[float]:
    """[mean, standard error] of per-chain means."""
    return [float(per_chain.mean()), float(per_chain.std(ddof=1) / np.sqrt(len(per_chain)))]


def tables(settings: Settings, s: dict[str, Any]) -> str:
    """Markdown: times and ratios, step and observable costs against the floors, memory."""
    def f(x: float | None, digits: int = 1) -> str:
        return "–" if x is None else f"{x:,.{digits}f}"

    rows = s["components"]
    out = ["| component (ours / devinterp) | sampled | devinterp s | numpyro-slt s "
           "(fresh process) | of which compiling | numpyro-slt / devinterp | numpyro-slt s, "
           "compiled | numpyro-slt / devinterp |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        out.append(f"| {name} / {r['devinterp']} | {r['sampled_parameters']:,} | "
                   f"{f(r['devinterp_s'])} | {f(r['numpyro_s'])} | {f(r['numpyro_compile_s'])} "
                   f"| **{r['time_ratio']:.2f}** | {f(r['numpyro_steady_s'])} | "
                   f"{r['steady_time_ratio']:.2f} |")
    out += ["", f"devinterp's unrestricted run (needed by its estimator): "
            f"{s['devinterp_full_s']:.1f} s, peak {s['devinterp_full_peak_mb']:,.0f} MiB; its "
            f"estimator {s['devinterp_estimator_s']:.2f} s; whole susceptibilities() call "
            f"{s['devinterp_total_s']:.1f} s.", ""]
    out += ["| component | ms/step devinterp | numpyro-slt | torch floor | JAX floor | "
            "numpyro-slt / JAX floor | devinterp / torch floor | ms/draw observables "
            "devinterp | numpyro-slt | torch floor | JAX floor |",
            "|---|" + "---:|" * 10]
    for name, r in rows.items():
        m, d = r["ms_per_step"], r["ms_per_draw_observables"]
        out.append(f"| {name} | {f(m['devinterp'])} | {f(m['numpyro-slt'])} | "
                   f"{f(m['torch floor'])} | {f(m['JAX floor'])} | "
                   f"{m['numpyro-slt'] / m['JAX floor']:.2f} | "
                   f"{m['devinterp'] / m['torch floor']:.2f} | {f(d['devinterp'], 0)} | "
                   f"{f(d['numpyro-slt'], 0)} | {f(d['torch floor'], 0)} | "
                   f"{f(d['JAX floor'], 0)} |")
    out += ["", "| component | devinterp baseline MiB | devinterp peak | numpyro-slt baseline | "
            "set-up peak | first segment peak (compiles) | RSS after it | steady peak |",
            "|---|" + "---:|" * 7]
    for name, r in rows.items():
        p = r["peak_mb"]
        out.append(f"| {name} | {f(p['devinterp baseline'], 0)} | {f(p['devinterp'], 0)} | "
                   f"{f(p['numpyro-slt baseline'], 0)} | {f(p['numpyro-slt set-up'], 0)} | "
                   f"{f(p['numpyro-slt first segment (compiles)'], 0)} | "
                   f"{f(p['numpyro-slt after first segment'], 0)} | "
                   f"{f(p['numpyro-slt steady'], 0)} |")
    out += ["", "| component | devinterp: init loss s | observables s | SGLD loop s | "
            "numpyro-slt: restricted_posterior s | ObservableEvaluator s | first segment s | "
            "later segments s | estimator s | E_r[φ] numpyro-slt | devinterp |",
            "|---|" + "---:|" * 10]
    for name, r in rows.items():
        t, o = r["breakdown"]["devinterp"], r["breakdown"]["numpyro-slt"]
        (po, so), (pt, st) = r["phi_mean"]["numpyro-slt"], r["phi_mean"]["devinterp"]
        out.append(f"| {name} | {f(t['init_loss_s'])} | {f(t['observables_s'])} | "
                   f"{f(t['sgld_s'])} | {f(o['restricted_posterior_s'])} | "
                   f"{f(o['evaluator_s'])} | {f(o['first_segment_s'])} | "
                   f"{f(o['later_segments_s'])} | {f(o['estimator_s'], 2)} | "
                   f"{po:.4f} ± {so:.4f} | {pt:.4f} ± {st:.4f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer draws and windows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file for the results")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help="where the model, the data and the runs' scratch files go")
    parser.add_argument("--child", choices=["devinterp", "numpyro"], help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--component", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        settings = Settings(**json.loads(args.settings))
        result = devinterp_child(settings, args.folder) if args.child == "devinterp" else \
            numpyro_child(settings, args.folder, args.component)
        print(json.dumps(result, default=float), flush=True)
        return

    settings = Settings.quick() if args.quick else Settings()
    env = environment((*PACKAGES, "transformers", "safetensors"))
    env.update(child_xla_flags=ONE_THREAD_XLA_FLAGS, child_torch_threads=1,
               child_processes_pinned_to_one_core=True)
    print(f"{env['cpu']}, {env['cpus']} cpus; " + ", ".join(
        f"{k} {v}" for k, v in env["versions"].items()), flush=True)
    load = {"before": os.getloadavg()}
    start = time.perf_counter()
    folder = args.folder
    folder.mkdir(parents=True, exist_ok=True)
    data = make_data(settings)
    np.savez(folder / "data.npz", **data)
    model = build_model(settings, folder / "model")
    check = check_import(model, folder / "model", data, settings)
    del model
    print(f"from_pretrained agrees with torch: max relative |Δℓ| "
          f"{check['max_relative_loss_difference']:.1e} over {check['tokens_checked']} tokens "
          f"(loss {check['loss_mean']:.3f} ± {check['loss_std']:.3f})", flush=True)

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    theirs = run_child("devinterp", settings, folder)
    seconds["devinterp"] = time.perf_counter() - t0
    print(f"[devinterp] {seconds['devinterp']:.0f} s: " + ", ".join(
        f"{k} {v['seconds']:.1f} s" for k, v in theirs["restrictions"].items()), flush=True)
    ours = {}
    for name, _ in COMPONENTS:
        t0 = time.perf_counter()
        ours[name] = run_child("numpyro", settings, folder, name)
        seconds[name] = time.perf_counter() - t0
        print(f"[numpyro-slt {name}] {seconds[name]:.0f} s: component {ours[name]['seconds']:.1f}"
              f" s, first segment {ours[name]['first_segment_s']:.1f} s", flush=True)
    elapsed = time.perf_counter() - start
    load["after"] = os.getloadavg()

    result = summary(settings, check, theirs, ours)
    table = tables(settings, result)
    print("\n" + table + "\n")
    print(load_line(elapsed, load["before"], load["after"]))
    meta = {**env, "settings": asdict(settings), "quick": args.quick, "seconds": elapsed,
            "child_seconds": seconds, "load_average": load, "date": time.strftime("%Y-%m-%d"),
            "model": {"gpt_neox_config": PYTHIA_14M, "initializer_range": settings.init_std}}
    write_results(args.out, {"meta": meta, "check": check, "summary": result,
                             "devinterp": theirs, "numpyro-slt": ours, "table": table})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
