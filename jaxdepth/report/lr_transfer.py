"""Report of the lr_transfer experiment: does the optimal learning rate stay put across width
and depth? Validation loss against log2(lr) per shape under sp, mup (Yang et al. 2022, arXiv
2203.03466) and completep (Dey et al. 2025, arXiv 2505.01618); per shape the optimum as the
vertex of a parabola in log lr (`jaxdepth.scaling.ucurve_minimum`, the U-curve fit of the
depth experiments with lr as its x); per parameterisation the drift (max - min) of the
optimal log2(lr) across widths at the base depth and across depths at the base width
(docs/literature.md §8). Diverged runs are left out of the fits and counted."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from jaxdepth import figures
from jaxdepth.report.markdown import pivot
from jaxdepth.report.specs import LR_TRANSFER, PARAMETERIZATIONS
from jaxdepth.scaling.ucurve import ucurve_minimum
from jaxdepth.tables import fmt, table

AXES = ("width", "depth")  # width axis at the base depth, depth axis at the base width
# The transfer targets: at most DRIFT_LIMIT octaves (factors of 2) of drift of the optimal lr
# across widths under mup and across depths under completep; the other rows are reported
# against the same number for comparison (sp: the drift transfer is meant to remove).
TARGETS = {("mup", "width"), ("completep", "depth")}
DRIFT_LIMIT = 1.0
EDGES = ("at_lower_edge", "at_upper_edge")
# statuses whose log2_lr_opt is an estimate: the parabola's vertex (ok), the best lr run
# (below_divergence: below the smallest diverged lr; vertex_outside_bracket: a vertex the
# runs either side of the best contradict; no_curvature: the parabola around the best opens
# downward), or a grid edge (a one-sided bound)
ESTIMATED = ("ok", "below_divergence", "vertex_outside_bracket", "no_curvature", *EDGES)

OPT_COLS = ["parameterization", "width", "depth", "axis", "runs", "diverged", "log2_lr_best",
            "log2_lr_star", "lr_star", "interval_log2", "interval_from", "status"]
OPT_SPECS = {"runs": "d", "diverged": "d", "log2_lr_best": "g", "log2_lr_star": ".2f",
             "lr_star": ".3g"}
DRIFT_COLS = ["parameterization", "axis", "shapes", "log2_lr_opt", "drift", "target", "verdict"]

LOSS_NOTE = ("The transfer test of muP (arXiv 2203.03466 Fig. 1) across width and of CompleteP "
             "(arXiv 2505.01618) across depth: the same learning-rate grid at every shape, same "
             "tokens per run. Final validation loss of every run, one table per "
             "parameterisation: a row per learning rate (log2_lr = log2 of train.lr, a grid of "
             "powers of 2), a column per shape (W = width, D = depth). A run that did not "
             "finish is named in its cell (`nan (diverged)`, `- (pending)`); replicates (seeds) "
             "show as mean ± sd (n).")
OPT_NOTE = ("Per (parameterisation, width, depth): log2_lr_best = the best learning rate run; "
            "log2_lr_star = the vertex of a parabola in log lr fitted to the final validation "
            "loss over up to 5 learning rates around it (`jaxdepth.scaling.ucurve_minimum`, the "
            "U-curve fit of the depth experiments: Hoffmann et al. 2022, arXiv 2203.15556, "
            "approach 2), lr_star = 2^log2_lr_star; interval_log2 = a 95% residual-bootstrap "
            "interval when replicates leave 3+ residual degrees of freedom, otherwise the "
            "bracket (the learning rates either side of the best, which hold the minimum of any "
            "unimodal curve; open-ended, -inf / inf, at an edge of the grid). Diverged runs "
            "(status diverged or a non-finite loss) are not fitted; `diverged` counts them. "
            "status: ok (vertex inside the grid), at_lower_edge / at_upper_edge (the best lr "
            "is the smallest / largest one run: the loss still falls toward that edge, no "
            "vertex is fitted), below_divergence "
            "(the best lr is the largest that did not diverge: the optimum lies between the lr "
            "below it and the smallest diverged one; log2_lr_opt is the best lr run), "
            "vertex_outside_bracket (the fitted vertex lies outside the bracket, which no unimodal "
            "curve allows: the loss is not a parabola around its best lr, e.g. one noisy run; "
            "log2_lr_opt is the best lr run), no_curvature (the parabola around the best lr "
            "opens downward: a jagged curve; log2_lr_opt is the best lr run), too_few_lrs "
            "(fewer than 3 learning rates "
            "finished: no estimate).")
FIG_NOTE = ("Final validation loss against log2(lr), one curve per {what}, one panel per "
            "parameterisation, as in EleutherAI/nanoGPT-mup's transfer figure (muP, arXiv "
            "2203.03466 Fig. 1): a star marks each curve's optimum log2_lr_opt at its best "
            "loss (hollow where the optimum is at an edge of the grid), x at the top a "
            "diverged run. Under transfer the stars line up vertically.")
DRIFT_NOTE = ("drift = max - min over the shapes of one axis of log2_lr_opt (the fitted vertex "
              "where status is ok, else the best lr run), in octaves: 1 = a factor of 2 in the "
              "learning rate. Width axis: the widths at the base depth; depth axis: the depths "
              "at the base width. Targets: drift <= 1 across widths under mup (muP's width "
              "transfer, arXiv 2203.03466) and across depths under completep (CompleteP's depth "
              "transfer, arXiv 2505.01618); sp has no target and is the drift they are meant to "
              "remove. In log2_lr_opt, `>=` / `<=` mark a shape whose loss still falls at the "
              "largest / smallest lr run (status at_upper_edge / at_lower_edge): its optimum is "
              "taken at that edge, as at or beyond it, so the drift is a lower bound (`>=`). "
              "The model-free bracket of such a shape (table above) reaches back to the lr "
              "next to the edge, so the verdict says `exceeds` only when the drift exceeds 1 "
              "wherever in its bracket the edge optimum lies (the other shapes at their "
              "estimates), and `undetermined` otherwise: widen the lr grid on that side.")


def log2_lr(lr: float) -> float:
    return math.log2(lr) if lr > 0 else -math.inf


def base_shape(meta: dict) -> tuple[int, int]:
    """(base_width, base_depth): the spec's overrides, then the user's `k=v` overrides,
    falling back on the size's LR_TRANSFER entry."""
    size = meta.get("size", "default")
    bw, bd = LR_TRANSFER.get(size, LR_TRANSFER["default"])["base"]
    keys = dict((meta.get("spec") or {}).get("overrides") or {})
    keys.update(item.split("=", 1) for item in meta.get("overrides", []) if "=" in item)
    return int(keys.get("model.base_width", bw)), int(keys.get("model.base_depth", bd))


