"""Synthetic runs drawn from known laws, for tests, benchmarks and demonstrations.

Written directly from the formulas (not through `laws.py`), so a fit that recovers the
parameters checks the law code as well as the optimiser. Noise is multiplicative,
`L * exp(sigma * eps)`, i.e. Gaussian in log-loss, the space the fit works in.
"""

from __future__ import annotations

import itertools

import numpy as np


def chinchilla_runs(params, tokens, E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                    noise=0.01, seed=0) -> dict:
    """`L = E + A N^-alpha + B T^-beta` (arXiv 2203.15556; default values are its fit)
    on every (N, T) pair."""
    n, t = (np.array(v, float) for v in zip(*itertools.product(params, tokens)))
    loss = E + A * n ** -alpha + B * t ** -beta
    rng = np.random.default_rng(seed)
    return {"params": n, "tokens": t, "flops": 6 * n * t,
            "loss": loss * np.exp(noise * rng.standard_normal(len(n)))}


def depth_width_runs(depths, widths, tokens, A=110.0, alpha=0.3, B=200.0, delta=0.3, E=1.5,
                     phi="log_aspect", kappa=0.5, p=0.5, gamma=1.0, r=1.0, noise=0.005,
                     seed=0) -> dict:
    """Runs on the full grid depths x widths x tokens from
    `L = E + A N^-alpha + B T^-delta + Phi(D, W)`, N = 12 D W^2 (arXiv 2601.20994):
    - `log_aspect`: `Phi = A N^-alpha (cosh(gamma log(D / (kappa W^p))) - 1)`;
    - `depth_excess`: `Phi = (A N^-alpha / r) (D / (kappa W^p))^{alpha (1 + r)}`;
    - `none`: Phi = 0.
    (`kappa` is kappa_shape for log_aspect and the critical-depth kappa for depth_excess.)"""
    d, w, t = (np.array(v, float) for v in zip(*itertools.product(depths, widths, tokens)))
    n = 12 * d * w * w
    base = A * n ** -alpha
    x = d / (kappa * w ** p)
    if phi == "log_aspect":
        phi_v = base * (np.cosh(gamma * np.log(x)) - 1)
    elif phi == "depth_excess":
        phi_v = base / r * x ** (alpha * (1 + r))
    elif phi == "none":
        phi_v = 0.0 * base
    else:
        raise ValueError(phi)
    loss = E + base + B * t ** -delta + phi_v
    rng = np.random.default_rng(seed)
    return {"depth": d, "width": w, "tokens": t, "params": n, "flops": 6 * n * t,
            "loss": loss * np.exp(noise * rng.standard_normal(len(n)))}
