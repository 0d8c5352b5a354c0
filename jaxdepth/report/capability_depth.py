"""Report of the capability_depth experiment (docs/literature.md §9): for synthetic tasks whose
depth need is dialled by a difficulty (`jaxdepth.data.tasks`), the minimal depth that solves
each difficulty at a fixed width, its growth against log2(difficulty) next to the theory
(k-hop: Sanford, Hsu & Telgarsky 2024, arXiv 2402.09268; state tracking: Merrill &
Sabharwal 2025, arXiv 2503.03961; variable chains: Wu, Geiger & Millière 2025, arXiv
2505.20896), where the solving models form their answer (`jaxdepth.diagnostics.capability`),
and a deep-narrow against a wide-shallow model of about the same parameter count.

A run solves its (task, difficulty) when its exact match on the held-out examples reaches
`SOLVED_AT`; runs stop at the first evaluation that does. A diverged run counts as not
solved; a pending or interrupted run is missing (left out, and counted)."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path

import numpy as np

from jaxdepth import figures
from jaxdepth.errors import UserError
from jaxdepth.report.rows import run_dir_of
from jaxdepth.report.specs import CAPABILITY, SOLVED_AT
from jaxdepth.rundir import checkpoint_steps, jsonable, read_config, read_json, write_json
from jaxdepth.tables import fmt, table

N_BOOT, BOOT_SEED = 2000, 0  # bootstrap of the minimal-depth slope
FINISHED = ("done", "diverged")  # a result; any other status is a missing run
CACHE = "analysis/capability.json"  # per run dir: answer lens and removal, by checkpoint step
# the theory each task's minimal depth is compared with: the x axis of the fit
# ("log2" = log2 difficulty, "linear" = difficulty) and the slope it predicts
# (a number, "positive", or None: no depth law)
THEORY = {
    "khop": dict(x="log2", slope=1.0, text=(
        "Sanford, Hsu & Telgarsky 2024 (arXiv 2402.09268): hop_k in O(log k) layers by pointer "
        "doubling, one layer per doubling of k (slope 1 against log2 k)")),
    "state_tracking": dict(x="log2", slope="positive", text=(
        "Merrill & Sabharwal 2025 (arXiv 2503.03961): depth Theta(log n) for a non-solvable "
        "group (A5, S5): a positive slope against log2 n, its constant not given")),
    "var_chain": dict(x="linear", slope=1.0, text=(
        "Wu, Geiger & Millière 2025 (arXiv 2505.20896): trained models move the value one "
        "binding per layer, depth ~ L + c (slope 1 against L, a slope against log2 L that "
        "grows with L); pointer doubling would allow slope 1 against log2 L")),
    "facts": dict(x="log2", slope=None, text=(
        "no depth law: FFN layers as key-value memories (Geva et al. 2021, arXiv 2012.14913); "
        "composition (2, 3 hops) is where shallow models fail first")),
}


# ------------------------------------------------------------------------ rows


def is_solved(r: dict) -> bool:
    """A finished run whose held-out exact match reached SOLVED_AT (it stopped there)."""
    return r["status"] == "done" and (r.get("solved_step") is not None
                                      or (r.get("final_val_exact_match") or 0.0) >= SOLVED_AT)


def runs_of(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def exact_values(runs) -> list[float]:
    """Final exact match of the runs that trained to the end (diverged ones left out)."""
    return [float(r["final_val_exact_match"]) for r in runs if r["status"] == "done"
            and isinstance(r.get("final_val_exact_match"), (int, float))
            and math.isfinite(r["final_val_exact_match"])]


def mean_exact(runs) -> float:
    v = exact_values(runs)
    return float(np.mean(v)) if v else math.nan


def cell(runs) -> str:
    """Mean exact match over seeds, [min, max] when the seeds differ, ✓ when every seed
    solved (k/n ✓ when some did); diverged and unfinished runs named."""
    v = exact_values(runs)
    parts = []
    if v:
        s = fmt(float(np.mean(v)), ".2f")
        if f"{min(v):.2f}" != f"{max(v):.2f}":
            s += f" [{min(v):.2f}, {max(v):.2f}]"
        n_solved = sum(map(is_solved, runs))
        s += " ✓" if n_solved == len(runs) else (f" ({n_solved}/{len(runs)} ✓)" if n_solved else "")
        parts.append(s)
    parts += [f"seed {r['seed']} diverged" for r in runs if r["status"] == "diverged"]
    n_missing = sum(r["status"] not in FINISHED for r in runs)
    if n_missing:
        parts.append(f"{n_missing} unfinished")
    return "; ".join(parts) or "-"


@dataclasses.dataclass(frozen=True)
class Grid:
    """What the sweep varies: tasks (name, difficulties, seq_len, loss_on, options) in spec
    order, the base width and its depths, the wide-shallow (depth, width), the seeds."""

    tasks: list
    width: int
    depths: list
    wide: tuple
    seeds: list

    @property
    def d_max(self) -> int:
        return max(self.depths)


def grid_of(meta: dict, rows) -> Grid:
    """The sweep's grid read from its rows (so any sweep of this shape reports, not only the
    sizes in `CAPABILITY`): the base width is the one most shapes have, the wide-shallow
    shape the other; tasks in the order the rows list them."""
    shapes = {(r["depth"], r["width"]) for r in rows}
    widths = Counter(w for _, w in shapes)
    width = widths.most_common(1)[0][0]
    wide = next(((d, w) for d, w in sorted(shapes) if w != width),
                tuple(CAPABILITY.get(meta.get("size"), {}).get("wide", (0, 0))))
    tasks = {}
    for r in rows:
        t = tasks.setdefault(r["task"], [r["task"], set(), r["seq_len"], r["loss_on"],
                                         r.get("task_options") or ""])
        t[1].add(r["difficulty"])
    return Grid(tasks=[(n, sorted(ds), T, loss, opts) for n, ds, T, loss, opts in tasks.values()],
                width=width, depths=sorted(d for d, w in shapes if w == width), wide=wide,
                seeds=sorted({r["seed"] for r in rows}))


# ------------------------------------------------------------------------ setup


def setup_section(out: Path, rows, G: Grid) -> list[str]:
    from jaxdepth.data.tasks import make_task

    cfg = next((c for c in (read_config(run_dir_of(out, r)) for r in rows) if c), None)
    t = cfg["train"] if cfg else {}
    tasks = [dict(task=name, difficulties=", ".join(map(str, ds)), seq_len=T, loss_on=loss,
                  options=opts or "-",
                  example=make_task(name, max(ds), T, opts).description)
             for name, ds, T, loss, opts in G.tasks]
    steps, batch = max(r["steps"] for r in rows), rows[0]["batch_size"]
    scheme = {"pre": "Pre-LN"}.get(rows[0].get("scheme"), rows[0].get("scheme") or "?")
    n_val = t.get("eval_batches", 0) * batch
    wd, ww = G.wide
    return [
        "## Setup", "",
        "Tasks (an example described at the hardest difficulty; `loss_on`: the targets the "
        "loss trains on, every position's label (`all`) or the answers alone):", "",
        table(tasks, ["task", "difficulties", "seq_len", "loss_on", "options", "example"]), "",
        f"Models: {scheme}, width {G.width} at depths {', '.join(map(str, G.depths))}, and a "
        f"wide-shallow depth {wd} x width {ww} model; init seed{'s' if len(G.seeds) > 1 else ''} "
        f"{', '.join(map(str, G.seeds))}. Every run: up to {steps} steps of {batch} examples "
        f"of seq_len positions each, learning rate "
        f"{fmt(rows[0].get('lr'), '.3g')}, "
        f"evaluated every {t.get('eval_every', '?')} steps on the same {n_val or '?'} held-out "
        "examples.", "",
        f"Criterion: solved = exact match (every answer of an example right, greedy argmax) "
        f">= {SOLVED_AT} on the held-out examples. A run stops at the first evaluation that "
        "reaches it, so the budget is a maximum; a diverged run counts as not solved.", ""]


def status_lines(rows) -> list[str]:
    missing = [r for r in rows if r["status"] not in FINISHED]
    diverged = [r for r in rows if r["status"] == "diverged"]
    md = []
    if missing:
        md.append(f"**Partial sweep**: not finished: {len(missing)} of {len(rows)} runs "
                  f"({', '.join(sorted({r['status'] for r in missing}))}); they are left out "
                  "below (re-run the experiment command to resume).")
    if diverged:
        md.append("Diverged (counted as not solved): " + ", ".join(
            f"`{r['run_id']}` ({r['task']} {r['difficulty']}, depth {r['depth']}, width "
            f"{r['width']}, seed {r['seed']})" for r in diverged) + ".")
    return md + [""] if md else []


# ------------------------------------------------------------------------ accuracy


def accuracy_section(out: Path, rows, G: Grid) -> list[str]:
    md = [f"## Exact match by depth and difficulty (width {G.width})", "",
          "Cells: final held-out exact match, mean over seeds [min, max when they differ]; "
          f"✓ = every seed solved (>= {SOLVED_AT}), (k/n ✓) = k of n seeds did.", ""]
    cols = ["difficulty"] + [f"depth {D}" for D in G.depths]
    maps = {}
    for name, ds, *_ in G.tasks:
        cells = {d: {D: runs_of(rows, task=name, difficulty=d, depth=D, width=G.width)
                     for D in G.depths} for d in ds}
        md += [f"**{name}**", "", table([{"difficulty": d, **{f"depth {D}": cell(c[D])
                                                            for D in G.depths}}
                                         for d, c in cells.items()], cols), ""]
        maps[name] = (ds, np.array([[mean_exact(c[D]) for D in G.depths] for c in cells.values()]),
                      np.array([[bool(c[D]) and all(map(is_solved, c[D])) for D in G.depths]
                                for c in cells.values()]))
    heatmap(maps, G.depths, out / "accuracy_heatmap.png")
    return md + ["![](accuracy_heatmap.png)", ""]


def heatmap(maps: dict, depths: list, path: Path) -> Path:
    """One panel per task: depth (x) x difficulty (y), colour = mean exact match; cells
    annotated (✓ = every seed solved; grey = no finished run)."""
    fig, axes = figures.panels(len(maps), max(3.3, 0.38 * len(depths) + 1.2), 3.0)
    size = 8 if len(depths) <= 6 else 6
    for ax, (name, (ds, M, S)) in zip(axes, maps.items()):
        ax.imshow(np.ma.masked_invalid(M), vmin=0.0, vmax=1.0, cmap="viridis", origin="lower",
                  aspect="auto")
        ax.set_facecolor("lightgray")
        for i in range(len(ds)):
            for j in range(len(depths)):
                txt = "-" if np.isnan(M[i, j]) else f"{M[i, j]:.2f}" + ("\n✓" if S[i, j] else "")
                ax.text(j, i, txt, ha="center", va="center", fontsize=size,
                        color="black" if M[i, j] > 0.6 else "white")
        ax.set_xticks(range(len(depths)), [str(D) for D in depths])
        ax.set_yticks(range(len(ds)), [str(d) for d in ds])
        ax.set_xlabel("depth")
        ax.set_ylabel("difficulty")
        ax.set_title(name, fontsize=9)
    fig.suptitle("held-out exact match, mean over seeds (colour: 0 dark to 1 yellow); "
                 f"✓ = every seed >= {SOLVED_AT}", fontsize=10)
    return figures.save(fig, path)


# ------------------------------------------------------------------------ minimal depth


def minimal_depths(rows, G: Grid, task: str, difficulty: int) -> dict:
    """seed -> (the shallowest base-width depth that solved it, or None: censored, solved at
    no depth; unknown: True when a shallower (or, censored, any) depth has not finished)."""
    out = {}
    for seed in G.seeds:
        runs = {r["depth"]: r for r in runs_of(rows, task=task, difficulty=difficulty,
                                               width=G.width, seed=seed)}
        solved = sorted(D for D, r in runs.items() if is_solved(r))
        m = solved[0] if solved else None
        unknown = any(D not in runs or runs[D]["status"] not in FINISHED
                      for D in G.depths if m is None or D < m)
        out[seed] = (m, unknown)
    return out


def depth_text(m, unknown: bool, d_max: int) -> str:
    return (str(m) if m is not None else f"> {d_max}") + ("*" if unknown else "")


def slope_fit(points: dict, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict:
    """Least-squares slope and intercept of y against x over `points` {x: [y per seed]}, and
    a 95% interval: percentiles of a bootstrap over the seeds within each x (every x
    resampled with replacement to its own count, `n_boot` times, fixed RNG) when every x has
    2+ points, else scipy.stats.linregress's t interval (slope ± t_{0.975, n-2} stderr)
    when there are 3+ points, else none."""
    xs = [x for x in sorted(points) if len(points[x])]
    x = np.concatenate([[k] * len(points[k]) for k in xs]) if xs else np.zeros(0)
    y = np.concatenate([points[k] for k in xs]).astype(np.float64) if xs else np.zeros(0)
    out = dict(n=len(y), n_x=len(xs), slope=math.nan, intercept=math.nan, lo=math.nan,
               hi=math.nan, method="no fit: fewer than 2 difficulties with a solved point")
    if len(xs) < 2:
        return out
    # rounded: a flat line prints 0.00, not the -0.00 of a rounding error
    out["slope"], out["intercept"] = (float(np.round(v, 12)) + 0.0 for v in np.polyfit(x, y, 1))
    if all(len(points[k]) >= 2 for k in xs):
        rng = np.random.default_rng(seed)
        ys = np.concatenate([np.asarray(points[k], np.float64)[
            rng.integers(0, len(points[k]), (n_boot, len(points[k])))] for k in xs], axis=1)
        xc = x - x.mean()  # the x of every resample are the same: only y is resampled
        slopes = (ys - ys.mean(1, keepdims=True)) @ xc / (xc @ xc)
        out["lo"], out["hi"] = (float(v) for v in np.percentile(slopes, [2.5, 97.5]))
        out["method"] = f"bootstrap over seeds within each difficulty ({n_boot} resamples)"
    elif len(y) >= 3:
        from scipy import stats

        res = stats.linregress(x, y)
        half = stats.t.ppf(0.975, len(y) - 2) * res.stderr
        out["lo"], out["hi"] = res.slope - half, res.slope + half
        out["method"] = "linregress t interval (a difficulty has fewer than 2 seeds solved)"
    else:
        out["method"] = "2 points: no interval"
    return out


def compare(fit: dict, ref) -> str:
    """One line: the measured slope against the theory's `ref` (a number or "positive")."""
    if fit["n"] == 0:
        return "everything censored (solved at no depth in the sweep): the theory is not tested"
    if not math.isfinite(fit["slope"]):
        return (f"not tested: {fit['n']} solved point(s) at {fit['n_x']} difficulty, a slope "
                "needs 2 difficulties")
    if ref is None:
        return "no theory to compare with"
    if not math.isfinite(fit["lo"]):
        return f"not tested: {fit['n']} points give no interval"
    iv = f"[{fit['lo']:.2f}, {fit['hi']:.2f}]"
    if ref == "positive":
        if fit["lo"] > 0:
            return f"agrees: positive (95% interval {iv} above 0)"
        if fit["hi"] <= 0:
            return f"**disagrees**: the 95% interval {iv} lies at or below 0"
        return f"not resolved: the 95% interval {iv} includes 0"
    if fit["lo"] <= ref <= fit["hi"]:
        return f"agrees: the 95% interval {iv} contains {ref:g}"
    return f"**disagrees**: the 95% interval {iv} excludes {ref:g}"


