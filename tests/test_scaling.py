"""Scaling-law fitting: parameter recovery on synthetic data from each law, the Chinchilla
replication fit (arXiv 2404.10102), U-curve minima, and the extrapolation check."""

import math

import numpy as np
import pytest
from conftest import CHINCHILLA_CSV, NEEDS_SHARED

from jaxdepth.scaling import derived
from jaxdepth.scaling.bootstrap import bootstrap_intervals
from jaxdepth.scaling.fit import FitOptions, fit
from jaxdepth.scaling.laws import CHINCHILLA, depth_width_law
from jaxdepth.scaling.synthetic import chinchilla_runs, depth_width_runs
from jaxdepth.scaling.table import load_runs
from jaxdepth.scaling.ucurve import ucurve_minimum

# best objective of a plain serial scipy L-BFGS-B loop (finite-difference gradients, as in
# arXiv 2404.10102's code) over all 4500 starts on that file, computed once (28 min)
SERIAL_SCIPY_OBJECTIVE = 0.001018274039228776

# a small grid for the depth/width law keeps these tests fast; one shape -> one compile
DW_GRID = {"a": [0.0, 5.0, 10.0], "b": [0.0, 5.0, 10.0], "alpha": [0.2, 0.6],
           "delta": [0.2, 0.6], "e": [0.0]}
DW_DEPTHS, DW_WIDTHS, DW_TOKENS = [2, 3, 4, 6, 8, 12, 16, 24, 32], [64, 128, 256, 512], [2e7, 1e8]


def dw_runs(phi, **kw):
    return depth_width_runs(DW_DEPTHS, DW_WIDTHS, DW_TOKENS, phi=phi, noise=0.003, **kw)


def test_chinchilla_law_recovers_known_parameters():
    truth = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    cols = chinchilla_runs(np.geomspace(1e7, 1e10, 8), np.geomspace(1e9, 1e12, 8), **truth,
                           noise=0.003, seed=1)
    res = fit(CHINCHILLA, cols)
    nat = res.natural
    assert res.n_starts == 4500
    assert abs(nat["alpha"] - 0.34) < 0.03 and abs(nat["beta"] - 0.28) < 0.03
    assert abs(nat["E"] - 1.69) < 0.05
    # A and B trade off against the exponents; within a factor 1.5 at this noise
    assert 1 / 1.5 < nat["A"] / 406.4 < 1.5 and 1 / 1.5 < nat["B"] / 410.7 < 1.5
    assert res.r2 > 0.99
    # bootstrap: reuses the compiled solver (same lane count), seeded, brackets the truth
    intervals, thetas = bootstrap_intervals(res, cols, n_boot=20, seed=0, progress=False)
    again, _ = bootstrap_intervals(res, cols, n_boot=20, seed=0, progress=False)
    assert thetas.shape == (20, 5) and again == intervals
    for name, true in (("alpha", 0.34), ("beta", 0.28), ("E", 1.69)):
        assert intervals[name]["lo"] < nat[name] < intervals[name]["hi"]
        assert intervals[name]["lo"] < true < intervals[name]["hi"], name
    assert intervals["alpha"]["hi"] - intervals["alpha"]["lo"] < 0.1


@NEEDS_SHARED
def test_chinchilla_file_reproduces_replication_fit():
    runs = load_runs(CHINCHILLA_CSV, ["loss", "params", "tokens"],
                     {"loss": "loss", "params": "Model Size", "flops": "Training FLOP"},
                     tokens_from_flops=True, drop_highest_loss=5)
    assert len(runs) == 240
    res = fit(CHINCHILLA, runs.columns)
    nat = res.natural
    # same answer as the serial scipy loop (or better: analytic gradients)
    assert res.objective <= SERIAL_SCIPY_OBJECTIVE * (1 + 1e-7)
    # replication (arXiv 2404.10102): alpha 0.348 (0.317, 0.373), beta 0.366 (0.331, 0.415)
    assert 0.317 < nat["alpha"] < 0.373 and 0.331 < nat["beta"] < 0.415
    assert abs(nat["alpha"] - 0.348) < 0.005 and abs(nat["beta"] - 0.366) < 0.005
    assert abs(nat["E"] - 1.82) < 0.02
    assert abs(nat["A"] / 482 - 1) < 0.05 and abs(nat["B"] / 2085 - 1) < 0.1


@pytest.fixture(scope="module")
def aspect_fit():
    cols = dw_runs("log_aspect", kappa=0.5, p=0.5, gamma=1.0, alpha=0.3)
    return cols, fit(depth_width_law("log_aspect"), cols, FitOptions(grid=DW_GRID))


