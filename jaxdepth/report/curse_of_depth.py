"""Report of experiment 2, the Curse of Depth (Sun et al. 2025, arXiv 2502.05795): LNS vs
Pre-LN vs Post-LN / Mix-LN / DeepNorm by depth, per-layer diagnostics at the deepest depth,
and each scheme's gap to Pre-LN next to the paper's direction (docs/literature.md §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxdepth.diagnostics.analysis import last_third
from jaxdepth.diagnostics.run_analysis import cached_analysis
from jaxdepth.report import plots
from jaxdepth.report.markdown import pivot
from jaxdepth.report.published import BASELINE_FAILS, CONNECTION_CLAIMS, LNS_EXAMPLE
from jaxdepth.report.rows import (
    curves,
    finished,
    first_seed,
    loss_text,
    mean_by_depth,
    run_dir_of,
    seed_stats,
    seeds_text,
)
from jaxdepth.rundir import read_metrics
from jaxdepth.tables import fmt, table

P_RESOLVED = 0.05  # Welch's t-test: a gap counts as resolved below this p-value


def report(out: Path, meta: dict, rows: list[dict]) -> str:
    schemes = list(dict.fromkeys(r["variant"] for r in rows))  # schemes and connections
    depths = sorted({r["depth"] for r in rows})
    L = depths[-1]
    piv, cols = pivot(rows, "variant", "depth", "final_val_loss")
    md = ["## Validation loss by depth (width "
          f"{rows[0]['width']}, {rows[0]['steps']} steps, same data; {seeds_text(rows)})", "",
          table(piv, cols), ""]
    plots.loss_vs_depth({"val loss (mean over seeds)": {s: mean_by_depth(rows, variant=s)
                                                        for s in schemes}},
                        out / "val_loss_by_depth.png", "Curse of Depth: final validation loss")
    one = first_seed(rows)
    plots.loss_vs_steps({f"depth {d}": curves(out, [r for r in one if r["depth"] == d])
                         for d in depths}, out / "loss_vs_steps.png", "train loss against steps")
    md += ["![](val_loss_by_depth.png)", "", "![](loss_vs_steps.png)", ""]
    md += per_layer_section(out, finished(one, depth=L), L)
    md += ["## Measured vs the paper's direction", "", *verdict(rows, L), ""]
    if any(r["variant"] != r["scheme"] for r in rows):
        md += compute_note(rows)
    return "\n".join(md)


def per_layer_section(out: Path, deep: list[dict], L: int) -> list[str]:
    """Residual RMS, angular distance, layer removal and the per-token exit depth of each
    scheme's (and connection's) run at depth L."""
    if not deep:
        return []
    rms, ang, rem, diag = {}, {}, {}, []
    for r in deep:
        s, run_dir = r["variant"], run_dir_of(out, r)
        rec = [m for m in read_metrics(run_dir) if "layers" in m]
        if rec:
            rms[s] = rec[-1]["layers"]["rms_out"]
        a = cached_analysis(run_dir)
        ang[s] = a["angular_distance"]["consecutive_last_token"]
        rem[s] = a["layer_removal"]["delta"]
        diag.append(dict(scheme=s, val_loss=r["final_val_loss"],
                         rms_growth=r.get("residual_rms_growth"),
                         angular_last_third=float(np.mean(ang[s][last_third(L)])),
                         removable_layers=a["effective_depth"]["n_removable"],
                         min_removal_delta=float(np.min(rem[s])),
                         **exit_columns(a)))
    plots.per_layer({"residual RMS (layer output)": rms,
                     "angular distance to previous layer (last token)": ang,
                     "loss increase when the layer is removed": rem},
                    out / "per_layer.png", f"per-layer diagnostics at depth {L}",
                    logy=("residual RMS (layer output)",))
    seed = min(r.get("seed") or 0 for r in deep)
    return [f"## Per-layer diagnostics at depth {L} (seed {seed})", "",
            table(diag, ["scheme", "val_loss", "rms_growth", "angular_last_third",
                         "removable_layers", "min_removal_delta", EXIT_COLUMN],
                  {"removable_layers": "d", EXIT_COLUMN: ".2f"}),
            "", "rms_growth = last / first layer-output RMS; angular_last_third = mean "
            "arccos(cos(h_l, h_{l+1}))/pi over the last third of layers (last token); "
            "removable_layers = layers whose removal costs < 0.01 nats "
            "(`jaxdepth.diagnostics.analysis.effective_depth`); "
            f"{EXIT_COLUMN} = the mean layer at which a token's logit-lens top-1 minus top-2 "
            f"probability first reaches {EXIT_THRESHOLD} (CALM's softmax response, arXiv "
            "2207.07061; `jaxdepth analyze` shows the whole distribution).", "",
            "![](per_layer.png)", ""]


EXIT_THRESHOLD = 0.9
EXIT_COLUMN = "layers_per_token"


def exit_columns(analysis: dict) -> dict:
    """The mean exit depth at `EXIT_THRESHOLD` from an analysis's per-token exits (absent
    in an analysis cached before them: None)."""
    ex = analysis.get("exits")
    if not ex or EXIT_THRESHOLD not in ex["thresholds"]:
        return {EXIT_COLUMN: None}
    return {EXIT_COLUMN: ex["mean_depth"][ex["thresholds"].index(EXIT_THRESHOLD)]}


def compute_note(rows) -> list[str]:
    """What each connection run cost: steps and training FLOPs against Pre-LN's at the
    deepest depth, and the published claim it is read against."""
    L = max(r["depth"] for r in rows)
    base = [r for r in rows if r["variant"] == "pre" and r["depth"] == L]
    out = ["## Connections beyond the residual stream (same training FLOPs per shape)", ""]
    for v in dict.fromkeys(r["variant"] for r in rows if r["variant"] != r["scheme"]):
        run = next(r for r in rows if r["variant"] == v and r["depth"] == L)
        ratio = run["flops"] / base[0]["flops"] if base and base[0]["flops"] else float("nan")
        claim = CONNECTION_CLAIMS.get(v[len(run["scheme"]) + 1:].rstrip("0123456789.x"), "")
        extra = (f" (its {L - 1} exit unembeddings per token not counted)"
                 if run.get("early_exit_scale") else "")
        out.append(f"- {v} at depth {L}: {run['steps']} steps, training FLOPs "
                   f"{fmt(ratio, '.3f')} x Pre-LN's{extra}. {claim}")
    return out + [""]


def verdict(rows, L: int) -> list[str]:
    """Sentences: what was measured at the deepest depth L (mean over seeds), next to the
    paper's direction. With replicates, each gap gets Welch's t-test (scipy.stats.ttest_ind,
    unequal variances): resolved when p < P_RESOLVED."""
    from scipy.stats import ttest_ind

    st = {s: seed_stats(rows, variant=s, depth=L) for s in dict.fromkeys(r["variant"] for r in rows)}
    unfinished = {r["variant"]: r for r in rows if r["depth"] == L and r["status"] != "done"}
    pre = st.get("pre", {"n": 0})

    def versus(s: str) -> str:
        a, b = st[s], pre
        text = f"{a['mean'] - b['mean']:+.4f} vs Pre-LN"
        if a["n"] > 1 and b["n"] > 1:
            p = float(ttest_ind(a["values"], b["values"], equal_var=False).pvalue)
            text += (f" (Welch t-test over {a['n']} + {b['n']} seeds: p = {p:.2g}, "
                     + ("resolved" if p < P_RESOLVED else "not resolved at this scale") + ")")
        return text

    out = []
    if pre["n"] and st.get("lns", {"n": 0})["n"]:
        out.append(f"- LNS vs Pre-LN at depth {L}: LNS {loss_text(st['lns'])}, Pre-LN "
                   f"{loss_text(pre)}: {versus('lns')}. Paper: {LNS_EXAMPLE}. The paper's "
                   "gains come from 20k-100k steps; over a few hundred steps LNS can train "
                   "slower (see loss_vs_steps.png).")
    # the Post-LN family against the paper's failures, then the connections (their claims
    # are in `compute_note`)
    connected = [s for s in st if s in {r["variant"] for r in rows if r["variant"] != r["scheme"]}]
    for s in [*BASELINE_FAILS, *connected]:
        if s not in st or not pre["n"]:
            continue
        r = unfinished.get(s)
        what = [f"val loss {loss_text(st[s])}, {versus(s)}"] if st[s]["n"] else []
        if r:
            what.append(f"{r['status']} (loss {fmt(r.get('final_loss'))})")
        paper = f" Paper: {BASELINE_FAILS[s]}" if s in BASELINE_FAILS else ""
        out.append(f"- {s} at depth {L}: {'; '.join(what)}.{paper}")
    return out or ["- not enough finished runs at the deepest depth to compare."]