def x_of(d, axis: str) -> float:
    return math.log2(d) if axis == "log2" else float(d)


def minimal_depth_results(rows, G: Grid) -> tuple[list, list, dict]:
    """(table rows: per task and difficulty the per-seed minimal depths, median, [min,
    max]; fit rows: per task the slope against the theory's axes, with its verdict; figure
    panels: per task (difficulties, per-seed minimal depths, the log2 fit))."""
    trows, fits, panels = [], [], {}

    def dtext(x: float) -> str:
        return f"> {G.d_max}" if x == math.inf else fmt(x, ".3g")

    for name, ds, *_ in G.tasks:
        per_d = {d: minimal_depths(rows, G, name, d) for d in ds}
        for d, ms in per_d.items():
            v = [m if m is not None else math.inf for m, _ in ms.values()]
            trows.append({"task": name, "difficulty": d,
                          **{f"seed {s}": depth_text(*ms[s], G.d_max) for s in G.seeds},
                          "median": dtext(float(np.median(v))) if v else "-",
                          "[min, max]": f"[{dtext(min(v))}, {dtext(max(v))}]" if v else "-"})
        theory = THEORY.get(name, dict(x="log2", slope=None, text="-"))
        n_cens = sum(m is None for ms in per_d.values() for m, _ in ms.values())
        for axis in ["log2"] + (["linear"] if theory["x"] == "linear" else []):
            f = slope_fit({x_of(d, axis): [m for m, _ in ms.values() if m is not None]
                           for d, ms in per_d.items()})
            # var_chain against log2 L: pointer doubling's slope 1, the alternative
            ref = theory["slope"] if axis == theory["x"] else 1.0
            what = ("1 (pointer doubling)" if axis != theory["x"] else "-" if ref is None
                    else "> 0" if ref == "positive"
                    else f"{ref:g} per {'binding' if axis == 'linear' else 'doubling'}")
            fits.append({"task": name, "against": "log2 difficulty" if axis == "log2"
                         else "difficulty", "main": axis == theory["x"], "points": f["n"],
                         "censored (left out)": n_cens, "slope": f["slope"],
                         "95% interval": (f"[{f['lo']:.2f}, {f['hi']:.2f}]"
                                          if math.isfinite(f["lo"]) else "-"),
                         "theory": what, "verdict": compare(f, ref), "method": f["method"]})
            if axis == "log2":
                panels[name] = (ds, per_d, f)
    return trows, fits, panels


