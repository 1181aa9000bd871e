"""Calibrate SGLD for one head of the shipped default transformer: the figure of
docs/calibration.md.

    python examples/calibrate_transformer_head.py            # about 20 minutes on 2 cores
    python examples/calibrate_transformer_head.py --quick    # smoke run, about a minute

The head's restricted posterior and data are the study's (``restricted_posterior`` on
``study_data(...)["sampling"]``), judged at the study's own budget and kernel (``StudyConfig()``:
4 chains, 200 burn-in steps, 200 draws every 10th step, batch 16, plain SGLD). The grid halves
the study's step size ε = 1e-3 five times at the study's γ = 300 and at nβ = 15 and 30. Writes
``--out`` (default ``docs/images/calibration_sweep.png``) and prints the judged table. The same
sweep from the command line:
``numpyro-slt calibrate --component 1:3 --step-sizes 1e-3 5e-4 2.5e-4 1.25e-4 6.25e-5 3.125e-5
--nbetas 15 30``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpyro_slt as slt
from numpyro_slt.nn import load_default, restricted_posterior
from numpyro_slt.study import StudyConfig
from numpyro_slt.study.data import study_data

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--component", default="1:3",
                        help="the head to calibrate (default 1:3, the default model's induction "
                             "head)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" /
                        "calibration_sweep.png")
    parser.add_argument("--quick", action="store_true",
                        help="the quick study's budget and three step sizes at one nβ")
    args = parser.parse_args()

    config = StudyConfig.quick() if args.quick else StudyConfig()
    factors = (0.25, 0.125, 0.0625) if args.quick else (1, 0.5, 0.25, 0.125, 0.0625, 0.03125)
    nbetas = [config.nbeta] if args.quick else [config.nbeta / 2, config.nbeta]
    loaded = load_default()
    data = study_data(loaded.network, loaded.tokenizer, config)
    posterior = restricted_posterior(loaded.network, args.component, data["sampling"],
                                     config.batch_size)
    start = time.perf_counter()
    cal = slt.calibrate(posterior.model, posterior.center, *posterior.model_args,
                        step_sizes=[config.step_size * f for f in factors], nbetas=nbetas,
                        gammas=[config.gamma], num_chains=config.num_chains,
                        num_warmup=config.num_warmup,
                        num_samples=config.num_draws * config.thinning,
                        thinning=config.thinning, control_variate=False, seed=config.seed)
    print(cal)
    cal.plot(args.out, title=f"Head {posterior.component} of the default model: λ̂ against ε "
                             f"({config.num_chains} chains × {config.num_draws} draws)")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB) in "
          f"{time.perf_counter() - start:.0f} s (sweep {cal.seconds['sweep']:.0f} s)")


if __name__ == "__main__":
    main()
