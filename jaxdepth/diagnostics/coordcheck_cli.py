"""`jaxdepth coordcheck CONFIG [k=v ...] [--widths 32,64,128,256] [--depths 2,4,8,16]
[--steps 5] [--parameterizations sp,mup,completep] [--lr X] [--out results/coordcheck]
[--no-progress]`: the muP coordinate check (Yang et al. 2022, arXiv 2203.03466; CompleteP,
Dey et al. 2025, arXiv 2505.01618, across depth) of a run config, per parameterisation
(`jaxdepth.diagnostics.coordcheck`). Writes coordcheck.csv (every row), coordcheck.md (the
slopes per doubling at the last step, also printed) and coordcheck_width.png /
coordcheck_depth.png (RMS change against width / depth, one line per step) to --out."""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

from jaxdepth.config import PARAMETERIZATIONS

DEFAULT_WIDTHS = "32,64,128,256"
DEFAULT_DEPTHS = "2,4,8,16"
DEFAULT_PARAMETERIZATIONS = ",".join(PARAMETERIZATIONS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.base_width=32")
    p.add_argument("--widths", default=DEFAULT_WIDTHS,
                   help=f"widths at the config's depth (default {DEFAULT_WIDTHS}); heads = "
                        "width // the config's head size")
    p.add_argument("--depths", default=DEFAULT_DEPTHS,
                   help=f"depths at the config's width (default {DEFAULT_DEPTHS})")
    p.add_argument("--steps", type=int, default=5, help="training steps (default 5)")
    p.add_argument("--parameterizations", default=DEFAULT_PARAMETERIZATIONS,
                   help=f"comma-separated (default {DEFAULT_PARAMETERIZATIONS})")
    p.add_argument("--lr", type=float, help="constant learning rate (default: train.lr)")
    p.add_argument("--out", default="results/coordcheck",
                   help="directory for coordcheck.csv/.md/_width.png/_depth.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _split(text: str, what: str, cast=str) -> list:
    from jaxdepth.errors import UserError

    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise UserError(f"--{what} must be a comma-separated list of integers, got "
                        f"'{text}'") from None


def slope_table(slope_rows: list[dict], step: int, style: str = "markdown") -> str:
    """One row per (parameterization, axis): the slope of each quantity's RMS change
    (`Δ`) and RMS per doubling at `step`."""
    from jaxdepth.diagnostics.coordcheck import SERIES, SERIES_LABELS
    from jaxdepth.tables import table

    rows: dict[tuple, dict] = {}
    for r in slope_rows:
        if r["step"] == step:
            row = rows.setdefault((r["parameterization"], r["axis"]), dict(
                parameterization=r["parameterization"], axis=r["axis"], n=r["n"]))
            row[f"{r['quantity']} d"], row[r["quantity"]] = r["delta_slope"], r["rms_slope"]
    cols = ["parameterization", "axis", "n"]
    headers = {"n": "shapes"}
    for q in SERIES:
        cols += [f"{q} d", q]
        headers.update({f"{q} d": f"{SERIES_LABELS[q]} Δ", q: f"{SERIES_LABELS[q]} rms"})
    specs = {c: "+.2f" for c in cols[3:]}
    return table(list(rows.values()), cols, specs, style=style, headers=headers)


def figure(rows: list[dict], slope_rows: list[dict], axis: str, path: Path) -> Path:
    """microsoft/mup-style grid for one axis: rows = parameterisations, columns = the RMS
    change of each quantity (`coordcheck.SERIES`) against width (depth) on log2 x and log y
    axes, one line per step t = 1..N (darker = later); each title has the slope at N."""
    import matplotlib
    import numpy as np

    from jaxdepth import figures
    from jaxdepth.diagnostics.coordcheck import SERIES, SERIES_LABELS, series

    pts = [r for r in series(rows) if r["axis"] == axis and r["step"] > 0]
    params = list(dict.fromkeys(r["parameterization"] for r in pts))
    steps = sorted({r["step"] for r in pts})
    xs = sorted({r[axis] for r in pts})
    last = {(r["parameterization"], r["quantity"]): r["delta_slope"] for r in slope_rows
            if r["axis"] == axis and r["step"] == (steps[-1] if steps else None)}
    fig = figures.figure(3.3 * len(SERIES), 2.8 * max(len(params), 1) + 0.5)
    # a quantity's panels share their y axis, so that the parameterisations compare at a glance
    axes = fig.subplots(max(len(params), 1), len(SERIES), squeeze=False, sharey="col")
    cmap = matplotlib.colormaps["viridis"]
    for i, p in enumerate(params):
        for j, q in enumerate(SERIES):
            ax = axes[i, j]
            for t in steps:
                line = sorted((r[axis], r["delta_rms"]) for r in pts
                              if r["parameterization"] == p and r["quantity"] == q
                              and r["step"] == t)
                x, y = np.array(line, dtype=np.float64).reshape(-1, 2).T
                y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
                ax.plot(x, y, "o-", ms=3, lw=1.4, label=f"t = {t}",
                        color=cmap(0.85 * (t - 1) / max(len(steps) - 1, 1)))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(xs, [str(v) for v in xs])
            ax.minorticks_off()
            s = last.get((p, q), math.nan)
            ax.set_title(f"{p}: {SERIES_LABELS[q]} Δ (slope {s:+.2f})", fontsize=9)
            if i == len(params) - 1:
                ax.set_xlabel(axis)
            if j == 0:
                ax.set_ylabel("RMS of h_t - h_0")
    for j, q in enumerate(SERIES):  # at least a decade tall: a flat line looks flat
        y = np.array([r["delta_rms"] for r in pts if r["quantity"] == q], np.float64)
        y = y[np.isfinite(y) & (y > 0)]
        if y.size:
            lo, hi = y.min(), y.max()
            pad = max(math.sqrt(10 * lo / hi), 1.0) * 1.3
            axes[0, j].set_ylim(lo / pad, hi * pad)
    if params:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"coordinate check across {axis}: RMS change since init after t steps "
                 f"(flat = {axis}-independent; slope = change of log2 RMS per doubling)",
                 fontsize=10)
    return figures.save(fig, path)


def write_csv(rows: list[dict], path: Path) -> None:
    from jaxdepth.diagnostics.coordcheck import ROW_KEYS

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_KEYS)
        w.writeheader()
        w.writerows({k: "" if r[k] is None else r[k] for k in ROW_KEYS} for r in rows)