def min_depth_section(out: Path, G: Grid, trows, fits, panels) -> list[str]:
    theory = ["Theory beside each task:", "",
              *[f"- {name}: {THEORY[name]['text']}." for name, *_ in G.tasks if name in THEORY],
              ""]
    head = ["## Minimal depth per task and difficulty, and the theory", ""]
    if not any(f["points"] for f in fits):
        return head + [f"No width-{G.width} run solved any (task, difficulty): every minimal "
                       f"depth is censored (> {G.d_max}), so no slope is fitted and no theory "
                       "is tested.", "", *theory]
    min_depth_figure(panels, G, out / "min_depth_vs_log2_difficulty.png")
    fitted = [f for f in fits if math.isfinite(f["slope"])]
    return head + [
        f"The shallowest width-{G.width} depth whose run solved it, per seed; `> {G.d_max}` = "
        "solved at no depth of the sweep (censored); `*` = a shallower depth of that seed has "
        "not finished (an upper bound, or not yet known).", "",
        table(trows, ["task", "difficulty", *[f"seed {s}" for s in G.seeds], "median",
                      "[min, max]"]), "",
        "Least-squares slope of the per-seed minimal depths against log2(difficulty) (layers "
        "per doubling; for var_chain also against the chain length L: layers per binding) "
        "over the uncensored points; censored points are left out (counted).", "",
        table(fits, ["task", "against", "points", "censored (left out)", "slope",
                     "95% interval", "theory", "verdict"],
              {"slope": lambda v: f"{v:.2f}" if math.isfinite(v) else "-"}), "",
        *(["Intervals: " + "; ".join(f"{f['task']} ({f['against']}): {f['method']}"
                                      for f in fitted) + ".", ""] if fitted else []),
        *theory, "![](min_depth_vs_log2_difficulty.png)", ""]


