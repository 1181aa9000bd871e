"""Measure the LLC estimator's error on every known-answer case of the test suite.

    python benchmarks/llc_accuracy.py [--seeds 0 1]

Runs the cases and the hyperparameter recipe of ``tests/test_llc_known_answers.py`` and prints a
markdown table (case, λ, λ̂ ± sd across chains, relative error, R-hat, seconds) for docs/llc.md.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import jax.numpy as jnp
import numpy as np

import numpyro_slt as slt
from numpyro_slt.known_models import (
    crossing_model,
    least_squares,
    linear_model,
    make_crossing_data,
    make_linear_data,
    make_rrr_data,
    rrr_model,
)
from numpyro_slt.theory import (
    normal_crossing_expected_excess,
    normal_crossing_learning_coefficient,
    rrr_learning_coefficient,
)


def estimate(model, center, gamma, step_size, args, *, nbeta, num_samples, num_chains=8,
             control_variate=True, seed=0):
    return slt.estimate_llc(model, center, *args, nbeta=nbeta, gamma=gamma, step_size=step_size,
                            num_samples=num_samples, num_chains=num_chains,
                            control_variate=control_variate, seed=seed, progress_bar=False)


def cases():
    for d in (3, 8):
        x, y = make_linear_data(n=20_000, d=d)
        yield (f"linear regression d={d} (minibatch 500, control variate)", d / 2,
               partial(linear_model, batch_size=500), {"w": least_squares(x, y)}, 10.0, 1e-5,
               (x, y), dict(nbeta=20_000 / np.log(20_000), num_samples=20_000))
    x, y = make_linear_data(n=2_000, d=4)
    yield ("linear regression d=4 (full batch, no control variate)", 2.0, linear_model,
           {"w": least_squares(x, y)}, 1.0, 1e-4, (x, y),
           dict(nbeta=2_000 / np.log(2_000), num_samples=5_000, control_variate=False))
    for m, n_out, h, r in [(5, 5, 3, 1), (4, 4, 4, 2), (3, 8, 4, 1), (8, 3, 4, 1), (2, 2, 5, 1)]:
        x, y, center = make_rrr_data(m, n_out, h, r, n=20_000)
        yield (f"reduced-rank regression M={m} N={n_out} H={h} r={r}",
               rrr_learning_coefficient(m, n_out, h, r), partial(rrr_model, h=h, batch_size=500),
               center, 10.0, 1e-5, (x, y), dict(nbeta=20_000 / np.log(20_000),
                                                 num_samples=10_000))
    x, y = make_crossing_data(n=1_000)
    scale = 0.5 * float(jnp.mean(x**2))
    for powers, gamma, step_size in [((1,), 1.0, 1e-5), ((3,), 1.0, 1e-4), ((1, 2), 1.0, 1e-4),
                                     ((1, 1), 10.0, 1e-4)]:
        exact = normal_crossing_expected_excess(powers, scale, 10_000.0, gamma)
        yield (f"normal crossing k={powers} (exact at nβ=1e4, γ={gamma:g}: {exact:.4f})",
               normal_crossing_learning_coefficient(powers)[0],
               partial(crossing_model, powers=powers), {"w": jnp.zeros(len(powers))}, gamma,
               step_size, (x, y), dict(nbeta=10_000.0, num_samples=100_000,
                                       num_chains=16 * len(powers), control_variate=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    print("| case | seed | λ | λ̂ ± sd | error | R-hat | s |")
    print("|---|---|---|---|---|---|---|")
    for name, expected, model, center, gamma, step_size, model_args, options in cases():
        if args.only not in name:
            continue
        for seed in args.seeds:
            start = time.perf_counter()
            result = estimate(model, center, gamma, step_size, model_args, seed=seed, **options)
            value = result.llc_mean.item()
            print(f"| {name} | {seed} | {expected:.4g} | {value:.4g} ± "
                  f"{result.llc_std.item():.2g} | {value / expected - 1:+.1%} | "
                  f"{result.loss_rhat.item():.3f} | {time.perf_counter() - start:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
