"""The Chinchilla approach-3 fit (4,500 starts, arXiv 2203.15556 / 2404.10102) by
`jaxdepth.scaling.fit` against a plain serial scipy L-BFGS-B loop, same process.

    python benchmarks/bench_scaling_fit.py CSV [--subset 100] [--repeats 3] [--seed 0]

Prints: the cold fit (includes compiling the vmapped solver), the warm fit (median of
`--repeats`), the compile time on its own (AOT lower + compile of the same solver), and
the serial loop on a seeded random `--subset` of the grid, extrapolated to all 4,500
starts, for two serial baselines: (a) as in the replication's code, numpy objective and
finite-difference gradients; (b) analytic float64 gradients (this package's polish
objective). Ratios are serial-extrapolated / warm fit. Wall and CPU seconds are both
shown: on a shared machine wall time depends on the other load (printed).
CSV: Hoffmann et al.'s runs as recovered by Besiroglu et al. (arXiv 2404.10102; columns
"Model Size", "Training FLOP", "loss"; docs/literature.md §6).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(path: Path):
    from jaxdepth.scaling.table import load_runs
    runs = load_runs(path, ["loss", "params", "tokens"],
                     {"loss": "loss", "params": "Model Size", "flops": "Training FLOP"},
                     tokens_from_flops=True, drop_highest_loss=5)
    return runs.columns


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def serial_scipy(law, cols, starts, analytic: bool):
    """Best objective over `starts` by scipy L-BFGS-B one start at a time (default options)."""
    import scipy.optimize
    from scipy.special import huber, logsumexp

    from jaxdepth.scaling.fit import polish
    features, log_loss = law.features(cols), np.log(cols["loss"])
    ln_n, ln_t = features[:, 1], features[:, 2]

    def objective(p):  # arXiv 2404.10102's code: LSE in log space, summed scipy Huber
        a, b, e, alpha, beta = p
        pred = logsumexp([a - alpha * ln_n, b - beta * ln_t, np.full_like(ln_n, e)], axis=0)
        return np.sum(huber(1e-3, pred - log_loss))

    best = np.inf
    for s in starts:
        if analytic:
            value = polish(law, s, features, log_loss, np.ones(len(log_loss)), np.zeros(1),
                           1e-3)[1]
        else:
            value = scipy.optimize.minimize(objective, s, method="L-BFGS-B").fun
        best = min(best, value)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", type=Path, help="the Chinchilla runs CSV (see the module docstring)")
    p.add_argument("--subset", type=int, default=100, help="serial starts actually run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.csv.is_file():
        p.error(f"{args.csv} is not a file")
    import jax

    from jaxdepth.scaling.fit import FitOptions, fit, padded_runs, screen_solver
    from jaxdepth.scaling.laws import CHINCHILLA

    cols = load(args.csv)
    law, opts = CHINCHILLA, FitOptions()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    _, cold_w, cold_c = timed(lambda: fit(law, cols, opts))
    warm = [timed(lambda: fit(law, cols, opts)) for _ in range(args.repeats)]
    res = warm[-1][0]
    warm_w = statistics.median(w for _, w, _ in warm)
    warm_c = statistics.median(c for _, _, c in warm)

    # the compile alone: the same solver ahead of time, after emptying jax's caches
    jax.clear_caches()
    screen_solver.cache_clear()
    n, starts = padded_runs(len(cols["loss"])), law.starts(cols)
    f32 = np.float32
    shapes = (starts.astype(f32), np.zeros((n, 3), f32), np.zeros(n, f32),
              np.ones((len(starts), n), f32), np.zeros(1, f32), f32(1e-3), f32(1e-7))
    solver = screen_solver(law, opts.max_iter, opts.max_linesearch, opts.backtrack_factor)
    _, compile_w, _ = timed(lambda: solver.lower(*shapes).compile())

    nat = res.natural
    print(f"fit: E={nat['E']:.4f} A={nat['A']:.2f} B={nat['B']:.1f} alpha={nat['alpha']:.4f} "
          f"beta={nat['beta']:.4f} objective={res.objective:.10g} ({res.n_starts} starts)")
    print(f"jaxdepth fit, cold (incl. compile): {cold_w:6.2f} s wall {cold_c:6.2f} s cpu")
    print(f"jaxdepth fit, warm (median of {args.repeats}): {warm_w:6.2f} s wall "
          f"{warm_c:6.2f} s cpu  [screen {res.timings['screen_s']:.2f} s, "
          f"polish {res.timings['polish_s']:.2f} s]")
    print(f"compile of the vmapped solver alone: {compile_w:6.2f} s")

    rng = np.random.default_rng(args.seed)
    subset = starts[rng.choice(len(starts), args.subset, replace=False)]
    scale = len(starts) / args.subset
    for name, analytic in (("finite-difference gradients (replication code)", False),
                           ("analytic float64 gradients", True)):
        best, w, c = timed(lambda a=analytic: serial_scipy(law, cols, subset, a))
        print(f"serial scipy L-BFGS-B, {name}: {args.subset} starts {w:.2f} s wall "
              f"{c:.2f} s cpu -> {len(starts)} starts ~{w * scale:.0f} s wall; "
              f"ratio {w * scale / warm_w:.0f}x wall, {c * scale / warm_c:.0f}x cpu; "
              f"best of subset {best:.10g}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
