"""Quantities derived from a fitted law: critical depth, compute-optimal allocation and
shape, and the extrapolation check.

- Compute-optimal allocation: minimise the fitted `L` subject to `C = 6 N T` (Kaplan et
  al. 2020, arXiv 2001.08361; Hoffmann et al. 2022, arXiv 2203.15556, eq. 4), with
  `N = 12 D W^2` for the depth/width law, over `(log D, log W)`; the exponents of
  `D*(C)`, `W*(C)`, `N*(C)`, `T*(C)` are least-squares slopes in log-log over a stated range
  of C (The Depth Delusion, arXiv 2601.20994, reports D* ~ C^0.12, W* ~ C^0.34).
- Extrapolation check: fit on runs at or below a compute (or token) cutoff and report the
  error on the runs above it.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from jaxdepth.errors import UserError
from jaxdepth.scaling.fit import FitOptions, fit
from jaxdepth.scaling.laws import Law
from jaxdepth.scaling.objective import log_predict

# search box for compute-optimal shapes; an optimum on its edge is reported as unbounded
DEPTH_BOUNDS = (1.0, 1e4)
WIDTH_BOUNDS = (1.0, 1e7)
PARAMS_BOUNDS = (1e2, 1e16)


def critical_depth(law: Law, theta, context, widths) -> np.ndarray:
    """`D_crit(W) = kappa W^p`: the loss-minimising depth at fixed width (inf when the law
    has no such minimum, e.g. Phi = 0)."""
    widths = np.asarray(widths, float)
    if law.phi is None:
        return np.full(widths.shape, np.nan)
    return law.phi.critical_depth(law.natural(theta, context), widths)


def _has_shape(law: Law) -> bool:
    return law.phi is not None and law.phi.name != "none"


def _log_loss_fn(law: Law, theta, context, compute: float):
    coef = law.coefficient_matrix(theta, context)

    def log_loss_at(log_d, log_w):
        d, w = np.exp(log_d), np.exp(log_w)
        n = 12.0 * d * w * w
        cols = {"params": n, "tokens": compute / (6.0 * n), "depth": d, "width": w}
        return log_predict(coef, law.features(cols))
    return log_loss_at


def optimal_allocation(law: Law, theta, context, compute: float) -> dict:
    """Minimise the fitted law at compute C = 6 N T. Returns params, tokens, loss, and for
    a law with a shape term depth and width; `at_bound` flags an optimum on the search box
    edge (the law has no interior optimum there)."""
    if not _has_shape(law):
        # loss depends on N and T only: one dimension; shape is not determined
        def f(log_n):
            log_n = np.atleast_1d(log_n)
            n = np.exp(log_n)
            cols = {"params": n, "tokens": compute / (6 * n), "depth": np.ones_like(n),
                    "width": np.sqrt(n / 12.0)}
            return law.log_loss(theta, context, cols)
        lo, hi = np.log(PARAMS_BOUNDS)
        grid = np.linspace(lo, hi, 400)
        i = int(np.argmin(f(grid)))
        res = scipy.optimize.minimize_scalar(lambda x: f(x)[0], method="bounded",
                                             bounds=(grid[max(i - 1, 0)], grid[min(i + 1, 399)]))
        n = float(np.exp(res.x))
        return {"compute": compute, "params": n, "tokens": compute / (6 * n),
                "loss": float(np.exp(res.fun)), "depth": np.nan, "width": np.nan,
                "at_bound": bool(i in (0, 399))}
    g = _log_loss_fn(law, theta, context, compute)
    bounds = [tuple(np.log(DEPTH_BOUNDS)), tuple(np.log(WIDTH_BOUNDS))]
    ld, lw = np.meshgrid(np.linspace(*bounds[0], 61), np.linspace(*bounds[1], 121))
    vals = g(ld.ravel(), lw.ravel())
    vals = np.where(np.isfinite(vals), vals, np.inf)
    i = int(np.argmin(vals))
    res = scipy.optimize.minimize(lambda x: float(g(x[:1], x[1:])[0]),
                                  [ld.ravel()[i], lw.ravel()[i]], method="L-BFGS-B",
                                  bounds=bounds)
    d, w = np.exp(res.x)
    n = 12.0 * d * w * w
    at_bound = any(min(abs(x - b[0]), abs(x - b[1])) < 1e-3 for x, b in zip(res.x, bounds))
    return {"compute": compute, "params": float(n), "tokens": float(compute / (6 * n)),
            "loss": float(np.exp(res.fun)), "depth": float(d), "width": float(w),
            "at_bound": bool(at_bound)}


def compute_optimal_exponents(law: Law, theta, context, c_min: float, c_max: float,
                              n_points: int = 7) -> dict:
    """Exponents of C of the optimal depth, width, params, tokens over [c_min, c_max]
    (log-log least-squares slopes over `n_points` log-spaced budgets). An exponent is NaN
    when any optimum in the range is on the search-box edge."""
    budgets = np.geomspace(c_min, c_max, n_points) if c_max > c_min else np.array([c_min])
    opts = [optimal_allocation(law, theta, context, float(c)) for c in budgets]
    out = {"compute_range": [float(c_min), float(c_max)], "n_points": len(budgets),
           "at_bound": any(o["at_bound"] for o in opts)}
    for key in ("depth", "width", "params", "tokens"):
        y = np.array([o[key] for o in opts], float)
        ok = len(budgets) > 1 and np.all(np.isfinite(y)) and not out["at_bound"]
        out[f"{key}_exponent"] = float(np.polyfit(np.log(budgets), np.log(y), 1)[0]) if ok \
            else float("nan")
    out["optima"] = opts
    return out


def chinchilla_allocation_exponents(natural: dict) -> dict:
    """Closed form for `E + A/N^alpha + B/T^beta`: N* ~ C^{beta/(alpha+beta)},
    T* ~ C^{alpha/(alpha+beta)} (arXiv 2203.15556, eq. 4)."""
    s = natural["alpha"] + natural["beta"]
    return {"params_exponent": natural["beta"] / s, "tokens_exponent": natural["alpha"] / s}


def extrapolation_check(law: Law, columns: dict, cutoff: float, by: str = "flops",
                        opts: FitOptions | None = None) -> dict:
    """Fit on runs with `columns[by] <= cutoff`, report loss errors on the runs above."""
    opts = opts or FitOptions()
    x = np.asarray(columns[by], float)
    train, test = x <= cutoff, x > cutoff
    if train.sum() <= len(law.param_names) or test.sum() == 0:
        raise UserError(f"extrapolation cutoff {by} = {cutoff:.4g} leaves {int(train.sum())} "
                        f"runs to fit {law.name} ({len(law.param_names)} parameters) and "
                        f"{int(test.sum())} to test; choose a cutoff in "
                        f"[{x.min():.4g}, {x.max():.4g})")
    sub = {k: np.asarray(v)[train] for k, v in columns.items()}
    held = {k: np.asarray(v)[test] for k, v in columns.items()}
    res = fit(law, sub, opts)
    pred = res.predict(held)
    err = pred - np.asarray(held["loss"], float)
    return {"law": law.name, "by": by, "cutoff": float(cutoff), "n_train": int(train.sum()),
            "n_test": int(test.sum()), "mae": float(np.mean(np.abs(err))),
            "rmse": float(np.sqrt(np.mean(err ** 2))), "max_abs_error": float(np.abs(err).max()),
            "mean_error": float(err.mean()),
            "mean_abs_rel_error": float(np.mean(np.abs(err) / held["loss"])),
            "train_fit_natural": res.natural}