def is_finished(r: dict) -> bool:
    v = r.get("final_val_loss")
    return r["status"] == "done" and isinstance(v, (int, float)) and math.isfinite(v)


def is_diverged(r: dict) -> bool:
    """Status diverged, or done with a non-finite final validation loss."""
    v = r.get("final_val_loss")
    return r["status"] == "diverged" or (
        r["status"] == "done" and isinstance(v, (int, float)) and not math.isfinite(v))


def _param_order(rows) -> list[str]:
    found = {r.get("parameterization") or "sp" for r in rows}
    return [p for p in PARAMETERIZATIONS if p in found] + sorted(found - set(PARAMETERIZATIONS))


def shape_optimum(rows: list[dict]) -> dict:
    """The optimal learning rate of one shape's runs (one parameterisation, width, depth)."""
    fin = [r for r in rows if is_finished(r)]
    div = sorted(r["lr"] for r in rows if is_diverged(r))
    nan = math.nan
    out = dict(runs=len(fin), diverged=len(div), log2_lr_best=nan, log2_lr_star=nan,
               lr_star=nan, log2_lr_opt=nan, best_loss=nan, lo=nan, hi=nan,
               interval_log2="-", interval_from="",
               status="all_diverged" if div and not fin else "no_runs")
    if not fin:
        return out
    m = ucurve_minimum([r["lr"] for r in fin], [r["final_val_loss"] for r in fin])
    best = m["observed_best_depth"]  # ucurve_minimum's x is the learning rate here
    status = "too_few_lrs" if m["status"] == "too_few_depths" else m["status"]
    lo, hi = m["interval"] or m["bracket"] or (nan, nan)
    above = [lr for lr in div if lr > best]
    if status == "at_upper_edge" and above:  # the smallest diverged lr closes the bracket
        status, hi = "below_divergence", above[0]
    star = log2_lr(m["depth_min"]) if status == "ok" else nan
    if status == "ok" and not m["bracket"][0] <= m["depth_min"] <= m["bracket"][1]:
        status = "vertex_outside_bracket"  # a jagged curve: no parabola around its best lr
    out.update(log2_lr_best=log2_lr(best), log2_lr_star=star, lr_star=2.0 ** star,
               log2_lr_opt=star if status == "ok" else (log2_lr(best) if status in ESTIMATED
                                                         else nan),
               best_loss=m["observed_best_loss"], status=status,
               interval_from="bootstrap" if m["interval"] else "bracket" if m["bracket"] else "")
    if m["bracket"]:
        out.update(lo=log2_lr(lo), hi=log2_lr(hi),
                   interval_log2=f"[{fmt(log2_lr(lo), '.2f')}, {fmt(log2_lr(hi), '.2f')}]")
    return out


