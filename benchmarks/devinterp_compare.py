"""numpyro-slt against devinterp (PyTorch) and BlackJAX on the same model, data and settings.

Everything runs in one process, back to back, on the shipped default model (2 layers × 8 heads,
d_model 64, d_head 16, n_ctx 64, vocabulary 1,024, pre-LN; 203,008 parameters) and on the token
windows of ``numpyro_slt.study.study_data(...)["sampling"]`` (N windows of 64 tokens, so n counts
N·63 predicted tokens), as ``workloads.py`` defines them. PyTorch runs a copy of the same weights
(``torch_port.py``, checked to agree on per-token losses within 1e-4 before anything is timed).
Common settings (the posterior and update of docs/formulas.md, devinterp's convention): nβ = 30,
γ = 300, ε = 1e-4, minibatch B = 16 windows, chains run one after the other,

    U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,   w ← w − (ε/2)·∇U(w) + √ε·ξ.

devinterp's ``SGMCMC.sgld`` (``lr`` = ε, ``nbeta`` = nβ, ``localization`` = γ) implements this
update; BlackJAX's ``sgld`` implements w ← w + h·∇log p + √(2h)·ξ, so it runs with h = ε/2.

What is measured:

a. **Time per SGLD step** of the whole model, median of ``repeats`` round-robin runs of ``steps``
   steps after an untimed compile/warm-up run:
   ``numpyro-slt`` is ``MCMC(slt.SGLD(model, ε, keep_draws=False), num_warmup=0)`` with the
   compiled loop reused between runs (NumPyro 0.22 recompiles it on every ``run``; that one-off
   cost is reported as ``mcmc_compile_s``); ``JAX floor`` a jitted ``lax.scan`` of the same update
   written by hand; ``devinterp`` its own chain loop ``devinterp.slt.sampler.sample_single_chain``
   (DataLoader over a HuggingFace ``Dataset``, forward, backward, ``SGMCMC.sgld`` step);
   ``torch floor`` the same update written by hand in PyTorch. A devinterp chain starts with
   a fixed set-up (copying the model, building its optimizer and data loader), so its step is
   (t_N − t_5) / (N − 5) from a 5-step chain timed alongside (the raw t_N / N is kept as
   ``devinterp, set-up included``).
b. **LLC of the whole model**, ``llc_chains`` × ``llc_draws`` with no burn-in (devinterp's
   ``compute_llc`` averages every step, burn-in included, so all three average every step), wall
   time as a user sees it in a fresh process (JAX's in-memory caches are cleared before each
   JAX run, so no run reuses what an earlier part compiled; model set-up, L_n(w*) on the full
   data, compilation, sampling,
   estimate): ``slt.llc`` of an ``MCMC`` run, the same with the sampling loop compiled once
   instead of once per chain (NumPyro 0.22 recompiles it for every sequential chain; fixed
   upstream in pyro-ppl/numpyro#2171), ``devinterp.slt.llc.llc`` and a BlackJAX ``sgld`` loop in
   a jitted ``lax.scan`` with λ̂ = nβ·(mean L_B − L_n(w*)) (BlackJAX's step returns no loss, so
   the loop evaluates L_B at each position itself). L_n(w*) is the full-data loss in all three
   (devinterp: ``num_init_loss_batches`` = N / B batches of one shuffled epoch). The estimates
   agree when |Δλ̂| ≤ 2·SE, SE from the chain-to-chain spread.
c. **Per-head susceptibilities**: for each head of ``heads``, the restricted posterior with
   ``sus_chains`` × ``sus_draws`` draws after ``sus_warmup`` burn-in steps, and at every draw the
   per-token losses of every probe token and the loss on the fixed evaluation set.
   numpyro-slt: ``numpyro_slt.study.run_study`` (per-head seconds from its ``on_component``
   callback: sampling, observables batched over draws, ArviZ conversion, netCDF file);
   devinterp: ``devinterp.slt.sampling.sample`` with a 0/1 ``param_masks`` on the head's slices
   of the per-head arrays and the evaluation set and probes as observables (evaluated at each
   draw, in batches of B; zarr store), then ``compute_susceptibilities``. devinterp's estimator
   (App. C.4 of the paper) also needs one unrestricted ("full") run with the same observables;
   it is timed once and reported apart (and per head as if shared by 16 heads). numpyro-slt
   also samples ``further_heads`` (one more head of each layer) with JAX's persistent
   compilation cache on, as ``numpyro-slt study`` has it: the heads of a layer are one program,
   so heads after the first of a layer compile nothing; its per-head figure for a 16-head study
   is (first head + 7 × further head) / 8, averaged over the two layers.

   Agreement, per head: (1) numpyro-slt's ``susceptibilities(..., centring="full_chain")`` on
   devinterp's own draws reproduces devinterp's ``compute_susceptibilities`` output (max |Δ|),
   which pins down the conventions (devinterp's φ is L_q(w) minus the loss at w* on the
   *sampling* data, ``init_loss``); (2) E_r[φ_C] of the two frameworks with SEs from the chain
   spread; (3) the correlation over probe tokens of the posterior mean shift E_r[ℓ] − ℓ(w*);
   (4) the correlation of the covariance estimate χ = −Cov_r[φ_C, ℓ − L_q] computed the same way
   from each framework's draws, next to numpyro-slt's split-half reliability of χ, its ceiling.
d. **Scaling**: wall time of a whole-model LLC run (1 chain, as shipped: compilation included)
   against the number of draws, for numpyro-slt and devinterp, with the fitted exponent b of
   t ∝ draws^b and the fixed and per-draw costs of t = t₀ + c·draws.

Threads: the whole process runs on one core (``--pin``, the default; ``--no-pin`` lets it use
all), so both frameworks get the same single core: XLA otherwise takes a second core whenever one
is free, while torch runs one thread. PyTorch runs with one intra-op thread (``--torch-threads``;
0 keeps torch's default of one per core): with one OpenMP thread per core, torch spin-waits
whenever another process holds a core, which on a shared machine slows every torch step many
times over. The measured effect of both is in docs/benchmarks.md.

Usage (needs torch, devinterp and blackjax next to numpyro-slt: ``make bench`` builds that
environment in ``build/venv-bench``)::

    python benchmarks/devinterp_compare.py            # the full run
    python benchmarks/devinterp_compare.py --quick    # smaller sizes, a smoke run
    python benchmarks/devinterp_compare.py --heads 0:1 1:6 --out /tmp/compare.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from common import (
    environment,
    jitted_runner,
    load_line,
    mcmc_runner,
    normal_like,
    pin_to_core,
    power_fit,
    reuse_loop_compilation,
    set_torch_threads,
    time_round_robin,
    write_results,
)
from workloads import (
    DEVINTERP_WARMUP_STEPS,
    PACKAGES,
    Settings,
    Workload,
    devinterp_chain,
    devinterp_step_seconds,
    hf_dataset,
    jax_loss,
    jax_potential,
    load_workload,
    numpyro_mcmc,
    quiet_devinterp,
    study_config,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "devinterp_compare.json"


# -- JAX pieces -------------------------------------------------------------------------------


def full_data_loss(work: Workload, chunk: int = 64) -> float:
    """L_n(w*): the mean loss of every window at the trained weights."""
    from numpyro_slt.nn.posterior import parameter_sites

    loss_fn = jax.jit(jax_loss(work))
    center = parameter_sites(work.network)
    n = len(work.windows)
    total = sum(float(loss_fn(center, jnp.arange(s, min(s + chunk, n)))) * (min(s + chunk, n) - s)
                for s in range(0, n, chunk))
    return total / n


def jax_floor(work: Workload, settings: Settings, steps: int) -> Callable[[], Any]:
    """The floor: ``steps`` hand-written SGLD updates in one jitted ``lax.scan``."""
    from numpyro_slt.nn.posterior import parameter_sites

    center = parameter_sites(work.network)
    value_and_grad = jax.value_and_grad(jax_potential(work, settings), has_aux=True)
    eps, n, batch = settings.step_size, len(work.windows), settings.batch_size

    def step(carry: tuple, _: None) -> tuple[tuple, jax.Array]:
        w, key = carry
        key, batch_key, noise_key = jax.random.split(key, 3)
        idx = jax.random.randint(batch_key, (batch,), 0, n)
        (_, loss), g = value_and_grad(w, idx)
        noise = normal_like(noise_key, w)
        w = {k: w[k] - 0.5 * eps * g[k] + np.sqrt(eps) * noise[k] for k in w}
        return (w, key), loss

    run = jax.jit(lambda key: jax.lax.scan(step, (center, key), None, length=steps))
    return jitted_runner(run, settings.seed)


def numpyro_step_runner(work: Workload, settings: Settings) -> tuple[Callable[[], Any], float]:
    """A no-argument ``MCMC.run`` of ``settings.steps`` steps reusing its compiled loop, and the
    seconds of the first (compiling) run."""
    mcmc = numpyro_mcmc(work, settings, settings.steps)
    run = mcmc_runner(mcmc, jax.random.PRNGKey(settings.seed), jnp.asarray(work.windows))
    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start


# -- PyTorch pieces ---------------------------------------------------------------------------


def torch_floor(work: Workload, settings: Settings, steps: int) -> Callable[[], Any]:
    """The same SGLD update written by hand in PyTorch on a copy of the model."""
    import copy

    import torch

    model = copy.deepcopy(work.torch_model)
    center = {name: p.detach().clone() for name, p in model.named_parameters()}
    windows = torch.as_tensor(np.asarray(work.windows, np.int64))
    eps, nbeta, gamma = settings.step_size, settings.nbeta, settings.gamma
    generator = torch.Generator().manual_seed(settings.seed)

    def run() -> None:
        for _ in range(steps):
            idx = torch.randint(0, len(windows), (settings.batch_size,), generator=generator)
            model.zero_grad(set_to_none=True)
            model.token_losses(windows[idx]).mean().backward()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    drift = nbeta * p.grad + gamma * (p - center[name])
                    p.add_(drift, alpha=-0.5 * eps)
                    p.add_(torch.randn(p.shape, generator=generator), alpha=eps ** 0.5)

    return run


# -- a. time per step -------------------------------------------------------------------------


def part_step(work: Workload, settings: Settings) -> dict[str, Any]:
    steps = settings.steps
    mcmc_run, compile_seconds = numpyro_step_runner(work, settings)
    fns = {"numpyro-slt MCMC": mcmc_run,
           "JAX floor": jax_floor(work, settings, steps),
           "devinterp": devinterp_chain(work, settings, steps),
           "devinterp, 5 steps": devinterp_chain(work, settings, DEVINTERP_WARMUP_STEPS),
           "torch floor": torch_floor(work, settings, steps)}
    times = time_round_robin(fns, settings.repeats)
    short = times.pop("devinterp, 5 steps")
    ms = {name: 1e3 * statistics.median(t) / steps for name, t in times.items()}
    # a devinterp chain starts with a set-up that is not per-step work: its step is
    # (t_N − t_5) / (N − 5); the raw figure is kept beside it
    ms["devinterp, set-up included"] = ms["devinterp"]
    ms["devinterp"] = 1e3 * devinterp_step_seconds(statistics.median(times["devinterp"]),
                                                   statistics.median(short), steps)
    return {"steps": steps, "repeats": settings.repeats, "ms_per_step": ms,
            "seconds": times, "devinterp_5_step_seconds": short,
            "mcmc_first_run_s": compile_seconds,
            "mcmc_compile_s": compile_seconds - ms["numpyro-slt MCMC"] * steps / 1e3}


# -- b. LLC -----------------------------------------------------------------------------------


def numpyro_llc(work: Workload, settings: Settings, chains: int, draws: int,
                compile_once: bool = False) -> dict[str, Any]:
    """``slt.llc`` of a whole-model ``MCMC`` run. NumPyro 0.22 compiles the sampling loop again
    for every chain of a sequential run; ``compile_once`` reuses the first chain's compiled loop
    (what NumPyro does after pyro-ppl/numpyro#2171)."""
    import numpyro_slt as slt

    jax.clear_caches()  # as in a fresh process: nothing compiled by an earlier part is reused
    start = time.perf_counter()
    mcmc = numpyro_mcmc(work, settings, draws, chains)
    with (reuse_loop_compilation({}) if compile_once else contextlib.nullcontext()):
        mcmc.run(jax.random.PRNGKey(settings.seed), jnp.asarray(work.windows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one chain: no llc_std
        result = slt.llc(mcmc)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "llc_mean": float(result["llc_mean"]),
            "llc_std": float(result["llc_std"]) if chains > 1 else float("nan"),
            "llc_per_chain": result["llc_per_chain"].values.tolist(),
            "init_loss": float(result["init_loss"])}


def devinterp_llc(work: Workload, settings: Settings, chains: int, draws: int,
                  folder: Path) -> dict[str, Any]:
    from devinterp.slt.llc import llc

    start = time.perf_counter()
    with quiet_devinterp():
        result = llc(work.torch_model, hf_dataset(work.windows), {}, lr=settings.step_size,
                     n_beta=settings.nbeta, localization=settings.gamma, num_chains=chains,
                     num_draws=draws, batch_size=settings.batch_size, num_burnin_steps=0,
                     num_init_loss_batches=len(work.windows) // settings.batch_size,
                     init_seed=settings.seed, device="cpu",
                     output_path=folder / f"llc_{chains}x{draws}.zarr")
        per_chain = result["llc_per_chain"].values
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "llc_mean": float(per_chain.mean()),
            "llc_std": float(per_chain.std(ddof=1)) if chains > 1 else float("nan"),
            "llc_per_chain": per_chain.tolist(), "init_loss": float(result["init_loss"])}


def blackjax_llc(work: Workload, settings: Settings, chains: int, draws: int) -> dict[str, Any]:
    """BlackJAX ``sgld`` with h = ε/2 and ∇log p = −∇U; L_B recorded at each step's position."""
    import blackjax

    from numpyro_slt.nn.posterior import parameter_sites

    jax.clear_caches()  # as in a fresh process, like numpyro_llc
    start = time.perf_counter()
    center = parameter_sites(work.network)
    potential = jax_potential(work, settings)
    loss_fn = jax_loss(work)

    def grad_log_density(w: dict, idx: jax.Array) -> dict:
        return jax.tree.map(jnp.negative, jax.grad(lambda v: potential(v, idx)[0])(w))

    sgld = blackjax.sgld(grad_log_density)
    n, batch, h = len(work.windows), settings.batch_size, settings.step_size / 2

    def step(w: dict, key: jax.Array) -> tuple[dict, jax.Array]:
        batch_key, step_key = jax.random.split(key)
        idx = jax.random.randint(batch_key, (batch,), 0, n)
        return sgld.step(step_key, w, idx, h), loss_fn(w, idx)

    chain = jax.jit(lambda key: jax.lax.scan(step, center, jax.random.split(key, draws))[1])
    init_loss = full_data_loss(work)
    keys = jax.random.split(jax.random.PRNGKey(settings.seed), chains)
    means = np.array([float(jnp.mean(chain(k))) for k in keys])
    per_chain = settings.nbeta * (means - init_loss)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "llc_mean": float(per_chain.mean()),
            "llc_std": float(per_chain.std(ddof=1)) if chains > 1 else float("nan"),
            "llc_per_chain": per_chain.tolist(), "init_loss": init_loss}


