"""Judging the settings of a sweep, and the recommendation (docs/formulas.md, "Calibration").

Each setting's chains are judged by :func:`~numpyro_slt.check_chains` (the one set of chain
verdicts of the library, with the same thresholds), and the sweep adds what one run cannot show:
the ESS and R-hat of a low-noise observable, φ(w) = L_E(w) − L_E(w*) on one fixed evaluation
batch E (the loss without the minibatch noise that makes the LLC trace look well mixed: white
noise has a large ESS), the share of draws below L_n(w*), and the stability of λ̂ when ε is
halved.

A setting is rejected for each criterion it fails, in this order (its ``verdict`` is the first):

=============  ==========================================================================
``diverged``   a chain diverged (NaN, Inf, or a loss excess above ``max_excess_loss``), or
               λ̂_c > ``explode_ratio``·d/2
``mala``       a chain's mean MALA acceptance < ``mala_min``
``dips``       a chain's λ̂_c < 0, or more than ``dip_max`` of the draws lie below L_n(w*)
``drift``      |z| > ``drift_z`` between the first and last third of a chain's LLC trace
``escape``     the distance from w* grew more than ``escape_ratio``-fold
``rhat``       R-hat of the LLC trace or of φ > ``rhat_max``
``ess``        bulk ESS of the LLC trace or of φ < ``ess_min``
``precision``  the spread between chains is more than ``precision_ratio`` times the standard
               error the LLC trace's ESS implies (that ESS is not credible)
``unstable``   |λ̂(ε) − λ̂(ε/2)| > ``stability_z``·√(se(ε)² + se(ε/2)²)
``unjudged``   ε/2 is not in the grid (or has no estimate), so stability cannot be judged
=============  ==========================================================================

**Recommendation.** Among the settings that pass every criterion, the largest ε: the flat
(singular) directions of a localized posterior are held by γ alone and relax at the rate ε·γ
per step, so at a given γ the largest trustworthy ε mixes fastest, whatever nβ. Ties go to the
larger nβ, then to the smaller γ (the weakest localization that holds the chains biases λ̂
least). When no setting passes there is no recommendation; the reasons count the rejections
and say what to change.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import xarray as xr

from .._arviz import stats_dataset
from .._validate import fraction, positive_number
from ..diagnostics import ess_rhat
from ..estimators.llc import llc
from ..report.chain_health import check_chains

__all__ = ["Criteria", "CRITERIA", "ADVICE", "judge_setting", "stability", "recommend",
           "judged_sweep"]

#: The rejection codes, in the order a setting's ``verdict`` reports them.
CRITERIA = ("diverged", "mala", "dips", "drift", "escape", "rhat", "ess", "precision",
            "unstable", "unjudged")

#: What each rejection means and what to change.
ADVICE = {
    "diverged": "a chain diverged (NaN, Inf or an exploding loss): the step size is far too "
                "large",
    "mala": "MALA acceptance below the threshold: the step size is too large for the curvature "
            "(λ̂ is biased up)",
    "dips": "the chains sit below L_n(w*): w* is not a local minimum (use find_center) or the "
            "localization is too weak",
    "drift": "the LLC trace still moves between the first and last third: burn-in too short for "
             "this step size",
    "escape": "the chains walk away from w*: γ is too weak to hold them",
    "rhat": "the chains disagree (R-hat of the LLC trace or of the fixed-batch loss φ): not "
            "mixed within the budget",
    "ess": "too few effective draws (of the LLC trace or of the fixed-batch loss φ): not mixed "
           "within the budget",
    "precision": "the spread between chains is far larger than the LLC trace's ESS implies: "
                 "slow modes the trace does not show",
    "unstable": "λ̂ changes when ε is halved: discretisation bias, or ε/2 does not mix within "
                "the budget",
    "unjudged": "ε/2 is not in the grid, so stability under halving cannot be judged",
}

_CHAIN_CHECK_DEFAULTS = {name: p.default for name, p in
                         inspect.signature(check_chains).parameters.items()
                         if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class Criteria:
    """Thresholds of the calibration. Those shared with :func:`~numpyro_slt.check_chains` take
    its defaults, so a recommended setting passes ``check_chains`` on a run of the same budget.

    :param dip_max: largest share of draws whose loss (window mean since the previous draw) may
        lie below L_n(w*).
    :param stability_z: largest |λ̂(ε) − λ̂(ε/2)| in units of their combined standard error.
    """

    rhat_max: float = _CHAIN_CHECK_DEFAULTS["rhat_max"]
    ess_min: float = _CHAIN_CHECK_DEFAULTS["ess_min"]
    mala_min: float = _CHAIN_CHECK_DEFAULTS["mala_min"]
    drift_z: float = _CHAIN_CHECK_DEFAULTS["drift_z"]
    escape_ratio: float = _CHAIN_CHECK_DEFAULTS["escape_ratio"]
    precision_ratio: float = _CHAIN_CHECK_DEFAULTS["precision_ratio"]
    explode_ratio: float = _CHAIN_CHECK_DEFAULTS["explode_ratio"]
    dip_max: float = 0.5
    stability_z: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            check = fraction if f.name in ("mala_min", "dip_max") else positive_number
            check(f"criteria.{f.name}", getattr(self, f.name))

    def chain_checks(self) -> dict[str, float]:
        """The thresholds :func:`~numpyro_slt.check_chains` takes."""
        return {k: v for k, v in asdict(self).items() if k in _CHAIN_CHECK_DEFAULTS}


def judge_setting(stats: xr.Dataset, num_params: int, criteria: Criteria) -> dict[str, Any]:
    """The figures of one setting's chains (``stats``: the SGLD fields, dims chain × draw) and
    the codes of the criteria it fails (all but ``unstable``/``unjudged``, which need the
    neighbouring setting: :func:`stability`)."""
    num_chains = stats.sizes["chain"]
    report = check_chains(stats, num_params=num_params, **criteria.chain_checks())
    table = report.table
    used = int(table.sizes.get("chain", 0))
    figures: dict[str, Any] = {
        "llc_mean": report.llc, "llc_se": report.llc_se, "llc_std": float("nan"),
        "llc_per_chain": np.full(num_chains, np.nan), "mala_accept": float("nan"),
        "drift_z": float("nan"), "escape": float("nan"), "rhat": report.rhat, "ess": report.ess,
        "observable_rhat": float("nan"), "observable_ess": float("nan"),
        "dip_fraction": float("nan"), "diverged_chains": num_chains - used,
        "detail": "; ".join(report.problems),
    }
    failed: list[str] = []
    if used == 0:
        return {**figures, "failed": ["diverged"]}
    chains = np.asarray(table.chain.values, dtype=int)
    per_chain = np.asarray(table.llc.values, dtype=float)
    figures["llc_per_chain"][chains] = per_chain
    figures["llc_std"] = float(np.std(per_chain, ddof=1)) if used > 1 else float("nan")
    mala = np.asarray(table.mala_accept.values, dtype=float)
    drift = np.asarray(table.drift_z.values, dtype=float)
    escape = np.asarray(table.escape.values, dtype=float)
    figures["mala_accept"] = float(np.min(mala))
    figures["drift_z"] = float(drift[np.argmax(np.abs(drift))])
    figures["escape"] = float(np.max(escape))
    observable = np.asarray(stats["observable"], dtype=float)[chains]
    figures["observable_ess"], figures["observable_rhat"] = ess_rhat(observable)
    # the draws' window-mean losses (since the previous draw) against L_n(w*), usable chains
    trace = llc(stats, on_divergence="drop").llc_trace.values
    figures["dip_fraction"] = float(np.mean(trace < 0.0))

    if used < num_chains or np.any(per_chain > criteria.explode_ratio * num_params / 2):
        failed.append("diverged")
    if np.any(mala < criteria.mala_min):
        failed.append("mala")
    if np.any(per_chain < 0) or figures["dip_fraction"] > criteria.dip_max:
        failed.append("dips")
    if np.any(np.abs(drift) > criteria.drift_z):
        failed.append("drift")
    if np.any(escape > criteria.escape_ratio):
        failed.append("escape")
    if not (report.rhat <= criteria.rhat_max
            and figures["observable_rhat"] <= criteria.rhat_max):
        failed.append("rhat")
    if not (report.ess >= criteria.ess_min and figures["observable_ess"] >= criteria.ess_min):
        failed.append("ess")
    if report.llc_se_source == "the spread between chains":
        failed.append("precision")
    return {**figures, "failed": failed}


def stability(llc: np.ndarray, se: np.ndarray, step_sizes: np.ndarray, z_max: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """z = (λ̂(ε) − λ̂(ε/2)) / √(se(ε)² + se(ε/2)²) along the first axis of ``llc`` and ``se``
    (the step sizes ``step_sizes``), and the code per setting: ``""`` (stable), ``"unstable"``
    or ``"unjudged"`` (no ε/2 in the grid, or no estimate there)."""
    z = np.full(llc.shape, np.nan)
    codes = np.full(llc.shape, "unjudged", dtype=object)
    for i, eps in enumerate(step_sizes):
        half = np.flatnonzero(np.isclose(step_sizes, eps / 2, rtol=1e-6, atol=0.0))
        if half.size == 0:
            continue
        j = int(half[0])
        with np.errstate(invalid="ignore"):
            z[i] = (llc[i] - llc[j]) / np.sqrt(se[i] ** 2 + se[j] ** 2)
        judged = np.isfinite(z[i])
        codes[i] = np.where(judged, np.where(np.abs(z[i]) <= z_max, "", "unstable"), "unjudged")
    return z, codes


def recommend(sweep: xr.Dataset) -> tuple[dict[str, float] | None, list[str]]:
    """The recommended setting of a judged sweep and the reasons, by the rule of the module
    docstring; ``(None, reasons)`` when no setting passes."""
    passed = sweep["verdict"] == "ok"
    settings = [(float(e), float(b), float(g))
                for e in sweep.step_size.values for b in sweep.nbeta.values
                for g in sweep.gamma.values
                if bool(passed.sel(step_size=e, nbeta=b, gamma=g))]
    if not settings:
        return None, _no_setting(sweep)
    eps, nbeta, gamma = max(settings, key=lambda s: (s[0], s[1], -s[2]))
    row = sweep.sel(step_size=eps, nbeta=nbeta, gamma=gamma)
    reasons = [
        f"ε = {eps:.3g} is the largest step size that passes every criterion "
        f"({len(settings)} of {int(passed.size)} settings pass), at nβ = {nbeta:.4g}, "
        f"γ = {gamma:.4g}: λ̂ = {float(row.llc_mean):.4g} ± {float(row.llc_se):.2g}",
        f"stable under halving: λ̂(ε/2) differs by z = {float(row.stability_z):+.2f} combined "
        f"standard errors (limit {sweep.attrs['stability_z']:g})",
        f"MALA acceptance ≥ {float(row.mala_accept):.3f} (limit {sweep.attrs['mala_min']:g}); "
        f"LLC trace R-hat {float(row.rhat):.3f}, ESS {float(row.ess):.0f}; fixed-batch loss φ "
        f"R-hat {float(row.observable_rhat):.3f}, ESS {float(row.observable_ess):.0f}; largest "
        f"drift |z| {abs(float(row.drift_z)):.1f}; {float(row.dip_fraction):.0%} of the draws "
        "below L_n(w*)",
    ]
    larger = [float(e) for e in sweep.step_size.values if e > eps]
    if larger:
        above = sweep.sel(step_size=min(larger), nbeta=nbeta, gamma=gamma)
        reasons.append(f"the next larger ε = {min(larger):.3g} at this nβ and γ is rejected: "
                       f"{str(above.rejected_by.values)}")
    return {"step_size": eps, "nbeta": nbeta, "gamma": gamma}, reasons


def _no_setting(sweep: xr.Dataset) -> list[str]:
    counts = {code: 0 for code in CRITERIA}
    for text in np.ravel(sweep["rejected_by"].values):
        for code in str(text).split(","):
            if code in counts:
                counts[code] += 1
    found = [(code, n) for code, n in counts.items() if n]
    reasons = [f"no setting passes every criterion ({int(sweep['verdict'].size)} settings "
               "judged); rejections: " + ", ".join(f"{code} {n}" for code, n in found)]
    reasons += [f"{code}: {ADVICE[code]}" for code, _ in found]
    reasons.append("try: " + "; ".join(_what_to_try({code for code, _ in found})))
    return reasons


def _what_to_try(codes: set[str]) -> list[str]:
    tries = []
    if codes & {"drift", "rhat", "ess", "precision", "unstable"}:
        tries.append("a longer budget (num_warmup, num_samples) or more chains, so that the "
                     "small step sizes mix")
    if codes & {"diverged", "mala"}:
        tries.append("smaller step sizes (extend step_sizes downwards)")
    if codes & {"dips"}:
        tries.append("a center at a local minimum (slt.find_center) or a larger gamma")
    if codes & {"escape"}:
        tries.append("a larger gamma")
    if codes & {"unjudged"}:
        tries.append("a step-size grid that holds ε/2 for every ε (a factor-2 grid)")
    return tries


def judged_sweep(runs: Any, criteria: Criteria, attrs: dict[str, Any] | None = None
                 ) -> tuple[xr.Dataset, dict[str, float] | None, list[str]]:
    """Judge each setting's chains of ``runs`` (a :class:`~numpyro_slt.calibration.sweep.Runs`),
    then stability along ε: the sweep Dataset over the grid (with ``attrs`` and the thresholds
    in its attributes), the recommended setting and the reasons (:func:`recommend`)."""
    stats, eps_grid, nbeta_grid, gamma_grid = (runs.stats, runs.step_sizes, runs.nbetas,
                                               runs.gammas)
    shape = (eps_grid.size, nbeta_grid.size, gamma_grid.size)
    num_chains = stats["mean_excess_loss"].shape[1]
    judged = []
    with warnings.catch_warnings():  # dropped diverged chains are reported as a rejection
        warnings.simplefilter("ignore")
        for s in range(int(np.prod(shape))):
            fields = {name: values[s] for name, values in stats.items()}
            fields["init_loss"] = np.full_like(fields["mean_excess_loss"], runs.init_loss)
            fields["nbeta"] = np.full_like(fields["mean_excess_loss"],
                                           nbeta_grid[np.unravel_index(s, shape)[1]])
            judged.append(judge_setting(stats_dataset(fields), runs.num_params, criteria))

    def grid(name, dtype=float):
        return np.array([j[name] for j in judged], dtype=dtype).reshape(shape)

    llc, se = grid("llc_mean"), grid("llc_se")
    z, codes = stability(llc, se, eps_grid, criteria.stability_z)
    failed = np.empty(shape, dtype=object)
    for s, j in enumerate(judged):
        index = np.unravel_index(s, shape)
        # a setting without an estimate is rejected already; its stability says nothing more
        extra = [codes[index]] if codes[index] and np.isfinite(llc[index]) else []
        ordered = [c for c in CRITERIA if c in j["failed"] + extra]
        failed[index] = ordered
    dims = ("step_size", "nbeta", "gamma")
    data = {name: (dims, grid(name)) for name in (
        "llc_mean", "llc_se", "llc_std", "mala_accept", "rhat", "ess", "observable_rhat",
        "observable_ess", "drift_z", "escape", "dip_fraction")}
    data["diverged_chains"] = (dims, grid("diverged_chains", int))
    data["stability_z"] = (dims, z)
    data["llc_per_chain"] = ((*dims, "chain"),
                             np.stack([j["llc_per_chain"] for j in judged]).reshape(
                                 *shape, num_chains))
    data["verdict"] = (dims, np.array([f[0] if f else "ok" for f in failed.ravel()],
                                      dtype=str).reshape(shape))
    data["rejected_by"] = (dims, np.array([",".join(f) for f in failed.ravel()],
                                          dtype=str).reshape(shape))
    data["detail"] = (dims, np.array([j["detail"] for j in judged], dtype=str).reshape(shape))
    sweep = xr.Dataset(data, coords={"step_size": eps_grid, "nbeta": nbeta_grid,
                                     "gamma": gamma_grid, "chain": np.arange(num_chains)})
    sweep.attrs.update(attrs or {})
    sweep.attrs.update({k: float(v) for k, v in asdict(criteria).items()})
    recommended, reasons = recommend(sweep)
    return sweep, recommended, reasons
