"""Reports of the four sweep experiments, from a finished (or partial) results directory:
`OUT/experiment.json`, `OUT/sweep/` (the sweep runner's out dir). Each `report_<name>(out,
meta, rows)` returns the markdown body and writes its PNGs into OUT. Per-layer analyses
(angular distance, layer removal: `jaxdepth.diagnostics.analysis.analyze`) are cached in
each run's `analysis/analysis.json`; regenerating a report never trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from jaxdepth.diagnostics.grad_persistence import (fit_grad_persistence, late_layer_grad_norms,
                                                   tau_over_training)
from jaxdepth.report import plots
from jaxdepth.report.fits import TAU_EXPONENT, dcrit_paper, per_width_minimum, power_law
from jaxdepth.report.markdown import fmt, mean_sd, pivot, table
from jaxdepth.sweep.results import read_metrics


def run_dir_of(out: Path, row: dict) -> Path:
    """A row's run directory: its own `run_dir` (quickstart) or OUT/sweep/runs/<id>."""
    return Path(row["run_dir"]) if row.get("run_dir") else out / "sweep" / "runs" / row["run_id"]


def flat_rows(out: Path, names: list[str]) -> list[dict]:
    """Results rows of run directories OUT/<name> that are not part of a sweep."""
    from jaxdepth.sweep.results import run_row

    return [{**run_row(json.loads((out / n / "config.json").read_text()), out / n),
             "run_dir": str(out / n)} for n in names]


def finished(rows, **match) -> list[dict]:
    """Rows that trained to the end (done) and match the given column values."""
    return [r for r in rows if r["status"] == "done" and r.get("final_val_loss") is not None
            and all(r.get(k) == v for k, v in match.items())]


def first_seed(rows) -> list[dict]:
    """The runs of the lowest init seed: one run per shape, for per-run figures."""
    seeds = [r.get("seed") or 0 for r in rows]
    return [r for r, sd in zip(rows, seeds) if sd == min(seeds, default=0)]


def seed_stats(rows, **match) -> dict:
    """Mean, sample sd (NaN for one run), count and values of the final validation loss
    over the finished replicates (seeds) matching `match`."""
    v = [x for x in (r["final_val_loss"] for r in finished(rows, **match)) if math.isfinite(x)]
    mean, sd = mean_sd(v)
    return dict(mean=mean, sd=sd, n=len(v), values=v)


def mean_by_depth(rows, **match) -> tuple[list, list, tuple[list, list]]:
    """(depths, mean final validation loss over seeds, (each run's depth, each run's
    loss)) of the finished runs matching `match`, for the loss-against-depth figures."""
    fin = finished(rows, **match)
    depths = sorted({r["depth"] for r in fin})
    return (depths, [seed_stats(rows, depth=d, **match)["mean"] for d in depths],
            ([r["depth"] for r in fin], [r["final_val_loss"] for r in fin]))


def run_analysis(run_dir: Path) -> dict:
    """The run's per-layer analysis at its last checkpoint, computed once and cached."""
    path = run_dir / "analysis" / "analysis.json"
    if path.exists():
        return json.loads(path.read_text())
    from jaxdepth.data.pipeline import val_batches
    from jaxdepth.diagnostics.analysis import analyze
    from jaxdepth.diagnostics.cli import load_run

    cfg, mcfg, params, step, corpus = load_run(run_dir, None)
    tokens = val_batches(corpus, cfg.data, cfg.train.eval_batches)
    a = analyze(params, mcfg, tokens, corpus.tokenizer.pad_id, records=read_metrics(run_dir),
                step=step)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(a))  # NaN / Infinity are read back by json.loads
    return a


def _curves(out: Path, rows, key: str = "loss"):
    """label -> (steps, values) of each run's metrics.jsonl."""
    res = {}
    for r in rows:
        rec = [m for m in read_metrics(run_dir_of(out, r)) if key in m]
        res[r["scheme"]] = ([m["step"] for m in rec], [m[key] for m in rec])
    return res


