"""Time per step of numpyro-slt's SGLD, SGHMC and SGNHT against BlackJAX's sgld, sghmc and sgnht.

Same model, data, minibatch size and sampler settings for both libraries, one step = one minibatch
gradient of U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖² (docs/formulas.md) and one update:

* **numpyro-slt**: ``MCMC(slt.<Kernel>(model, step, keep_draws=False), num_warmup=0,
  num_samples=steps, progress_bar=False)`` on the tempered, localized NumPyro model, with the
  compiled sampling loop reused between runs (NumPyro 0.22 compiles it in every ``run``). The
  kernel also computes what it records per step: L_B, the running mean of the excess loss, the
  norms, the MALA estimate, the divergence test.
* **BlackJAX**: a jitted ``lax.scan`` of ``steps`` calls of the algorithm's ``step`` with
  ``randint`` minibatch indices and the gradient ∇log p = −∇U of the same potential written in
  JAX; nothing else is computed. The parameters map as each kernel's docstring says:
  ``sgld`` with h = ε/2; ``sgnht`` with h = √η, a = A/h; for SGHMC BlackJAX's integrator
  ``blackjax.sgmcmc.diffusions.sghmc`` with h = √η, a = α/h, its momentum carried from step to
  step. (BlackJAX's top-level ``sghmc`` takes one minibatch per call for all its integration
  steps, resamples the momentum at every call and returns only the position, so with one
  integration step a call its gradient is dead code that XLA removes; the integrator is the
  same algorithm as numpyro-slt's, a fresh minibatch every step.)

Models (Gaussian or Bernoulli likelihood, nβ = N/log N, γ = 100): a logistic regression
(d = 100, N = 20,000, B = 500) and an MLP regression (32 → 128 → 128 → 1, tanh, 20,865
parameters, N = 20,000, B = 256). Every variant runs once untimed (compilation), then
``--repeats`` timed runs go round-robin; the table gives the fastest run of each (on a shared
machine the other runs measure the other work as much as the step) and the JSON file every run.
The process runs on one core with XLA on one thread (``--pin``, the default), as the other
comparison scripts.

Usage (BlackJAX next to numpyro-slt: ``make bench`` builds that environment)::

    python benchmarks/kernels_blackjax.py            # full run
    python benchmarks/kernels_blackjax.py --quick    # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from common import (
    ONE_THREAD_XLA_FLAGS,
    Params,
    cpu_name,
    load_line,
    mcmc_runner,
    package_versions,
    pin_to_core,
    time_round_robin,
    write_results,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "kernels_blackjax.json"
PACKAGES = ("numpyro-slt", "jax", "jaxlib", "numpyro", "blackjax", "numpy")
# sampler settings: SGLD's ε, the momentum kernels' η, SGHMC's friction α, SGNHT's diffusion A
EPSILON, ETA, FRICTION, DIFFUSION = 1e-4, 5e-5, 0.1, 0.01


@dataclass(frozen=True)
class Problem:
    """A model y ~ p(y | f(x; w)) with data, center w* and its NumPyro and JAX forms."""

    name: str
    forward: Callable[[Params, jax.Array], jax.Array]
    log_likelihood: Callable[[jax.Array, jax.Array], jax.Array]  # per item, of (f, y)
    center: Params
    x: jax.Array
    y: jax.Array
    batch: int
    gamma: float = 100.0

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def nbeta(self) -> float:
        return self.n / math.log(self.n)

    @property
    def num_params(self) -> int:
        return sum(int(v.size) for v in self.center.values())

    def model(self) -> Callable:
        """The tempered, localized NumPyro model: one latent site per weight array."""
        import numpyro_slt as slt

        problem = self

        def model(x: jax.Array, y: jax.Array) -> None:
            params = {name: numpyro.sample(name, dist.Normal(0.0, 1.0).expand(value.shape)
                                           .to_event(value.ndim))
                      for name, value in problem.center.items()}
            with numpyro.plate("data", x.shape[0], subsample_size=problem.batch) as idx:
                f = problem.forward(params, x[idx])
                numpyro.sample("y", _distribution(problem.name, f), obs=y[idx])

        return slt.localize(slt.temper(model, nbeta=self.nbeta), self.center, self.gamma)

    def potential(self, w: Params, idx: jax.Array) -> jax.Array:
        """U(w) = nβ·L_B(w) + (γ/2)·‖w − w*‖² on the minibatch ``idx``."""
        loss = -jnp.mean(self.log_likelihood(self.forward(w, self.x[idx]), self.y[idx]))
        prior = sum(jnp.sum((w[k] - self.center[k]) ** 2) for k in w)
        return self.nbeta * loss + 0.5 * self.gamma * prior


def _distribution(name: str, f: jax.Array):
    return dist.Bernoulli(logits=f) if name == "logistic" else dist.Normal(f, 1.0)


def logistic_problem(d: int, n: int, batch: int) -> Problem:
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(d).astype(np.float32) / math.sqrt(d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-x @ w0))).astype(np.float32)

    def log_likelihood(f, y):
        return y * f - jnp.logaddexp(0.0, f)

    return Problem("logistic", lambda w, x: x @ w["w"], log_likelihood,
                   {"w": jnp.asarray(w0)}, jnp.asarray(x), jnp.asarray(y), batch)


def mlp_forward(params: Params, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["W1"] + params["b1"])
    h = jnp.tanh(h @ params["W2"] + params["b2"])
    return (h @ params["W3"] + params["b3"])[..., 0]


def mlp_problem(d_in: int, hidden: int, n: int, batch: int) -> Problem:
    rng = np.random.default_rng(1)
    sizes = [d_in, hidden, hidden, 1]
    center: Params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        center[f"W{layer}"] = jnp.asarray(
            rng.standard_normal((fan_in, fan_out)).astype(np.float32) / math.sqrt(fan_in))
        center[f"b{layer}"] = jnp.zeros((fan_out,))
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    y = np.asarray(jax.jit(mlp_forward)(center, x)) + rng.standard_normal(n).astype(np.float32)

    def log_likelihood(f, y):
        return -0.5 * (y - f) ** 2 - 0.5 * math.log(2 * math.pi)

    return Problem("mlp", mlp_forward, log_likelihood, center, jnp.asarray(x), jnp.asarray(y),
                   batch)


# -- the two libraries ------------------------------------------------------------------------


def numpyro_runner(problem: Problem, kernel_name: str, steps: int) -> Callable[[], None]:
    from numpyro.infer import MCMC

    import numpyro_slt as slt

    model = problem.model()
    kernel = {"sgld": lambda: slt.SGLD(model, EPSILON, keep_draws=False),
              "sghmc": lambda: slt.SGHMC(model, ETA, friction=FRICTION, keep_draws=False),
              "sgnht": lambda: slt.SGNHT(model, ETA, diffusion=DIFFUSION, keep_draws=False),
              }[kernel_name]()
    mcmc = MCMC(kernel, num_warmup=0, num_samples=steps, progress_bar=False)
    return mcmc_runner(mcmc, jax.random.PRNGKey(0), problem.x, problem.y)


def blackjax_runner(problem: Problem, kernel_name: str, steps: int) -> Callable[[], Any]:
    import blackjax

    def grad_log_density(w: Params, idx: jax.Array) -> Params:
        return jax.tree.map(jnp.negative, jax.grad(problem.potential)(w, idx))

    h = math.sqrt(ETA)
    if kernel_name == "sgld":
        algorithm, step_size = blackjax.sgld(grad_log_density), EPSILON / 2
    elif kernel_name == "sghmc":
        integrator = blackjax.sgmcmc.diffusions.sghmc(alpha=FRICTION / h)
    else:
        algorithm, step_size = blackjax.sgnht(grad_log_density, alpha=DIFFUSION / h), h

    def sghmc_step(key, state, idx):
        position, momentum = state
        return integrator(key, position, momentum, grad_log_density(position, idx), h)

    @jax.jit
    def run(key: jax.Array):
        init_key, key = jax.random.split(key)
        if kernel_name == "sghmc":
            state = (problem.center, blackjax.util.generate_gaussian_noise(init_key,
                                                                            problem.center))
        elif kernel_name == "sgnht":
            state = algorithm.init(problem.center, init_key)
        else:
            state = algorithm.init(problem.center)

        def body(state, key):
            batch_key, step_key = jax.random.split(key)
            idx = jax.random.randint(batch_key, (problem.batch,), 0, problem.n)
            if kernel_name == "sghmc":
                return sghmc_step(step_key, state, idx), None
            return algorithm.step(step_key, state, idx, step_size), None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state

    key = jax.random.PRNGKey(0)
    compiled = run.lower(key).compile()
    return lambda: compiled(key)


def measure(problem: Problem, steps: int, repeats: int) -> list[dict[str, Any]]:
    fns = {}
    for kernel in ("sgld", "sghmc", "sgnht"):
        fns[f"numpyro-slt {kernel}"] = numpyro_runner(problem, kernel, steps)
        fns[f"blackjax {kernel}"] = blackjax_runner(problem, kernel, steps)
    times = time_round_robin(fns, repeats)
    rows = []
    for kernel in ("sgld", "sghmc", "sgnht"):
        ours, theirs = (min(times[f"{lib} {kernel}"]) / steps
                        for lib in ("numpyro-slt", "blackjax"))
        medians = [statistics.median(times[f"{lib} {kernel}"]) / steps
                   for lib in ("numpyro-slt", "blackjax")]
        rows.append({"model": problem.name, "params": problem.num_params,
                     "batch": problem.batch, "kernel": kernel, "numpyro_slt_ms": 1e3 * ours,
                     "blackjax_ms": 1e3 * theirs, "ratio": ours / theirs,
                     "median_ratio": medians[0] / medians[1],
                     "times_s": {"numpyro-slt": times[f"numpyro-slt {kernel}"],
                                 "blackjax": times[f"blackjax {kernel}"]}})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed run (default 1000; 200 with --quick)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="run on one core with XLA on one thread (default)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.pin:  # before XLA starts its thread pool
        os.environ["XLA_FLAGS"] = ONE_THREAD_XLA_FLAGS
        pin_to_core()
    steps = args.steps or (200 if args.quick else 1_000)
    if args.quick:
        problems = [logistic_problem(10, 2_000, 100), mlp_problem(8, 16, 2_000, 64)]
    else:
        problems = [logistic_problem(100, 20_000, 500), mlp_problem(32, 128, 20_000, 256)]
    start, before = time.perf_counter(), os.getloadavg()
    rows = [row for problem in problems for row in measure(problem, steps, args.repeats)]
    print("| model (parameters, batch) | kernel | numpyro-slt ms/step | BlackJAX ms/step | ratio "
          "| ratio of medians |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} ({row['params']:,}, B = {row['batch']}) | {row['kernel']} | "
              f"{row['numpyro_slt_ms']:.3f} | {row['blackjax_ms']:.3f} | {row['ratio']:.2f} | "
              f"{row['median_ratio']:.2f} |")
    seconds = time.perf_counter() - start
    print(load_line(seconds, before, os.getloadavg()))
    write_results(args.out, {
        "settings": {"steps": steps, "repeats": args.repeats, "epsilon": EPSILON, "eta": ETA,
                     "friction": FRICTION, "diffusion": DIFFUSION, "pinned": args.pin},
        "environment": {"cpu": cpu_name(), "cpus": os.cpu_count(),
                        "cores_used": len(os.sched_getaffinity(0)),
                        "versions": package_versions(PACKAGES)},
        "load_average": {"before": before, "after": os.getloadavg()},
        "rows": rows,
    })


if __name__ == "__main__":
    main()
