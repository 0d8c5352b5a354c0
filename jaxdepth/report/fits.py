"""Small fits the experiment reports need: the per-width U-curve minimum of loss against
depth (from `jaxdepth.scaling`) and a power law by log-log least squares (tau ~ W^p)."""

from __future__ import annotations

import math

import numpy as np


def per_width_minimum(depths, losses) -> dict:
    """The per-width U-curve minimum the reports use: `jaxdepth.scaling.ucurve_minimum`
    (parabola in log depth around the observed minimum, residual-bootstrap 95% interval;
    arXiv 2203.15556 approach 2 style), in the reports' keys: d_star (NaN unless the
    minimum is inside the measured depths), lo, hi (the bootstrap interval when the runs
    allow one, else the bracket of depths either side of the best, open-ended at an edge of
    the sweep; NaN with fewer than 3 depths),
    interval_from ("bootstrap", "bracket" or ""), d_best (best measured depth), n_runs,
    status, method."""
    from jaxdepth.scaling.ucurve import ucurve_minimum

    d = np.asarray(depths, np.float64)
    y = np.asarray(losses, np.float64)
    ok = np.isfinite(d) & np.isfinite(y) & (d > 0)
    nan = float("nan")
    if not ok.any():
        return dict(d_star=nan, lo=nan, hi=nan, interval_from="", d_best=nan, n_runs=0,
                    status="too_few_depths", method="jaxdepth.scaling")
    m = ucurve_minimum(d[ok], y[ok])
    kind = "bootstrap" if m["interval"] else "bracket" if m["bracket"] else ""
    lo, hi = m["interval"] or m["bracket"] or (nan, nan)
    return dict(d_star=m["depth_min"] if m["status"] == "ok" else nan, lo=lo, hi=hi,
                interval_from=kind, d_best=m["observed_best_depth"], n_runs=int(ok.sum()),
                status=m["status"], method="jaxdepth.scaling")


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
