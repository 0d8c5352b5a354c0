"""Small fits the experiment reports need: the per-width U-curve minimum of loss against
depth (an interim stand-in until `jaxdepth.scaling` lands, see `per_width_minimum`), the
Depth Delusion's critical depth, and a power law by log-log least squares.

U-curve minimum: at one width, fit `loss = a + b ln D + c (ln D)^2` by least squares over
the runs; for c > 0 the minimum is at `ln D* = -b / (2 c)`. Interval: percentile bootstrap
over runs (resample the (D, loss) pairs with replacement, refit; a resample with fewer
than 3 distinct depths is drawn again). With only 3 runs the quadratic interpolates them
exactly and every usable resample is the data itself, so no interval is given (NaN). A resample whose curve has no interior minimum
(c <= 0) puts D* at the end its slope points to (0 or inf), so the interval honestly
widens to an edge when the data do not pin a minimum. The quadratic-in-log-depth form is
our choice (the Depth Delusion, arXiv 2601.20994, does not publish Phi(D, W)).
"""

from __future__ import annotations

import math

import numpy as np

DCRIT_COEFF = 2.43  # D_crit ~= 2.43 ln W (arXiv 2601.20994, §4 of depth-literature.md)
TAU_EXPONENT = 0.44  # tau ~ W^0.44, R^2 = 0.98 (arXiv 2601.20994)


def dcrit_paper(width: float) -> float:
    """`D_crit ~= 2.43 ln W` (The Depth Delusion, arXiv 2601.20994)."""
    return DCRIT_COEFF * math.log(width)


def _quadratic_min(logd, loss) -> float:
    """ln D* of `loss = a + b ln D + c (ln D)^2`; +inf / -inf when c <= 0 (no interior
    minimum: the slope at the data's centre says which end)."""
    c, b, _ = np.polyfit(logd, loss, 2)
    if c > 0:
        return -b / (2.0 * c)
    centre_slope = b + 2.0 * c * float(np.mean(logd))
    return math.inf if centre_slope < 0 else -math.inf


def ucurve_minimum(depths, losses, n_boot: int = 1000, level: float = 0.9,
                   seed: int = 0) -> dict:
    """The minimum of loss over depth at one width (module docstring): `d_star` (fitted),
    `lo`, `hi` (`level` bootstrap interval), `d_best` (the best measured depth), and
    `status`: "interior" (fitted minimum inside the measured depths), "below range",
    "above range" (fitted minimum outside), "no minimum" (c <= 0), or "too few depths"."""
    d = np.asarray(depths, np.float64)
    y = np.asarray(losses, np.float64)
    ok = np.isfinite(d) & np.isfinite(y) & (d > 0)
    d, y = d[ok], y[ok]
    nan = float("nan")
    out = dict(d_star=nan, lo=nan, hi=nan, d_best=nan, n_runs=int(d.size), status="too few depths")
    if d.size:
        out["d_best"] = float(d[np.argmin(y)])
    if np.unique(d).size < 3:
        return out
    logd = np.log(d)
    star = _quadratic_min(logd, y)
    out["d_star"] = float(np.exp(star))
    out["status"] = _where(star, logd)
    if d.size <= 3:
        return out
    rng = np.random.default_rng(seed)
    boots = []
    while len(boots) < n_boot:
        idx = rng.integers(0, d.size, d.size)
        if np.unique(d[idx]).size >= 3:
            boots.append(_quadratic_min(logd[idx], y[idx]))
    q = np.quantile(np.asarray(boots), [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    out.update(lo=float(np.exp(q[0])), hi=float(np.exp(q[1])))
    return out


def _where(star: float, logd) -> str:
    if not math.isfinite(star):
        return "no minimum"
    if star < logd.min():
        return "below range"
    if star > logd.max():
        return "above range"
    return "interior"


def per_width_minimum(depths, losses) -> dict:
    """The per-width U-curve minimum the reports use: `jaxdepth.scaling.ucurve_minimum`
    (parabola in log depth around the observed minimum, residual-bootstrap 95% interval)
    when that package is importable, else the interim `ucurve_minimum` above (delete it
    once jaxdepth.scaling is committed). Keys: d_star, lo, hi, d_best, n_runs, status,
    method."""
    try:
        from jaxdepth.scaling.ucurve import ucurve_minimum as scaling_minimum
    except ImportError:
        return {**ucurve_minimum(depths, losses, level=0.95), "method": "jaxdepth.report.fits"}
    d = np.asarray(depths, np.float64)
    y = np.asarray(losses, np.float64)
    ok = np.isfinite(d) & np.isfinite(y) & (d > 0)
    nan = float("nan")
    if not ok.any():
        return dict(d_star=nan, lo=nan, hi=nan, d_best=nan, n_runs=0, status="too_few_depths",
                    method="jaxdepth.scaling")
    m = scaling_minimum(d[ok], y[ok])
    lo, hi = m["interval"] or (nan, nan)
    return dict(d_star=m["depth_min"] if m["status"] == "ok" else nan, lo=lo, hi=hi,
                d_best=m["observed_best_depth"], n_runs=int(ok.sum()), status=m["status"],
                method="jaxdepth.scaling")


def power_law(x, y) -> dict:
    """`y = k x^p` by least squares on `ln y = ln k + p ln x` (numpy.polyfit, degree 1), as
    the Depth Delusion fits `tau ~ W^0.44` (arXiv 2601.20994): p, its standard error
    (needs 3+ points), R^2, k and the points used (finite, positive)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    nan = float("nan")
    n = int(ok.sum())
    if n < 2:
        return dict(p=nan, p_stderr=nan, r2=nan, k=nan, n=n)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    p, lk = np.polyfit(lx, ly, 1)
    resid = ly - (lk + p * lx)
    ss_res, ss_tot = float(np.sum(resid ** 2)), float(np.sum((ly - ly.mean()) ** 2))
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    se = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 and sxx > 0 else nan
    return dict(p=float(p), p_stderr=se, r2=1 - ss_res / ss_tot if ss_tot > 0 else nan,
                k=float(np.exp(lk)), n=n)