def _wall(rows) -> str:
    return f"{sum(r.get('wall_time_s') or 0.0 for r in rows):.0f} s of training over {len(rows)} runs"


# ------------------------------------------------------------------ curse of depth


def report_curse_of_depth(out: Path, meta: dict, rows: list[dict]) -> str:
    """Sun et al. 2025, arXiv 2502.05795: LNS vs Pre-LN vs Post-LN/Mix-LN/DeepNorm by depth."""
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    depths = sorted({r["depth"] for r in rows})
    D = depths[-1]
    piv, cols = pivot(rows, "scheme", "depth", "final_val_loss")
    md = ["## Validation loss by depth (width "
          f"{rows[0]['width']}, {rows[0]['steps']} steps, same data; {seeds_text(rows)})", "",
          table(piv, cols), ""]
    plots.loss_vs_depth({"val loss (mean over seeds)": {s: mean_by_depth(rows, scheme=s)
                                                        for s in schemes}},
                        out / "val_loss_by_depth.png", "Curse of Depth: final validation loss")
    one = first_seed(rows)
    plots.loss_vs_steps({f"depth {d}": _curves(out, [r for r in one if r["depth"] == d])
                         for d in depths}, out / "loss_vs_steps.png", "train loss against steps")
    md += ["![](val_loss_by_depth.png)", "", "![](loss_vs_steps.png)", ""]
    deep = {r["scheme"]: r for r in finished(one, depth=D)}
    rms, ang, rem, diag = {}, {}, {}, []
    for s, r in deep.items():
        run_dir = run_dir_of(out, r)
        rec = [m for m in read_metrics(run_dir) if "layers" in m]
        if rec:
            rms[s] = rec[-1]["layers"]["rms_out"]
        a = run_analysis(run_dir)
        ang[s] = a["angular_distance"]["consecutive_last_token"]
        rem[s] = a["layer_removal"]["delta"]
        third = slice((2 * D) // 3, D)
        diag.append(dict(scheme=s, val_loss=r["final_val_loss"],
                         rms_growth=r.get("residual_rms_growth"),
                         angular_last_third=float(np.mean(ang[s][third])),
                         near_identity_by_removal=a["effective_depth"]["n_near_identity"],
                         min_removal_delta=float(np.min(rem[s]))))
    if deep:
        plots.per_layer({"residual RMS (layer output)": rms,
                         "angular distance to previous layer (last token)": ang,
                         "loss increase when the layer is removed": rem},
                        out / "per_layer.png", f"per-layer diagnostics at depth {D}",
                        logy=("residual RMS (layer output)",))
        md += [f"## Per-layer diagnostics at depth {D} (seed {min(r.get('seed') or 0 for r in one)})", "",
               table(diag, ["scheme", "val_loss", "rms_growth", "angular_last_third",
                            "near_identity_by_removal", "min_removal_delta"],
                     {"near_identity_by_removal": "d"}), "",
               "rms_growth = last / first layer-output RMS; angular_last_third = mean "
               "arccos(cos(h_l, h_{l+1}))/pi over the last third of layers (last token); "
               "near_identity_by_removal = layers whose removal costs < 0.01 nats.", "",
               "![](per_layer.png)", ""]
    md += ["## Measured vs the paper's direction", "", *curse_verdict(rows, D), ""]
    return "\n".join(md)


# Published perplexities (arXiv 2502.05795, C4): where each baseline fails.
PAPER_FAILS = {"post": "Post-LN trains at 130M (12 layers, ppl 26.95) and fails from 250M "
                       "(24 layers) on (ppl ~1400).",
               "mix": "Mix-LN trains at 130M and 250M (ppl 26.07, 21.39) and fails at 350M "
                      "and 1B (ppl ~1360-1410).",
               "deepnorm": "DeepNorm trains at 130M and 250M (ppl 27.17, 22.77) and fails at "
                           "350M and 1B (ppl ~1360-1410)."}


def seeds_text(rows) -> str:
    seeds = sorted({r.get("seed") or 0 for r in rows})
    return (f"init seed {seeds[0]}" if len(seeds) == 1 else
            f"init seeds {', '.join(map(str, seeds))}: mean ± sd (runs) over seeds")


def _loss_text(st: dict) -> str:
    return fmt(st["mean"]) + (f" ± {fmt(st['sd'])}" if st["n"] > 1 else "")


def curse_verdict(rows, D: int) -> list[str]:
    """Sentences: what was measured at the deepest depth (mean over seeds), next to the
    paper's direction. With replicates, each gap gets Welch's t-test (scipy.stats.ttest_ind,
    unequal variances): resolved when p < 0.05."""
    from scipy.stats import ttest_ind

    st = {s: seed_stats(rows, scheme=s, depth=D) for s in dict.fromkeys(r["scheme"] for r in rows)}
    unfinished = {r["scheme"]: r for r in rows if r["depth"] == D and r["status"] != "done"}
    pre = st.get("pre", {"n": 0})

    def versus(s: str) -> str:
        a, b = st[s], pre
        diff = a["mean"] - b["mean"]
        text = f"{diff:+.4f} vs Pre-LN"
        if a["n"] > 1 and b["n"] > 1:
            p = float(ttest_ind(a["values"], b["values"], equal_var=False).pvalue)
            text += (f" (Welch t-test over {a['n']} + {b['n']} seeds: p = {p:.2g}, "
                     + ("resolved" if p < 0.05 else "not resolved at this scale") + ")")
        return text

    out = []
    if pre["n"] and st.get("lns", {"n": 0})["n"]:
        out.append(f"- LNS vs Pre-LN at depth {D}: LNS {_loss_text(st['lns'])}, Pre-LN "
                   f"{_loss_text(pre)}: {versus('lns')}. Paper: LNS below Pre-LN at every size "
                   "(e.g. ppl 20.35 vs 21.92 at 250M). The paper's gains come from 20k-100k "
                   "steps; over a few hundred steps LNS can train slower (see loss_vs_steps.png).")
    for s in ("post", "mix", "deepnorm"):
        if s not in st or not pre["n"]:
            continue
        r = unfinished.get(s)
        what = [f"val loss {_loss_text(st[s])}, {versus(s)}"] if st[s]["n"] else []
        if r:
            what.append(f"{r['status']} (loss {fmt(r.get('final_loss'))})")
        out.append(f"- {s} at depth {D}: {'; '.join(what)}. Paper: {PAPER_FAILS[s]}")
    return out or ["- not enough finished runs at the deepest depth to compare."]


# ------------------------------------------------------------------ depth delusion


def minima_rows(rows, scheme: str | None = None) -> list[dict]:
    """Per width (and scheme): the U-curve minimum with its interval, and 2.43 ln W."""
    out = []
    for w in sorted({r["width"] for r in rows}):
        fin = finished(rows, width=w, **({"scheme": scheme} if scheme else {}))
        m = per_width_minimum([r["depth"] for r in fin], [r["final_val_loss"] for r in fin])
        out.append(dict(scheme=scheme or fin[0]["scheme"] if fin else scheme, width=w,
                        runs=m["n_runs"], d_best=m["d_best"], d_star=m["d_star"],
                        interval=f"[{fmt(m['lo'], '.1f')}, {fmt(m['hi'], '.1f')}]",
                        interval_from=m["interval_from"], lo=m["lo"], hi=m["hi"],
                        status=m["status"], method=m["method"],
                        dcrit_2_43_lnW=dcrit_paper(w)))
    return out


MIN_COLS = ["scheme", "width", "runs", "d_best", "d_star", "interval", "interval_from", "status",
            "dcrit_2_43_lnW"]
INTERIOR = ("ok",)  # jaxdepth.scaling status of a minimum inside the measured depths
MIN_SPECS = {"runs": "d", "d_best": ".0f", "d_star": ".2f", "dcrit_2_43_lnW": ".2f"}
DCRIT_NOTE = ("d_best = best measured depth; d_star = vertex of a parabola in ln D fitted to "
              "loss(D) over up to 5 depths around d_best (`jaxdepth.scaling.ucurve_minimum`); "
              "interval = a 95% residual-bootstrap interval of d_star when the runs leave at "
              "least 3 residual degrees of freedom (repeated seeds), otherwise the bracket: the "
              "depths either side of d_best, which hold the minimum of any unimodal U-curve "
              "(open-ended when d_best is at the edge of the sweep). dcrit_2_43_lnW = the Depth "
              "Delusion's D_crit ~= 2.43 ln W (arXiv 2601.20994).")


def _depth_panels(rows, group: str, curve: str) -> tuple[dict, dict]:
    panels, marks = {}, {}
    for g in sorted({r[group] for r in rows}, key=str):
        sub = [r for r in rows if r[group] == g]
        curves = {}
        for c in sorted({r[curve] for r in sub}, key=str):
            curves[f"{curve} {c}"] = mean_by_depth(sub, **{curve: c})
        panels[f"{group} {g}"] = curves
    return panels, marks


def report_depth_delusion(out: Path, meta: dict, rows: list[dict]) -> str:
    piv, cols = pivot(rows, "width", "depth", "final_val_loss")
    mins = minima_rows(rows)
    panels = {f"width {m['width']}": {"pre (mean over seeds)": mean_by_depth(rows, width=m["width"])}
              for m in mins}
    marks = {f"width {m['width']}": [(m["d_star"], "fitted min"),
                                     (m["dcrit_2_43_lnW"], "2.43 ln W", ":")] for m in mins}
    plots.loss_vs_depth(panels, out / "loss_vs_depth.png",
                        f"loss against depth at fixed width, {rows[0]['tokens']} tokens per run",
                        marks)
    md = ["## Validation loss by width and depth (same tokens per run: "
          f"{rows[0]['steps']} steps x {rows[0]['batch_size']} x {rows[0]['seq_len']}; "
          f"{seeds_text(rows)})", "",
          table(piv, cols), "", "## U-curve minimum per width", "",
          table(mins, MIN_COLS, MIN_SPECS), "", DCRIT_NOTE, "", "![](loss_vs_depth.png)", "",
          "## Measured vs the paper", ""]
    for m in mins:
        where = ("inside the measured depths" if m["status"] in INTERIOR
                 else f"not pinned ({m['status']})")
        md.append(f"- width {m['width']}: best measured depth {fmt(m['d_best'], '.0f')}, "
                  f"fitted minimum {fmt(m['d_star'], '.2f')} {m['interval']} "
                  f"({m['interval_from'] or 'no interval'}; {where}); paper "
                  f"predicts D_crit ~= {m['dcrit_2_43_lnW']:.2f}.")
    md += ["", "## Depth/width law fit", "", law_fit_section(out, rows), ""]
    return "\n".join(md)


LAW_MIN_RUNS = 12  # below this the depth/width law (7+ parameters) is not fitted


def law_fit_section(out: Path, rows) -> str:
    """The depth/width law `L = E + A/N^alpha + B/T^beta + Phi(D, W)` (arXiv 2601.20994
    ansatz) fitted by `jaxdepth.scaling`, its D_crit per width, and its extrapolation error
    against the same law with Phi = 0, when enough runs exist and the package is there."""
    fin = finished(rows)
    if len(fin) < LAW_MIN_RUNS:
        return (f"Not run: {len(fin)} finished runs; the depth/width law needs at least "
                f"{LAW_MIN_RUNS} (run the default size).")
    try:
        from jaxdepth.scaling.analysis import AnalysisOptions, analyse
        from jaxdepth.scaling.table import load_runs
    except ImportError:
        return "Not run: `jaxdepth.scaling` is not available in this checkout."
    try:
        runs = load_runs(out / "sweep" / "results.csv",
                         need=["loss", "params", "tokens", "depth", "width"],
                         names={"loss": "final_val_loss"})
        s = analyse(runs, AnalysisOptions(law="depth_width", n_boot=0, progress=False)).summary
    except Exception as e:  # noqa: BLE001 - the report stands without the law fit
        return f"Fit failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    nat = s["fit"]["natural"]
    md = [f"Law {s['law']} on {s['n_runs']} runs (final validation loss), R^2 = "
          f"{fmt(s['fit']['r2'], '.3f')}: " + ", ".join(f"{k} = {fmt(v, '.4g')}"
                                                       for k, v in nat.items()), ""]
    if "critical_depth" in s:
        md += [table([{"width": w, "D_crit (law)": v, "2.43 ln W": dcrit_paper(float(w))}
                      for w, v in s["critical_depth"].items()],
                     ["width", "D_crit (law)", "2.43 ln W"], {"D_crit (law)": ".2f",
                                                              "2.43 ln W": ".2f"}), ""]
    ext = s.get("extrapolation", [])
    if ext:
        md += ["Extrapolation (fit on runs up to the cutoff in FLOPs, error on the runs above):",
               "", table(ext, ["law", "cutoff", "n_train", "n_test", "mae", "rmse", "error"],
                         {"cutoff": ".3g", "n_train": "d", "n_test": "d"}), ""]
    return "\n".join(md)


# ------------------------------------------------------------------ stabilisers vs D_crit


def report_stabilizers_vs_dcrit(out: Path, meta: dict, rows: list[dict]) -> str:
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    mins = [m for s in schemes for m in minima_rows(rows, s)]
    panels, _ = _depth_panels(rows, "width", "scheme")
    marks = {f"width {w}": [(dcrit_paper(w), "2.43 ln W", ":")] for w in {r["width"] for r in rows}}
    plots.loss_vs_depth(panels, out / "loss_vs_depth.png", "loss against depth per scheme", marks)
    md = [f"## Validation loss ({seeds_text(rows)})", ""]
    for s in schemes:
        piv, cols = pivot([r for r in rows if r["scheme"] == s], "width", "depth", "final_val_loss")
        md += [f"### {s}", "", table(piv, cols), ""]
    md += ["## U-curve minimum per scheme and width", "", table(mins, MIN_COLS, MIN_SPECS), "",
           DCRIT_NOTE, "", "![](loss_vs_depth.png)", "",
           "## Does the stabiliser move D_crit? (open question of arXiv 2601.20994)", ""]
    base = {m["width"]: m for m in mins if m["scheme"] == "pre"}
    for m in mins:
        b = base.get(m["width"])
        if m["scheme"] == "pre" or not b:
            continue
        bounds = [m["lo"], m["hi"], b["lo"], b["hi"]]
        if any(math.isnan(x) for x in bounds):
            verdict = ("not resolved at this scale (no interval: "
                       f"{m['scheme']} {m['status']}, pre {b['status']})")
        elif m["lo"] > b["hi"]:
            verdict = "moved UP (intervals do not overlap)"
        elif m["hi"] < b["lo"]:
            verdict = "moved DOWN (intervals do not overlap)"
        else:
            verdict = "not resolved at this scale (the intervals overlap)"
        md.append(f"- width {m['width']}: {m['scheme']} minimum {fmt(m['d_star'], '.2f')} "
                  f"{m['interval']} ({m['interval_from'] or 'none'}) vs pre "
                  f"{fmt(b['d_star'], '.2f')} {b['interval']} ({b['interval_from'] or 'none'}): "
                  f"{verdict}.")
    return "\n".join(md)


# ------------------------------------------------------------------ gradient persistence


def report_gradient_persistence(out: Path, meta: dict, rows: list[dict]) -> str:
    """tau per width (arXiv 2601.20994) from per-layer gradient norms averaged over the last
    LATE_FRAC of training, its power law in W, and the decay rate 1/tau over training."""
    res, norms, rates = [], {}, {}
    for r in sorted(finished(rows), key=lambda r: r["width"]):
        records = read_metrics(run_dir_of(out, r))
        if not any("attn_grad_norm" in m.get("layers", {}) for m in records):
            continue
        g, first, last = late_layer_grad_norms(records, LATE_FRAC)
        fit = fit_grad_persistence(g["layer"])
        label = f"W={r['width']}"
        norms[label] = g["layer"]
        over = tau_over_training(records)
        rates[label] = ([o["step"] for o in over], [o["slope"] for o in over])
        res.append(dict(width=r["width"], depth=r["depth"], steps=f"{first}-{last}", tau=fit.tau,
                        tau_stderr=fit.tau_stderr, tau_lower=fit.tau_lower, r2=fit.r2,
                        slope=fit.slope, status=fit.status, val_loss=r["final_val_loss"]))
    decaying = [x for x in res if x["status"] == "decaying"]
    law = power_law([x["width"] for x in decaying], [x["tau"] for x in decaying])
    plots.per_layer({"whole-layer gradient norm": norms}, out / "grad_norms.png",
                    f"gradient norm per layer, last {LATE_FRAC:.0%} of steps",
                    logy=("whole-layer gradient norm",))
    plots.power_law_plot([x["width"] for x in res], [x["tau"] for x in res], law,
                         out / "tau_vs_width.png", "width W", "tau (layers)", TAU_EXPONENT,
                         "gradient persistence length")
    plots.curves({"> 0: gradients shrink toward the input": rates},
                 out / "decay_rate_vs_step.png", "decay rate 1/tau over training",
                 ylabel="d log||g_l|| / dl = 1 / tau", hline=0.0)
    md = ["## tau per width", "",
          table(res, ["width", "depth", "steps", "tau", "tau_stderr", "tau_lower", "r2", "slope",
                      "status", "val_loss"], {"width": "d", "depth": "d", "tau": ".3g",
                                              "tau_stderr": ".2g", "tau_lower": ".3g",
                                              "r2": ".3f"}), "",
          "tau from `log ||g_l|| = log ||g_D|| - (D - l) / tau` (least squares over layers), "
          "g_l = the norm of layer l's parameter gradient, geometric mean over the logged "
          f"steps in `steps` (the last {LATE_FRAC:.0%} of training); slope = 1/tau. status: "
          "'decaying' = slope more than 2 standard errors above 0; 'flat' = within 2 se of 0 "
          "(no decay measurable over this depth); 'growing' = the gradient grows toward the "
          "input; tau = inf unless decaying. tau_lower = 1 / (slope + 2 se): the decay "
          "length the data rule out below (inf: none).", "",
          "## Power law tau ~ W^p", ""]
    if law["n"] >= 2:
        md.append(f"Measured p = {law['p']:.3f} +- {fmt(law['p_stderr'], '.3f')} (R^2 = "
                  f"{fmt(law['r2'], '.3f')}, {law['n']} widths with finite tau); paper: "
                  f"p = {TAU_EXPONENT} (R^2 = 0.98).")
    else:
        widths_status = ", ".join(f"W={x['width']}: {x['status']}" for x in res)
        md.append(f"No fit: only {law['n']} width(s) have a finite (decaying) tau at this "
                  f"scale ({widths_status}); the "
                  f"paper's p = {TAU_EXPONENT} cannot be tested here. The paper fits after "
                  "about 1000 steps on much larger models. Lower bounds on tau by width: "
                  + ", ".join(f"W={x['width']}: {fmt(x['tau_lower'], '.3g')}" for x in res)
                  + " layers.")
    md += ["", "![](tau_vs_width.png)", "", "![](grad_norms.png)", "",
           "![](decay_rate_vs_step.png)", ""]
    return "\n".join(md)


LATE_FRAC = 0.2  # tau from the gradient norms of the last 20% of training, not one batch


REPORTS = {"curse_of_depth": report_curse_of_depth, "depth_delusion": report_depth_delusion,
           "stabilizers_vs_dcrit": report_stabilizers_vs_dcrit,
           "gradient_persistence": report_gradient_persistence}


def summary_line(rows) -> str:
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "; " + _wall(rows)
            + (" (NaN wall times skipped)" if any(r.get("wall_time_s") is None for r in rows) else ""))

