"""Bootstrap confidence intervals for a fitted law: resample runs, refit, take percentiles.

Case-resampling bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
ch. 6 and 13, percentile intervals), as used for the Chinchilla replication
(Besiroglu et al. 2024, arXiv 2404.10102). A replicate is a vector of resample counts used
as run weights, so every replicate has the data's shape and the compiled screening solver
is reused. Starts per replicate are not the full grid: they are the full fit's polished
distinct optima (best first), topped up with seeded random points of the law's start grid
(how many follows from sharing the full fit's lanes among replicates, see `bootstrap`).
A resample moves the optimum only a little, so the full fit's basins are where its
optimum lies; the random grid points guard against a basin switch. Each replicate's best
screened start is then polished in float64 like the full fit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from jaxdepth.scaling.fit import FitOptions, FitResult, polish, screen


def resample_weights(n_runs: int, n_boot: int, seed: int) -> np.ndarray:
    """`(n_boot, n_runs)` counts: how often each run is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_runs, np.full(n_runs, 1.0 / n_runs), size=n_boot).astype(float)


def replicate_starts(result: FitResult, columns: dict, k: int, seed: int) -> np.ndarray:
    """Warm starts shared by every replicate: the polished optima, then random grid points."""
    grid = result.law.starts(columns)
    starts = np.asarray(result.candidates[:k]).reshape(-1, grid.shape[1])
    rng = np.random.default_rng(seed + 1)
    extra = grid[rng.choice(len(grid), size=min(len(grid), max(0, k - len(starts))),
                            replace=False)]
    starts = np.concatenate([starts, extra])
    return np.resize(starts, (k, grid.shape[1]))  # a grid smaller than k: repeat


def bootstrap(result: FitResult, columns: dict, n_boot: int = 200, seed: int = 0,
              opts: FitOptions | None = None, min_starts_per_replicate: int = 8,
              progress: bool = True) -> np.ndarray:
    """Refit `result.law` on `n_boot` resamples of the runs; returns `(n_boot, P)` thetas.

    Each screening call has exactly the full fit's lane count (`result.n_starts`), so the
    solver compiled for the full fit is reused: the lanes are shared out among as many
    replicates as fit with at least `min_starts_per_replicate` starts each, and every
    replicate gets `lanes // replicates` starts."""
    opts = opts or FitOptions()
    law = result.law
    n = result.n_runs
    features, context = law.features(columns), result.context
    log_loss = np.log(np.asarray(columns["loss"], float))
    weights = resample_weights(n, n_boot, seed)
    lanes = result.n_starts
    r = max(1, min(n_boot, lanes // min_starts_per_replicate))
    k = max(1, lanes // r)
    starts = replicate_starts(result, columns, k, seed)
    spare = lanes - r * k
    thetas = np.empty((n_boot, len(law.param_names)))
    bar = tqdm(total=n_boot, desc=f"bootstrap {law.name}", file=sys.stderr,
               disable=not progress, leave=False)
    for lo in range(0, n_boot, r):
        idx = np.arange(lo, lo + r) % n_boot  # pad the last call by wrapping around
        lane_w = np.repeat(weights[idx], k, axis=0)
        lane_starts = np.tile(starts, (r, 1))
        if spare:  # idle lanes (a copy of lane 0) keep the compiled shape
            lane_w = np.concatenate([lane_w, np.repeat(lane_w[:1], spare, axis=0)])
            lane_starts = np.concatenate([lane_starts, np.repeat(starts[:1], spare, axis=0)])
        theta, value = screen(law, lane_starts, features, log_loss, lane_w, context, opts)
        theta, value = theta[: r * k].reshape(r, k, -1), value[: r * k].reshape(r, k)
        for j, rep in enumerate(idx[: min(r, n_boot - lo)]):
            best = int(np.argmin(value[j]))
            thetas[rep] = polish(law, theta[j, best], features, log_loss, weights[rep],
                                 context, opts.delta)[0]
            bar.update(1)
    bar.close()
    return thetas


def percentile_intervals(samples: list[dict], level: float = 0.95) -> dict:
    """{name: [lo, hi]} percentile intervals over a list of per-replicate {name: value};
    non-finite replicate values are ignored (their count is reported as `n_nonfinite`)."""
    out = {}
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    for key in samples[0] if samples else []:
        v = np.array([s[key] for s in samples], float)
        finite = v[np.isfinite(v)]
        lo, hi = np.percentile(finite, q) if len(finite) else (np.nan, np.nan)
        out[key] = {"lo": float(lo), "hi": float(hi), "n_nonfinite": int(len(v) - len(finite))}
    return out


def bootstrap_intervals(result: FitResult, columns: dict, derived: Callable | None = None,
                        level: float = 0.95, **kwargs) -> tuple[dict, np.ndarray]:
    """Intervals of the natural parameters (and of `derived(theta) -> {name: float}` if
    given) from `bootstrap(...)`; returns (intervals, thetas)."""
    thetas = bootstrap(result, columns, **kwargs)
    samples = []
    # a replicate of an under-determined law can run off to huge values: those become
    # inf/nan samples (counted in the intervals as n_nonfinite), not warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for theta in thetas:
            s = dict(result.law.natural(theta, result.context))
            if derived is not None:
                s.update(derived(theta))
            samples.append(s)
    return percentile_intervals(samples, level), thetas
