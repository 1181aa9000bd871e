"""The ``numpyro-slt`` command.

``numpyro-slt study``  runs the susceptibility study on a model folder (default: the embedded
                       default) and writes the report folder (see :mod:`numpyro_slt.report`).
``numpyro-slt calibrate``  sweeps SGLD's step size, nβ and γ for one component of a model (the
                       study's restricted posterior and data) in one vectorized run, writes the
                       judged sweep (netCDF), its plot (PNG) and a study config with the
                       recommended setting, and prints the recommendation.
``numpyro-slt train``  trains a model with the default recipe (or a recipe JSON) and writes a
                       model folder; ``make model`` uses it to rebuild the shipped default.

Errors end the command with exit status 1 and a one-line message; ``--debug`` shows the whole
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._validate import nonnegative_number, positive_int, positive_number

__all__ = ["main"]


def _read_json(path: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--{what}: no file {path}.")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--{what}: {path} is not valid JSON ({err}).") from None


def _argument_type(check, convert, what: str):
    """An argparse ``type=``: ``convert`` the text, then apply the package's ``check``
    (:mod:`numpyro_slt._validate`); either failing is an argparse error saying what was expected."""

    def parse(text: str):
        try:
            return check("value", convert(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None

    return parse


_positive = _argument_type(positive_int, int, "a positive integer")
_positive_float = _argument_type(positive_number, float, "a positive number")
_nonnegative_float = _argument_type(nonnegative_number, float, "a number >= 0")


def _probe(text: str) -> tuple[str, str]:
    name, sep, source = text.partition("=")
    if not sep or not name.isidentifier() or not source:
        raise argparse.ArgumentTypeError(
            f"expected NAME=DATASET with NAME an identifier such as code, got {text!r}")
    return name, source


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="numpyro-slt", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    study = sub.add_parser("study", help="per-component susceptibilities, response matrix, PCA")
    study.add_argument("--out", default="study", help="output folder (default: ./study)")
    study.add_argument("--model", default=None,
                       help="a model folder of this library, a Hugging Face folder (GPT-2 or "
                            "GPT-NeoX: config.json, model.safetensors, tokenizer.json) or a "
                            "Hub repository id (default: the embedded default model)")
    study.add_argument("--revision", default=None,
                       help="Hub revision of --model, e.g. a Pythia checkpoint 'step1000'")
    study.add_argument("--quick", action="store_true",
                       help="a small study for a first look (2 chains x 80 draws)")
    study.add_argument("--config", default=None, help="JSON file of StudyConfig fields")
    study.add_argument("--components", nargs="+", default=None,
                       help="components to sample, e.g. 1:6 0:1 embed (default: all)")
    study.add_argument("--chains", type=_positive, default=None)
    study.add_argument("--draws", type=_positive, default=None)
    study.add_argument("--seed", type=int, default=None)
    study.add_argument("--checkpoint-every", type=_positive, default=None,
                       help="draws per segment written to disk (default 20): an interrupted "
                            "study loses at most this many draws")
    study.add_argument("--resume", action="store_true",
                       help="continue a study in --out: reuse the components it finished with the "
                            "same settings and continue the one in progress from its last segment")
    study.add_argument("--no-progress", action="store_true")
    study.add_argument("--data", default=None, metavar="DATASET",
                       help="the sampling distribution q and the evaluation set: a folder saved "
                            "with save_to_disk, a .jsonl/.json/.csv/.parquet/.txt file, a folder "
                            "of text or data files, or a Hub dataset name (default: the built-in "
                            "mixture)")
    study.add_argument("--probes", nargs="+", type=_probe, default=None,
                       metavar="NAME=DATASET",
                       help="probe sets, each a name and a source as for --data (default: the "
                            "built-in probes)")
    study.add_argument("--context-length", type=_positive, default=None, metavar="N",
                       help="tokens per window, at most the model's context (default: the "
                            "model's context)")

    calibrate = sub.add_parser(
        "calibrate", help="sweep step size x nbeta x gamma for one component; recommend one")
    calibrate.add_argument("--model", default=None,
                           help="a model folder, a Hugging Face folder or a Hub repository id, "
                                "as for study (default: the embedded default model)")
    calibrate.add_argument("--revision", default=None, help="Hub revision of --model")
    calibrate.add_argument("--component", default="1:6",
                           help="the component whose restricted posterior is calibrated "
                                "(default: 1:6)")
    calibrate.add_argument("--out", default="calibration",
                           help="output folder (default: ./calibration)")
    calibrate.add_argument("--quick", action="store_true",
                           help="the quick study's budget and a smaller grid (a first look)")
    calibrate.add_argument("--config", default=None,
                           help="JSON file of StudyConfig fields: the budget, data and centre "
                                "settings of the study to calibrate for")
    calibrate.add_argument("--step-sizes", nargs="+", type=_positive_float, default=None,
                           metavar="EPS", help="the step-size grid (default: the study's step "
                                               "size times 4, 2, 1, 1/2, 1/4, 1/8)")
    calibrate.add_argument("--nbetas", nargs="+", type=_positive_float, default=None,
                           metavar="NBETA", help="the nbeta grid (default: the study's nbeta "
                                                 "times 1/2, 1, 2; --quick: the study's)")
    calibrate.add_argument("--gammas", nargs="+", type=_nonnegative_float, default=None,
                           metavar="GAMMA", help="the gamma grid (default: the study's gamma)")
    calibrate.add_argument("--seed", type=int, default=None)

    train = sub.add_parser("train", help="train a model with the default recipe")
    train.add_argument("--out", default="model", help="model folder to write (default: ./model)")
    train.add_argument("--work", default=None,
                       help="checkpoint folder (default: <out>.work); reruns resume from it")
    train.add_argument("--recipe", default=None, help="JSON file of DefaultRecipe fields")
    train.add_argument("--quick", action="store_true",
                       help="1%% of the steps: a smoke test, no induction heads")
    train.add_argument("--no-progress", action="store_true")
    return parser


def _load_model(model: str | None, revision: str | None):
    """(network, tokenizer) of ``--model``: the embedded default, a model folder of this library
    (it has ``model.json``), a Hugging Face folder (it has ``config.json``) or a Hub repository
    id (:func:`numpyro_slt.nn.from_pretrained`)."""
    from .nn import from_pretrained
    from .nn.default import META_FILE, load_default, load_model

    folder = None if model is None else Path(model)
    if folder is None or (folder / META_FILE).is_file():
        if revision is not None:
            raise ValueError("--revision applies to a Hugging Face model; --model is "
                             f"{'the default' if model is None else model}, a model folder of "
                             "this library.")
        loaded = load_default() if folder is None else load_model(folder)
        return loaded.network, loaded.tokenizer
    not_ours = f"--model {model}: not a model folder of this library (no {META_FILE})"
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{not_ours} nor a Hugging Face folder (no config.json).")
    try:  # from_pretrained tells a folder from a Hub repository id
        network, tokenizer = from_pretrained(model, revision=revision)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{not_ours}; {err}") from None
    if tokenizer is None:
        raise ValueError(f"--model {model} has no tokenizer.json: the study tokenizes its data "
                         "and labels its tokens with the model's tokenizer; save it into the "
                         "folder (tokenizer.save_pretrained(folder)).")
    return network, tokenizer


def _study(args) -> int:
    from .report.study_report import write_study
    from .study import StudyConfig, run_study
    from .utils import compilation_cache_for_run

    overrides = {} if args.config is None else _read_json(args.config, "config")
    if args.components is not None:
        overrides["components"] = tuple(args.components)
    if args.chains is not None:
        overrides["num_chains"] = args.chains
    if args.draws is not None:
        overrides["num_draws"] = args.draws
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    if args.data is not None:
        overrides["data"] = args.data
    if args.probes is not None:
        overrides["probes"] = [list(pair) for pair in args.probes]
    if args.context_length is not None:
        overrides["context_length"] = args.context_length
    if args.quick:
        config = StudyConfig.quick(**overrides)
    else:
        config = StudyConfig.from_dict(overrides)
    network, tokenizer = _load_model(args.model, args.revision)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder.")
    started = [*(out / "runs").glob("*.nc"), *(out / "runs" / ".partial").glob("*")]
    if not args.resume and started:
        raise ValueError(f"--out {out} holds runs of an earlier study: pass --resume to continue "
                         "it, or choose another --out.")
    t0 = time.perf_counter()
    # the heads of a layer share their compiled programs through JAX's persistent cache
    with compilation_cache_for_run():
        result = run_study(network, tokenizer, config, out=out,
                           resume=args.resume, progress=not args.no_progress)
    report = write_study(result, out, tokenizer)
    acc = result.acceptance
    print(f"wrote {report} in {time.perf_counter() - t0:.0f} s")
    for layer, pca in result.pca_layers.items():
        ratios = ", ".join(f"{x:.3f}" for x in pca["explained_variance_ratio"].values[:3])
        print(f"layer {layer}: explained variance of PC1-PC3 = {ratios}")
    print(f"induction heads {acc.get('induction_heads')} (prefix matching: "
          f"{acc.get('prefix_matching_heads')}): separated along PC1-PC3 = "
          f"{acc.get('heads_separated')}; induction tokens distinct = "
          f"{acc.get('induction_tokens_distinct')}")
    return 0


def _calibrate(args) -> int:
    from .calibration import calibrate
    from .nn import restricted_posterior
    from .study import StudyConfig
    from .study.data import study_data
    from .utils import compilation_cache_for_run

    overrides = {} if args.config is None else _read_json(args.config, "config")
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = StudyConfig.quick(**overrides) if args.quick else StudyConfig.from_dict(overrides)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder.")
    factors = (2.0, 1.0, 0.5, 0.25) if args.quick else (4.0, 2.0, 1.0, 0.5, 0.25, 0.125)
    step_sizes = args.step_sizes or [config.step_size * f for f in factors]
    nbetas = args.nbetas or ([config.nbeta] if args.quick
                             else [config.nbeta / 2, config.nbeta, 2 * config.nbeta])
    gammas = args.gammas or [config.gamma]
    network, tokenizer = _load_model(args.model, args.revision)
    t0 = time.perf_counter()
    data = study_data(network, tokenizer, config)
    posterior = restricted_posterior(network, args.component, data["sampling"],
                                     config.batch_size, fast_path=config.fast_path)
    # the study's own kernel and budget: plain SGLD (no control variate), its chains and draws
    with compilation_cache_for_run():
        result = calibrate(posterior.model, posterior.center, *posterior.model_args,
                           step_sizes=step_sizes, nbetas=nbetas, gammas=gammas,
                           num_chains=config.num_chains, num_warmup=config.num_warmup,
                           num_samples=config.num_draws * config.thinning,
                           thinning=config.thinning, control_variate=False, seed=config.seed)
    out.mkdir(parents=True, exist_ok=True)
    result.sweep.attrs["component"] = posterior.component
    result.to_netcdf(out / "calibration.nc")
    result.plot(out / "calibration.png",
                title=f"Calibration of {posterior.component}: λ̂ against the step size")
    print(result)
    print(f"wrote {out / 'calibration.nc'} and {out / 'calibration.png'} in "
          f"{time.perf_counter() - t0:.0f} s (sweep {result.seconds['sweep']:.0f} s)")
    if result.recommended is not None:
        calibrated = StudyConfig.from_calibration(result, **overrides)
        settings = {k: v for k, v in calibrated.to_dict().items()
                    if k in result.recommended or k in overrides}
        (out / "study_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        print(f"study with it: numpyro-slt study {'--quick ' if args.quick else ''}"
              f"--config {out / 'study_config.json'}")
    return 0


def _train(args) -> int:
    from .nn.default import DefaultRecipe, build_default

    recipe = (DefaultRecipe() if args.recipe is None
              else DefaultRecipe.from_dict(_read_json(args.recipe, "recipe")))
    if args.quick:
        recipe = recipe.scaled(0.01)
    t0 = time.perf_counter()
    model = build_default(args.out, recipe, work=args.work, progress=not args.no_progress)
    scores = model.info["scores"]
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s: best layer-1 induction "
          f"{scores['best_induction']['head']} = {scores['best_induction']['score']:.3f}, best "
          f"layer-0 previous-token {scores['best_previous_token']['head']} = "
          f"{scores['best_previous_token']['score']:.3f}, copy losses "
          f"{scores['loss_first']:.2f} -> {scores['loss_second']:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``numpyro-slt``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return {"study": _study, "calibrate": _calibrate, "train": _train}[args.command](args)
    except KeyboardInterrupt:
        hint = {"study": "rerun the same command with --resume to continue",
                "train": "rerun the same command (same --work) to resume from its checkpoints"
                }.get(args.command, "rerun the same command to start it again")
        print(f"numpyro-slt {args.command}: interrupted; {hint}.", file=sys.stderr)
        return 130
    except Exception as err:  # one line unless --debug
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"numpyro-slt {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
