"""Report of experiment 3, the Depth Delusion (arXiv 2601.20994; docs/literature.md §4):
loss against depth at fixed width and tokens, the U-curve minimum per width next to
`D_crit ~= 2.43 ln W`, and the depth/width law fitted by `jaxdepth.scaling`. The minima
table (`minima_rows`) is shared with the stabilisers experiment."""

from __future__ import annotations

from pathlib import Path

from jaxdepth.report import plots
from jaxdepth.report.fits import per_width_minimum
from jaxdepth.report.markdown import pivot
from jaxdepth.report.published import dcrit_paper
from jaxdepth.report.rows import finished, mean_by_depth, seeds_text
from jaxdepth.tables import fmt, table

MIN_COLS = ["scheme", "width", "runs", "d_best", "d_star", "interval", "interval_from", "status",
            "dcrit_2_43_lnW"]
MIN_SPECS = {"runs": "d", "d_best": ".0f", "d_star": ".2f", "dcrit_2_43_lnW": ".2f"}
INTERIOR = ("ok",)  # jaxdepth.scaling status of a minimum inside the measured depths
DCRIT_NOTE = ("d_best = best measured depth; d_star = vertex of a parabola in ln D fitted to "
              "loss(D) over up to 5 depths around d_best (`jaxdepth.scaling.ucurve_minimum`); "
              "interval = a 95% residual-bootstrap interval of d_star when the runs leave at "
              "least 3 residual degrees of freedom (repeated seeds), otherwise the bracket: the "
              "depths either side of d_best, which hold the minimum of any unimodal U-curve "
              "(open-ended when d_best is at the edge of the sweep). dcrit_2_43_lnW = the Depth "
              "Delusion's D_crit ~= 2.43 ln W (arXiv 2601.20994).")
LAW_MIN_RUNS = 12  # below this the depth/width law (7+ parameters) is not fitted


def parameterization_line(rows) -> list[str]:
    """One line naming the parameterisation and learning rate of the runs when they are not
    all sp (`model.parameterization=... train.lr=...` overrides), else nothing."""
    params = sorted({r.get("parameterization") or "sp" for r in rows})
    if params == ["sp"]:
        return []
    lrs = sorted({r["lr"] for r in rows})
    return [f"Parameterisation: {', '.join(params)}; learning rate: "
            f"{', '.join(fmt(x, '.4g') for x in lrs)}.", ""]


def minima_rows(rows, scheme: str | None = None, key: str = "scheme") -> list[dict]:
    """Per width (and scheme, or the row column `key` = scheme, e.g. "variant"): the U-curve
    minimum with its interval, and 2.43 ln W."""
    out = []
    for w in sorted({r["width"] for r in rows}):
        fin = finished(rows, width=w, **({key: scheme} if scheme else {}))
        m = per_width_minimum([r["depth"] for r in fin], [r["final_val_loss"] for r in fin])
        out.append(dict(scheme=scheme or (fin[0]["scheme"] if fin else None), width=w,
                        runs=m["n_runs"], d_best=m["d_best"], d_star=m["d_star"],
                        interval=f"[{fmt(m['lo'], '.1f')}, {fmt(m['hi'], '.1f')}]",
                        interval_from=m["interval_from"], lo=m["lo"], hi=m["hi"],
                        status=m["status"], method=m["method"],
                        dcrit_2_43_lnW=dcrit_paper(w)))
    return out


def report(out: Path, meta: dict, rows: list[dict]) -> str:
    piv, cols = pivot(rows, "width", "depth", "final_val_loss")
    mins = minima_rows(rows)
    panels = {f"width {m['width']}": {"pre (mean over seeds)": mean_by_depth(rows, width=m["width"])}
              for m in mins}
    marks = {f"width {m['width']}": [(m["d_star"], "fitted min"),
                                     (m["dcrit_2_43_lnW"], "2.43 ln W", ":")] for m in mins}
    plots.loss_vs_depth(panels, out / "loss_vs_depth.png",
                        f"loss against depth at fixed width, {rows[0]['tokens']} tokens per run",
                        marks)
    md = [*parameterization_line(rows),
          "## Validation loss by width and depth (same tokens per run: "
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


def law_fit_section(out: Path, rows) -> str:
    """The depth/width law `L = E + A/N^alpha + B/T^beta + Phi(D, W)` (arXiv 2601.20994
    ansatz) fitted by `jaxdepth.scaling`, its D_crit per width, and its extrapolation error
    against the same law with Phi = 0, when enough runs exist."""
    from jaxdepth.scaling.analysis import AnalysisOptions, analyse
    from jaxdepth.scaling.table import load_runs

    fin = finished(rows)
    if len(fin) < LAW_MIN_RUNS:
        return (f"Not run: {len(fin)} finished runs; the depth/width law needs at least "
                f"{LAW_MIN_RUNS} (run the default size).")
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
