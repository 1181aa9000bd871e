"""What every benchmark script needs, whatever it measures: timing, processor pinning, memory of a
process, running a measurement in a fresh process, the machine and package versions,
least-squares fits and writing the results file.

The scripts of ``benchmarks/`` run as ``python benchmarks/<script>.py``, so Python puts this folder
on the import path and they import this module as ``common``. It imports JAX and NumPy only
(PyTorch when asked for its thread count), so that ``sgld_overhead.py`` runs without PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]

# -- timing -----------------------------------------------------------------------------------


def jitted_runner(run: Callable[[jax.Array], Any], seed: int = 0) -> Callable[[], Any]:
    """Compile the jitted ``run`` of a key (without spending a run) and return a no-argument call
    of the compiled program on ``PRNGKey(seed)``."""
    key = jax.random.PRNGKey(seed)
    compiled = run.lower(key).compile()
    return lambda: compiled(key)


def time_round_robin(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each ``fn()`` (blocking on its result), ``repeats`` times each.

    Every function runs once untimed first (compilation, first-touch memory), then the timed runs
    go round-robin over the functions, so that a background load hits all variants alike.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def reuse_loop_compilation(cache: dict):
    """A context in which ``MCMC.run`` keeps its compiled sampling loop in ``cache`` and takes it
    from there in later runs (numpyro-slt's workaround for NumPyro 0.22, which compiles the loop
    again in every ``run``). The one place the benchmarks import it from numpyro-slt."""
    from numpyro_slt.utils import reuse_loop_compilation as reuse

    return reuse(cache)


def mcmc_runner(mcmc, key: jax.Array, *args: Any, reuse_compilation: bool = True,
                drop_previous: bool = False) -> Callable[[], None]:
    """A no-argument call doing one full ``mcmc.run(key, *args)`` and waiting for its results
    (draws, extra fields, last state, read with ``group_by_chain=True``: the stored arrays as
    they are, no flattening copy).

    NumPyro 0.22 compiles the sampling loop again in every ``run``; ``reuse_compilation`` keeps
    the first run's compiled loop for the later ones (``reuse_loop_compilation``), so that a timed
    run is sampling only. ``drop_previous`` lets go of the previous run's draws before the next
    run, which NumPyro otherwise holds until that run has finished, so that the memory of a run
    is one run's.
    """
    cache: dict[tuple, Callable] = {}

    def run() -> None:
        if drop_previous:
            mcmc._states = mcmc._states_flat = None
        with reuse_loop_compilation(cache) if reuse_compilation else contextlib.nullcontext():
            mcmc.run(key, *args)
        jax.block_until_ready((mcmc.get_samples(group_by_chain=True),
                               mcmc.get_extra_fields(group_by_chain=True), mcmc.last_state))

    return run


# -- the SGLD noise of a hand-written floor ---------------------------------------------------


def normal_like(key: jax.Array, tree: Params) -> Params:
    """ξ ~ N(0, I) shaped like ``tree``, one key per leaf (as the kernel draws it)."""
    keys = dict(zip(tree, jax.random.split(key, len(tree)), strict=True))
    return {k: jax.random.normal(keys[k], v.shape, v.dtype) for k, v in tree.items()}


def sq_norm(tree: Params) -> jax.Array:
    """‖tree‖², over every leaf."""
    return sum(jnp.sum(v**2) for v in tree.values())


# -- fits -------------------------------------------------------------------------------------


def power_fit(x: list[float], y: list[float]) -> dict[str, float]:
    """y = a·x^b by least squares in log-log (``exponent`` b, ``prefactor`` a), and the straight
    line y = y₀ + c·x (``intercept`` y₀, ``slope`` c)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    b, log_a = np.polyfit(lx, ly, 1)
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return {"exponent": float(b), "prefactor": float(np.exp(log_a)),
            "intercept": float(intercept), "slope": float(slope)}


# -- processors and threads -------------------------------------------------------------------


def pin_to_core(core: int | None = None) -> int:
    """Run this process (and the threads it starts later) on one core: ``core``, or the lowest
    of its affinity set. Call it before XLA and PyTorch start their thread pools, which inherit
    the affinity. Returns the core."""
    if core is None:
        core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def idlest_core(seconds: float = 0.2) -> int:
    """The core of this process's affinity set with the least busy time over ``seconds``."""
    def busy() -> dict[int, int]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if name.startswith("cpu") and name != "cpu":
                values = [int(t) for t in ticks]
                out[int(name[3:])] = sum(values) - values[3] - values[4]  # minus idle, iowait
        return out

    allowed = os.sched_getaffinity(0)
    before = busy()
    time.sleep(seconds)
    after = busy()
    return min(allowed, key=lambda c: after.get(c, 0) - before.get(c, 0))


def set_torch_threads(threads: int) -> None:
    """Set PyTorch's intra-op threads; 0 keeps its default of one per core.

    One thread is the default of the comparison scripts: it matches JAX pinned to one core
    (``--pin``), and with one OpenMP thread per core torch spin-waits whenever another process
    holds a core, which on a shared machine slows every torch step many times over (the figures
    are in docs/benchmarks.md).
    """
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


# -- memory, and measurements in a fresh process ----------------------------------------------

# XLA on one device and one intra-op thread; with jaxlib 0.10.2 that alone does not keep XLA on
# one core (docs/benchmarks.md), so the child processes are also pinned to one (``pin``).
ONE_THREAD_XLA_FLAGS = ("--xla_force_host_platform_device_count=1 "
                        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def memory_status() -> dict[str, float]:
    """VmRSS and VmHWM (peak), RssAnon and RssFile of this process, MiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = int(line.split()[1]) / 1024
    return values


def reset_peak() -> bool:
    """Reset VmHWM to the current VmRSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def run_json_child(args: list[str], *, pin: bool = False, env: dict[str, str] | None = None,
                   timeout: float = 900, what: str = "child") -> dict[str, Any]:
    """Run ``python *args`` in a fresh process and return the last line of its standard output
    that is a JSON object. ``pin`` runs it on one core, the least busy when it starts (a
    trampoline sets the affinity and execs the child, which inherits it); ``env`` is added to
    this process's environment. A failure raises with the end of the child's standard error."""
    command = [sys.executable, *args]
    if pin:
        trampoline = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
                      "os.execv(sys.argv[2], sys.argv[2:])")
        command = [sys.executable, "-c", trampoline, str(idlest_core()), *command]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


# -- the machine, and the results file --------------------------------------------------------


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution of ``names``; None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return cpu


def environment(packages: tuple[str, ...]) -> dict[str, Any]:
    """Python, package versions, processor, cores and PyTorch's thread count (PyTorch must be
    installed), for the results file of a comparison with PyTorch."""
    import torch

    return {"python": platform.python_version(), "versions": package_versions(packages),
            "cpu": cpu_name(), "cpus": os.cpu_count(),
            "cores_used": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(),
            "jax_platform": jax.devices()[0].platform}


def load_line(seconds: float, before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """The closing line of a run: its length and the 1-minute load average around it."""
    return (f"total {seconds:.0f} s; load average {before[0]:.2f} before, {after[0]:.2f} after "
            "(2 busy cores read 2.0; more means a shared machine)")


def write_results(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON (NumPy scalars as floats) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