def summary_section(rows, G: Grid, trows, fits) -> list[str]:
    """One line per task: the difficulties solved, the median minimal depths, the verdict
    of its main fit."""
    md = ["## Summary", ""]
    if not any(map(is_solved, rows)):
        return md + [f"Nothing was solved: no run reached exact match {SOLVED_AT} on its "
                     "held-out examples, so every minimal depth is censored and no theory is "
                     "tested (the sections below show how far each run got).", ""]
    for name, ds, *_ in G.tasks:
        solved = sorted({r["difficulty"] for r in runs_of(rows, task=name, width=G.width)
                         if is_solved(r)})
        if not solved:
            md.append(f"- {name}: solved at no difficulty by a width-{G.width} model of depth "
                      f"<= {G.d_max}.")
            continue
        meds = ", ".join(f"{t['median']} at {t['difficulty']}" for t in trows if t["task"] == name)
        main = next(f for f in fits if f["task"] == name and f["main"])
        iv = "" if main["95% interval"] == "-" else f" {main['95% interval']}"
        slope = (f"slope against {main['against']} {main['slope']:.2f}{iv}: "
                 if math.isfinite(main["slope"]) else "")
        md.append(f"- {name}: solved (some seed) at difficulties {', '.join(map(str, solved))}; "
                  f"median minimal depth (at difficulty) {meds}; {slope}{main['verdict']}.")
    return md + [""]


