"""Estimate local learning coefficients of models whose answer is known, and compare.

    python examples/llc_linear_models.py            # full run, about 2 minutes on 2 cores
    python examples/llc_linear_models.py --quick    # smoke run, a few seconds

For each model the script builds the localized tempered posterior with ``slt.temper`` and
``slt.localize``, samples it with ``slt.SGLD`` inside ``numpyro.infer.MCMC`` and estimates λ̂ with
``slt.llc``. It prints a table against the closed form of ``numpyro_slt.theory`` and writes
``llc_traces.png`` (the per-draw nβ·(L − L_n(w*)) of every chain) and ``llc_results.csv`` to
``--out``.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC

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
    normal_crossing_learning_coefficient,
    regular_learning_coefficient,
    rrr_learning_coefficient,
)


@dataclass
class Case:
    name: str
    model: object
    args: tuple
    center: dict
    nbeta: float
    gamma: float
    step_size: float
    expected: float
    control_variate: bool = True


def cases(n: int, seed: int = 0) -> list[Case]:
    """The tour: a regular model, two reduced-rank regressions, a normal crossing."""
    nbeta = n / np.log(n)
    step_size = 0.02 / nbeta  # ε·nβ = 0.02 keeps mala_accept near 0.9 at these curvatures
    x, y = make_linear_data(n=n, d=5, seed=seed)
    out = [Case("linear regression, d = 5", partial(linear_model, batch_size=500), (x, y),
                {"w": least_squares(x, y)}, nbeta, 10.0, step_size,
                regular_learning_coefficient(5))]
    for m, n_out, h, r in [(5, 5, 3, 1), (3, 8, 4, 1)]:
        x, y, center = make_rrr_data(m, n_out, h, r, n=n, seed=seed)
        out.append(Case(f"reduced-rank regression M={m} N={n_out} H={h} r={r}",
                        partial(rrr_model, h=h, batch_size=500), (x, y), center, nbeta, 10.0,
                        step_size, rrr_learning_coefficient(m, n_out, h, r)))
    x, y = make_crossing_data(n=1_000, seed=seed)
    out.append(Case("normal crossing w1^2 w2^4", partial(crossing_model, powers=(1, 2)), (x, y),
                    {"w": jnp.zeros(2)}, 10_000.0, 1.0, 1e-4,
                    normal_crossing_learning_coefficient((1, 2))[0], control_variate=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with few draws")
    parser.add_argument("--out", type=Path, default=Path("out/llc_linear_models"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args()
    num_samples, num_chains = (300, 2) if args.quick else (10_000, 8)
    args.out.mkdir(parents=True, exist_ok=True)

    rows, traces = [], {}
    for case in cases(n=2_000 if args.quick else 20_000, seed=args.seed):
        posterior = slt.localize(slt.temper(case.model, case.nbeta), case.center, case.gamma)
        kernel = slt.SGLD(posterior, case.step_size, control_variate=case.control_variate)
        steps = num_samples * (10 if case.name.startswith("normal") else 1)
        mcmc = MCMC(kernel, num_warmup=steps // 5, num_samples=steps, num_chains=num_chains,
                    chain_method="vectorized", progress_bar=not args.no_progress,
                    thinning=max(1, steps // 1_000))
        start = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(args.seed), *case.args)
        result = slt.llc(mcmc)
        seconds = time.perf_counter() - start
        estimate = result.llc_mean.item()
        rows.append({
            "model": case.name, "lambda": case.expected, "llc_mean": round(estimate, 4),
            "llc_std": round(result.llc_std.item(), 4),
            "relative_error": round(estimate / case.expected - 1, 4),
            "rhat": round(result.loss_rhat.item(), 3), "ess": round(result.loss_ess.item()),
            "seconds": round(seconds, 1),
        })
        traces[case.name] = result.llc_trace.values

    header = f"{'model':44s} {'λ':>6s} {'λ̂ ± sd':>16s} {'error':>7s} {'R-hat':>6s} {'s':>6s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:44s} {row['lambda']:6.3f} "
              f"{row['llc_mean']:8.3f} ± {row['llc_std']:5.3f} {row['relative_error']:+7.1%} "
              f"{row['rhat']:6.3f} {row['seconds']:6.1f}")
    with open(args.out / "llc_results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _plot(traces, {row["model"]: row["lambda"] for row in rows}, args.out / "llc_traces.png")
    print(f"wrote {args.out / 'llc_results.csv'} and {args.out / 'llc_traces.png'}")


def _plot(traces: dict, expected: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(traces), 1, figsize=(8, 2.2 * len(traces)), squeeze=False)
    for ax, (name, trace) in zip(axes[:, 0], traces.items(), strict=True):
        for chain, values in enumerate(trace):
            running = np.cumsum(values) / np.arange(1, len(values) + 1)
            ax.plot(running, lw=1, label=f"chain {chain}")
        ax.axhline(expected[name], color="k", ls="--", lw=1, label="λ (closed form)")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("running λ̂")
    axes[-1, 0].set_xlabel("draw")
    axes[0, 0].legend(fontsize=7, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
