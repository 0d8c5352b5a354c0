"""Report of experiment 4, gradient persistence (arXiv 2601.20994; docs/literature.md §4):
tau per width from per-layer gradient norms averaged over the last LATE_FRAC of training,
its power law in W against the published `tau ~ W^0.44`, and the decay rate 1/tau over
training."""

from __future__ import annotations

from pathlib import Path

from jaxdepth.diagnostics.grad_persistence import (
    fit_grad_persistence,
    late_layer_grad_norms,
    tau_over_training,
)
from jaxdepth.report import plots
from jaxdepth.report.fits import power_law
from jaxdepth.report.published import TAU_EXPONENT, TAU_R2
from jaxdepth.report.rows import finished, run_dir_of
from jaxdepth.rundir import read_metrics
from jaxdepth.tables import fmt, table

LATE_FRAC = 0.2  # tau from the gradient norms of the last 20% of training, not one batch
COLS = ["width", "depth", "steps", "tau", "tau_stderr", "tau_lower", "r2", "slope", "status",
        "val_loss"]
SPECS = {"width": "d", "depth": "d", "tau": ".3g", "tau_stderr": ".2g", "tau_lower": ".3g",
         "r2": ".3f"}
NOTE = ("tau from `log ||g_l|| = log ||g_L|| - (L - l) / tau` (least squares over layers), "
        "g_l = the norm of layer l's parameter gradient, geometric mean over the logged "
        f"steps in `steps` (the last {LATE_FRAC:.0%} of training); slope = 1/tau. status: "
        "'decaying' = slope more than 2 standard errors above 0; 'flat' = within 2 se of 0 "
        "(no decay measurable over this depth); 'growing' = the gradient grows toward the "
        "input; tau = inf unless decaying. tau_lower = 1 / (slope + 2 se): the decay "
        "length the data rule out below (inf: none).")


def report(out: Path, meta: dict, rows: list[dict]) -> str:
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
    md = ["## tau per width", "", table(res, COLS, SPECS), "", NOTE, "",
          "## Power law tau ~ W^p", ""]
    if law["n"] >= 2:
        md.append(f"Measured p = {law['p']:.3f} +- {fmt(law['p_stderr'], '.3f')} (R^2 = "
                  f"{fmt(law['r2'], '.3f')}, {law['n']} widths with finite tau); paper: "
                  f"p = {TAU_EXPONENT} (R^2 = {TAU_R2}).")
    else:
        widths_status = ", ".join(f"W={x['width']}: {x['status']}" for x in res)
        md.append(f"No fit: only {law['n']} width(s) have a finite (decaying) tau at this "
                  f"scale ({widths_status}); the paper's p = {TAU_EXPONENT} cannot be tested "
                  "here. The paper fits after about 1000 steps on much larger models. Lower "
                  "bounds on tau by width: "
                  + ", ".join(f"W={x['width']}: {fmt(x['tau_lower'], '.3g')}" for x in res)
                  + " layers.")
    md += ["", "![](tau_vs_width.png)", "", "![](grad_norms.png)", "",
           "![](decay_rate_vs_step.png)", ""]
    return "\n".join(md)