def min_depth_figure(panels: dict, G: Grid, path: Path) -> Path:
    """Per task: each seed's minimal depth (jittered; censored ones as open triangles above
    the deepest depth), the median, the fit and the theory's slope through the first
    median."""
    fig, axes = figures.panels(len(panels), 3.6, 3.4)
    top = G.d_max + 1.0  # where censored points sit
    for ax, (name, (ds, per_d, f)) in zip(axes, panels.items()):
        x = np.log2(np.asarray(ds, np.float64))
        n = len(G.seeds)
        for i, s in enumerate(G.seeds):
            jit = (i - (n - 1) / 2) * 0.05
            m = [per_d[d][s][0] for d in ds]
            ok = np.array([v is not None for v in m])
            ax.plot(x[ok] + jit, [v for v in m if v is not None], "o", alpha=0.6, ms=5,
                    color="C0", label="seeds" if i == 0 else None)
            ax.plot(x[~ok] + jit, np.full((~ok).sum(), top), "^", mfc="none", color="C3",
                    label=f"> {G.d_max} (censored)" if i == 0 and (~ok).any() else None)
        med = np.array([np.median([v if v is not None else math.inf
                                   for v, _ in per_d[d].values()]) for d in ds])
        fin = np.isfinite(med)
        if fin.any():
            ax.plot(x[fin], med[fin], "s-", color="k", ms=4, label="median")
        xs = np.linspace(x.min(), x.max(), 50)
        if math.isfinite(f["slope"]):
            ax.plot(xs, f["intercept"] + f["slope"] * xs, "-", color="C1",
                    label=f"fit: slope {f['slope']:.2f}")
        if fin.any():  # the theory's slope, through the first finite median
            x0, y0 = x[fin][0], med[fin][0]
            if name == "khop":
                ax.plot(xs, y0 + (xs - x0), "--", color="gray", label="log2 k + c (slope 1)")
            elif name == "var_chain":
                ax.plot(xs, y0 + 2 ** xs - 2 ** x0, "--", color="gray", label="L + c (1/binding)")
                ax.plot(xs, y0 + (xs - x0), ":", color="gray", label="log2 L + c (doubling)")
        if not any(v is not None for d in ds for v, _ in per_d[d].values()):
            ax.text(0.5, 0.45, "solved at no depth", transform=ax.transAxes, ha="center",
                    color="gray")
        elif not fin.any():
            ax.text(0.5, 0.45, "no median solved", transform=ax.transAxes, ha="center",
                    color="gray")
        ax.axhspan(G.d_max + 0.5, G.d_max + 1.5, color="0.93", zorder=0)
        ax.set_ylim(0.5, G.d_max + 1.5)
        ax.set_yticks([*G.depths, top], [*map(str, G.depths), f"> {G.d_max}"])
        ax.set_xticks(x, [str(d) for d in ds])
        ax.margins(x=0.15)
        ax.set_xlabel("difficulty (log2 axis)")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    axes[0].set_ylabel(f"minimal depth that solves it (width {G.width})")
    fig.suptitle(f"minimal depth reaching exact match >= {SOLVED_AT}; the theory lines compare "
                 "slopes (offset through the first median)", fontsize=9)
    return figures.save(fig, path)