def _shape_key(base: tuple[int, int]):
    """Sort key of (width, depth): the width axis (at the base depth) first, then the rest."""
    return lambda s: (s[1] != base[1], s[0], s[1])


def optimum_rows(rows: list[dict], base: tuple[int, int]) -> list[dict]:
    """One row per (parameterisation, width, depth) present in `rows` (pending runs
    included), with `shape_optimum`'s columns and the axes the shape lies on."""
    out = []
    for p in _param_order(rows):
        mine = [r for r in rows if (r.get("parameterization") or "sp") == p]
        for w, d in sorted({(r["width"], r["depth"]) for r in mine}, key=_shape_key(base)):
            axes = [a for a, on in zip(AXES, (d == base[1], w == base[0])) if on]
            out.append(dict(parameterization=p, width=w, depth=d, axes=axes,
                            axis=", ".join(axes) or "-",
                            **shape_optimum([r for r in mine
                                             if (r["width"], r["depth"]) == (w, d)])))
    return out


def _opt_text(o: dict) -> str:
    x = fmt(o["log2_lr_opt"], ".2f")
    return {"at_upper_edge": ">= ", "at_lower_edge": "<= "}.get(o["status"], "") + x


def drift_rows(opt: list[dict]) -> list[dict]:
    """Per parameterisation and axis: the spread of log2_lr_opt over the axis's shapes with an
    estimate, whether it is a lower bound (a shape's optimum at a grid edge), how many shapes
    have no estimate yet, and the verdict against DRIFT_LIMIT."""
    out = []
    for p in dict.fromkeys(o["parameterization"] for o in opt):
        for axis in AXES:
            shapes = [o for o in opt if o["parameterization"] == p and axis in o["axes"]]
            est = sorted((o for o in shapes if o["status"] in ESTIMATED), key=lambda o: o[axis])
            x = [o["log2_lr_opt"] for o in est]
            drift = max(x) - min(x) if len(x) >= 2 else math.nan
            lower_bound = any(o["status"] in EDGES for o in est)
            # an edge shape anywhere in its bracket, the others at their estimates
            ends = [(o["lo"], o["hi"]) if o["status"] in EDGES else (o["log2_lr_opt"],) * 2
                    for o in est]
            min_drift = (max(0.0, max(lo for lo, _ in ends) - min(hi for _, hi in ends))
                         if len(ends) >= 2 else math.nan)
            out.append(dict(
                parameterization=p, axis=axis, n_shapes=len(shapes), n_estimated=len(est),
                drift_value=drift, lower_bound=lower_bound, min_drift=min_drift,
                shapes=f"{len(est)} of {len(shapes)}",
                log2_lr_opt=", ".join(f"{axis[0].upper()}{o[axis]}: {_opt_text(o)}"
                                      for o in est) or "-",
                drift=("-" if math.isnan(drift) else
                       (">= " if lower_bound else "") + fmt(drift, ".2f")),
                target=f"<= {DRIFT_LIMIT:g}" if (p, axis) in TARGETS else "-",
                verdict=verdict(drift, min_drift, lower_bound, len(est), len(shapes))))
    return out


