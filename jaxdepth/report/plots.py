"""Shared figures of the experiment reports (matplotlib, Agg): loss against depth per
group, loss against steps per run, per-layer curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdepth import figures


def loss_vs_depth(panels: dict, path: Path, title: str = "", marks: dict | None = None) -> Path:
    """`panels`: panel title -> {curve label -> (depths, losses[, (run depths, run
    losses)])}: a line, and each replicate run as a faint dot when given; `marks`: panel
    title -> [(x, label)] vertical lines (fitted minimum, 2.43 ln W)."""
    fig, axes = figures.panels(len(panels))
    for ax, (name, curves) in zip(axes, panels.items()):
        for label, (d, y, *runs) in curves.items():
            order = np.argsort(d)
            line, = ax.plot(np.asarray(d)[order], np.asarray(y, np.float64)[order], "o-",
                            label=label)
            if runs:
                ax.plot(*runs[0], ".", color=line.get_color(), alpha=0.4)
        for x, label, *style in (marks or {}).get(name, []):
            if np.isfinite(x):
                ax.axvline(x, ls=style[0] if style else "--", color="gray", alpha=0.7)
                ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), fontsize=7,
                            rotation=90, va="top", ha="right")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("final validation loss")
    if title:
        fig.suptitle(title, fontsize=10)
    return figures.save(fig, path)


def curves(panels: dict, path: Path, title: str = "", xlabel: str = "step",
           ylabel: str = "", logy: bool = False, hline: float | None = None) -> Path:
    """`panels`: panel title -> {label -> (x, y)}, one line per label; `hline`: a
    horizontal reference line (e.g. 0 for a decay rate)."""
    fig, axes = figures.panels(len(panels))
    for ax, (name, lines) in zip(axes, panels.items()):
        for label, (x, y) in lines.items():
            ax.plot(x, y, label=label)
        if hline is not None:
            ax.axhline(hline, color="gray", lw=0.8, ls=":")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=10)
    return figures.save(fig, path)


def loss_vs_steps(panels: dict, path: Path, title: str = "") -> Path:
    """`panels`: panel title -> {label -> (steps, losses)} (train loss, log y)."""
    return curves(panels, path, title, ylabel="train loss", logy=True)


def per_layer(panels: dict, path: Path, title: str = "", logy: tuple = ()) -> Path:
    """`panels`: panel title -> {label -> values per layer}; `logy`: panels on a log axis."""
    fig, axes = figures.panels(len(panels), 4.2, 3.6)
    for ax, (name, curves) in zip(axes, panels.items()):
        for label, v in curves.items():
            ax.plot(np.arange(len(v)), np.asarray(v, np.float64), ".-", label=label)
        if name in logy:
            ax.set_yscale("log")
        ax.set_xlabel("layer (0-based)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return figures.save(fig, path)


def power_law_plot(x, y, fit: dict, path: Path, xlabel: str, ylabel: str, ref_p: float,
                   title: str = "") -> Path:
    """Points, the fitted line `k x^p` and a reference slope `ref_p` through the same
    geometric mean, on log-log axes."""
    fig, (ax,) = figures.panels(1, 4.6, 3.8)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():  # e.g. tau = inf at every width: say so instead of an empty log axis
        ax.text(0.5, 0.5, f"no finite {ylabel} to plot", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        if title:
            ax.set_title(title, fontsize=9)
        return figures.save(fig, path)
    ax.plot(x[ok], y[ok], "o", label="measured (finite)")
    if np.isfinite(fit.get("p", np.nan)):
        xs = np.geomspace(x[ok].min(), x[ok].max(), 50)
        ax.plot(xs, fit["k"] * xs ** fit["p"], "-", label=f"fit p = {fit['p']:.2f}")
        gm_x, gm_y = np.exp(np.mean(np.log(x[ok]))), np.exp(np.mean(np.log(y[ok])))
        ax.plot(xs, gm_y * (xs / gm_x) ** ref_p, "--", color="gray", label=f"p = {ref_p}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return figures.save(fig, path)
