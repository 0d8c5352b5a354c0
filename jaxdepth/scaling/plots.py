"""PNG plots of a fit: fitted vs observed loss, loss vs depth per width with D_crit marks,
and iso-compute curves. Uses matplotlib's object API with the Agg canvas, so no global
backend is switched for other code in the process."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from jaxdepth import figures
from jaxdepth.scaling import derived
from jaxdepth.scaling.fit import FitResult


def fitted_vs_observed(result: FitResult, columns: dict, path: Path) -> Path:
    obs = np.asarray(columns["loss"], float)
    pred = result.predict(columns)
    fig, (ax,) = figures.panels(1, 5, 5)
    ax.scatter(obs, pred, s=12, alpha=0.7)
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="observed loss", ylabel="fitted loss",
           title=f"{result.law.name}: R$^2$ = {result.r2:.4f}")
    return figures.save(fig, path)


def loss_vs_depth(result: FitResult, columns: dict, path: Path) -> Path:
    """Observed loss vs depth per width at the most common token budget, the fitted curve
    at that budget, and D_crit(W) marked (dotted) where the law has one."""
    law = result.law
    tokens = np.asarray(columns["tokens"])
    values, counts = np.unique(tokens, return_counts=True)
    t_plot = values[np.argmax(counts)]
    sel = np.isclose(tokens, t_plot, rtol=1e-6)
    fig, (ax,) = figures.panels(1, 6.5, 4.5)
    depth, width, loss = (np.asarray(columns[k], float)[sel] for k in ("depth", "width", "loss"))
    d_grid = np.geomspace(max(1.0, depth.min() / 1.5), depth.max() * 1.5, 200)
    cmap = matplotlib.colormaps["viridis"]
    widths = np.unique(width)
    for j, w in enumerate(widths):
        color = cmap(j / max(1, len(widths) - 1))
        m = width == w
        ax.scatter(depth[m], loss[m], color=color, s=18, label=f"W={w:g}")
        cols = {"depth": d_grid, "width": np.full_like(d_grid, w),
                "tokens": np.full_like(d_grid, t_plot), "params": 12 * d_grid * w * w}
        ax.plot(d_grid, result.predict(cols), color=color, lw=1)
        dc = derived.critical_depth(law, result.theta, result.context, [w])[0]
        if np.isfinite(dc) and d_grid[0] <= dc <= d_grid[-1]:
            ax.axvline(dc, color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ticks = np.unique(depth)
    ax.set_xticks(ticks, [f"{d:g}" for d in ticks], minor=False)
    ax.set_xticks([], minor=True)
    ax.set(xlabel="depth D", ylabel="loss",
           title=f"{law.name} at T = {t_plot:.3g} tokens (dotted: D_crit)")
    ax.legend(fontsize=7)
    return figures.save(fig, path)


def iso_compute(result: FitResult, budgets, path: Path) -> Path:
    """Fitted loss along iso-compute curves C = 6 N T: against N (every law), each point at
    the best shape when the law has a shape term; the optimum marked."""
    law = result.law
    fig, (ax,) = figures.panels(1, 6.5, 4.5)
    for c in budgets:
        n = np.geomspace(c / 6 / 1e13, c / 6 / 1e3, 200)  # tokens from 1e3 to 1e13
        n = n[(n > derived.PARAMS_BOUNDS[0]) & (n < derived.PARAMS_BOUNDS[1])]
        if law.phi is not None and law.phi.name != "none":
            # at fixed N, best depth over a grid (width follows from N = 12 D W^2)
            d = np.geomspace(*derived.DEPTH_BOUNDS, 120)
            nn, dd = np.meshgrid(n, d)
            ww = np.sqrt(nn / (12 * dd))
            cols = {"params": nn.ravel(), "tokens": c / (6 * nn.ravel()), "depth": dd.ravel(),
                    "width": ww.ravel()}
            loss = result.predict(cols).reshape(nn.shape).min(axis=0)
        else:
            cols = {"params": n, "tokens": c / (6 * n), "depth": np.ones_like(n),
                    "width": np.sqrt(n / 12)}
            loss = result.predict(cols)
        i = int(np.argmin(loss))
        near = (n > n[i] / 1e3) & (n < n[i] * 1e3)  # three decades either side of the optimum
        line, = ax.plot(n[near], loss[near], lw=1, label=f"C={c:.2g}")
        ax.plot(n[i], loss[i], "o", color=line.get_color(), ms=4)
    ax.set_xscale("log")
    ax.set(xlabel="parameters N", ylabel="fitted loss", title=f"{law.name}: iso-compute curves")
    ax.legend(fontsize=7)
    return figures.save(fig, path)
