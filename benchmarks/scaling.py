"""Scaling of whole-model SGLD, numpyro-slt against devinterp: time and peak memory against
tokens per step, draws, chains and model width, with fitted exponents.

Model, data and settings are those of ``devinterp_compare.py``, both defined in ``workloads.py``:
the shipped default model (2 layers × 8 heads, d_model 64, d_head 16, n_ctx 64, vocabulary 1,024,
pre-LN; 203,008 parameters) and its PyTorch copy (``torch_port.py``), the 1,024 token windows of
64 tokens of ``study_data(...)["sampling"]``, nβ = 30, γ = 300, ε = 1e-4, one chain unless the
sweep is over chains. numpyro-slt is ``MCMC(slt.SGLD(model, ε, keep_draws=False), num_warmup=0)``
with its compiled loop reused between runs (``reuse_loop_compilation``); devinterp is its own
chain loop ``sample_single_chain`` (``workloads.devinterp_chain``), chains one after the other as
its ``sample`` runs them with ``cores=1``.

Sweeps (a point is one framework at one size; everything else at the defaults above):

1. **tokens**: minibatch B windows of 64 tokens, tokens = 64·B per step; milliseconds per step.
2. **draws**: D draws of one chain; wall seconds and peak memory. numpyro-slt also with
   ``keep_draws=True``, which stores every draw of the 203,008 parameters.
3. **chains**: C chains of ``chain_draws`` draws; numpyro-slt with ``chain_method="vectorized"``
   and ``"sequential"`` (C = 1 is one run, shared by both), devinterp sequential.
4. **width**: a randomly initialised ``AttentionOnlyTransformer`` with d_model ∈ widths,
   d_head = d_model / 4, 2 layers × 8 heads, n_ctx 64, vocabulary 1,024, pre-LN (copied into
   PyTorch with ``torch_port.from_equinox`` and checked with ``check_port``), B = 16;
   milliseconds per step against the number of parameters P.

B = 16 with 100 steps, 100 draws of one chain and one chain of 100 draws are the same run: it is
measured once and reported in each of the three sweeps (likewise C = 1 for both chain methods).

What is measured, per point, in a fresh Python process (``--point``, which prints one JSON line),
so that each point's memory is its own (JAX on CPU, ``XLA_PYTHON_CLIENT_PREALLOCATE=false``).

Threads: PyTorch runs with ``--torch-threads`` intra-op threads (default 1, as in
``devinterp_compare.py``); XLA runs as it is. XLA runs this model's step on both cores of a
2-core machine when the second one is free and on one when another job holds it, so on a shared
machine its wall time changes from run to run with the load; XLA's thread flags do not keep it
on one thread (docs/benchmarks.md has the measurements). The CPU time of each run is therefore
recorded and fitted beside the wall time: it stays close to the time on one core, whatever the
threads. ``--pin`` runs each point's process on one core (``sched_setaffinity`` to the core
least busy when it starts), which makes the wall times one-core figures for both libraries.

- ``first_s``: numpyro-slt's first ``MCMC.run`` (tracing, compilation, L_n(w*) on the full
  data, the draws). devinterp has no compilation; it runs a 5-step warm-up chain instead.
- ``seconds``: wall seconds of each of ``repeats`` timed runs after that (``MCMC.run`` with the
  compiled loop reused, then ``get_samples()`` and ``get_extra_fields()``; or every devinterp
  chain); ``wall_s`` is the smallest, and ms/step = 1000·wall_s / draws (a step advances all
  chains). ``cpu_s``, the smallest CPU time of the process over a timed run (all its threads),
  is recorded beside it: on a machine shared with other jobs the wall time grows when the
  process waits for a core, the CPU time much less.
- ``step_ms`` (and ``cpu_step_ms``), the cost of one more step, used for the tokens and width
  sweeps: numpyro-slt's ms/step (its compiled run has no fixed cost); for devinterp
  (t_N − t_5) / (N − 5) from its chain of N steps and its 5-step warm-up chain, because each
  devinterp chain starts with a fixed set-up (``setup_s`` = t_5 − 5·step) that would otherwise
  be spread over the steps.
- ``peak_mb``: the process's peak resident memory (VmHWM of ``/proc/self/status``, MiB) minus
  the peak of a baseline process of the same framework that only imports the libraries and
  loads the network and the data. It includes compilation (XLA for numpyro-slt).
- ``run_mb``: the growth of resident memory during the timed runs alone: the high-water mark is
  reset (``/proc/self/clear_refs``) just before them, and run_mb = VmHWM after − VmRSS before.
  Memory freed earlier and kept by an allocator is reused without showing here.

Fits (least squares):

- power law, a line in log-log: log y = log a + b·log x, i.e. y = a·x^b, for ms/step against
  tokens, wall seconds against draws and chains, ms/step against parameters P (b from the wall
  times, and b (CPU time) from the CPU times); beside it the straight line y = y₀ + c·x;
- straight line, y = y₀ + c·x, for memory against draws: c in KiB per draw, and c / (4 B · P),
  the number of float32 copies of the parameters that each draw adds. numpyro-slt's promise is
  that with ``keep_draws=False`` memory grows with draws × observables, never draws ×
  parameters: c / (4 B · P) ≈ 0, against ≥ 1 with ``keep_draws=True``.

Usage (needs the ``build/venv-bench`` environment of ``make bench``)::

    python benchmarks/scaling.py            # every sweep
    python benchmarks/scaling.py --quick    # fewer points and steps; no chains sweep
    python benchmarks/scaling.py --pin      # each point's process on one core
    python benchmarks/scaling.py --sweeps tokens width --out /tmp/s.json --plot /tmp/s.png
    python benchmarks/scaling.py --reanalyse benchmarks/results/scaling.json  # no measuring
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from common import (  # noqa: E402  (after the environment variables above)
    environment,
    load_line,
    mcmc_runner,
    memory_status,
    power_fit,
    reset_peak,
    run_json_child,
    set_torch_threads,
    write_results,
)
from workloads import (  # noqa: E402
    DEVINTERP_WARMUP_STEPS,
    PACKAGES,
    Settings,
    Workload,
    devinterp_chain,
    devinterp_step_seconds,
    load_workload,
    network_of_width,
    numpyro_mcmc,
    study_config,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "scaling.json"
DEFAULT_PLOT = HERE.parent / "docs" / "images" / "scaling.png"
SWEEPS = ("tokens", "draws", "chains", "width")
OURS, KEEP, THEIRS = "numpyro-slt", "numpyro-slt keep_draws", "devinterp"
VECTORIZED, SEQUENTIAL = "numpyro-slt vectorized", "numpyro-slt sequential"


@dataclass(frozen=True)
class Sweeps:
    """Sizes of the four sweeps."""

    batches: tuple[int, ...] = (4, 8, 16, 32, 64)
    token_steps: int = 100
    draws: tuple[int, ...] = (100, 200, 400, 800)
    chains: tuple[int, ...] = (1, 2, 4)
    chain_draws: int = 100
    chain_methods: tuple[str, ...] = ("vectorized", "sequential")  # numpyro-slt's
    widths: tuple[int, ...] = (32, 64, 128, 256)
    width_steps: int = 30
    repeats: int = 2  # timed runs per point of the tokens and width sweeps (draws, chains: 1)
    baseline_runs: int = 3  # baseline processes per framework (median)

    @classmethod
    def quick(cls) -> Sweeps:
        # no chains sweep: its points are the longest runs, and --quick is a smoke run
        return cls(batches=(4, 16), draws=(100, 200), chains=(), widths=(32, 64),
                   width_steps=20, repeats=1, baseline_runs=1)


# -- one point, in its own process ------------------------------------------------------------


def point_workload(spec: dict[str, Any], settings: Settings, torch_threads: int) -> Workload:
    """Imports, network and data of a point; the PyTorch copy only for devinterp."""
    import numpyro.infer  # noqa: F401  (imported here so that the baseline holds it)

    import numpyro_slt  # noqa: F401

    torch = spec["framework"] == "torch"
    if torch:
        import devinterp.slt.lm_loss  # noqa: F401
        import devinterp.slt.sampler  # noqa: F401

        set_torch_threads(torch_threads)
    return load_workload(settings, spec.get("d_model"), torch=torch, check=False)


def numpyro_run(work: Workload, settings: Settings, spec: dict[str, Any]):
    """One ``MCMC.run`` plus reading its draws and statistics, reusing the compiled loop and
    dropping the previous run's draws first (so that a run's memory is one run's)."""
    import jax
    import jax.numpy as jnp

    mcmc = numpyro_mcmc(work, settings, spec["draws"], spec["chains"],
                        keep_draws=spec["keep_draws"], chain_method=spec["chain_method"])
    run = mcmc_runner(mcmc, jax.random.PRNGKey(settings.seed), jnp.asarray(work.windows),
                      drop_previous=True)
    return run, run