def verdict(drift: float, min_drift: float, lower_bound: bool, n_est: int,
            n_shapes: int) -> str:
    """The drift against DRIFT_LIMIT octaves: within / exceeds / undetermined, and partial
    while shapes lack an estimate. With an optimum at a grid edge (`lower_bound`) only
    `min_drift`, the drift with that optimum anywhere in its bracket, can decide: exceeds."""
    lim = f"{DRIFT_LIMIT:g}"
    if n_est < 2:
        return f"undetermined ({n_est} of {n_shapes} shapes have an optimum)"
    if not lower_bound:
        v = f"exceeds {lim}" if drift > DRIFT_LIMIT else f"within {lim}"
    elif min_drift > DRIFT_LIMIT:
        v = f"exceeds {lim} (lower bound, model-free: >= {min_drift:.2f})"
    else:
        v = f"undetermined: an optimum at a grid edge (model-free >= {min_drift:.2f})"
    return v + (f"; partial: {n_est} of {n_shapes} shapes" if n_est < n_shapes else "")


def loss_pivots(rows: list[dict], base: tuple[int, int]) -> list[str]:
    """Markdown: per parameterisation, validation loss with a row per log2 lr and a column
    per shape (the width axis, then the depth axis)."""
    shape_cols = sorted({(r["width"], r["depth"]) for r in rows}, key=_shape_key(base))
    names = {s: f"W{s[0]} D{s[1]}" for s in shape_cols}
    md = []
    for p in _param_order(rows):
        mine = [dict(r, log2_lr=log2_lr(r["lr"]), shape=names[(r["width"], r["depth"])])
                for r in rows if (r.get("parameterization") or "sp") == p]
        piv, _ = pivot(mine, "log2_lr", "shape", "final_val_loss")
        piv.sort(key=lambda r: r["log2_lr"])
        cols = ["log2_lr"] + [f"shape={names[s]}" for s in shape_cols
                              if any(r["shape"] == names[s] for r in mine)]
        md += [f"### {p}", "", table(piv, cols, {"log2_lr": "g"},
                                     headers={c: c.removeprefix("shape=") for c in cols}), ""]
    return md


def lr_figure(rows: list[dict], opt: list[dict], axis: str, path: Path, title: str) -> Path:
    """Loss against log2(lr), one panel per parameterisation, one curve per shape of `axis`;
    each curve's optimum as a star, each diverged run as an x at the top of its panel."""
    params = _param_order(rows)
    fig, axes = figures.panels(len(params), 4.4, 3.8)
    for ax, p in zip(axes, params):
        for o in sorted((o for o in opt if o["parameterization"] == p and axis in o["axes"]),
                        key=lambda o: o[axis]):
            shape = [r for r in rows if (r.get("parameterization") or "sp") == p
                     and (r["width"], r["depth"]) == (o["width"], o["depth"])]
            fin = [r for r in shape if is_finished(r)]
            div = [log2_lr(r["lr"]) for r in shape if is_diverged(r)]
            if not fin and not div:
                continue
            lrs = sorted({r["lr"] for r in fin})
            x = [log2_lr(lr) for lr in lrs]
            y = [np.mean([r["final_val_loss"] for r in fin if r["lr"] == lr]) for lr in lrs]
            line, = ax.plot(x, y, "o-", ms=3, label=f"{axis} {o[axis]}")
            c = line.get_color()
            if math.isfinite(o["log2_lr_opt"]):
                ax.plot([o["log2_lr_opt"]], [o["best_loss"]], "*", ms=12, color=c,
                        mfc="none" if o["status"] in EDGES else c)
            if div:
                ax.plot(div, [0.97] * len(div), "x", color=c, transform=ax.get_xaxis_transform())
        ax.set_xlabel("log2 learning rate")
        ax.set_title(p, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no finished runs yet", ha="center", va="center",
                    transform=ax.transAxes)
    axes[0].set_ylabel("final validation loss")
    fig.suptitle(title, fontsize=10)
    return figures.save(fig, path)


