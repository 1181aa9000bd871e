"""Is a run trustworthy? Checks of an SGLD run's chains and parameters, each with what to change.

The criteria are those of docs/formulas.md ("Calibration"). For every chain of an SGLD run (a
finished ``MCMC``, a ``CheckpointedRun``, ``InferenceData``, ``DataTree`` or ``sample_stats``
Dataset) :func:`check_chains` looks at

- **divergence**: a non-finite loss or gradient, or a loss excess L_B − L_n(w*) above the kernel's
  ``max_excess_loss`` (``diverged_at >= 0``, recorded by the kernel); and an exploded estimate,
  λ̂_c > ``explode_ratio`` · d/2 with d the number of sampled parameters (d/2 is the largest LLC a
  model of d parameters has);
- **MALA acceptance**: the mean of ``mala_accept``; below ``mala_min`` the step size ε is too large
  for the curvature (λ̂ is biased upwards); above ``mala_max`` the chain barely moves, which is
  flagged only when the run also mixes badly (R-hat or ESS of the LLC trace or of a parameter);
- **drift**: the z-score of the change in the LLC trace between the first and the last third,
  z = (m₃ − m₁) / √(s₁²/ESS₁ + s₃²/ESS₃); |z| > ``drift_z`` means the loss is still moving
  (burn-in too short, or the chain is leaving w*);
- **escape**: the mean ``distance`` from w* in the last third over the first third; above
  ``escape_ratio`` the localization γ is too weak to hold the chain;
- **sign**: a negative λ̂ (the mean or any chain): the chains found losses below L_n(w*), so w* is
  not a local minimum of L_n or the chain drifted away from it;

and, for information only (no verdict depends on them), the median ratios of the step's noise
and localization norms to its likelihood drift (``noise_drift``, ``localization_drift`` in the
table; see docs/formulas.md, "Step norms"), when the run records them;

and, across chains, the R-hat and bulk ESS of the LLC trace and of the parameters' draws when the
source has them (every coordinate of a site with at most ``site_coords`` coordinates; of a larger
site its first ``site_coords`` coordinates and its norm): R-hat > ``rhat_max`` or
ESS < ``ess_min`` flag the run. The standard error of λ̂ is sd(trace)/√ESS unless the spread
between chains, std(λ̂_c)/√chains, is more than ``precision_ratio`` times larger: then the trace's
ESS is not credible, the report says so and quotes the spread between chains.

Advice on the step size never contradicts itself: when any chain diverges or accepts too few MALA
moves the report says "reduce step_size" and never "raise step_size".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .._arviz import posterior_group, sample_stats
from ..diagnostics import ess_rhat, ess_rhat_columns
from ..estimators.llc import llc

__all__ = ["ChainReport", "check_chains"]


@dataclass
class ChainReport:
    """Per-chain figures (``table``), run-level figures and the problems found, with advice.

    ``table`` has, per chain, ``llc``, ``mala_accept``, ``drift_z``, ``escape`` (the distance
    ratio), and ``noise_drift`` and ``localization_drift`` (median ratios of the step norms,
    information only; NaN when the run does not record them). ``rhat``/``ess``: of the LLC trace.
    ``llc``/``llc_se``: the estimate and its standard error, from the trace's ESS or, when that
    is not credible, from the spread between chains (``llc_se_source`` says which).
    ``parameters``: worst R-hat and least bulk ESS per site (dim ``site``), empty when the source
    holds no parameter draws.
    """

    table: xr.Dataset
    rhat: float
    ess: float
    problems: list[str] = field(default_factory=list)
    llc: float = float("nan")
    llc_se: float = float("nan")
    llc_se_source: str = ""
    parameters: xr.Dataset = field(default_factory=xr.Dataset)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if "chain" not in self.table.dims:
            lines = ["no usable chain: every chain diverged"]
        else:
            lines = [f"LLC {self.llc:.4g} ± {self.llc_se:.2g} (standard error from "
                     f"{self.llc_se_source}); LLC trace: R-hat {self.rhat:.3f}, "
                     f"bulk ESS {self.ess:.0f}"]
            for site in self.parameters.coords.get("site", xr.DataArray([])).values:
                row = self.parameters.sel(site=site)
                lines.append(f"site {site}: worst R-hat {float(row.rhat):.3f}, "
                             f"least bulk ESS {float(row.ess):.0f}")
            for chain in self.table.chain.values:
                row = self.table.sel(chain=chain)
                line = (f"chain {chain}: llc {float(row.llc):.4g}, "
                        f"mala {float(row.mala_accept):.3f}, drift z {float(row.drift_z):+.1f}, "
                        f"distance ratio {float(row.escape):.2f}")
                if "noise_drift" in row and np.isfinite(float(row.noise_drift)):
                    line += (f", noise/drift {float(row.noise_drift):.3g}, "
                             f"localization/drift {float(row.localization_drift):.3g}")
                lines.append(line)
        lines += ["OK: no problem found"] if self.ok else [f"PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


def check_chains(
    source: Any,
    *,
    rhat_max: float = 1.05,
    ess_min: float = 100.0,
    mala_min: float = 0.9,
    mala_max: float = 0.999,
    drift_z: float = 4.0,
    escape_ratio: float = 2.0,
    precision_ratio: float = 3.0,
    explode_ratio: float = 10.0,
    site_coords: int = 16,
    num_params: int | None = None,
) -> ChainReport:
    """Check every chain of an SGLD run and say what to change. See the module docstring.

    :param num_params: d, the number of sampled parameters, for the explosion check; read from
        the parameter draws (or an ``MCMC``'s last state) when not given.
    """
    stats = sample_stats(source)
    problems: list[str] = []
    num_chains = stats.sizes["chain"]
    diverged_at = (np.asarray(stats["diverged_at"])[:, -1] if "diverged_at" in stats
                   else np.full(num_chains, -1))
    finite = (np.all(np.isfinite(np.asarray(stats["mean_excess_loss"], dtype=float)), axis=1)
              if "mean_excess_loss" in stats else np.ones(num_chains, bool))
    bad = (diverged_at >= 0) | ~finite
    if bad.any():
        where = ", ".join(
            f"chain {c} at step {int(diverged_at[c]) if diverged_at[c] >= 0 else 'unknown'}"
            for c in np.flatnonzero(bad))
        if bad.all():
            problems.append(
                f"every chain diverged ({where}): a NaN or infinite loss or gradient, or a loss "
                "excess above the kernel's max_excess_loss; no LLC can be estimated; reduce "
                "step_size (by 10x or more; check that mala_accept stays at or above "
                f"{mala_min}), or raise gamma, and check that the loss is finite at the center")
            return ChainReport(xr.Dataset(), float("nan"), float("nan"), problems)
        problems.append(f"diverged ({where}): a NaN or infinite loss or gradient, or a loss excess "
                        "above the kernel's max_excess_loss; reduce step_size, or raise gamma")
        result = llc(stats, on_divergence="drop")
    else:
        result = llc(stats)
    chains = np.flatnonzero(~bad)
    chain_ids = result.chain.values
    trace = result.llc_trace.values
    per_chain = result.llc_per_chain.values
    thirds = max(trace.shape[1] // 3, 2)
    first, last = trace[:, :thirds], trace[:, -thirds:]
    drift = np.array([_drift(a, b) for a, b in zip(first, last, strict=True)])
    mala = _per_chain_mean(stats, "mala_accept", chains)
    distance = np.asarray(stats["distance"], dtype=float)[chains] if "distance" in stats else None
    escape = (distance[:, -thirds:].mean(1) / np.maximum(distance[:, :thirds].mean(1), 1e-300)
              if distance is not None else np.full(len(chains), np.nan))
    table = xr.Dataset(
        {"llc": ("chain", per_chain), "mala_accept": ("chain", mala),
         "drift_z": ("chain", drift), "escape": ("chain", escape),
         "noise_drift": ("chain", _median_ratio(stats, "noise_norm", "drift_norm", chains)),
         "localization_drift": ("chain", _median_ratio(stats, "localization_norm", "drift_norm",
                                                       chains))},
        coords={"chain": chain_ids},
    )
    draws = _parameter_draws(source)
    d = num_params if num_params is not None else _count_params(source, draws)

    # -- divergence and the step size: decided once, so the advice never contradicts itself
    exploded = []
    if d:
        ceiling = explode_ratio * d / 2
        exploded = [(c, v) for c, v in zip(chain_ids, per_chain, strict=True) if v > ceiling]
        for c, v in exploded:
            problems.append(
                f"chain {c} diverges: λ̂ = {v:.4g} is above {explode_ratio:g} × d/2 = {ceiling:.4g} "
                f"(d = {d} parameters; no model of d parameters has an LLC above d/2): the step "
                "size is far too large; reduce step_size")
    low_mala = [(c, m) for c, m in zip(chain_ids, mala, strict=True) if m < mala_min]
    reduce_step = bool(bad.any() or exploded or low_mala)
    for c, value in low_mala:
        problems.append(f"chain {c}: MALA acceptance {value:.3f} < {mala_min}: the step size "
                        "is too large for the curvature (λ̂ is biased up); reduce step_size")

    # -- mixing: the LLC trace and the parameters
    rhat, ess = float(result.loss_rhat), float(result.loss_ess)
    mixing: list[str] = []
    if rhat > rhat_max:
        mixing.append(f"LLC trace R-hat {rhat:.3f} > {rhat_max}: chains disagree; run longer or "
                      "add burn-in")
    if ess < ess_min:
        mixing.append(f"LLC trace bulk ESS {ess:.0f} < {ess_min:.0f}: too few effective draws; "
                      "run longer or use control_variate=True")
    parameters = _parameter_mixing({k: v[chains] for k, v in draws.items()}, site_coords)
    for site in parameters.site.values if "site" in parameters.dims else []:
        row, site = parameters.sel(site=site), str(site)
        site_rhat, site_ess = float(row.rhat), float(row.ess)
        if site_rhat > rhat_max or site_ess < ess_min:
            mixing.append(
                f"site {site!r} mixes badly: worst R-hat {site_rhat:.3f} "
                f"(at {row.rhat_at.item()}), "
                f"least bulk ESS {site_ess:.0f} (at {row.ess_at.item()}); thresholds R-hat ≤ "
                f"{rhat_max}, ESS ≥ {ess_min:.0f}. The LLC trace can look converged while the "
                "parameters are not: run longer (more num_samples), or add chains")
    high_mala = [(c, m) for c, m in zip(chain_ids, mala, strict=True) if m > mala_max]
    if high_mala and mixing and not reduce_step:
        for c, value in high_mala:
            problems.append(f"chain {c}: MALA acceptance {value:.4f} > {mala_max} and the run "
                            "mixes badly: the chain barely moves; raise step_size or run longer")
    problems += mixing

    # -- drift and escape
    for c, z in zip(chain_ids, drift, strict=True):
        if abs(z) > drift_z:
            problems.append(f"chain {c}: the LLC trace still drifts (z = {z:+.1f} between the "
                            "first and last third): lengthen num_warmup or pass burn_in, or raise "
                            "gamma if the chain walks away from w*")
    for c, ratio in zip(chain_ids, escape, strict=True):
        if ratio > escape_ratio:
            problems.append(f"chain {c}: the distance from w* grew {ratio:.1f}-fold: the "
                            "localization is too weak; raise gamma (or lower nbeta)")

    # -- precision: from the trace's ESS, or from the spread between chains when that is larger
    mean = float(result.llc_mean)
    se_trace = (float(np.std(trace, ddof=1) / np.sqrt(ess))
                if np.isfinite(ess) and ess > 0 else float("nan"))
    se_between = (float(np.std(per_chain, ddof=1) / np.sqrt(len(per_chain)))
                  if len(per_chain) > 1 else float("nan"))
    llc_se, se_source = se_trace, "the LLC trace's ESS"
    if se_between > 0 and not se_between <= precision_ratio * se_trace:  # NaN se_trace: judged
        llc_se, se_source = se_between, "the spread between chains"
        implied = (f"implies a standard error of {se_trace:.3g}" if np.isfinite(se_trace)
                   else "cannot be judged")
        problems.append(
            f"the LLC trace's ESS ({ess:.0f}) is not credible: it {implied}, while the spread "
            f"between chains, std/√chains, gives {se_between:.3g}; quote λ̂ = {mean:.4g} ± "
            f"{se_between:.3g} and run more chains or longer chains")

    # -- sign
    negative = [(c, v) for c, v in zip(chain_ids, per_chain, strict=True) if v < 0]
    if mean < 0 or negative:
        below = float(np.mean(result.loss_trace.values < float(result.init_loss)))
        which = ", ".join(f"chain {c}: {v:.4g}" for c, v in negative)
        noise = (" It is within twice its standard error of 0, so at an LLC near 0 it may be "
                 "noise; run longer to tell." if np.isfinite(llc_se) and abs(mean) < 2 * llc_se
                 else "")
        problems.append(
            f"negative LLC (mean {mean:.4g}; {which}): the chains find losses below L_n(w*) "
            f"({below:.0%} of the draws' losses are below it), so w* is not a local minimum of "
            "L_n, or an unlocalized (gamma = 0) or weakly localized chain drifts away from w*. "
            "Find the minimum (train or optimize further from w* and use that as the center) "
            f"or raise gamma.{noise}")
    return ChainReport(table, rhat, ess, problems, llc=mean, llc_se=llc_se,
                       llc_se_source=se_source, parameters=parameters)


def _parameter_draws(source: Any) -> dict[str, np.ndarray]:
    """The parameter draws of ``source``, site → (chain, draw, ...); empty when it has none."""
    from numpyro.infer import MCMC

    from ..checkpoint import CheckpointedRun

    if isinstance(source, MCMC | CheckpointedRun):
        samples: Any = source.get_samples(group_by_chain=True)
    else:
        try:  # ArviZ data of either line; a sample_stats Dataset has no draws
            samples = posterior_group(source)
        except (TypeError, ValueError):
            samples = {}
    out = {}
    for name in samples:
        values = np.asarray(samples[name])
        if values.ndim >= 2 and np.issubdtype(values.dtype, np.number) and values.size:
            out[str(name)] = values
    return out


def _count_params(source: Any, draws: dict[str, np.ndarray]) -> int | None:
    """d: the coordinates per draw of the parameter draws, or of an ``MCMC``'s last state."""
    if draws:
        return int(sum(np.prod(v.shape[2:], dtype=int) for v in draws.values()))
    from numpyro.infer import MCMC

    if isinstance(source, MCMC):
        z = getattr(getattr(source, "last_state", None), "z", None)
        if isinstance(z, dict) and z:
            total = sum(int(np.size(v)) for v in z.values())
            return total // max(int(source.num_chains), 1)
    return None


def _parameter_mixing(draws: dict[str, np.ndarray], site_coords: int) -> xr.Dataset:
    """Worst R-hat and least bulk ESS per site (and where), over every coordinate of a small
    site, or the first ``site_coords`` coordinates and the norm of a large one."""
    names, rhats, esses, rhat_at, ess_at = [], [], [], [], []
    for name, values in draws.items():
        chains, num_draws = values.shape[:2]
        flat = values.reshape(chains, num_draws, -1).astype(float)
        labels = [name if values.ndim == 2 else f"{name}[{j}]"
                  for j in range(min(flat.shape[2], site_coords))]
        columns = flat[:, :, : len(labels)]
        if flat.shape[2] > site_coords:
            norm = np.linalg.norm(flat, axis=2)[:, :, None]
            columns = np.concatenate([columns, norm], axis=2)
            labels.append(f"‖{name}‖")
        ess, rhat = ess_rhat_columns(columns)  # ArviZ's warnings are silenced there
        if not (np.isfinite(ess).any() and np.isfinite(rhat).any()):
            continue
        worst, least = int(np.nanargmax(rhat)), int(np.nanargmin(ess))
        names.append(name)
        rhats.append(rhat[worst])
        esses.append(ess[least])
        rhat_at.append(labels[worst])
        ess_at.append(labels[least])
    if not names:
        return xr.Dataset()
    return xr.Dataset({"rhat": ("site", rhats), "ess": ("site", esses),
                       "rhat_at": ("site", rhat_at), "ess_at": ("site", ess_at)},
                      coords={"site": names})


def _drift(first: np.ndarray, last: np.ndarray) -> float:
    ess_first, _ = ess_rhat(first[None, :])
    ess_last, _ = ess_rhat(last[None, :])
    variance = (first.var(ddof=1) / max(ess_first, 1.0)) + (last.var(ddof=1) / max(ess_last, 1.0))
    if not np.isfinite(variance) or variance <= 0:
        return 0.0
    return float((last.mean() - first.mean()) / np.sqrt(variance))


def _median_ratio(stats: xr.Dataset, top: str, bottom: str, chains: np.ndarray) -> np.ndarray:
    """Per chain, the median over draws of ``stats[top] / stats[bottom]`` (NaN where the run
    lacks them; draws where either is NaN, as in segments of an older version, are left out)."""
    if top not in stats or bottom not in stats:
        return np.full(len(chains), np.nan)
    a = np.asarray(stats[top], dtype=float)[chains]
    b = np.asarray(stats[bottom], dtype=float)[chains]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / b
    ratio[np.isnan(a) | np.isnan(b)] = np.nan
    out = np.full(len(chains), np.nan)
    for j, row in enumerate(ratio):
        if not np.all(np.isnan(row)):
            out[j] = np.nanmedian(row)
    return out


def _per_chain_mean(stats: xr.Dataset, name: str, chains: np.ndarray) -> np.ndarray:
    if name not in stats:
        return np.full(len(chains), np.nan)
    return np.asarray(stats[name], dtype=float)[chains].mean(axis=1)
