"""Report of experiment 5: do depth stabilisers (LNS, DeepNorm) move the critical depth?
(an open question of arXiv 2601.20994; docs/literature.md §4-5). The U-curve minimum per
scheme and width, compared with Pre-LN's by whether their intervals overlap."""

from __future__ import annotations

import math
from pathlib import Path

from jaxdepth.report import plots
from jaxdepth.report.depth_delusion import (
    DCRIT_NOTE,
    MIN_COLS,
    MIN_SPECS,
    minima_rows,
    parameterization_line,
)
from jaxdepth.report.markdown import pivot
from jaxdepth.report.published import dcrit_paper
from jaxdepth.report.rows import mean_by_depth, seeds_text
from jaxdepth.tables import fmt, table


def report(out: Path, meta: dict, rows: list[dict]) -> str:
    # schemes, and the connections beyond the residual stream run beside them (`variant`)
    schemes = list(dict.fromkeys(r["variant"] for r in rows))
    widths = sorted({r["width"] for r in rows})
    mins = [m for s in schemes for m in minima_rows(rows, s, key="variant")]
    panels = {f"width {w}": {f"{s}": mean_by_depth(rows, width=w, variant=s)
                             for s in sorted({r["variant"] for r in rows if r["width"] == w})}
              for w in widths}
    marks = {f"width {w}": [(dcrit_paper(w), "2.43 ln W", ":")] for w in widths}
    plots.loss_vs_depth(panels, out / "loss_vs_depth.png", "loss against depth per scheme", marks)
    md = [*parameterization_line(rows), f"## Validation loss ({seeds_text(rows)})", ""]
    for s in schemes:
        piv, cols = pivot([r for r in rows if r["variant"] == s], "width", "depth", "final_val_loss")
        md += [f"### {s}", "", table(piv, cols), ""]
    md += ["## U-curve minimum per scheme and width", "", table(mins, MIN_COLS, MIN_SPECS), "",
           DCRIT_NOTE, "", "![](loss_vs_depth.png)", "",
           "## Does the stabiliser move D_crit? (open question of arXiv 2601.20994)", ""]
    base = {m["width"]: m for m in mins if m["scheme"] == "pre"}
    for m in mins:
        b = base.get(m["width"])
        if m["scheme"] == "pre" or not b:
            continue
        md.append(f"- width {m['width']}: {m['scheme']} minimum {fmt(m['d_star'], '.2f')} "
                  f"{m['interval']} ({m['interval_from'] or 'none'}) vs pre "
                  f"{fmt(b['d_star'], '.2f')} {b['interval']} ({b['interval_from'] or 'none'}): "
                  f"{moved(m, b)}.")
    return "\n".join(md)


def moved(m: dict, base: dict) -> str:
    """Whether minimum `m`'s interval lies above, below or across the baseline's."""
    if any(math.isnan(x) for x in (m["lo"], m["hi"], base["lo"], base["hi"])):
        return ("not resolved at this scale (no interval: "
                f"{m['scheme']} {m['status']}, pre {base['status']})")
    if m["lo"] > base["hi"]:
        return "moved UP (intervals do not overlap)"
    if m["hi"] < base["lo"]:
        return "moved DOWN (intervals do not overlap)"
    return "not resolved at this scale (the intervals overlap)"