def part_llc(work: Workload, settings: Settings, folder: Path) -> dict[str, Any]:
    chains, draws = settings.llc_chains, settings.llc_draws
    out = {"chains": chains, "draws": draws, "burn_in": 0,
           "numpyro-slt": numpyro_llc(work, settings, chains, draws),
           "numpyro-slt, loop compiled once": numpyro_llc(work, settings, chains, draws,
                                                          compile_once=True),
           "devinterp": devinterp_llc(work, settings, chains, draws, folder),
           "blackjax": blackjax_llc(work, settings, chains, draws)}
    out["agreement"] = llc_agreement(out)
    return out


def llc_agreement(results: dict[str, Any]) -> dict[str, Any]:
    """Pairwise |Δλ̂| against the combined standard error of the two means (chain-to-chain)."""
    names = ("numpyro-slt", "devinterp", "blackjax")
    chains = results["chains"]
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = results[a], results[b]
            standard_error = np.sqrt((ra["llc_std"] ** 2 + rb["llc_std"] ** 2) / chains)
            difference = abs(ra["llc_mean"] - rb["llc_mean"])
            pairs[f"{a} vs {b}"] = {"difference": difference, "standard_error": standard_error,
                                    "within_2se": bool(difference <= 2 * standard_error)}
    return pairs