def test_depth_width_log_aspect_recovers_parameters(aspect_fit):
    _, res = aspect_fit
    nat = res.natural
    assert abs(nat["alpha"] - 0.3) < 0.03
    assert abs(nat["p"] - 0.5) < 0.05 and abs(nat["gamma"] - 1.0) < 0.1
    assert abs(nat["kappa_shape"] / 0.5 - 1) < 0.15
    # D_crit(W) = kappa_shape W^p exp(atanh(alpha/gamma)/gamma) from the true values
    widths = np.array([64.0, 512.0])
    truth = 0.5 * widths ** 0.5 * np.exp(np.arctanh(0.3) / 1.0)
    got = derived.critical_depth(res.law, res.theta, res.context, widths)
    np.testing.assert_allclose(got, truth, rtol=0.1)
    # compute-optimal shape: D* ~ C^{a p/(2+p)}, W* ~ C^{a/(2+p)}, a = delta/(alpha+delta)
    ce = derived.compute_optimal_exponents(res.law, res.theta, res.context, 1e14, 1e17)
    a = nat["delta"] / (nat["alpha"] + nat["delta"])
    assert not ce["at_bound"]
    assert abs(ce["depth_exponent"] - a * nat["p"] / (2 + nat["p"])) < 0.01
    assert abs(ce["width_exponent"] - a / (2 + nat["p"])) < 0.01


def test_depth_width_depth_excess_recovers_critical_depth():
    cols = dw_runs("depth_excess", kappa=0.8, p=0.4, r=2.0, alpha=0.3)
    res = fit(depth_width_law("depth_excess"), cols, FitOptions(grid=DW_GRID))
    got = derived.critical_depth(res.law, res.theta, res.context, [64.0, 512.0])
    np.testing.assert_allclose(got, 0.8 * np.array([64.0, 512.0]) ** 0.4, rtol=0.15)
    assert abs(res.natural["p"] - 0.4) < 0.08
    # one-sided penalty: at fixed N the law wants the shallowest net -> flagged, not a number
    assert derived.optimal_allocation(res.law, res.theta, res.context, 1e16)["at_bound"]


def test_phi_none_is_the_kaplan_baseline_and_fits_its_own_data():
    cols = dw_runs("none", alpha=0.3)
    res = fit(depth_width_law("none"), cols, FitOptions(grid=DW_GRID))
    assert abs(res.natural["alpha"] - 0.3) < 0.03 and res.r2 > 0.99
    assert np.all(np.isinf(derived.critical_depth(res.law, res.theta, res.context, [64.0])))


def test_extrapolation_check_prefers_phi_when_the_data_has_a_u_shape(aspect_fit):
    cols, _ = aspect_fit
    cutoff = float(np.quantile(cols["flops"], 0.7))
    errs = {phi: derived.extrapolation_check(depth_width_law(phi), cols, cutoff,
                                             opts=FitOptions(grid=DW_GRID))
            for phi in ("log_aspect", "none")}
    assert errs["log_aspect"]["n_test"] > 0
    assert errs["log_aspect"]["mae"] < 0.02
    assert errs["log_aspect"]["mae"] < errs["none"]["mae"] / 3


def test_ucurve_minimum_found_with_interval():
    rng = np.random.default_rng(0)
    depths = np.repeat([2, 4, 6, 8, 12, 16, 24, 32, 48], 2).astype(float)
    noise = 0.003 * rng.standard_normal(len(depths))
    loss = 3.0 + 0.2 * (np.log(depths) - np.log(12.0)) ** 2 + noise
    out = ucurve_minimum(depths, loss, seed=0)
    assert out["status"] == "ok"
    assert abs(out["depth_min"] / 12 - 1) < 0.15
    lo, hi = out["interval"]
    assert lo < out["depth_min"] < hi and 10.5 < lo and hi < 13.5


def test_ucurve_minimum_at_edge_is_not_a_number():
    depths = np.array([2.0, 4, 8, 16])
    out = ucurve_minimum(depths, 3.0 - 0.1 * np.log(depths))
    assert out["status"] == "at_upper_edge" and out["interval"] is None


def test_ucurve_one_seed_gives_the_bracket_not_a_bootstrap():
    """One run per depth leaves <= 2 residual degrees of freedom: no bootstrap interval
    (it would be a noise scale read off one or two residuals), but the bracket of depths
    either side of the best still holds the minimum."""
    depths = np.array([1.0, 2, 4, 8, 16])
    loss = 3.0 + 0.2 * (np.log(depths) - np.log(5.0)) ** 2 + np.array([0, 2e-3, -1e-3, 1e-3, 0])
    out = ucurve_minimum(depths, loss)
    assert out["status"] == "ok" and out["interval"] is None
    assert out["bracket"] == [2.0, 8.0] and 2.0 < out["depth_min"] < 8.0
    # still falling at the deepest run: the minimum is somewhere past the second-deepest
    assert ucurve_minimum(depths, 3.0 - 0.1 * np.log(depths))["bracket"] == [8.0, math.inf]
    assert ucurve_minimum(depths, 3.0 + 0.1 * np.log(depths))["bracket"] == [0.0, 2.0]
