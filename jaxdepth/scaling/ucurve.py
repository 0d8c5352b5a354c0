"""Loss-minimising depth at one width, from a depth sweep alone (no law needed).

A parabola in log depth is fitted around the observed minimum, as Hoffmann et al. 2022
(arXiv 2203.15556, approach 2) fit parabolas in log N to IsoFLOP profiles; its vertex is
the estimate. The interval is a residual bootstrap (fixed design: the depths are chosen,
the losses are noisy; Efron & Tibshirani 1993, ch. 9): refit on `fitted + resampled
residuals` and take percentiles of the vertex. It needs at least MIN_DOF residual degrees
of freedom: with one run per depth the window's 4 or 5 depths leave 1 or 2, and a noise
scale read off one or two residuals is no estimate (a near-perfect parabola through four
points then gives an absurdly narrow interval). Repeated seeds are the remedy.

`bracket` is the model-free interval: for a unimodal loss(D), the minimum lies between the
depths on either side of the observed best, whatever the shape of the U; half-open
([0, second depth] or [second-deepest depth, inf]) when the best is at an edge of the sweep.

Nothing here is specific to depth: any positive x swept on a log grid works, and the
learning-rate transfer report (`jaxdepth.report.lr_transfer`) passes the learning rate as
`depth` (the keys keep their depth names: `depth_min` is then the optimal learning rate).
"""

from __future__ import annotations

import numpy as np

MIN_DOF = 3  # residual degrees of freedom the bootstrap interval needs


def _vertex(u, y):
    """Vertex (u*, curvature) of the least-squares parabola y ~ c0 + c1 u + c2 u^2."""
    c2, c1, _ = np.polyfit(u, y, 2)
    return (-c1 / (2 * c2) if c2 > 0 else np.nan), c2


def ucurve_minimum(depth, loss, window: int = 5, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Depth that minimises loss at fixed width, with a bootstrap interval.

    `window`: how many distinct depths around the observed minimum enter the parabola
    (at least 3). Returns a dict with `depth_min`, `interval` (bootstrap [lo, hi], or None
    below MIN_DOF residual degrees of freedom), `bracket` (the depths either side of the
    observed best, open-ended at an edge; None below 3 depths), `status` (`ok`,
    `at_lower_edge`, `at_upper_edge`, `no_curvature`), the depths used, and notes."""
    depth, loss = np.asarray(depth, float), np.asarray(loss, float)
    levels = np.unique(depth)
    mean_loss = np.array([loss[depth == d].mean() for d in levels])
    i = int(np.argmin(mean_loss))
    out = {"observed_best_depth": float(levels[i]), "observed_best_loss": float(mean_loss[i]),
           "depth_min": float(levels[i]), "interval": None, "bracket": None, "depths_used": [],
           "notes": []}
    if len(levels) < 3:
        out.update(status="too_few_depths")
        out["notes"].append("need at least 3 distinct depths")
        return out
    out["bracket"] = [float(levels[i - 1]) if i > 0 else 0.0,
                      float(levels[i + 1]) if i < len(levels) - 1 else float("inf")]
    if i == 0 or i == len(levels) - 1:
        out.update(status="at_lower_edge" if i == 0 else "at_upper_edge")
        out["notes"].append("the lowest loss is at the edge of the sweep: the minimum is "
                            "outside the depths run")
        return out
    half = max(1, window // 2)
    lo, hi = max(0, i - half), min(len(levels), i + half + 1)
    used = levels[lo:hi]
    mask = np.isin(depth, used)
    u, y = np.log(depth[mask]), loss[mask]
    u_star, c2 = _vertex(u, y)
    out["depths_used"] = [float(d) for d in used]
    if not np.isfinite(u_star):
        out.update(status="no_curvature")
        return out
    out.update(status="ok", depth_min=float(np.exp(u_star)), curvature=float(c2))
    fitted = np.polyval(np.polyfit(u, y, 2), u)
    resid = y - fitted
    dof = len(y) - 3
    if dof < MIN_DOF or np.allclose(resid, 0):
        out["notes"].append(f"{dof} residual degrees of freedom (need {MIN_DOF}): no bootstrap "
                            "interval; add repeated seeds (the bracket still holds)")
        return out
    resid = (resid - resid.mean()) * np.sqrt(len(y) / dof)
    rng = np.random.default_rng(seed)
    draws = fitted + rng.choice(resid, size=(n_boot, len(y)), replace=True)
    stars = np.array([_vertex(u, d)[0] for d in draws])
    finite = stars[np.isfinite(stars)]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    if len(finite):
        out["interval"] = [float(v) for v in np.exp(np.percentile(finite, q))]
    out["n_boot_no_minimum"] = int(len(stars) - len(finite))
    return out
