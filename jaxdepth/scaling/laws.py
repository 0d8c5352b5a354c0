"""Scaling laws as log-sum-exps of log-linear terms (see `objective.py`).

- `chinchilla`: `L(N, T) = E + A / N^alpha + B / T^beta`, Hoffmann et al. 2022
  (arXiv 2203.15556) approach 3, parameters `(a, b, e, alpha, beta)` with
  `A = e^a, B = e^b, E = e^e`; start grid as in Besiroglu et al. 2024 (arXiv 2404.10102).
- `depth_width`: `L(D, W, T) = A N^-alpha + B T^-delta + Phi(D, W) [+ E]`, the ansatz of
  The Depth Delusion (arXiv 2601.20994) with N = 12 D W^2 (Kaplan et al. 2020,
  arXiv 2001.08361) or a measured count; Phi from `phi.PHI_FORMS`. The paper has no E; it is
  included by default (a loss floor; `irreducible=False` gives the paper's form).

A `Law` is a value: the same object is returned for the same arguments, so the compiled
multi-start solver (cached per law) is reused across fits and bootstrap replicates.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from jaxdepth.errors import UserError
from jaxdepth.scaling.objective import log_predict
from jaxdepth.scaling.phi import PHI_FORMS, PhiForm


@dataclass(frozen=True, eq=False)
class Law:
    """`coefficients(theta_P, context_C, xp) -> coef_KJ` over the features
    `(1, log x for x in feature_names)`; `context(columns)` holds data-derived constants
    (e.g. the reference width); `natural(theta, context)` gives the reported parameters.
    `xp` is jax.numpy (fitting) or numpy; coefficient functions use only arithmetic,
    `xp.stack`, `xp.zeros_like` and `xp.exp`, so they are analytic in theta and the complex
    step gives their exact Jacobian."""

    name: str
    param_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    coefficients: Callable
    default_grid: Callable[[dict], dict[str, list[float]]]
    context: Callable[[dict], np.ndarray]
    natural: Callable[[np.ndarray, np.ndarray], dict]
    phi: PhiForm | None = field(default=None)

    def features(self, columns: dict) -> np.ndarray:
        """Design matrix `(n, 1 + len(feature_names))`: a constant, then log of each column."""
        logs = [np.log(np.asarray(columns[name], np.float64)) for name in self.feature_names]
        return np.stack([np.ones_like(logs[0])] + logs, axis=1)

    def starts(self, columns: dict, grid: dict | None = None) -> np.ndarray:
        """Every point of the start grid, `(I, P)` in `param_names` order."""
        grid = {**self.default_grid(columns), **(grid or {})}
        missing = [p for p in self.param_names if p not in grid]
        if missing:
            raise UserError(f"start grid for {self.name} lacks {missing}")
        return np.array(list(itertools.product(*(grid[p] for p in self.param_names))), float)

    def coefficient_matrix(self, theta, context) -> np.ndarray:
        """`coef_KJ` as float64 numpy."""
        return self.coefficients(np.asarray(theta, np.float64), np.asarray(context, np.float64),
                                 np)

    def coefficient_jacobian(self, theta, context, h: float = 1e-30) -> np.ndarray:
        """`d coef_KJ / d theta_P`, `(K, J, P)`, by complex step (Squire & Trapp 1998,
        SIAM Review 40(1)): exact to rounding, no subtractive cancellation."""
        theta = np.asarray(theta, np.float64)
        # all P perturbed copies at once: column p of `steps` is theta + i h e_p, and the
        # coefficient functions are elementwise in theta, so the result is (K, J, P)
        steps = theta[:, None] + 1j * h * np.eye(len(theta))
        return self.coefficients(steps, np.asarray(context, np.complex128), np).imag / h

    def log_loss(self, theta, context, columns: dict) -> np.ndarray:
        """Predicted log-loss per run (float64 numpy)."""
        return log_predict(self.coefficient_matrix(theta, context), self.features(columns))

    def loss(self, theta, context, columns: dict) -> np.ndarray:
        return np.exp(self.log_loss(theta, context, columns))


def _span(lo, hi, step):
    return [float(v) for v in np.arange(lo, hi + step / 2, step)]


# ---- chinchilla ---------------------------------------------------------------------------

def _chinchilla_coefficients(theta, context, xp=jnp):
    a, b, e, alpha, beta = theta
    z = xp.zeros_like(a)
    return xp.stack([xp.stack([a, -alpha, z]), xp.stack([b, z, -beta]), xp.stack([e, z, z])])


def _chinchilla_natural(theta, context):
    a, b, e, alpha, beta = (float(v) for v in theta)
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)),
            "alpha": alpha, "beta": beta}


CHINCHILLA = Law(
    name="chinchilla",
    param_names=("a", "b", "e", "alpha", "beta"),
    feature_names=("params", "tokens"),
    coefficients=_chinchilla_coefficients,
    # arXiv 2404.10102: alpha, beta in 0..2 step .5; e in -1..1 step .5; a, b in 0..25 step 5
    default_grid=lambda cols: {"a": _span(0, 25, 5), "b": _span(0, 25, 5), "e": _span(-1, 1, .5),
                               "alpha": _span(0, 2, .5), "beta": _span(0, 2, .5)},
    context=lambda cols: np.zeros(1),
    natural=_chinchilla_natural,
)


# ---- depth_width --------------------------------------------------------------------------

@functools.cache
def depth_width_law(phi: str = "log_aspect", irreducible: bool = True) -> Law:
    """`L = A N^-alpha + B T^-delta + Phi(D, W) [+ E]` (arXiv 2601.20994) with Phi `phi`."""
    if phi not in PHI_FORMS:
        raise UserError(f"unknown Phi form {phi!r}; choose one of {sorted(PHI_FORMS)}")
    form = PHI_FORMS[phi]
    base = ("a", "alpha", "b", "delta") + (("e",) if irreducible else ())
    n_base = len(base)

    def coefficients(theta, context, xp=jnp):
        a, alpha, b, delta = theta[0], theta[1], theta[2], theta[3]
        z = xp.zeros_like(a)
        rows = form.rows(xp, a, alpha, theta[n_base:], context[0])
        rows.append(xp.stack([b, z, -delta, z, z]))
        if irreducible:
            rows.append(xp.stack([theta[4], z, z, z, z]))
        return xp.stack(rows)

    def natural(theta, context):
        t = dict(zip(base + form.param_names, (float(v) for v in theta)))
        t["log_w0"] = float(context[0])
        nat = {"E": float(np.exp(t["e"])) if irreducible else 0.0, "A": float(np.exp(t["a"])),
               "B": float(np.exp(t["b"])), "alpha": t["alpha"], "delta": t["delta"]}
        return {**nat, **form.natural(t)}

    def default_grid(cols):
        grid = {"a": [0.0, 5.0, 10.0, 20.0], "b": [0.0, 5.0, 10.0, 20.0],
                "alpha": [0.1, 0.5, 1.0], "delta": [0.1, 0.5, 1.0], "e": [-1.0, 0.0, 1.0]}
        return {**grid, **form.grid(np.log(np.asarray(cols["depth"], float)))}

    return Law(
        name=f"depth_width[{phi}]" + ("" if irreducible else "[no E]"),
        param_names=base + form.param_names,
        feature_names=("params", "tokens", "depth", "width"),
        coefficients=coefficients,
        default_grid=default_grid,
        context=lambda cols: np.array([np.mean(np.log(np.asarray(cols["width"], float)))]),
        natural=natural,
        phi=form,
    )


LAW_NAMES = ("chinchilla", "depth_width")


def get_law(name: str, phi: str = "log_aspect", irreducible: bool = True) -> Law:
    if name == "chinchilla":
        return CHINCHILLA
    if name == "depth_width":
        return depth_width_law(phi, irreducible)
    raise UserError(f"unknown law {name!r}; choose one of {list(LAW_NAMES)}")