# ------------------------------------------------------------------------ answer formation


def capability_analysis(run_dir: Path) -> dict:
    """The answer lens and answer removal of a run's newest checkpoint on its own held-out
    batches, cached in RUN_DIR/analysis/capability.json by checkpoint step (reused only for
    the same number of batches)."""
    from jaxdepth.data.tasks.stream import load_task
    from jaxdepth.diagnostics.capability import answer_lens, answer_removal
    from jaxdepth.diagnostics.run_analysis import restore_model

    steps, cfg = checkpoint_steps(run_dir), read_config(run_dir)
    if not steps or cfg is None:
        raise UserError(f"'{run_dir}' has no checkpoint to analyse")
    path = Path(run_dir) / CACHE
    hit = (read_json(path) or {}).get(str(steps[-1]))
    if hit and hit.get("eval_batches") == cfg["train"]["eval_batches"]:
        return hit
    cfg, mcfg, params, step = restore_model(Path(run_dir))
    batches = load_task(cfg.data).val_batches(cfg.train.eval_batches)
    a = jsonable(dict(step=step, eval_batches=cfg.train.eval_batches,
                      lens=dataclasses.asdict(answer_lens(params, mcfg, batches)),
                      removal=dataclasses.asdict(answer_removal(params, mcfg, batches))))
    path.parent.mkdir(exist_ok=True)
    write_json(path, {**(read_json(path) or {}), str(step): a}, indent=1)
    return a


def formation_runs(rows, G: Grid, task: str):
    """(difficulty, runs): the task's hardest difficulty a base-width run solved, and the
    lowest solving seed's runs at it, at its shallowest and its deepest solving depth."""
    solved = [r for r in runs_of(rows, task=task, width=G.width) if is_solved(r)]
    if not solved:
        return None, []
    d = max(r["difficulty"] for r in solved)
    at = [r for r in solved if r["difficulty"] == d]
    seed = min(r["seed"] for r in at)
    mine = sorted((r for r in at if r["seed"] == seed), key=lambda r: r["depth"])
    return d, [mine[0]] + ([mine[-1]] if len(mine) > 1 else [])


