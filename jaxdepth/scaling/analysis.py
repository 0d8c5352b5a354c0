"""One full analysis of a table of runs: fit, bootstrap intervals, derived quantities,
extrapolation check against the baseline, per-width U-curve minima. Pure: takes `Runs`,
returns a JSON-ready dict plus the fit objects (the CLI writes files and plots)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jaxdepth.scaling import derived
from jaxdepth.scaling.bootstrap import bootstrap_intervals
from jaxdepth.scaling.fit import FitOptions, FitResult, fit
from jaxdepth.scaling.laws import get_law
from jaxdepth.scaling.table import Runs
from jaxdepth.scaling.ucurve import ucurve_minimum


@dataclass
class AnalysisOptions:
    law: str = "chinchilla"
    phi: str = "log_aspect"
    irreducible: bool = True
    n_boot: int = 200
    seed: int = 0
    level: float = 0.95
    cutoff: float | None = None  # extrapolation cutoff; None: 75th percentile of `cutoff_by`
    cutoff_by: str = "flops"
    extrapolation: bool = True
    budget: float | None = None  # compute for the optimal shape; None: largest in the data
    compute_range: tuple[float, float] | None = None  # None: the data's compute range
    fit: FitOptions = field(default_factory=FitOptions)
    progress: bool = True


@dataclass
class Analysis:
    summary: dict
    result: FitResult
    columns: dict


def _compute(columns: dict) -> np.ndarray:
    if "flops" in columns:
        return np.asarray(columns["flops"], float)
    return 6.0 * columns["params"] * columns["tokens"]


def _derived_fn(result: FitResult, widths, c_range, with_shape: bool):
    law, ctx = result.law, result.context

    def f(theta) -> dict:
        out = {}
        if law.phi is not None:
            for w, dc in zip(widths, derived.critical_depth(law, theta, ctx, widths)):
                out[f"D_crit(W={w:g})"] = float(dc)
            out["p"] = float(law.natural(theta, ctx).get("p", np.nan))
        if with_shape:
            e = derived.compute_optimal_exponents(law, theta, ctx, *c_range, n_points=3)
            out.update({k: e[k] for k in ("depth_exponent", "width_exponent",
                                          "params_exponent", "tokens_exponent")})
        return out
    return f


def analyse(runs: Runs, opts: AnalysisOptions) -> Analysis:
    law = get_law(opts.law, opts.phi, opts.irreducible)
    cols = dict(runs.columns)
    res = fit(law, cols, opts.fit)
    # the allocation problem is posed under C = 6 N T, so its range is in those units even
    # when the table's flops column also counts attention
    compute = 6.0 * cols["params"] * cols["tokens"]
    c_range = opts.compute_range or (float(compute.min()), float(compute.max()))
    has_shape = law.phi is not None and law.phi.name != "none"
    widths = [float(w) for w in np.unique(cols["width"])] if law.phi is not None else []
    summary = {
        "source": runs.source, "law": law.name, "n_runs": len(runs), "notes": runs.notes,
        "huber_delta": opts.fit.delta,
        "fit": {"natural": res.natural, "params": res.params(), "objective": res.objective,
                "r2": res.r2, "n_starts": res.n_starts, "timings_s": res.timings,
                "context": {"log_w0": float(res.context[0])} if law.phi else {}},
    }
    summary["warnings"] = identifiability_warnings(law, cols)
    point = _derived_fn(res, widths, c_range, has_shape)(res.theta)
    if opts.n_boot > 0:
        intervals, _ = bootstrap_intervals(
            res, cols, derived=_derived_fn(res, widths, c_range, has_shape), level=opts.level,
            n_boot=opts.n_boot, seed=opts.seed, opts=opts.fit, progress=opts.progress)
        summary["bootstrap"] = {"n": opts.n_boot, "seed": opts.seed, "level": opts.level,
                                "method": "case resampling of runs, percentile intervals",
                                "intervals": intervals}
    if law.phi is not None:
        summary["critical_depth"] = {f"{w:g}": point[f"D_crit(W={w:g})"] for w in widths}
        nat = res.natural
        summary["critical_depth_law"] = {"kappa": nat.get("kappa"), "p": nat.get("p"),
                                         "form": "D_crit(W) = kappa * W^p"}
    if opts.law == "chinchilla":
        summary["compute_optimal_closed_form"] = derived.chinchilla_allocation_exponents(
            res.natural)
    ce = derived.compute_optimal_exponents(law, res.theta, res.context, *c_range)
    ce["compute_definition"] = "C = 6 N T"
    summary["compute_optimal"] = ce
    budget = opts.budget or float(compute.max())
    summary["optimal_shape"] = derived.optimal_allocation(law, res.theta, res.context, budget)
    if opts.extrapolation:
        summary["extrapolation"] = _extrapolation(law, cols, opts)
    if "depth" in cols and "width" in cols:
        summary["ucurves"] = _ucurves(cols, opts.seed)
    return Analysis(summary, res, cols)


def identifiability_warnings(law, cols) -> list[str]:
    """Plain-language notes on parameters the runs cannot pin down."""
    out = []
    n, k = len(cols["loss"]), len(law.param_names)
    if n < 3 * k:
        out.append(f"{n} runs for {k} parameters: expect wide intervals; fewer than 3 runs "
                   "per parameter rarely determines a law")
    n_tokens = len(np.unique(cols["tokens"]))
    if n_tokens <= 2:
        out.append(f"tokens take {n_tokens} distinct value(s): E, B and the token exponent "
                   "are not separately identifiable (only their sum at those budgets is); "
                   "vary the training length to fit them")
    if law.phi is not None and law.phi.name != "none":
        if len(np.unique(cols["width"])) < 2:
            out.append("one width: the width exponent p of D_crit(W) is not identifiable")
        if len(np.unique(cols["depth"])) < 3:
            out.append("fewer than 3 depths: a U-shape in depth cannot be seen")
    return out


def _extrapolation(law, cols, opts: AnalysisOptions) -> list[dict]:
    by = opts.cutoff_by
    x = _compute(cols) if by == "flops" else np.asarray(cols[by], float)
    cols = {**cols, by: x}
    levels = np.unique(x)
    cutoff = opts.cutoff
    if cutoff is None:  # the largest level at or below the 75th percentile, so some are held out
        below = levels[levels <= np.quantile(x, 0.75)]
        cutoff = float(below[-1] if len(below) and below[-1] < levels[-1] else levels[-2]) \
            if len(levels) > 1 else float(levels[0])
    laws = [law] + ([get_law("depth_width", "none", opts.irreducible)]
                    if law.phi is not None and law.phi.name != "none" else [])
    out = []
    for lw in laws:
        try:
            out.append(derived.extrapolation_check(lw, cols, cutoff, by, opts.fit))
        except Exception as e:  # noqa: BLE001 - reported, not fatal: the main fit stands
            out.append({"law": lw.name, "by": by, "cutoff": cutoff, "error": str(e)})
    return out


def _ucurves(cols, seed) -> dict:
    """Per width (at the most common token budget), the U-curve minimum in depth."""
    out = {}
    tokens = np.asarray(cols["tokens"])
    for w in np.unique(cols["width"]):
        m = cols["width"] == w
        vals, counts = np.unique(tokens[m], return_counts=True)
        t = vals[np.argmax(counts)]
        sel = m & np.isclose(tokens, t, rtol=1e-6)
        if len(np.unique(cols["depth"][sel])) >= 3:
            out[f"{w:g}"] = {"tokens": float(t), **ucurve_minimum(cols["depth"][sel],
                                                                  cols["loss"][sel], seed=seed)}
    return out
