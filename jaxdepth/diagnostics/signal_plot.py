"""PNG figure of signal propagation: residual RMS against layer, one panel per depth (and
one per trained run: at init and after k steps), log scale."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from jaxdepth import figures


def _curve(p):
    """x = 0..L (0: the embeddings entering layer 0), y = residual RMS; non-positive or
    non-finite values (underflow / overflow) are left out of the log plot."""
    raw = np.concatenate([[p.stats["rms_in"][0]], p.stats["rms_out"]]).astype(np.float64)
    with np.errstate(invalid="ignore"):
        y = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)
    return np.arange(len(y)), y, raw


def _draw(ax, p, color, label, ls="-"):
    x, y, raw = _curve(p)
    ax.plot(x, y, ls, color=color, lw=1.6, label=label)
    return x, y, raw, p.summary()["label"] in ("explode", "collapse")


def _limits_and_marks(ax, curves):
    """Zoom on the bounded curves (exploding/collapsing ones leave the panel), and mark
    where each curve leaves it: ^ upwards (overflow or off the top), v downwards (underflow
    to 0 or off the bottom)."""
    bounded = [y for _, y, _, failing in curves if not failing and np.isfinite(y).any()]
    if bounded:
        lo, hi = np.nanmin(np.concatenate(bounded)), np.nanmax(np.concatenate(bounded))
        ax.set_ylim(lo / 30, hi * 30)
    lo, hi = ax.get_ylim()
    for line, (x, y, raw, _) in zip(ax.get_lines(), curves):
        out = np.flatnonzero(~(y >= lo) | ~(y <= hi))  # nan (0, inf, nan) counts as out
        if out.size:
            i = out[0]
            up = not raw[i] <= hi  # above the panel, inf or nan: overflow
            ax.plot(x[i], hi if up else lo, "^" if up else "v", color=line.get_color(), ms=9,
                    clip_on=False)


def rms_figure(grid, path: Path, runs=(), title: str = "") -> Path:
    """`grid`: init `Profile`s of several schemes and depths, one panel per depth;
    `runs`: (init Profile, trained Profile, run name) triples, one panel each."""
    depths = sorted({p.depth for p in grid})
    n = len(depths) + len(runs)
    fig, axes = figures.panels(n, 4.6, 4.2, min_width=6.0)
    schemes = list(dict.fromkeys(p.scheme for p in grid))
    colors = {s: matplotlib.colormaps["tab10"](i % 10) for i, s in enumerate(schemes)}
    for ax, d in zip(axes, depths):
        curves = [_draw(ax, p, colors[p.scheme], f"{p.scheme}: {p.summary()['label']}")
                  for p in grid if p.depth == d]
        ax.set_title(f"depth {d}")
        ax.set_yscale("log")
        _limits_and_marks(ax, curves)
    for ax, (init, trained, name) in zip(axes[len(depths):], runs):
        curves = [_draw(ax, init, "tab:gray", f"init: {init.summary()['label']}"),
                  _draw(ax, trained, "tab:blue", f"{trained.when}: {trained.summary()['label']}",
                        ls="--")]
        ax.set_title(f"run {name} ({trained.scheme}, depth {trained.depth})")
        ax.set_yscale("log")
        _limits_and_marks(ax, curves)
    for ax in axes:
        ax.set_xlabel("layer (0 = embeddings)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 4, 8, 10]))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel("residual stream RMS")
    if title:
        fig.suptitle(title, fontsize=10)
    return figures.save(fig, path)