def formation_section(out: Path, rows, G: Grid) -> list[str]:
    from jaxdepth.diagnostics.capability import FORMATION_FRACTION, answer_formation_layer

    trows, curves, notes = [], {}, []
    for name, *_ in G.tasks:
        d, runs = formation_runs(rows, G, name)
        if not runs:
            notes.append(f"- {name}: no width-{G.width} run solved any difficulty: nothing to "
                         "analyse.")
        for r in runs:
            try:
                a = capability_analysis(run_dir_of(out, r))
            except Exception as e:  # noqa: BLE001 - the report stands without one analysis
                notes.append(f"- {name} {d}, depth {r['depth']}: analysis failed "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                continue
            lens, rem = np.asarray(a["lens"]["exact_match"], float), a["removal"]
            base, removed = rem["base_exact_match"], np.asarray(rem["exact_match"], float)
            worst = int(np.argmin(removed))
            x_form = answer_formation_layer(lens, base)
            vital = np.flatnonzero(removed < SOLVED_AT) + 1  # numbered from 1
            trows.append({"task": name, "difficulty": d, "depth": r["depth"], "seed": r["seed"],
                          "step": a["step"], "exact match": base,
                          "formed after layer": "-" if x_form is None else x_form,
                          "layers it cannot lose": ", ".join(map(str, vital)) or "none",
                          "largest removal drop":
                              f"{base - removed[worst]:.2f} (layer {worst + 1})"})
            curves.setdefault(name, []).append((f"depth {r['depth']}", lens, removed, x_form))
    md = ["## Where the answer forms, and the layers it cannot lose", "",
          "For each task, its hardest difficulty a width-"
          f"{G.width} run solved; the lowest solving seed's runs at its shallowest and deepest "
          "solving depths, restored from their last checkpoint and measured on their own "
          "held-out examples. Layers are numbered from 1; hidden index x is the residual "
          "stream after layer x (0 = the embeddings). Logit lens (nostalgebraist 2020; "
          "Belrose et al. 2023, arXiv 2303.08112) at the answer positions: `formed after "
          f"layer` = the first x whose lens exact match reaches {FORMATION_FRACTION:.0%} of the "
          "model's own. Layer removal (ShortGPT, arXiv 2403.03853, scored by exact match): "
          f"`layers it cannot lose` = those whose removal alone drops exact match below "
          f"{SOLVED_AT}.", ""]
    if trows:
        md += [table(trows, ["task", "difficulty", "depth", "seed", "step", "exact match",
                             "formed after layer", "layers it cannot lose",
                             "largest removal drop"], {"exact match": ".2f"}), ""]
        formation_figure(curves, out / "answer_formation.png")
        md += ["![](answer_formation.png)", ""]
    if not trows and not curves and all("nothing to analyse" in n for n in notes):
        return md[:2] + [f"No width-{G.width} run solved any difficulty: nothing to analyse.",
                         ""]
    return md + notes + ([""] if notes else [])


def formation_figure(curves: dict, path: Path) -> Path:
    """Per task: top, the lens exact match against the hidden index (one line per run, the
    formation index marked); bottom, exact match with each layer removed."""
    n = len(curves)
    fig = figures.figure(max(3.6 * n, 5.0), 6.0)
    axes = fig.subplots(2, n, squeeze=False)
    for j, (name, runs) in enumerate(curves.items()):
        top, bottom = axes[0, j], axes[1, j]
        for k, (label, lens, removed, x_form) in enumerate(runs):
            color = f"C{k}"
            top.plot(np.arange(len(lens)), lens, ".-", color=color, label=label)
            if x_form is not None:
                top.plot([x_form], [lens[x_form]], "o", mfc="none", ms=10, color=color)
            bottom.plot(np.arange(1, len(removed) + 1), removed, "o-", color=color, label=label)
        for ax in (top, bottom):
            ax.axhline(SOLVED_AT, color="gray", ls=":", lw=0.8)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            ax.xaxis.get_major_locator().set_params(integer=True)
        top.set_title(f"{name}: logit lens at the answers (○ = formed)", fontsize=9)
        top.set_xlabel("hidden index x (after layer x; 0 = embeddings)")
        bottom.set_title(f"{name}: exact match with one layer removed", fontsize=9)
        bottom.set_xlabel("removed layer")
    axes[0, 0].set_ylabel("lens exact match")
    axes[1, 0].set_ylabel("exact match")
    return figures.save(fig, path)


# ------------------------------------------------------------------------ depth vs width


def depth_width_section(out: Path, rows, G: Grid) -> list[str]:
    shapes = {"deep-narrow": (G.d_max, G.width), "wide-shallow": G.wide}
    label = {k: f"{k} (depth {D}, width {W})" for k, (D, W) in shapes.items()}
    params = {k: sorted({r["params"] for r in rows if (r["depth"], r["width"]) == s
                         and r.get("params")}) for k, s in shapes.items()}
    ptext = {k: ("?" if not v else f"{v[0]:,}" if len(v) == 1 else f"{v[0]:,}-{v[-1]:,}")
             for k, v in params.items()}
    if params["deep-narrow"] and params["wide-shallow"]:
        ptext["wide-shallow"] += (f"; {params['wide-shallow'][0] / params['deep-narrow'][0]:.2f}"
                                  " times the deep-narrow count")
    trows, verdicts, panels = [], [], {}
    for name, ds, *_ in G.tasks:
        cells = {k: {d: runs_of(rows, task=name, difficulty=d, depth=D, width=W) for d in ds}
                 for k, (D, W) in shapes.items()}
        trows += [{"task": name, "difficulty": d, **{label[k]: cell(cells[k][d]) for k in shapes}}
                  for d in ds]
        hardest = {k: max((d for d in ds if cells[k][d] and all(map(is_solved, cells[k][d]))),
                          default=None) for k in shapes}
        either = [h for h in hardest.values() if h is not None]
        if not either:
            verdicts.append(f"- {name}: neither shape solves any difficulty.")
        else:
            top = max(either)
            who = [k for k, h in hardest.items() if h == top]
            h = {k: "none" if v is None else v for k, v in hardest.items()}
            verdicts.append(
                f"- {name}: hardest difficulty solved: deep-narrow {h['deep-narrow']}, "
                f"wide-shallow {h['wide-shallow']}; at difficulty {top}: "
                + ("both solve it." if len(who) == 2 else f"only the {who[0]} model solves it."))
        panels[name] = (ds, {label[k]: ([mean_exact(cells[k][d]) for d in ds],
                                        [exact_values(cells[k][d]) for d in ds])
                             for k in shapes})
    if all("neither" in v for v in verdicts):
        verdicts = ["Neither shape solves any difficulty of any task."]
    depth_width_figure(panels, out / "depth_vs_width.png")
    return ["## Depth against width at a fixed parameter count", "",
            f"Deep-narrow = the deepest width-{G.width} model ({ptext['deep-narrow']} "
            f"non-embedding parameters); wide-shallow = depth {G.wide[0]}, width {G.wide[1]} "
            f"({ptext['wide-shallow']}). Cells as above (✓ = every seed solved); a shape solves "
            "a difficulty when every seed does.", "",
            table(trows, ["task", "difficulty", *label.values()]), "", *verdicts, "",
            "![](depth_vs_width.png)", ""]


def depth_width_figure(panels: dict, path: Path) -> Path:
    fig, axes = figures.panels(len(panels), 3.6, 3.3)
    for ax, (name, (ds, lines)) in zip(axes, panels.items()):
        for k, (label, (mean, per_seed)) in enumerate(lines.items()):
            ax.plot(ds, mean, ["o-", "s--"][k % 2], color=f"C{k}", ms=[7, 4][k % 2],
                    label=label)  # distinct styles: the lines often coincide
            for d, v in zip(ds, per_seed):
                ax.plot([d] * len(v), v, ".", color=f"C{k}", alpha=0.35)
        ax.axhline(SOLVED_AT, color="gray", ls=":", lw=0.8, label=f"solved ({SOLVED_AT})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ds, [str(d) for d in ds])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("difficulty")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.margins(x=0.1)
    axes[0].legend(fontsize=7, loc="best")
    axes[0].set_ylabel("held-out exact match (mean over seeds)")
    fig.suptitle("deep-narrow vs wide-shallow at about the same parameter count", fontsize=10)
    return figures.save(fig, path)


# ------------------------------------------------------------------------ report


def report(out: Path, meta: dict, rows: list[dict]) -> str:
    out = Path(out)
    G = grid_of(meta, rows)
    trows, fits, panels = minimal_depth_results(rows, G)
    md = [*summary_section(rows, G, trows, fits), *setup_section(out, rows, G),
          *status_lines(rows), *accuracy_section(out, rows, G),
          *min_depth_section(out, G, trows, fits, panels), *formation_section(out, rows, G),
          *depth_width_section(out, rows, G)]
    return "\n".join(md)
