"""Scaling-law fitting: Chinchilla approach 3, the depth/width law with a critical depth,
derived quantities (D_crit, compute-optimal shape), U-curve minima, extrapolation checks.

Pure numeric code: `objective` (Huber on log-sum-exp), `laws` and `phi` (the laws),
`fit` (multi-start fitting), `bootstrap`, `derived`, `ucurve`, `synthetic`;
I/O: `table` (reading runs), `plots`, `analysis` (one full analysis), `cli` (`jaxdepth fit`).
"""

from jaxdepth.scaling.bootstrap import bootstrap, bootstrap_intervals
from jaxdepth.scaling.derived import (
                                      compute_optimal_exponents,
                                      critical_depth,
                                      extrapolation_check,
                                      optimal_allocation,
)
from jaxdepth.scaling.fit import FitOptions, FitResult, fit
from jaxdepth.scaling.laws import CHINCHILLA, Law, depth_width_law, get_law
from jaxdepth.scaling.phi import PHI_FORMS
from jaxdepth.scaling.ucurve import ucurve_minimum

__all__ = [
                                      "CHINCHILLA",
                                      "PHI_FORMS",
                                      "FitOptions",
                                      "FitResult",
                                      "Law",
                                      "bootstrap",
                                      "bootstrap_intervals",
                                      "compute_optimal_exponents",
                                      "critical_depth",
                                      "depth_width_law",
                                      "extrapolation_check",
                                      "fit",
                                      "get_law",
                                      "optimal_allocation",
                                      "ucurve_minimum",
]