def write_coordcheck(cfg, parameterizations, widths, depths, steps: int, lr, out: Path,
                     progress: bool = True) -> Path:
    """Run a coordinate check of `cfg` and write coordcheck.csv / .md / _width.png /
    _depth.png into `out` (the verb, and the lr_transfer experiment); returns the .md."""
    from jaxdepth.diagnostics import coordcheck as C

    shapes = C.plan(cfg, parameterizations, widths, depths, steps, lr)  # bad input: here
    from tqdm.auto import tqdm

    t0 = time.time()
    tok, tokens = C.first_batch(cfg)
    rows = []
    bar = tqdm(shapes, desc="coordcheck", unit="model", disable=not progress,
               dynamic_ncols=True)
    for s in bar:
        bar.set_postfix_str(f"{s.parameterization} width {s.width} depth {s.depth}")
        rows += C.measure(s, tokens, tok.vocab_size, tok.pad_id)
    slope_rows = C.slopes(rows)
    m, lr = cfg.model, shapes[0].cfg.train.lr
    text = slope_table(slope_rows, steps)
    print(text)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "coordcheck.csv")
    widths = sorted({s.width for s in shapes if "width" in s.axes})
    depths = sorted({s.depth for s in shapes if "depth" in s.axes})
    setup = (f"Scheme `{m.scheme}`, base width {m.base_width}, base depth {m.base_depth}, "
             f"depth alpha {m.depth_alpha:g}; widths {', '.join(map(str, widths))} at depth "
             f"{m.depth}, depths {', '.join(map(str, depths))} at width {m.width} (head size "
             f"{m.head_dim}); {steps} steps at a constant lr {lr:g} on one batch of "
             f"{cfg.data.batch_size} x {cfg.data.seq_len} tokens, seed {cfg.train.seed}.")
    legend = (f"Slope of log2 RMS per doubling of width (depth) at step {steps}, least "
              "squares over the axis's shapes: `Δ` = the change since init, `rms` = the value. "
              "About 0: independent of width (depth), as muP (arXiv 2203.03466) asks across "
              "width and CompleteP (arXiv 2505.01618) across depth; > 0: grows (SP).")
    figs = "Figures: `coordcheck_width.png`, `coordcheck_depth.png`; every row: `coordcheck.csv`."
    md = [f"# Coordinate check: {cfg.name}", "", setup, "", legend, "", text, "", figs, ""]
    (out / "coordcheck.md").write_text("\n".join(md))
    pngs = [figure(rows, slope_rows, axis, out / f"coordcheck_{axis}.png") for axis in C.AXES]
    print(f"wrote {out / 'coordcheck.csv'}, {out / 'coordcheck.md'}, "
          f"{', '.join(map(str, pngs))} in {time.time() - t0:.1f}s")
    return out / "coordcheck.md"


def run(args) -> int:
    from jaxdepth.config import load_config

    cfg = load_config(args.config, args.overrides)
    write_coordcheck(cfg, _split(args.parameterizations, "parameterizations"),
                     _split(args.widths, "widths", int), _split(args.depths, "depths", int),
                     args.steps, args.lr, Path(args.out), progress=not args.no_progress)
    return 0