# -- c. per-head susceptibilities -------------------------------------------------------------


def numpyro_susceptibilities(work: Workload, settings: Settings, folder: Path) -> dict[str, Any]:
    """``run_study`` over the heads; each head's run (draws and observables) is written to
    ``folder/study/runs/<head>.nc``, as devinterp writes its zarr store."""
    from jax.experimental.compilation_cache import compilation_cache

    from numpyro_slt.study import run_study
    from numpyro_slt.utils import use_compilation_cache

    heads = settings.heads + settings.further_heads
    config = study_config(settings, components=heads, num_chains=settings.sus_chains,
                          num_draws=settings.sus_draws, num_warmup=settings.sus_warmup,
                          thinning=1)  # devinterp keeps every step: the same SGLD steps
    per_head: dict[str, float] = {}
    # as `numpyro-slt study` does, with a fresh folder (nothing compiled by an earlier run), and
    # only for this part: parts a, b and d measure compilation as NumPyro does it
    previous = jax.config.jax_compilation_cache_dir
    use_compilation_cache(folder / "jax-cache")
    try:
        start = time.perf_counter()
        result = run_study(work.network, work.tokenizer, config, out=folder / "study",
                           resume=False, progress=False,
                           on_component=lambda name, seconds: per_head.__setitem__(name, seconds))
        total = time.perf_counter() - start
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
        compilation_cache.reset_cache()
    first = [per_head[h] for h in settings.heads]
    further = [per_head[h] for h in settings.further_heads]
    # a 16-head study: per layer, one first head and 7 further ones
    study_mean = (statistics.mean(first) + 7 * statistics.mean(further)) / 8
    return {"seconds_total": total, "seconds_per_head": per_head,
            "first_head_of_layer_mean": statistics.mean(first),
            "further_head_of_layer_mean": statistics.mean(further),
            "per_head_in_16_head_study": study_mean,
            "stage_seconds": result.seconds, "result": result}


