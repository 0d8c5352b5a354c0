"""Shape terms Phi(D, W) of the depth/width law, one registry entry per form.

The Depth Delusion (arXiv 2601.20994) writes `L(D, W, T) = A N^-alpha + B T^-delta + Phi(D, W)`
and does not publish Phi. Each form here returns the log-linear terms that together make
`A N^-alpha + Phi(D, W)`, over features `(1, log N, log T, log D, log W)`, so every law stays
a log-sum-exp of log-linear terms (the fitting form of arXiv 2203.15556, approach 3). The
critical-depth scale is a power of width, `D_c(W) = kappa W^p` (the form the issue asks
for); internally it is parametrised at a reference width W0 (the geometric mean of the
fitted widths), `log D_c(W) = log_dc0 + p (log W - log W0)`, so that `log_dc0` and `p` are
not nearly collinear as `log kappa` and `p` would be.

Forms:
- `log_aspect` (default): `A N^-alpha + Phi = A N^-alpha cosh(gamma u)`,
  `u = log(D / D_shape(W))`, `D_shape(W) = kappa_shape W^p`; i.e.
  `Phi = A N^-alpha (cosh(gamma u) - 1)`. Why this one: (1) at fixed width N grows like D,
  so loss vs depth is `D^-alpha cosh(gamma u)`, a U whose minimum is at
  `u* = atanh(alpha / gamma) / gamma`, so `D_crit(W) = D_shape(W) e^{u*} = kappa W^p` is a
  power of width exactly, and exists iff `gamma > alpha`; (2) near its minimum it is
  quadratic in log D (the per-width estimator's assumption) and far past it grows like
  a power of depth; (3) it is two-sided, so at fixed N it also penalises shallow-and-wide
  shapes (Kaplan et al. 2020, arXiv 2001.08361, Fig. 5: loss rises at both extremes of
  aspect ratio); the compute-optimal shape is then finite, at `D = D_shape(W)`, giving
  `D* ~ C^{a p/(2+p)}`, `W* ~ C^{a/(2+p)}` with `a = delta/(alpha+delta)`
  (arXiv 2601.20994 reports 0.12 and 0.34, i.e. p ~ 0.35). 3 parameters, no amplitude:
  the penalty is relative to the parameter term, which keeps it identifiable on small sweeps.
- `depth_excess`: one-sided, negligible below D_crit and growing past it:
  `Phi = (A N^-alpha / r) (D / D_crit(W))^{alpha (1 + r)}`, r > 0. At fixed width the loss
  minimum is exactly at `D_crit(W)` and loss rises like `D^{alpha r}` past it. At fixed N it
  only penalises depth, so the compute-optimal shape runs to the shallowest network
  (reported as unbounded).
- `none`: Phi = 0, the Kaplan et al. 2020 (arXiv 2001.08361) shape-independent baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LN2 = float(np.log(2.0))


def _row(xp, const=0.0, log_n=0.0, log_t=0.0, log_d=0.0, log_w=0.0):
    """Coefficients of one log-linear term over the features (1, log N, log T, log D, log W).
    `xp` is the array namespace (jax.numpy when fitting, numpy for reporting and for the
    complex-step Jacobian of the float64 polish)."""
    z = xp.zeros_like(const)
    return xp.stack([z + v for v in (const, log_n, log_t, log_d, log_w)])


def _log_ratio_row(xp, log_dc0, p, log_w0):
    """Row for `u = log D - log D_c(W) = log D - log_dc0 - p (log W - log W0)`."""
    return _row(xp, -log_dc0 + p * log_w0, 0.0, 0.0, 1.0, -p)


@dataclass(frozen=True)
class PhiForm:
    """One shape term. `rows(xp, a, alpha, phi_params, log_w0)` -> the log-linear terms whose sum
    is `A N^-alpha + Phi`; `grid(log_depth)` -> start values per parameter;
    `natural(theta_dict)` -> reported numbers; `critical_depth(nat, width)` -> D_crit(W)."""

    name: str
    param_names: tuple[str, ...]
    rows: Callable
    grid: Callable[[np.ndarray], dict[str, list[float]]]
    natural: Callable[[dict], dict]
    critical_depth: Callable[[dict, np.ndarray], np.ndarray]
    shape_optimal_depth: Callable[[dict, np.ndarray], np.ndarray] | None = None


def _dc_grid(log_depth: np.ndarray) -> list[float]:
    lo, hi = np.quantile(log_depth, [0.25, 0.75])
    return [float(lo), float(hi), float(log_depth.max() + LN2)]


# ---- log_aspect ---------------------------------------------------------------------------

def _aspect_rows(xp, a, alpha, q, log_w0):
    log_ds0, p, gamma = q
    u = _log_ratio_row(xp, log_ds0, p, log_w0)
    base = _row(xp, a - LN2, -alpha)
    return [base + gamma * u, base - gamma * u]


def _aspect_natural(t: dict) -> dict:
    gamma = abs(t["gamma"])
    kappa_shape = float(np.exp(t["log_dshape0"] - t["p"] * t["log_w0"]))
    if gamma > t["alpha"] > 0:
        u_star = float(np.arctanh(t["alpha"] / gamma) / gamma)
        kappa = kappa_shape * float(np.exp(u_star))
    else:  # no minimum in depth at fixed width: loss keeps falling with depth
        kappa = float("inf")
    return {"gamma": gamma, "p": t["p"], "kappa": kappa, "kappa_shape": kappa_shape}


def _aspect_dcrit(nat: dict, width):
    return nat["kappa"] * np.asarray(width, float) ** nat["p"]


def _aspect_dshape(nat: dict, width):
    return nat["kappa_shape"] * np.asarray(width, float) ** nat["p"]


# ---- depth_excess -------------------------------------------------------------------------

def _excess_rows(xp, a, alpha, q, log_w0):
    log_dc0, p, log_r = q
    u = _log_ratio_row(xp, log_dc0, p, log_w0)
    base = _row(xp, a, -alpha)
    return [base, _row(xp, a - log_r, -alpha) + alpha * (1.0 + xp.exp(log_r)) * u]


def _excess_natural(t: dict) -> dict:
    r = float(np.exp(t["log_r"]))
    return {"p": t["p"], "kappa": float(np.exp(t["log_dcrit0"] - t["p"] * t["log_w0"])),
            "r": r, "gamma": t["alpha"] * r}


def _excess_dcrit(nat: dict, width):
    if nat.get("alpha", 1.0) <= 0:
        return np.full(np.shape(width), np.inf)
    return nat["kappa"] * np.asarray(width, float) ** nat["p"]


PHI_FORMS: dict[str, PhiForm] = {
    "log_aspect": PhiForm(
        "log_aspect", ("log_dshape0", "p", "gamma"), _aspect_rows,
        lambda ld: {"log_dshape0": _dc_grid(ld), "p": [0.0, 0.5, 1.0], "gamma": [0.5, 2.0]},
        _aspect_natural, _aspect_dcrit, _aspect_dshape),
    "depth_excess": PhiForm(
        "depth_excess", ("log_dcrit0", "p", "log_r"), _excess_rows,
        lambda ld: {"log_dcrit0": _dc_grid(ld), "p": [0.0, 0.5, 1.0],
                    "log_r": [float(np.log(0.5)), float(np.log(4.0))]},
        _excess_natural, _excess_dcrit),
    "none": PhiForm(
        "none", (), lambda xp, a, alpha, q, log_w0: [_row(xp, a, -alpha)], lambda ld: {},
        lambda t: {}, lambda nat, w: np.full(np.shape(w), np.inf)),
}
