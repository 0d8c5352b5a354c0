"""`jaxdepth analyze RUN_DIR [--step N] [--prompt TEXT] [--batches K]`: per-layer analysis of
a trained run (angular distance, layer removal, block pruning, logit lens, early exits,
gradient persistence), written to RUN_DIR/analysis/ as analysis.json and PNGs; `--compare
RUN_A RUN_B ...` also draws every run on one figure and prints the comparison table."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from jaxdepth.diagnostics.run_analysis import DEFAULT_PROMPT
from jaxdepth.rundir import CONFIG


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run directory (several with --compare), then optional data.key=value "
                   "overrides of what it is measured on, e.g. data.source=corpus.jsonl")
    p.add_argument("--compare", action="store_true", help="analyse several runs and draw them on one figure")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest saved)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt for the per-layer top tokens")
    p.add_argument("--batches", type=int, help="held-out batches (default: the run's train.eval_batches)")
    p.add_argument("--threshold", type=float, default=None,
                   help="removal cost in nats below which a layer counts as removable (default 0.01)")
    p.add_argument("--exit-thresholds", metavar="T1,T2,...",
                   help="confidence thresholds in (0, 1] of the early-exit analysis "
                   "(default 0.5,0.7,0.9,0.95,0.99)")
    p.add_argument("--exit-measure", choices=("top1", "gap"), default=None,
                   help="early-exit confidence: the top-1 minus top-2 probability (default: "
                   "CALM's softmax response) or the top-1 probability")
    p.add_argument("--out", help="with --compare: directory for the joint figure (default: <parent of the first run>/compare)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_args(args) -> None:
    from jaxdepth.errors import UserError

    # `RUN_DIR data.source=X`: k=v arguments are data overrides, not run directories
    args.overrides = [a for a in args.run_dirs if "=" in a and not Path(a).exists()]
    args.run_dirs = [a for a in args.run_dirs if a not in args.overrides]
    if not args.run_dirs:
        raise UserError("no RUN_DIR given")

    if len(args.run_dirs) > 1 and not args.compare:
        raise UserError(f"{len(args.run_dirs)} run directories given; analyse one, or pass --compare")
    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    if args.threshold is not None and not args.threshold >= 0:
        raise UserError(f"--threshold must be >= 0 nats, got {args.threshold}")
    if not args.prompt:
        raise UserError("--prompt must not be empty")
    args.exit_thresholds = _exit_thresholds(args.exit_thresholds)
    for d in args.run_dirs:
        if not (Path(d) / CONFIG).is_file():
            raise UserError(f"'{d}' is not a run directory (no {CONFIG})")


def _exit_thresholds(text: str | None) -> tuple[float, ...] | None:
    """`--exit-thresholds 0.5,0.9` -> (0.5, 0.9), sorted and without repeats; None -> None
    (the default); a UserError for anything but numbers in (0, 1]."""
    from jaxdepth.errors import UserError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--exit-thresholds must be numbers separated by commas, got '{text}'"
                        ) from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise UserError(f"--exit-thresholds must be in (0, 1] (a top-1 probability or gap), "
                        f"got {bad[0]:g}")
    return tuple(sorted(set(values)))


def _f(x, spec: str = ".4f") -> str:
    """`tables.fmt`, with NaN shown as missing ('-')."""
    from jaxdepth.tables import fmt

    return fmt(None if isinstance(x, float) and math.isnan(x) else x, spec)


def _cell(spec: str):
    """A `tables.table` spec: `_f(x, spec)`, an empty cell ("") left empty."""
    return lambda x: "" if x == "" else _f(x, spec)


def layer_table(a: dict) -> str:
    """One line per hidden state: consecutive angular distance, removal cost, lens, |g_l|."""
    from jaxdepth.tables import table

    L = a["depth"]
    ang, rem, lens = a["angular_distance"], a["layer_removal"], a["logit_lens"]
    g = a.get("grad_persistence", {}).get("grad_norm", {}).get("layer")
    cols = ["layer", "d_last", "d_all", "remove_dL", "lens_loss", "lens_KL", "top1", "|g_l|"]
    rows = [{"layer": "emb", "d_last": "", "d_all": "", "remove_dL": "",
             "lens_loss": lens["loss"][0], "lens_KL": lens["kl"][0],
             "top1": lens["top1_agreement"][0], "|g_l|": ""}]
    rows += [{"layer": l, "d_last": ang["consecutive_last_token"][l],
              "d_all": ang["consecutive_all_tokens"][l], "remove_dL": rem["delta"][l],
              "lens_loss": lens["loss"][l + 1], "lens_KL": lens["kl"][l + 1],
              "top1": lens["top1_agreement"][l + 1], "|g_l|": g[l] if g else None}
             for l in range(L)]
    specs = {c: _cell(".4f") for c in cols[1:6]} | {"top1": _cell(".2f"), "|g_l|": _cell(".3g")}
    return table(rows, cols, specs, style="text", align={"layer": ">"})


def _layer_ranges(layers) -> str:
    """[3, 4, 5, 9] -> '3-5,9'; None (an undefined choice) -> '-'."""
    if layers is None:
        return "-"
    runs: list[list[int]] = []
    for l in layers:
        if runs and l == runs[-1][1] + 1:
            runs[-1][1] = l
        else:
            runs.append([l, l])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def pruning_table(a: dict) -> str:
    """One line per block size n: Gromov et al.'s block [l*, l*+n) (arXiv 2403.17887), its
    last-token angular distance and loss increase; ShortGPT's n layers of least Block
    Influence (arXiv 2403.03853) and their loss increase."""
    from jaxdepth.tables import table

    p = a["pruning"]
    g, s = p["gromov"], p["shortgpt"]
    rows = [{"n": n, "gromov": "-" if l is None else f"[{l}, {l + n})", "d": d, "gromov_dL": gd,
             "shortgpt": _layer_ranges(ls), "shortgpt_dL": sd}
            for n, l, d, gd, ls, sd in zip(g["n"], g["start"], g["distance"], g["delta"],
                                           s["layers"], s["delta"])]
    cols = ["n", "gromov", "d", "gromov_dL", "shortgpt", "shortgpt_dL"]
    heads = {"gromov": "gromov [l*,l*+n)", "d": "d(l*,l*+n)", "shortgpt": "shortgpt layers"}
    specs = {"d": _cell(".4f"), "gromov_dL": _cell(".4f"), "shortgpt_dL": _cell(".4f"),
             "gromov": str, "shortgpt": str}
    return table(rows, cols, specs, style="text", headers=heads,
                 align={"gromov": "<", "shortgpt": "<"})


def exits_table(a: dict) -> str:
    """One line per threshold lambda: a token exits after the first layer whose lens
    confidence is >= lambda (CALM, arXiv 2207.07061); the layers it used, the share exiting
    before the last layer, the loss and top-1 agreement with the last layer at the exit."""
    from jaxdepth.tables import table

    e = a["exits"]
    rows = [{"threshold": t, "depth": d, "early": 100 * f, "loss": l, "full": e["full_loss"],
             "agree": g}
            for t, d, f, l, g in zip(e["thresholds"], e["mean_depth"], e["early_fraction"],
                                     e["exit_loss"], e["agreement"])]
    cols = ["threshold", "depth", "early", "loss", "full", "agree"]
    heads = {"depth": "mean layers used", "early": "exit early %", "loss": "loss at exit",
             "full": "full loss", "agree": "agreement"}
    specs = {"threshold": _cell("g"), "depth": _cell(".2f"), "early": _cell(".1f"),
             "agree": _cell(".3f")}
    return table(rows, cols, specs, style="text", headers=heads)


def summary(a: dict) -> str:
    e = a["effective_depth"]
    lines = [f"{a['label']}: scheme {a['scheme']}, depth {a['depth']}, step {a['step']}, "
             f"val loss {a['layer_removal']['base_loss']:.4f} on {a['n_tokens']} tokens",
             f"removable layers (removal costs < {e['removal_threshold']:g} nats): "
             f"{e['n_removable']}/{a['depth']} {e['removable_layers']}; first hidden state "
             f"with lens loss within {e['lens_tolerance']:.0%} of final: {e['first_lens_within_tolerance']}"]
    if "pruning" in a and a["pruning"]["gromov"]["n"]:
        lines += ["block pruning: loss increase dL (nats) without the n-layer block [l*, l*+n) "
                  "of least last-token", "angular distance d (Gromov et al.), or without the n "
                  "layers of least Block Influence (ShortGPT)"]
        lines.append(pruning_table(a))
    if "exits" in a:
        ex = a["exits"]
        lines += [f"early exit (CALM): a token uses l layers, l the first of 1..{a['depth']} "
                  f"whose lens {ex['measure']} confidence is >= the threshold (else {a['depth']});",
                  "the loss and the top-1 agreement with the full model of its prediction there"]
        lines.append(exits_table(a))
    if "grad_persistence" in a:
        fit = a["grad_persistence"]["fit"]["layer"]
        lines.append(f"gradient persistence at step {a['grad_persistence']['step']}: tau = "
                     f"{_f(fit['tau'], '.3g')} +- {_f(fit['tau_stderr'], '.2g')} layers, R^2 = "
                     f"{_f(fit['r2'], '.3f')}, slope {_f(fit['slope'], '.4f')}/layer ({fit['status']})")
    if "prompt_top_tokens" in a:
        lines.append(f"top tokens after {a['prompt']!r}:")
        for i, top in enumerate(a["prompt_top_tokens"]):
            name = "emb" if i == 0 else f"L{i - 1}"
            lines.append(f"  {name:>4}: " + "  ".join(f"{t['token']!r} {t['p']:.2f}" for t in top[:3]))
    return "\n".join(lines)


def comparison_table(runs: list[dict]) -> str:
    from jaxdepth.diagnostics.analysis import comparison_row
    from jaxdepth.tables import table

    cols = ["run", "scheme", "L", "step", "val_loss", "d_consec_last3rd", "removable", "tau",
            "tau_se", "R^2", "slope", "status"]
    rows = []
    for a in runs:
        r = comparison_row(a)
        rows.append({"run": a["label"][:16], "scheme": r["scheme"], "L": r["depth"],
                     "step": r["step"], "val_loss": r["val_loss"],
                     "d_consec_last3rd": r["mean_consecutive_angular_last_third"],
                     "removable": r["n_removable"], "tau": r["tau"],
                     "tau_se": r["tau_stderr"], "R^2": r["tau_r2"], "slope": r["tau_slope"],
                     "status": r["tau_status"]})
    specs = {"tau": _cell(".3g"), "tau_se": _cell(".2g"), "R^2": _cell(".2f"),
             "slope": _cell(".3f")}
    return table(rows, cols, specs, style="text")


def run(args) -> int:
    _check_args(args)  # bad input fails here, before jax is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm.auto import tqdm

    from jaxdepth.diagnostics import plots
    from jaxdepth.diagnostics.analysis import ANALYSIS_STAGES
    from jaxdepth.diagnostics.run_analysis import analyze_run, checked_config, data_config
    from jaxdepth.rundir import jsonable, write_json

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        data_config(checked_config(d, args.step)[1], args.overrides)
    bar = tqdm(total=ANALYSIS_STAGES * len(dirs), disable=args.no_progress, unit="stage",
               desc="analyze", dynamic_ncols=True, leave=False)

    def tick(stage):
        bar.set_postfix_str(stage)
        bar.update(1)

    try:
        runs = [analyze_run(d, step=args.step, batches=args.batches, prompt=args.prompt,
                            threshold=args.threshold, exit_thresholds=args.exit_thresholds,
                            exit_measure=args.exit_measure, progress=tick,
                            data_overrides=args.overrides) for d in dirs]
    finally:
        bar.close()
    for a in runs:
        print(layer_table(a))
        print(summary(a))
        print(f"wrote {Path(a['run_dir']) / 'analysis'}/: analysis.json, "
              + ", ".join(Path(p).name for p in a["figures"]))
        print()
    if args.compare:
        out = Path(args.out) if args.out else dirs[0].resolve().parent / "compare"
        out.mkdir(parents=True, exist_ok=True)
        paths = [plots.compare(runs, out / "compare.png"),
                 plots.lens_curves(runs, out / "logit_lens.png"),
                 plots.exit_curves(runs, out / "exits.png")]
        from jaxdepth.diagnostics.analysis import comparison_row

        write_json(out / "comparison.json",
                   jsonable([{"run": a["run_dir"], **comparison_row(a)} for a in runs]), indent=1)
        print(comparison_table(runs))
        print(f"wrote {out}/: comparison.json, " + ", ".join(p.name for p in paths))
    return 0