def devinterp_observables(work: Workload, settings: Settings) -> dict[str, Any]:
    """The evaluation set (the sampling task) and every probe, as (Dataset, batches per draw)."""
    sets = {"eval": work.data["eval"], **work.data["probes"]}
    for name, tokens in sets.items():
        if len(tokens) % settings.batch_size:
            raise ValueError(f"{name}: {len(tokens)} sequences, not a multiple of the batch "
                             f"{settings.batch_size} (devinterp evaluates whole batches)")
    return {name: (hf_dataset(tokens), len(tokens) // settings.batch_size)
            for name, tokens in sets.items()}


def devinterp_sample(work: Workload, settings: Settings, masks, path: Path):
    from devinterp.slt.sampling import sample

    with quiet_devinterp():
        tree = sample(work.torch_model, hf_dataset(work.windows),
                      devinterp_observables(work, settings), lr=settings.step_size,
                      n_beta=settings.nbeta, localization=settings.gamma, param_masks=masks,
                      num_chains=settings.sus_chains, num_draws=settings.sus_draws,
                      num_burnin_steps=settings.sus_warmup, batch_size=settings.batch_size,
                      num_init_loss_batches=len(work.windows) // settings.batch_size,
                      init_seed=settings.seed, device="cpu", output_path=path)
    return tree


def devinterp_susceptibilities(work: Workload, settings: Settings,
                               folder: Path) -> dict[str, Any]:
    """devinterp's unrestricted run, one masked run per head, then ``compute_susceptibilities``."""
    from devinterp.slt.susceptibilities import compute_susceptibilities

    from torch_port import head_masks

    runs: dict[str, Any] = {}
    per_head: dict[str, float] = {}
    start = time.perf_counter()
    runs["full"] = devinterp_sample(work, settings, None, folder / "sus_full.zarr")
    full_seconds = time.perf_counter() - start
    for head in settings.heads:
        layer, index = (int(x) for x in head.split(":"))
        t0 = time.perf_counter()
        masks = head_masks(work.torch_model, layer, index)
        runs[head] = devinterp_sample(work, settings, masks, folder / f"sus_{layer}_{index}.zarr")
        per_head[head] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = compute_susceptibilities(runs, "eval")
    estimator_seconds = time.perf_counter() - t0
    return {"seconds_total": time.perf_counter() - start, "seconds_full_run": full_seconds,
            "seconds_per_head": per_head, "seconds_estimator": estimator_seconds,
            "tree": tree, "runs": runs}


# -- c'. do the two frameworks estimate the same thing? ---------------------------------------


def probe_rows(ids: np.ndarray, tokens: np.ndarray) -> list[int]:
    """Row of ``tokens`` (our probe array) holding each row of ``ids`` (devinterp's shuffle of
    it), matched by content."""
    ours = {row.astype(np.int64).tobytes(): r for r, row in enumerate(tokens)}
    return [ours[row.astype(np.int64).tobytes()] for row in ids]


def devinterp_draws(run, probes: dict[str, np.ndarray], coords: dict[str, np.ndarray]):
    """(L_q, ℓ) of a devinterp run as DataArrays: L_q (chain, draw) the mean loss on the
    evaluation set, ℓ (chain, draw, token) in numpyro-slt's token order ``coords``."""
    import xarray as xr

    ds = run.to_dataset() if hasattr(run, "to_dataset") else run.dataset
    eval_loss = ds["loss_eval"].values.astype(np.float64).mean(axis=(-2, -1))
    chains, draws = eval_loss.shape
    index = {key: i for i, key in enumerate(zip(coords["token_probe"], coords["sequence"],
                                                coords["position"], strict=True))}
    token_loss = np.empty((chains, draws, len(index)))
    for name, tokens in probes.items():
        losses = ds[f"loss_{name}"].values.astype(np.float64)  # chain, draw, batch, position
        rows = probe_rows(ds[f"input_ids_{name}"].values, tokens)
        for b, row in enumerate(rows):
            at = [index[(name, row, q)] for q in range(1, tokens.shape[1])]
            token_loss[:, :, at] = losses[:, :, b, :]
    dims = {"chain": np.arange(chains), "draw": np.arange(draws)}
    return (xr.DataArray(eval_loss, dims=("chain", "draw"), coords=dims),
            xr.DataArray(token_loss, dims=("chain", "draw", "token"), coords=dims))


def devinterp_sus_values(tree, probes: dict[str, np.ndarray], head: str,
                         coords: dict[str, np.ndarray]) -> np.ndarray:
    """devinterp's per-token susceptibility of ``head`` in numpyro-slt's token order."""
    sus, context = tree["susceptibilities"].to_dataset(), tree["context"].to_dataset()
    values = sus["sus"].sel(wr=head).values
    lookup: dict[tuple, float] = {}
    for dataset_id, name in enumerate(sus.attrs["dataset_id_to_name"]):
        ids = context["input_ids"].values[context["dataset_id"].values == dataset_id]
        rows = probe_rows(ids.reshape(-1, probes[name].shape[1]), probes[name])
        pick = sus["dataset_id"].values == dataset_id
        for b, q, v in zip(sus["batch"].values[pick], sus["target_position"].values[pick],
                           values[pick], strict=True):
            lookup[(name, rows[int(b)], int(q))] = float(v)
    return np.array([lookup[key] for key in zip(coords["token_probe"], coords["sequence"],
                                                 coords["position"], strict=True)])


def chain_mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean over (chain, draw) and its standard error from the spread of the chain means."""
    per_chain = values.mean(axis=1)
    return float(per_chain.mean()), float(per_chain.std(ddof=1) / np.sqrt(len(per_chain)))


def compare_head(head: str, ours, theirs_run, full_run, tree, work: Workload) -> dict[str, Any]:
    """Agreement of one head's restricted posterior between the frameworks (see part c')."""
    import xarray as xr

    import numpyro_slt as slt

    probes = work.data["probes"]
    post = xr.open_dataset(ours, group="posterior", engine="h5netcdf")
    coords = {k: post[k].values for k in ("token_probe", "sequence", "position")}
    coords["token_probe"] = coords["token_probe"].astype(str)
    eval_di, tokens_di = devinterp_draws(theirs_run, probes, coords)
    full_eval, full_tokens = devinterp_draws(full_run, probes, coords)
    center_eval = float(post["sampling_loss_at_center"])
    center_tokens = np.concatenate([np.asarray(jax.vmap(work.network.token_losses)(
        jnp.asarray(t, jnp.int32))).reshape(-1) for t in probes.values()])

    # 1. numpyro-slt's centring="full_chain" on devinterp's draws reproduces devinterp's output
    init_loss = float(full_run.dataset["init_loss"].values.astype(np.float64).mean())
    replica = slt.susceptibilities(
        eval_di - init_loss, eval_di, tokens_di, centring="full_chain",
        full_chain_excess=(full_tokens - full_eval).mean(("chain", "draw")))
    replica = replica["per_token"].squeeze().values
    sus_di = devinterp_sus_values(tree, probes, head, coords)
    # 2. the same covariance estimator on both frameworks' draws
    chi_ours = slt.susceptibilities(post["phi"], post["sampling_loss"], post["token_loss"])
    chi_theirs = slt.susceptibilities(eval_di - center_eval, eval_di, tokens_di)
    a, b = (x["per_token"].squeeze().values for x in (chi_ours, chi_theirs))
    # 3. posterior means: φ_C and the per-token shift E_r[ℓ] − ℓ(w*)
    phi_ours = chain_mean_and_se(post["phi"].values)
    phi_theirs = chain_mean_and_se(eval_di.values - center_eval)
    shift_ours = post["token_loss"].values.mean(axis=(0, 1)) - center_tokens
    shift_theirs = tokens_di.values.mean(axis=(0, 1)) - center_tokens
    return {
        "devinterp_estimator_replicated_max_abs": float(np.max(np.abs(replica - sus_di))),
        "devinterp_estimator_scale": float(np.std(sus_di)),
        "phi_mean": {"numpyro-slt": phi_ours, "devinterp": phi_theirs,
                     "within_2se": bool(abs(phi_ours[0] - phi_theirs[0])
                                        <= 2 * np.hypot(phi_ours[1], phi_theirs[1]))},
        "token_shift_correlation": float(np.corrcoef(shift_ours, shift_theirs)[0, 1]),
        "chi_covariance_correlation": float(np.corrcoef(a, b)[0, 1]),
        "chi_scale": {"numpyro-slt": float(np.std(a)), "devinterp": float(np.std(b))},
    }


def part_susceptibility(work: Workload, settings: Settings, folder: Path) -> dict[str, Any]:
    ours = numpyro_susceptibilities(work, settings, folder)
    theirs = devinterp_susceptibilities(work, settings, folder)
    result, tree, runs = ours.pop("result"), theirs.pop("tree"), theirs.pop("runs")
    agreement = {head: compare_head(head, result.runs[head], runs[head], runs["full"], tree, work)
                 for head in settings.heads}
    for head, row in agreement.items():
        row["numpyro_split_half_r"] = float(result.llc["split_half_r"].sel(component=head))
        row["numpyro_phi_ess"] = float(result.llc["phi_ess"].sel(component=head))
    tokens = sum(p.shape[0] * (p.shape[1] - 1) for p in work.data["probes"].values())
    return {"heads": list(settings.heads), "chains": settings.sus_chains,
            "draws": settings.sus_draws, "burn_in": settings.sus_warmup, "probe_tokens": tokens,
            "eval_sequences": settings.eval_sequences, "numpyro-slt": ours, "devinterp": theirs,
            "agreement": agreement}


# -- d. scaling -------------------------------------------------------------------------------


def fit_scaling(draws: list[int], seconds: list[float]) -> dict[str, float]:
    """Exponent b of t ∝ draws^b (least squares in log-log) and t = t₀ + c·draws."""
    fit = power_fit(draws, seconds)
    return {"exponent": fit["exponent"], "fixed_s": fit["intercept"],
            "ms_per_draw": 1e3 * fit["slope"]}


def part_scaling(work: Workload, settings: Settings, folder: Path) -> dict[str, Any]:
    draws = list(settings.scaling_draws)
    ours = [numpyro_llc(work, settings, 1, d)["seconds"] for d in draws]
    theirs = [devinterp_llc(work, settings, 1, d, folder)["seconds"] for d in draws]
    return {"draws": draws, "chains": 1,
            "numpyro-slt": {"seconds": ours, **fit_scaling(draws, ours)},
            "devinterp": {"seconds": theirs, **fit_scaling(draws, theirs)}}


# -- report -----------------------------------------------------------------------------------


def ratio_table(results: dict[str, Any]) -> str:
    """Markdown: devinterp time / numpyro-slt time for each part (> 1: numpyro-slt is faster)."""
    lines = ["| work | numpyro-slt | devinterp | devinterp / numpyro-slt |",
             "|---|---:|---:|---:|"]

    def row(work: str, ours: float, theirs: float, unit: str) -> None:
        lines.append(f"| {work} | {ours:.2f} {unit} | {theirs:.2f} {unit} | "
                     f"{theirs / ours:.2f} |")

    if "step" in results:
        ms = results["step"]["ms_per_step"]
        row("SGLD step, whole model", ms["numpyro-slt MCMC"], ms["devinterp"], "ms")
        row("  floors: JAX vs torch (hand-written)", ms["JAX floor"], ms["torch floor"], "ms")
    if "llc" in results:
        r = results["llc"]
        row(f"LLC, {r['chains']} × {r['draws']} draws (wall)", r["numpyro-slt"]["seconds"],
            r["devinterp"]["seconds"], "s")
        row("  same, NumPyro loop compiled once (numpyro#2171)",
            r["numpyro-slt, loop compiled once"]["seconds"], r["devinterp"]["seconds"], "s")
    if "susceptibility" in results:
        r = results["susceptibility"]
        ours = r["numpyro-slt"]["per_head_in_16_head_study"]
        theirs = statistics.mean(r["devinterp"]["seconds_per_head"].values())
        row(f"susceptibilities, per head of a 16-head study ({r['chains']} × {r['draws']} "
            "draws)", ours, theirs, "s")
        row("  first head of a layer (compiles)", r["numpyro-slt"]["first_head_of_layer_mean"],
            theirs, "s")
        row("  further heads of a layer (compiled programs reused)",
            r["numpyro-slt"]["further_head_of_layer_mean"], theirs, "s")
        full = r["devinterp"]["seconds_full_run"] / 16
        row("  per head with devinterp's full run shared by 16 heads", ours, theirs + full, "s")
    if "scaling" in results:
        r = results["scaling"]
        for i, d in enumerate(r["draws"]):
            row(f"LLC, 1 chain × {d} draws (wall)", r["numpyro-slt"]["seconds"][i],
                r["devinterp"]["seconds"][i], "s")
    return "\n".join(lines)


def detail_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    if "step" in results:
        r = results["step"]
        lines.append("ms/step: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ms_per_step"].items())
                     + f"; MCMC compile (first run) {r['mcmc_compile_s']:.1f} s")
    if "llc" in results:
        for name in ("numpyro-slt", "numpyro-slt, loop compiled once", "devinterp", "blackjax"):
            x = results["llc"][name]
            lines.append(f"LLC {name:31s} {x['llc_mean']:8.2f} ± {x['llc_std']:.2f} "
                         f"(L_n(w*) {x['init_loss']:.5f}, {x['seconds']:.1f} s)")
        for pair, x in results["llc"]["agreement"].items():
            lines.append(f"  {pair}: |Δ| {x['difference']:.2f}, 2·SE {2 * x['standard_error']:.2f}"
                         f" -> {'agree' if x['within_2se'] else 'DISAGREE'}")
    if "susceptibility" in results:
        r = results["susceptibility"]
        for head, x in r["agreement"].items():
            (po, so), (pd, sd) = x["phi_mean"]["numpyro-slt"], x["phi_mean"]["devinterp"]
            lines.append(
                f"head {head}: E[φ] {po:.4f} ± {so:.4f} vs {pd:.4f} ± {sd:.4f}; "
                f"r(E[ℓ] − ℓ(w*)) {x['token_shift_correlation']:.2f}; "
                f"r(χ cov) {x['chi_covariance_correlation']:.2f} (split-half r "
                f"{x['numpyro_split_half_r']:.2f}, ESS(φ) {x['numpyro_phi_ess']:.0f}); devinterp "
                f"estimator replicated to {x['devinterp_estimator_replicated_max_abs']:.1e} "
                f"(scale {x['devinterp_estimator_scale']:.1e})")
        lines.append(f"devinterp full run {r['devinterp']['seconds_full_run']:.1f} s, estimator "
                     f"{r['devinterp']['seconds_estimator']:.1f} s; numpyro-slt stages "
                     f"{ {k: round(v, 1) for k, v in r['numpyro-slt']['stage_seconds'].items()} }")
    if "scaling" in results:
        for name in ("numpyro-slt", "devinterp"):
            x = results["scaling"][name]
            lines.append(f"scaling {name}: t ∝ draws^{x['exponent']:.2f}; t = {x['fixed_s']:.1f} s"
                         f" + {x['ms_per_draw']:.1f} ms × draws")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--heads", nargs="+", default=None, help="heads for part c, e.g. 0:1 1:6")
    parser.add_argument("--parts", nargs="+", default=["step", "llc", "susceptibility",
                                                       "scaling"],
                        choices=["step", "llc", "susceptibility", "scaling"])
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1, as JAX uses here; 0 keeps "
                             "torch's default, one per core)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file for the results")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="run on one core, so that JAX and torch get the same (default)")
    args = parser.parse_args(argv)
    if args.pin:  # before XLA and torch start their thread pools, which inherit it
        pin_to_core()
    set_torch_threads(args.torch_threads)
    settings = Settings.quick() if args.quick else Settings()
    if args.heads:
        settings = replace(settings, heads=tuple(args.heads))

    env = environment(PACKAGES)
    print(f"{env['cpu']}, {env['cpus']} cpus, torch threads {env['torch_threads']}; "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), flush=True)
    load = {"before": os.getloadavg()}
    start = time.perf_counter()
    work = load_workload(settings)
    print(f"torch port agrees: max |Δℓ| = {work.port_error:.1e}", flush=True)
    parts = {"step": part_step, "llc": part_llc, "susceptibility": part_susceptibility,
             "scaling": part_scaling}
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="devinterp_compare_") as folder:
        for name in args.parts:
            t0 = time.perf_counter()
            fn = parts[name]
            results[name] = fn(work, settings) if name == "step" else \
                fn(work, settings, Path(folder))
            seconds[name] = time.perf_counter() - t0
            load[f"after_{name}"] = os.getloadavg()
            print(f"[{name}] {seconds[name]:.0f} s, load {load[f'after_{name}'][0]:.2f}",
                  flush=True)
    elapsed = time.perf_counter() - start
    load["after"] = os.getloadavg()

    print("\n" + ratio_table(results) + "\n")
    print("\n".join(detail_lines(results)))
    print("\n" + load_line(elapsed, load["before"], load["after"]))
    meta = {**env, "settings": asdict(settings), "quick": args.quick, "seconds": elapsed,
            "part_seconds": seconds, "load_average": load, "port_max_loss_difference":
            work.port_error, "date": time.strftime("%Y-%m-%d")}
    write_results(args.out, {"meta": meta, "results": results, "table": ratio_table(results)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
