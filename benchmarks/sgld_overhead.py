"""Overhead of the SGLD kernel inside ``numpyro.infer.MCMC`` over a bare JAX update loop.

What is measured. For one model, data set, minibatch size B and step size ε, the wall-clock time
per step of

* **bare** (the floor): a jitted ``jax.lax.scan`` of ``steps`` SGLD updates written directly in
  JAX, without NumPyro,

      U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖²,   w ← w − (ε/2)·∇U(w) + √ε·ξ,

  with the minibatch indices drawn by ``jax.random.randint``. The RMSProp configuration adds the
  preconditioner, the control-variate one the loss at w* on the same minibatch and a running mean
  of the excess loss, so that the floor computes what the kernel must compute;
* **mcmc**: ``MCMC(slt.SGLD(model, ε, ...), num_warmup=0, num_samples=steps, num_chains=1,
  progress_bar=False).run(...)`` on the same model written as a NumPyro model (one latent site per
  weight array, a subsampled data plate) wrapped by ``slt.temper`` and ``slt.localize``, with the
  kernel's default collected fields. The whole ``run`` call is timed after a first call that
  compiles, so its fixed costs (``SGLD.init``, allocating the collection) count, spread over the
  steps. NumPyro 0.22 compiles the sampling loop again on *every* ``run`` with
  ``progress_bar=False`` (see ``numpyro_slt.utils``); **mcmc** excludes that
  recompilation, the breakdown row ``mcmc, recompiling`` shows MCMC as shipped.

The ratio t_mcmc / t_bare is the overhead of the library; the project's goal is ≤ 1.05. Models:
a linear regression (d = 100, N = 20,000, B = 500) and an MLP regression (128 → 256 → 256 → 1,
tanh, 99,073 parameters, N = 20,000, B = 256); Gaussian likelihood with unit variance,
nβ = N / log N, γ = 100.

Breakdown (plain SGLD). Variants between the two ends locate the overhead:

* ``bare, NumPyro potential``: the floor with U computed by NumPyro's ``potential_energy`` from the
  tempered, localized model (the cost of evaluating a NumPyro model instead of hand-written JAX);
* ``bare+diag``: the floor in the kernel's order, also computing what the kernel keeps in its
  state: U and L_B (``value_and_grad``), the MALA acceptance estimate, ‖∇U‖, ‖w − w*‖, the running
  mean of the excess loss, the finiteness checks;
* ``bare+diag, cheap MALA``: the same values computed the cheap way (see :func:`bare_diag_loop`),
  a proposed kernel change;
* ``bare+diag+collect``: ``bare+diag`` returning every step's position and scalars as ``scan``
  outputs (what MCMC collects by default, at its lowest cost);
* ``kernel loop``: ``SGLD.sample`` in a jitted ``fori_loop`` from ``SGLD.init``'s state (NumPyro
  model and the kernel's step, no MCMC, no collection);
* ``mcmc, loss only``: MCMC with the same kernel collecting only the loss (``sample_field =
  "loss"``): the MCMC machinery without collecting the position;
* ``mcmc, thinning=10``: MCMC keeping every tenth draw of the default fields;
* ``mcmc, recompiling``: MCMC as NumPyro 0.22 ships (the loop is compiled in every ``run``);
* ``SGLD.init``: the kernel's ``init`` (an eager evaluation of the model and its gradient), a fixed
  cost of every ``run``, included in every ``mcmc`` figure.

Every function runs once untimed (compilation), then ``--repeats`` timed runs go round-robin over
the variants of a configuration (so that a background load hits them alike); figures are medians.

Usage::

    python benchmarks/sgld_overhead.py              # full run
    python benchmarks/sgld_overhead.py --quick      # smoke run, tiny linear model (d = 10)
    python benchmarks/sgld_overhead.py --steps 2000 --out /tmp/sgld_overhead.json
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import numpyro.util
from numpyro import handlers
from numpyro.infer import MCMC
from numpyro.infer.util import potential_energy

import numpyro_slt as slt

from common import (
    Params,
    jitted_runner,
    load_line,
    mcmc_runner,
    normal_like,
    sq_norm,
    time_round_robin,
    write_results,
)

Forward = Callable[[Params, jax.Array], jax.Array]
Potential = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
RMSPROP_ALPHA, RMSPROP_DELTA = 0.99, 1e-5
CONFIGS = ("plain", "rmsprop", "cv")
DIAGNOSTICS = ("mean", "finite", "norms", "mala")  # what the kernel computes
CHEAP_DIAGNOSTICS = ("mean", "finite_from_norm", "norms", "mala_from_norms")  # same values
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "sgld_overhead.json"


# -- problems ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A Gaussian regression y = f(x; w) + N(0, 1), with data, center w* and sampler settings.

    ``forward`` is shared by the NumPyro model and the bare loop, so both evaluate the same network.
    """

    name: str
    forward: Forward
    center: Params
    x: jax.Array
    y: jax.Array
    batch: int
    nbeta: float
    gamma: float
    step_size: float

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_params(self) -> int:
        return sum(int(v.size) for v in self.center.values())

    def model(self) -> Callable:
        """The tempered, localized NumPyro model: one latent site per weight array."""
        forward, batch, center = self.forward, self.batch, self.center

        def regression(x: jax.Array, y: jax.Array) -> None:
            params = {
                name: numpyro.sample(
                    name, dist.Normal(0.0, 1.0).expand(value.shape).to_event(value.ndim)
                )
                for name, value in center.items()
            }
            with numpyro.plate("data", x.shape[0], subsample_size=batch) as idx:
                numpyro.sample("y", dist.Normal(forward(params, x[idx]), 1.0), obs=y[idx])

        return slt.localize(slt.temper(regression, nbeta=self.nbeta), center, self.gamma)

    def loss(self, w: Params, idx: jax.Array) -> jax.Array:
        """L_B(w): mean negative log-likelihood per observation on the minibatch ``idx``."""
        residual = self.y[idx] - self.forward(w, self.x[idx])
        return jnp.mean(0.5 * residual**2) + HALF_LOG_2PI

    def potential(self, w: Params, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(U(w), L_B(w)) with U = nβ·L_B + (γ/2)·‖w − w*‖²."""
        loss = self.loss(w, idx)
        prior = sum(jnp.sum((w[k] - self.center[k]) ** 2) for k in w)
        return self.nbeta * loss + 0.5 * self.gamma * prior, loss


def linear_forward(params: Params, x: jax.Array) -> jax.Array:
    return x @ params["w"]


def mlp_forward(params: Params, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    h = jnp.tanh(h @ params["W2"] + params["b2"])
    return (h @ params["W3"] + params["b3"])[..., 0]


def _teacher_data(
    rng: np.random.Generator, forward: Forward, center: Params, n: int, d_in: int
) -> tuple[jax.Array, jax.Array]:
    """x ~ N(0, I), y = f(x; w*) + N(0, 1) (NumPy draws: no per-op compilation)."""
    x = rng.standard_normal((n, d_in), dtype=np.float32)
    y = np.asarray(jax.jit(forward)(center, x)) + rng.standard_normal(n, dtype=np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def linear_problem(d: int, n: int, batch: int) -> Problem:
    rng = np.random.default_rng(1)
    center = {"w": jnp.asarray(rng.standard_normal(d, dtype=np.float32) / math.sqrt(d))}
    x, y = _teacher_data(rng, linear_forward, center, n, d)
    return Problem(
        name="linear", forward=linear_forward, center=center, x=x, y=y, batch=batch,
        nbeta=n / math.log(n), gamma=100.0, step_size=1e-4,
    )


def mlp_problem(d_in: int, hidden: int, n: int, batch: int) -> Problem:
    """Two tanh hidden layers of width ``hidden``: (d_in + 1)·h + (h + 1)·h + h + 1 parameters."""
    rng = np.random.default_rng(2)
    sizes = [d_in, hidden, hidden, 1]
    center: Params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        weight = rng.standard_normal((fan_in, fan_out), dtype=np.float32) / math.sqrt(fan_in)
        center[f"W{layer}"] = jnp.asarray(weight)
        center[f"b{layer}"] = jnp.zeros((fan_out,))
    x, y = _teacher_data(rng, mlp_forward, center, n, d_in)
    return Problem(
        name="mlp", forward=mlp_forward, center=center, x=x, y=y, batch=batch,
        nbeta=n / math.log(n), gamma=100.0, step_size=1e-5,
    )


# -- bare JAX loops ---------------------------------------------------------------------------


def bare_loop(
    problem: Problem, steps: int, config: str, potential: Potential | None = None
) -> Callable[[jax.Array], Any]:
    """The floor: ``steps`` SGLD updates in one ``lax.scan``; returns a jitted fn of the key.

    ``config`` is ``"plain"``, ``"rmsprop"`` or ``"cv"`` (control variate: also L_B(w*) on the
    same minibatch, and the running mean of L_B(w) − L_B(w*)). ``potential`` replaces the
    hand-written U of the plain and RMSProp updates (see :func:`numpyro_potential`).
    """
    eps, n, batch, center = problem.step_size, problem.n, problem.batch, problem.center
    grad_u = jax.grad(lambda w, idx: (potential or problem.potential)(w, idx)[0])
    value_and_grad_u = jax.value_and_grad(problem.potential, has_aux=True)

    def step(carry: tuple, _: None) -> tuple[tuple, None]:
        w, v, mean, i, key = carry
        key, batch_key, noise_key = jax.random.split(key, 3)
        idx = jax.random.randint(batch_key, (batch,), 0, n)
        noise = normal_like(noise_key, w)
        if config == "cv":
            (_, loss), g = value_and_grad_u(w, idx)
            excess = loss - problem.loss(center, idx)
            mean = mean + (excess - mean) / (i + 1)
        else:
            g = grad_u(w, idx)
        if config == "rmsprop":
            v = {k: RMSPROP_ALPHA * v[k] + (1.0 - RMSPROP_ALPHA) * g[k] ** 2 for k in w}
            metric = {k: 1.0 / (RMSPROP_DELTA + jnp.sqrt(v[k])) for k in w}
            w = {k: w[k] - 0.5 * eps * metric[k] * g[k] + jnp.sqrt(eps * metric[k]) * noise[k]
                 for k in w}
        else:
            w = {k: w[k] - 0.5 * eps * g[k] + math.sqrt(eps) * noise[k] for k in w}
        return (w, v, mean, i + 1, key), None

    @jax.jit
    def run(key: jax.Array):
        v = jax.tree.map(jnp.zeros_like, center) if config == "rmsprop" else {}
        init = (center, v, jnp.zeros(()), jnp.zeros(()), key)
        return jax.lax.scan(step, init, None, length=steps)[0]

    return run


def numpyro_potential(problem: Problem) -> Potential:
    """U computed by NumPyro from the tempered, localized model (``potential_energy`` with the
    plate's indices substituted), for the bare loop: the cost of evaluating a NumPyro model."""
    model = problem.model()
    args = (problem.x, problem.y)

    def potential(w: Params, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        conditioned = handlers.substitute(model, data={"data": idx})
        return potential_energy(conditioned, args, {}, w), jnp.zeros(())

    return potential


def bare_diag_loop(
    problem: Problem, steps: int, collect: bool = False, parts: tuple[str, ...] = DIAGNOSTICS
) -> Callable[[jax.Array], Any]:
    """Plain SGLD in the kernel's order (move with the gradient kept from the previous step, then
    evaluate U, L_B and ∇U at the new point), plus the kernel's per-step diagnostics ``parts``:

    ``"mean"`` the running mean of the excess loss, ``"finite"`` the finiteness checks (U, L_B and
    every entry of ∇U) and the first diverging step, ``"norms"`` ‖∇U‖ and ‖w − w*‖, ``"mala"`` the
    MALA acceptance estimate as the kernel computes it. Two cheaper equivalents (a proposed kernel
    change): ``"finite_from_norm"`` tests ‖∇U‖² instead of every entry, and ``"mala_from_norms"``
    uses the identity that, for the kernel's trapezoid estimate of ΔU, the log acceptance ratio
    reduces exactly to (ε/8)·Σ G·(g² − g'²), i.e. (ε/8)·(‖∇U(w)‖² − ‖∇U(w')‖²) for G = 1, the
    difference of two squared norms the state already holds. Both need ``"norms"``.
    With ``collect`` the position and every scalar are scan outputs, one row per step.
    """
    eps, n, batch, center = problem.step_size, problem.n, problem.batch, problem.center
    value_and_grad_u = jax.value_and_grad(problem.potential, has_aux=True)
    init_loss = jnp.asarray(HALF_LOG_2PI + 0.5)  # any constant: stands for L_n(w*)
    zero = jnp.zeros(())

    def mala(z: Params, z_new: Params, g: Params, g_new: Params) -> jax.Array:
        log_ratio = zero
        for k in z:
            d = z_new[k] - z[k]
            f_minus_b = 2.0 * d + 0.5 * eps * (g[k] - g_new[k])
            f_plus_b = 0.5 * eps * (g[k] + g_new[k])
            log_ratio += jnp.sum(f_minus_b * f_plus_b / (2.0 * eps))
            log_ratio -= 0.5 * jnp.sum((g[k] + g_new[k]) * d)
        return jnp.exp(jnp.minimum(log_ratio, 0.0))

    def step(carry: tuple, _: None) -> tuple[tuple, Any]:
        z, g, g_sq, mean, i, diverged_at, key = carry
        key, noise_key, batch_key = jax.random.split(key, 3)
        noise = normal_like(noise_key, z)
        z_new = {k: z[k] - 0.5 * eps * g[k] + math.sqrt(eps) * noise[k] for k in z}
        idx = jax.random.randint(batch_key, (batch,), 0, n)
        (energy, loss), g_new = value_and_grad_u(z_new, idx)
        i = i + 1
        scalars = {"loss": loss, "energy": energy, "i": i}
        if "mean" in parts:
            mean = mean + (loss - init_loss - mean) / i
            scalars["mean_excess_loss"] = mean
        if "norms" in parts:
            g_new_sq = sq_norm(g_new)
            scalars["grad_norm"] = jnp.sqrt(g_new_sq)
            scalars["distance"] = jnp.sqrt(sq_norm({k: z_new[k] - center[k] for k in z}))
        else:
            g_new_sq = g_sq
        finite = None
        if "finite" in parts:
            finite = jnp.isfinite(energy) & jnp.isfinite(loss)
            for leaf in g_new.values():
                finite &= jnp.all(jnp.isfinite(leaf))
        elif "finite_from_norm" in parts:
            finite = jnp.isfinite(energy) & jnp.isfinite(loss) & jnp.isfinite(g_new_sq)
        if finite is not None:
            diverged_at = jnp.where((diverged_at < 0) & ~finite, i, diverged_at)
            scalars["diverging"], scalars["diverged_at"] = ~finite, diverged_at
        if "mala" in parts:
            scalars["mala_accept"] = mala(z, z_new, g, g_new)
        elif "mala_from_norms" in parts:
            scalars["mala_accept"] = jnp.exp(jnp.minimum(0.125 * eps * (g_sq - g_new_sq), 0.0))
        carry = (z_new, g_new, g_new_sq, mean, i, diverged_at, key)
        if collect:
            return carry, (z_new, scalars)
        # keep one number per step, so that XLA cannot drop the diagnostics
        return carry, sum(jnp.asarray(v, jnp.float32) for v in scalars.values())

    @jax.jit
    def run(key: jax.Array):
        key, batch_key = jax.random.split(key)
        g = value_and_grad_u(center, jax.random.randint(batch_key, (batch,), 0, n))[1]
        init = (center, g, sq_norm(g), zero, jnp.zeros((), jnp.int32), jnp.array(-1, jnp.int32),
                key)
        carry, out = jax.lax.scan(step, init, None, length=steps)
        return carry, (out if collect else jnp.sum(out))

    return run


# -- NumPyro side -----------------------------------------------------------------------------


def make_kernel(problem: Problem, config: str, kernel_class: type = slt.SGLD,
                **options: Any) -> slt.SGLD:
    if config == "rmsprop":
        options["preconditioner"] = slt.rmsprop(RMSPROP_ALPHA, RMSPROP_DELTA)
    elif config == "cv":
        options["control_variate"] = True
    return kernel_class(problem.model(), problem.step_size, **options)


class LossOnlySGLD(slt.SGLD):
    """The same kernel, but MCMC collects only the loss (no position, no other diagnostic)."""

    sample_field = "loss"

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("loss",)

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict | None) -> Callable:
        return lambda x: x


def mcmc_variant(problem: Problem, steps: int, config: str, kernel_class: type = slt.SGLD,
                 reuse_compilation: bool = True, thinning: int = 1, keep_draws: bool = True
                 ) -> tuple[Callable[[], None], MCMC]:
    """A no-argument callable doing one full ``MCMC.run`` (blocking), and its MCMC object.

    With ``reuse_compilation=False`` each run compiles again, as NumPyro 0.22 ships.
    """
    options = {} if keep_draws else {"keep_draws": False}
    mcmc = MCMC(make_kernel(problem, config, kernel_class, **options), num_warmup=0,
                num_samples=steps, num_chains=1, thinning=thinning, progress_bar=False)
    run = mcmc_runner(mcmc, jax.random.PRNGKey(0), problem.x, problem.y,
                      reuse_compilation=reuse_compilation)
    return run, mcmc


def kernel_loop(problem: Problem, steps: int) -> tuple[Callable[[], Any], slt.SGLD]:
    """``SGLD.sample`` in a jitted ``fori_loop`` from ``SGLD.init``'s state, no MCMC."""
    kernel = make_kernel(problem, "plain")
    args = (problem.x, problem.y)
    state = kernel.init(jax.random.PRNGKey(0), 0, None, args, {})
    loop = jax.jit(lambda s: jax.lax.fori_loop(0, steps, lambda _, s: kernel.sample(s, args, {}),
                                               s))
    return (lambda: loop(state)), kernel


# -- timing the variants ---------------------------------------------------------------------


def check_chain(mcmc: MCMC) -> dict[str, Any]:
    """Sanity of the timed chain (a diverging chain would time NaN arithmetic)."""
    fields = mcmc.get_extra_fields()
    return {"finite": not bool(jnp.any(fields["diverging"])),
            "mean_mala_accept": float(jnp.mean(fields["mala_accept"]))}


def bench_problem(
    problem: Problem, steps: int, repeats: int, breakdown: bool, mcmc_variants: bool = True
) -> list[dict]:
    """Time the bare loop and MCMC for each configuration, and the breakdown variants of plain
    SGLD (``mcmc_variants``: include the MCMC runs that differ from ``mcmc`` only by a setting,
    thinning and recompilation)."""
    rows = []
    args = (problem.x, problem.y)
    for config in CONFIGS:
        fns: dict[str, Callable[[], Any]] = {}
        fns["bare"] = jitted_runner(bare_loop(problem, steps, config))
        if config == "plain" and breakdown:
            potential = numpyro_potential(problem)
            fns["bare, NumPyro potential"] = jitted_runner(
                bare_loop(problem, steps, config, potential))
            fns["bare+diag"] = jitted_runner(bare_diag_loop(problem, steps))
            fns["bare+diag, cheap MALA"] = jitted_runner(
                bare_diag_loop(problem, steps, parts=CHEAP_DIAGNOSTICS))
            fns["bare+diag+collect"] = jitted_runner(bare_diag_loop(problem, steps, collect=True))
            fns["kernel loop"], kernel = kernel_loop(problem, steps)
            fns["mcmc, loss only"] = mcmc_variant(problem, steps, config, LossOnlySGLD)[0]
            if mcmc_variants:
                fns["mcmc, thinning=10"] = mcmc_variant(problem, steps, config, thinning=10)[0]
        fns["mcmc"], mcmc = mcmc_variant(problem, steps, config)
        fns["mcmc, keep_draws=False"] = mcmc_variant(problem, steps, config, keep_draws=False)[0]
        if config == "plain" and breakdown:
            if mcmc_variants:
                fns["mcmc, recompiling"] = mcmc_variant(problem, steps, config,
                                                       reuse_compilation=False)[0]
            fns["SGLD.init"] = partial(kernel.init, jax.random.PRNGKey(0), 0, None, args, {})
        times = time_round_robin(fns, repeats)
        floor, floor_min = statistics.median(times["bare"]), min(times["bare"])
        for variant, seconds in times.items():
            median = statistics.median(seconds)
            rows.append({
                "model": problem.name, "params": problem.num_params, "n": problem.n,
                "batch": problem.batch, "config": config, "variant": variant, "steps": steps,
                "ms_per_step": 1e3 * median / steps, "bare_ms_per_step": 1e3 * floor / steps,
                "ratio": median / floor, "ratio_of_minima": min(seconds) / floor_min,
                "seconds": seconds,
                **(check_chain(mcmc) if variant == "mcmc" else {}),
            })
            print(f"  {problem.name:6s} {config:8s} {variant:24s} "
                  f"{rows[-1]['ms_per_step']:9.4f} ms/step  ratio {rows[-1]['ratio']:7.3f}",
                  flush=True)
    return rows


# -- report -----------------------------------------------------------------------------------


def markdown_table(rows: list[dict]) -> str:
    """bare against MCMC per model and configuration (medians), keeping draws and not."""
    header = ("| model | params | config | t_bare ms/step | t_mcmc ms/step | ratio | "
              "t_mcmc, keep_draws=False | ratio |")
    lines = [header, "|---|---:|---|---:|---:|---:|---:|---:|"]
    light = {(r["model"], r["config"]): r for r in rows
             if r["variant"] == "mcmc, keep_draws=False"}
    for r in rows:
        if r["variant"] == "mcmc":
            other = light[(r["model"], r["config"])]
            lines.append(f"| {r['model']} | {r['params']:,} | {r['config']} | "
                         f"{r['bare_ms_per_step']:.4f} | {r['ms_per_step']:.4f} | "
                         f"{r['ratio']:.3f} | {other['ms_per_step']:.4f} | {other['ratio']:.3f} |")
    return "\n".join(lines)


def breakdown_table(rows: list[dict]) -> str:
    """Every variant of plain SGLD; ms/run is the whole run (for SGLD.init: one call)."""
    lines = ["| model | variant | ms/step | ms/run | ratio to bare |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if r["config"] == "plain":
            lines.append(f"| {r['model']} | {r['variant']} | {r['ms_per_step']:.4f} | "
                         f"{r['ms_per_step'] * r['steps']:.1f} | {r['ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help="SGLD steps per timed run (default 1000; 200 with --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure, >= 3")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the breakdown variants")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats must be >= 3 (figures are medians)")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    steps = args.steps or (200 if args.quick else 1000)
    if args.quick:  # every code path on one tiny model, without the variants that only recompile
        problems = [linear_problem(d=10, n=1_000, batch=50)]
    else:
        problems = [linear_problem(d=100, n=20_000, batch=500),
                    mlp_problem(d_in=128, hidden=256, n=20_000, batch=256)]

    print(f"jax {jax.__version__}, numpyro {numpyro.__version__}, {jax.devices()[0].platform}, "
          f"{os.cpu_count()} cpus, steps {steps}, repeats {args.repeats}", flush=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows: list[dict] = []
    for problem in problems:
        rows += bench_problem(problem, steps, args.repeats, not args.no_breakdown,
                              mcmc_variants=not args.quick)
    elapsed = time.perf_counter() - start

    print("\n" + markdown_table(rows))
    if not args.no_breakdown:
        print("\nBreakdown (plain SGLD):\n\n" + breakdown_table(rows))
    load_after = os.getloadavg()
    print("\n" + load_line(elapsed, load_before, load_after))
    meta = {"jax": jax.__version__, "numpyro": numpyro.__version__,
            "platform": jax.devices()[0].platform, "cpus": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "steps": steps,
            "repeats": args.repeats, "quick": args.quick, "seconds": elapsed,
            "load_average_before": load_before, "load_average_after": load_after}
    write_results(args.out, {"meta": meta, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