def report(out: Path, meta: dict, rows: list[dict]) -> str:
    base = base_shape(meta)
    opt = optimum_rows(rows, base)
    drift = drift_rows(opt)
    r0 = rows[0]
    lrs = sorted({r["lr"] for r in rows})
    widths = sorted({r["width"] for r in rows if r["depth"] == base[1]})
    depths = sorted({r["depth"] for r in rows if r["width"] == base[0]})
    n_div = sum(map(is_diverged, rows))
    n_missing = sum(not is_finished(r) and not is_diverged(r) for r in rows)
    tokens = r0["steps"] * r0["batch_size"] * r0["seq_len"]
    figs = []
    for axis, at in (("width", f"depth {base[1]}"), ("depth", f"width {base[0]}")):
        lr_figure(rows, opt, axis, out / f"lr_vs_{axis}.png",
                  f"loss against log2 lr, one curve per {axis} ({at})")
        figs += [FIG_NOTE.format(what=f"{axis} (at {at})"), "", f"![](lr_vs_{axis}.png)", ""]
    md = [f"Grid: {len(lrs)} learning rates (log2 lr {fmt(log2_lr(lrs[0]), 'g')} to "
          f"{fmt(log2_lr(lrs[-1]), 'g')}) x {', '.join(_param_order(rows))} x shapes: widths "
          f"{', '.join(map(str, widths))} at the base depth {base[1]}, depths "
          f"{', '.join(map(str, depths))} at the base width {base[0]}; base shape (width "
          f"{base[0]}, depth {base[1]}), where m_W = m_L = 1. Same tokens per run: "
          f"{r0['steps']} steps x {r0['batch_size']} x {r0['seq_len']} = {tokens}. Diverged "
          f"runs: {n_div} (left out of the fits, counted per shape below); runs not finished "
          f"(pending, running, failed): {n_missing}.", "",
          "## Validation loss by learning rate and shape", "", LOSS_NOTE, "",
          *loss_pivots(rows, base),
          "## Optimal learning rate per shape", "", table(opt, OPT_COLS, OPT_SPECS), "",
          OPT_NOTE, "",
          "## Loss against learning rate", "", *figs,
          "## Drift of the optimal learning rate across width and depth", "",
          table(drift, DRIFT_COLS), "", DRIFT_NOTE, ""]
    for d in drift:
        if (d["parameterization"], d["axis"]) in TARGETS or d["parameterization"] == "sp":
            md.append(f"- {d['parameterization']} across {d['axis']}s: drift {d['drift']} "
                      f"octaves, target {d['target']}: {d['verdict']}.")
    return "\n".join(md + ["", *coordcheck_section(out)])


def coordcheck_section(out: Path) -> list[str]:
    """The coordinate check the experiment ran at its base shape (OUT/coordcheck, written by
    `jaxdepth.diagnostics.coordcheck_cli.write_coordcheck`): its text and both figures."""
    md_path = out / "coordcheck" / "coordcheck.md"
    if not md_path.is_file():
        return ["## Coordinate check", "", "Not run here (a multi-host job leaves it to "
                "`jaxdepth coordcheck`)."]
    body = md_path.read_text().splitlines()[1:]  # without its own title
    return ["## Coordinate check (the same shapes, a few steps at the base lr)", *body,
            "![](coordcheck/coordcheck_width.png)", "", "![](coordcheck/coordcheck_depth.png)", ""]