def devinterp_run(work: Workload, settings: Settings, spec: dict[str, Any]):
    """A short warm-up chain, and ``chains`` devinterp chains one after the other (seeds s + c,
    as devinterp's ``sample`` with ``cores=1``)."""
    warmup = devinterp_chain(work, settings, DEVINTERP_WARMUP_STEPS)
    chains = [devinterp_chain(work, replace(settings, seed=settings.seed + c), spec["draws"])
              for c in range(spec["chains"])]

    def run() -> None:
        for chain in chains:
            chain()

    return warmup, run


def measure_point(spec: dict[str, Any], torch_threads: int) -> dict[str, Any]:
    """Run one point (see the module docstring) and return its figures."""
    start = time.perf_counter()
    settings = replace(Settings(), batch_size=spec["batch"])
    work = point_workload(spec, settings, torch_threads)
    out: dict[str, Any] = {"load_s": time.perf_counter() - start}
    if spec["sweep"] != "baseline":
        make = numpyro_run if spec["framework"] == "jax" else devinterp_run
        first, run = make(work, settings, spec)
        t0, c0 = time.perf_counter(), time.process_time()
        first()
        out["first_s"], out["first_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        before = memory_status()
        out["peak_before_runs_mb"], out["rss_before_runs_mb"] = before["VmHWM"], before["VmRSS"]
        reset = reset_peak()
        seconds, cpu = [], []
        for _ in range(spec["repeats"]):
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        after = memory_status()
        out.update(seconds=seconds, cpu_seconds=cpu, wall_s=min(seconds), cpu_s=min(cpu),
                   ms_per_step=1e3 * min(seconds) / spec["draws"],
                   cpu_ms_per_step=1e3 * min(cpu) / spec["draws"],
                   run_mb=after["VmHWM"] - before["VmRSS"] if reset else None)
    status = memory_status()
    out["peak_process_mb"] = max(status["VmHWM"], out.get("peak_before_runs_mb", 0.0))
    out["n_params"] = work.network.config.n_params
    out["child_s"] = time.perf_counter() - start
    return out


# -- the sweeps, from the parent --------------------------------------------------------------


def step_costs(point: dict[str, Any]) -> dict[str, Any]:
    """The cost of one more step, ``step_ms`` (wall) and ``cpu_step_ms``, and devinterp's set-up
    per chain, ``setup_s``. numpyro-slt: the timed run over its draws (a compiled run has no
    fixed cost left). devinterp: every chain starts with a set-up (``sample_single_chain``
    copying the model and building its optimizer and data loader) that would otherwise be spread
    over the steps, so the step is the difference between a chain of N steps and the 5-step
    warm-up chain, (t_N − t_5)/(N − 5), and the set-up t_5 − 5·step."""
    if point["framework"] == "jax":
        return {"step_ms": point["ms_per_step"], "cpu_step_ms": point["cpu_ms_per_step"],
                "setup_s": None}
    draws, chains = point["draws"], point["chains"]
    step = devinterp_step_seconds(point["wall_s"] / chains, point["first_s"], draws)
    cpu = devinterp_step_seconds(point["cpu_s"] / chains,
                                 point.get("first_cpu_s", point["first_s"]), draws)
    return {"step_ms": 1e3 * step, "cpu_step_ms": 1e3 * cpu,
            "setup_s": point["first_s"] - DEVINTERP_WARMUP_STEPS * step}


def spec(sweep: str, series: str, x: float, *, batch: int = 16, draws: int = 100,
         chains: int = 1, d_model: int | None = None, repeats: int = 1) -> dict[str, Any]:
    return {"sweep": sweep, "series": series, "x": x, "batch": batch, "draws": draws,
            "chains": chains, "d_model": d_model, "repeats": repeats,
            "framework": "torch" if series in (THEIRS, "baseline torch") else "jax",
            "keep_draws": series == KEEP,
            "chain_method": "vectorized" if series == VECTORIZED and chains > 1 else "sequential"}


def same_run(point: dict[str, Any]) -> tuple:
    """Points with equal keys are the same run (B = 16 with 100 steps is also the first point of
    the draws sweep and one chain of the chains sweep): measured once, reported in each sweep."""
    return tuple(point[k] for k in ("framework", "batch", "draws", "chains", "d_model",
                                    "keep_draws", "chain_method"))


def plan(sweeps: Sweeps, names: list[str]) -> list[dict[str, Any]]:
    """Every point, frameworks interleaved at each size so that a change of machine load
    falls on both; a run shared by several points gets the most repeats any of them asks."""
    s = sweeps
    points = []
    if "tokens" in names:
        for b in s.batches:
            points += [spec("tokens", name, 64 * b, batch=b, draws=s.token_steps,
                            repeats=s.repeats) for name in (OURS, THEIRS)]
    if "draws" in names:
        for d in s.draws:
            points += [spec("draws", name, d, draws=d) for name in (OURS, KEEP, THEIRS)]
    if "chains" in names:
        methods = {"vectorized": VECTORIZED, "sequential": SEQUENTIAL}
        for c in s.chains:
            points += [spec("chains", name, c, chains=c, draws=s.chain_draws)
                       for name in [methods[m] for m in s.chain_methods] + [THEIRS]]
    if "width" in names:
        for w in s.widths:
            points += [spec("width", name, w, d_model=w, draws=s.width_steps, repeats=s.repeats)
                       for name in (OURS, THEIRS)]
    repeats: dict[tuple, int] = {}
    for p in points:
        repeats[same_run(p)] = max(repeats.get(same_run(p), 1), p["repeats"])
    return [{**p, "repeats": repeats[same_run(p)]} for p in points]


def run_child(point: dict[str, Any], torch_threads: int, pin: bool = False) -> dict[str, Any]:
    """Run one point in a fresh process (on one core with ``pin``) and return its figures."""
    return run_json_child([str(Path(__file__).resolve()), "--point", json.dumps(point),
                           "--torch-threads", str(torch_threads)], pin=pin,
                          env={"JAX_PLATFORMS": "cpu", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
                          what=f"point {point}")


def check_ports(widths: tuple[int, ...]) -> dict[str, float]:
    """max |ℓ_torch − ℓ_jax| of the default network and of each random one, on 16 windows."""
    from numpyro_slt.study import study_data

    from torch_port import check_port, from_equinox

    errors = {}
    for width in (None, *widths):
        network, tokenizer = network_of_width(width)
        if width is None:
            windows = study_data(network, tokenizer, study_config(Settings()))["sampling"][:16]
        errors["default" if width is None else f"d_model {width}"] = check_port(
            network, from_equinox(network), windows)
    return errors


def series(points: list[dict[str, Any]], sweep: str, name: str, key: str) -> tuple[list, list]:
    rows = sorted((p["x"], p[key]) for p in points
                  if p["sweep"] == sweep and p["series"] == name)
    return [r[0] for r in rows], [r[1] for r in rows]


def fits(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Exponents of every sweep (see the module docstring)."""
    out: dict[str, Any] = {}
    specs = {"tokens": ((OURS, THEIRS), "step_ms"), "draws": ((OURS, KEEP, THEIRS), "wall_s"),
             "chains": ((VECTORIZED, SEQUENTIAL, THEIRS), "wall_s"),
             "width": ((OURS, THEIRS), "step_ms")}
    for sweep, (names, key) in specs.items():
        for name in names:
            x, y = series(points, sweep, name, key)
            if len(x) < 2:
                continue
            if sweep == "width":
                x = series(points, sweep, name, "n_params")[1]
            fit = power_fit(x, y)
            cpu_key = "cpu_step_ms" if key == "step_ms" else "cpu_s"
            fit["cpu_exponent"] = power_fit(x, series(points, sweep, name, cpu_key)[1])["exponent"]
            if sweep == "draws":
                mem_x, mem = series(points, sweep, name, "peak_mb")
                slope, _ = np.polyfit(np.asarray(mem_x, float), np.asarray(mem, float), 1)
                params = next(p["n_params"] for p in points if p["sweep"] == "draws")
                fit["memory_kb_per_draw"] = 1024 * float(slope)
                fit["memory_parameter_copies_per_draw"] = float(slope) * 2**20 / (4 * params)
            out.setdefault(sweep, {})[name] = fit
    return out


# -- report -----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:,.{digits}f}"


def step_cells(ours: dict[str, Any], theirs: dict[str, Any]) -> str:
    """Markdown cells: ms/step (CPU) of both, the ratio of the wall times, devinterp's set-up."""
    def cell(p: dict[str, Any]) -> str:
        return f"{fmt(p.get('step_ms'), 2)} ({fmt(p.get('cpu_step_ms'), 2)})"

    ratio = theirs.get("step_ms", np.nan) / ours.get("step_ms", np.nan)
    return f"{cell(ours)} | {cell(theirs)} | {fmt(ratio, 2)} | {fmt(theirs.get('setup_s'), 2)}"


def tables(points: list[dict[str, Any]], fitted: dict[str, Any]) -> str:
    """Markdown: one table per sweep, then the fitted exponents."""
    def get(sweep: str, name: str, x: float) -> dict[str, Any]:
        return next((p for p in points if p["sweep"] == sweep and p["series"] == name
                     and p["x"] == x), {})

    def xs(sweep: str) -> list:
        return sorted({p["x"] for p in points if p["sweep"] == sweep})

    def step_rows(sweep: str, titles: str, first_cells) -> list[str]:
        """Rows of ms/step (CPU) of both frameworks, their ratio, devinterp's set-up and the
        peak MiB of both at each point; ``first_cells(x, a, b)`` the two leading cells."""
        rows = [f"| {titles} | numpyro-slt ms/step (CPU) | devinterp ms/step (CPU) | "
                "devinterp / numpyro-slt | devinterp set-up s | numpyro-slt MiB | "
                "devinterp MiB |", "|" + "---:|" * 8]
        for x in xs(sweep):
            a, b = get(sweep, OURS, x), get(sweep, THEIRS, x)
            rows.append(f"| {first_cells(x, a, b)} | {step_cells(a, b)} | "
                        f"{fmt(a.get('peak_mb'), 0)} | {fmt(b.get('peak_mb'), 0)} |")
        return rows + [""]

    def seconds_and_memory(sweep: str, columns: list[tuple[str, str]]) -> list[str]:
        """Rows of wall seconds and peak MiB of each (series, column title) at each point."""
        header = "| " + sweep + " | " + " | ".join(f"{title} s | MiB" for _, title in columns)
        rows = [header + " |", "|" + "---:|" * (1 + 2 * len(columns))]
        for x in xs(sweep):
            cells = [get(sweep, name, x) for name, _ in columns]
            rows.append(f"| {x} | " + " | ".join(f"{fmt(p.get('wall_s'), 2)} | "
                                                  f"{fmt(p.get('peak_mb'), 0)}" for p in cells)
                        + " |")
        return rows + [""]

    out = []
    if xs("tokens"):
        out += step_rows("tokens", "B | tokens/step", lambda x, a, b: f"{x // 64} | {x:,}")
    if xs("draws"):
        out += seconds_and_memory("draws", [(OURS, "numpyro-slt"),
                                            (KEEP, "numpyro-slt keep_draws=True"),
                                            (THEIRS, "devinterp")])
    if xs("chains"):
        out += seconds_and_memory("chains", [(VECTORIZED, "numpyro-slt vectorized"),
                                             (SEQUENTIAL, "numpyro-slt sequential"),
                                             (THEIRS, "devinterp")])
    if xs("width"):
        out += step_rows("width", "d_model | parameters",
                         lambda x, a, b: f"{x} | {a.get('n_params', b.get('n_params', 0)):,}")
    quantity = {"tokens": "ms/step ∝ tokens^b", "draws": "wall s ∝ draws^b",
                "chains": "wall s ∝ chains^b", "width": "ms/step ∝ parameters^b"}
    out += ["| fit | series | b | b (CPU time) | y₀ + c·x | memory per draw |",
            "|---|---|---:|---:|---|---:|"]
    for sweep, by_series in fitted.items():
        for name, f in by_series.items():
            unit = "ms" if sweep in ("tokens", "width") else "s"
            memory = "" if "memory_kb_per_draw" not in f else \
                f"{f['memory_kb_per_draw']:,.1f} KiB = " \
                f"{f['memory_parameter_copies_per_draw']:.2f} × 4 B × P"
            out.append(f"| {quantity[sweep]} | {name} | {f['exponent']:.2f} | "
                       f"{f['cpu_exponent']:.2f} | {f['intercept']:.3g} {unit} + "
                       f"{f['slope']:.3g} {unit} × x | {memory} |")
    return "\n".join(out)


def plot(points: list[dict[str, Any]], path: Path, note: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    colors = {OURS: "C0", KEEP: "C2", THEIRS: "C1", VECTORIZED: "C0", SEQUENTIAL: "C4"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    chain_draws = next((p["draws"] for p in points if p["sweep"] == "chains"), 0)
    panels = [("tokens", (OURS, THEIRS), "step_ms", "tokens per step (64 × B)", "ms / step"),
              ("draws", (OURS, KEEP, THEIRS), "wall_s", "draws (1 chain)",
               "wall s (solid)"),
              ("chains", (VECTORIZED, SEQUENTIAL, THEIRS), "wall_s",
               f"chains ({chain_draws} draws each)", "wall s"),
              ("width", (OURS, THEIRS), "step_ms", "parameters P (d_model)", "ms / step")]
    for ax, (sweep, names, key, xlabel, ylabel) in zip(axes.flat, panels, strict=True):
        if not any(p["sweep"] == sweep for p in points):
            ax.text(0.5, 0.5, f"{sweep}: not run", ha="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ticks: dict[float, str] = {}
        for name in names:
            x, y = series(points, sweep, name, key)
            if sweep == "width":
                widths = x
                x = series(points, sweep, name, "n_params")[1]
                ticks.update({p: f"{p / 1e3:.0f}k\n({w})" for p, w in zip(x, widths, strict=True)})
            else:
                ticks.update({v: f"{v:g}" for v in x})
            if x:
                ax.plot(x, y, "o-", color=colors[name], label=name)
            if x and key == "step_ms":  # CPU time, dotted: above the wall time where XLA used 2
                ax.plot(x, series(points, sweep, name, "cpu_step_ms")[1], ":", color=colors[name],
                        label=f"{name}, CPU time")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=sweep)
        ax.set_xticks(list(ticks), list(ticks.values()))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best" if sweep == "draws" else "upper left")
        if sweep == "draws":
            twin = ax.twinx()
            for name in names:
                x, mem = series(points, sweep, name, "peak_mb")
                if x:
                    twin.plot(x, mem, "s--", color=colors[name], alpha=0.6)
            twin.set_ylabel("peak memory − baseline, MiB (dashed)")
            twin.set_ylim(bottom=0)
    fig.suptitle(f"Whole-model SGLD, numpyro-slt vs devinterp (nβ 30, γ 300, ε 1e-4){note}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def label(p: dict[str, Any]) -> str:
    return {"tokens": f"B={p['batch']}", "draws": f"{p['draws']} draws",
            "chains": f"{p['chains']} chains", "width": f"d_model {p['d_model']}"}[p["sweep"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few points, few steps")
    parser.add_argument("--sweeps", nargs="+", default=list(SWEEPS), choices=SWEEPS)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1; 0 keeps torch's default)")
    parser.add_argument("--pin", action="store_true",
                        help="run each point's process on one core (XLA, which otherwise takes a "
                             "free second core, and torch alike)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file for the results")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG file of the plot")
    parser.add_argument("--reanalyse", type=Path, metavar="JSON",
                        help="measure nothing: redo the tables, fits and plot from the points of "
                             "a results file (written to --out and --plot)")
    parser.add_argument("--point", help=argparse.SUPPRESS)  # internal: one point, JSON
    args = parser.parse_args(argv)
    if args.point:
        print(json.dumps(measure_point(json.loads(args.point), args.torch_threads)), flush=True)
        return
    if args.reanalyse:
        saved = json.loads(args.reanalyse.read_text())
        points = [{**p, **step_costs(p)} for p in saved["points"]]
        report(points, {**saved["meta"], "reanalysed": time.strftime("%Y-%m-%d")}, args.out,
               args.plot)
        return

    sweeps = Sweeps.quick() if args.quick else Sweeps()
    set_torch_threads(args.torch_threads)
    env = environment(PACKAGES)
    env["pinned_to_one_core"] = args.pin
    print(f"{env['cpu']}, {env['cpus']} cpus, torch threads {env['torch_threads']}, "
          f"{'each point on one core' if args.pin else 'XLA threads as XLA chooses'}; "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), flush=True)
    load: dict[str, Any] = {"before": os.getloadavg()}
    start = time.perf_counter()
    ports = check_ports(sweeps.widths if "width" in args.sweeps else ())
    print("torch port agrees: " + ", ".join(f"{k} {v:.1e}" for k, v in ports.items()), flush=True)

    points: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    # a baseline process's peak varies from run to run: the median of ``baseline_runs``
    threads = (args.torch_threads, args.pin)
    baselines = {framework: [run_child(spec("baseline", name, 0), *threads)
                             ["peak_process_mb"] for _ in range(sweeps.baseline_runs)]
                 for framework, name in (("jax", "baseline"), ("torch", "baseline torch"))}
    baseline = {framework: float(np.median(v)) for framework, v in baselines.items()}
    print("baseline processes (imports, network, data), peak MiB: " + "; ".join(
        f"{k} {v:.0f} ({', '.join(f'{x:.0f}' for x in baselines[k])})"
        for k, v in baseline.items()), flush=True)
    runs: dict[tuple, dict[str, Any]] = {}
    for point in plan(sweeps, args.sweeps):
        t0 = time.perf_counter()
        shared = same_run(point) in runs
        if not shared:
            runs[same_run(point)] = run_child(point, *threads)
        result = {**point, **runs[same_run(point)], "shared": shared,
                  "load_1min": os.getloadavg()[0]}
        result.update(step_costs(result))
        seconds[point["sweep"]] = seconds.get(point["sweep"], 0.0) + time.perf_counter() - t0
        result["peak_mb"] = result["peak_process_mb"] - baseline[point["framework"]]
        points.append(result)
        load[f"after_{point['sweep']}"] = os.getloadavg()
        print(f"[{point['sweep']}] {point['series']:24s} {label(point):13s} "
              f"{result['wall_s']:7.2f} s (CPU {result['cpu_s']:.2f}), "
              f"{result['step_ms']:8.2f} ms/step, "
              f"peak {result['peak_mb']:6.0f} MiB, run {fmt(result['run_mb'], 0)} MiB "
              f"(first run {result['first_s']:.1f} s, process {result['child_s']:.0f} s, "
              f"load {os.getloadavg()[0]:.2f}){', measured above' if shared else ''}",
              flush=True)
    elapsed = time.perf_counter() - start
    load["after"] = os.getloadavg()
    meta = {**env, "sweeps": asdict(sweeps), "settings": asdict(Settings()),
            "quick": args.quick, "seconds": elapsed, "sweep_seconds": seconds,
            "load_average": load, "baseline_peak_mb": baseline, "baseline_runs_mb": baselines,
            "port_max_loss_difference": ports,
            "date": time.strftime("%Y-%m-%d")}
    report(points, meta, args.out, args.plot)


def report(points: list[dict[str, Any]], meta: dict[str, Any], out: Path, plot_path: Path) -> None:
    """Print the tables, write the JSON and draw the plot."""
    fitted = fits(points)
    table = tables(points, fitted)
    load = meta["load_average"]
    print("\n" + table)
    print("\n" + load_line(meta["seconds"], load["before"], load["after"]))
    write_results(out, {"meta": meta, "points": points, "fits": fitted, "table": table})
    plot(points, plot_path, f"; torch threads {meta['torch_threads']}, "
         f"{'one core per point' if meta.get('pinned_to_one_core') else 'XLA threads its own'}")
    print(f"wrote {out} and {plot_path}")


if __name__ == "__main__":
    main()
