"""`jaxdepth fit TABLE`: fit a scaling law to a table of runs; print a short table and write
`fit.json` (every number) and PNG plots to `--out` (default `<table_stem>_fit/` next to the
table).

Chinchilla's published runs (Hoffmann et al. 2022, arXiv 2203.15556, as reconstructed by
Epoch AI; replication fit arXiv 2404.10102):
  jaxdepth fit chinchilla_epoch_svg.csv --law chinchilla --loss loss --params "Model Size" \\
      --flops "Training FLOP" --tokens-from-flops --drop-highest-loss 5
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from textwrap import indent

from jaxdepth.errors import UserError
from jaxdepth.rundir import jsonable, write_json
from jaxdepth.scaling.table import DEFAULT_COLUMNS
from jaxdepth.tables import fmt, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument("table", help="runs table: .csv, .tsv, .parquet or .jsonl")
    parser.add_argument("--law", choices=["auto", "chinchilla", "depth_width"], default="auto",
                        help="auto: depth_width when depth and width columns exist")
    parser.add_argument("--phi", default="log_aspect",
                        help="shape term of depth_width: log_aspect, depth_excess or none")
    parser.add_argument("--no-irreducible", action="store_true",
                        help="depth_width without the E term (the paper's exact ansatz)")
    parser.add_argument("--out", type=Path, help="output directory")
    parser.add_argument("--bootstrap", type=int, default=200, metavar="N",
                        help="bootstrap replicates (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--huber-delta", type=float, default=1e-3)
    parser.add_argument("--max-starts", type=int, metavar="S",
                        help="start from a seeded random subset of S grid points instead of "
                             "every point (faster, may miss the best optimum)")
    cut = parser.add_mutually_exclusive_group()
    cut.add_argument("--cutoff-flops", type=float, metavar="C",
                     help="extrapolation check: fit runs with flops <= C, test on the rest "
                          "(default: 75th percentile)")
    cut.add_argument("--cutoff-tokens", type=float, metavar="T")
    cut.add_argument("--no-extrapolation", action="store_true")
    parser.add_argument("--budget", type=float, metavar="C",
                        help="compute for the optimal shape (default: largest in the data)")
    parser.add_argument("--compute-range", type=float, nargs=2, metavar=("CMIN", "CMAX"),
                        help="range of C for the compute-optimal exponents (default: data)")
    cols = parser.add_argument_group("columns (role -> name in the table)")
    for role, name in DEFAULT_COLUMNS.items():
        cols.add_argument(f"--{role.replace('_', '-')}", dest=f"col_{role}", default=name,
                          metavar="NAME", help=f"default: {name}")
    cols.add_argument("--tokens-from-flops", action="store_true",
                      help="tokens = flops / (6 params)")
    cols.add_argument("--drop-highest-loss", type=int, default=0, metavar="K")
    cols.add_argument("--measured-params", action="store_true",
                      help="depth_width: N = the params column instead of 12 D W^2")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _fmt(v) -> str:
    """A fitted value: '-' when there is none (null / NaN / inf: e.g. no critical depth)."""
    return fmt(None if isinstance(v, float) and not math.isfinite(v) else v, ".4g")


def _print_summary(s: dict) -> None:
    print(f"{s['law']} on {s['n_runs']} runs from {s['source']}")
    for note in s["notes"]:
        print(f"  note: {note}")
    for w in s.get("warnings", []):
        print(f"  warning: {w}")
    ivs = s.get("bootstrap", {}).get("intervals", {})
    level = s.get("bootstrap", {}).get("level", 0.95)
    rows = [{"param": k, "value": v,
             "interval": f"({_fmt(ivs[k]['lo'])}, {_fmt(ivs[k]['hi'])})" if k in ivs else ""}
            for k, v in s["fit"]["natural"].items()]
    interval = f"{int(level * 100)}% interval"
    print(indent(table(rows, ["param", "value", "interval"], {"value": _fmt, "interval": str},
                       style="text", headers={"interval": interval}, align={"value": ">"}),
                 "  "))
    f = s["fit"]
    print(f"  objective {f['objective']:.6g}  R^2 {f['r2']:.4f}  starts {f['n_starts']}  "
          f"fit {f['timings_s']['total_s']:.1f} s")
    for w, dc in s.get("critical_depth", {}).items():
        iv = ivs.get(f"D_crit(W={w})")
        span = f" ({_fmt(iv['lo'])}, {_fmt(iv['hi'])})" if iv else ""
        print(f"  D_crit(W={w}) = {_fmt(dc)}{span}")
    ce = s["compute_optimal"]
    print(f"  compute-optimal over C in [{ce['compute_range'][0]:.3g}, "
          f"{ce['compute_range'][1]:.3g}]: " + ", ".join(
              f"{k.split('_')[0]}* ~ C^{_fmt(ce[k])}" for k in
              ("depth_exponent", "width_exponent", "params_exponent", "tokens_exponent")))
    o = s["optimal_shape"]
    print(f"  optimum at C={o['compute']:.3g}: D={_fmt(o['depth'])} W={_fmt(o['width'])} "
          f"N={o['params']:.3g} T={o['tokens']:.3g} loss={o['loss']:.4g}"
          + ("  (on the search edge)" if o["at_bound"] else ""))
    for e in s.get("extrapolation", []):
        if "error" in e:
            print(f"  extrapolation {e['law']}: {e['error']}")
        else:
            print(f"  extrapolation {e['law']}: fit {e['n_train']} runs with {e['by']} <= "
                  f"{e['cutoff']:.3g}, held-out {e['n_test']}: MAE {e['mae']:.4g} "
                  f"RMSE {e['rmse']:.4g}")
    for w, u in s.get("ucurves", {}).items():
        iv, kind = (u["interval"], "bootstrap") if u["interval"] else (u.get("bracket"), "bracket")
        print(f"  U-curve W={w}: loss-minimising depth {_fmt(u['depth_min'])} [{u['status']}]"
              + (f" ({_fmt(iv[0])}, {_fmt(iv[1])}; {kind})" if iv else ""))


def run(args) -> int:
    from jaxdepth.scaling import plots
    from jaxdepth.scaling.analysis import AnalysisOptions, analyse
    from jaxdepth.scaling.fit import FitOptions
    from jaxdepth.scaling.table import load_runs, read_table

    names = {role: getattr(args, f"col_{role}") for role in DEFAULT_COLUMNS}
    law = args.law
    if law == "auto":
        present = set(read_table(args.table))
        law = "depth_width" if {names["depth"], names["width"]} <= present else "chinchilla"
    if law == "chinchilla":
        need = ["loss", "params", "tokens"]
    else:
        need = ["loss", "depth", "width", "tokens"] + (["params"] if args.measured_params else [])
    runs = load_runs(args.table, need, names, tokens_from_flops=args.tokens_from_flops,
                     drop_highest_loss=args.drop_highest_loss)
    if law == "depth_width" and not args.measured_params:
        runs.columns["params"] = 12.0 * runs.columns["depth"] * runs.columns["width"] ** 2
        runs.notes.append("N = 12 D W^2 (use --measured-params for the params column)")
    opts = AnalysisOptions(
        law=law, phi=args.phi, irreducible=not args.no_irreducible, n_boot=args.bootstrap,
        seed=args.seed, cutoff=args.cutoff_tokens or args.cutoff_flops,
        cutoff_by="tokens" if args.cutoff_tokens else "flops",
        extrapolation=not args.no_extrapolation, budget=args.budget,
        compute_range=tuple(args.compute_range) if args.compute_range else None,
        fit=FitOptions(delta=args.huber_delta, max_starts=args.max_starts),
        progress=not args.quiet)
    if args.bootstrap < 0:
        raise UserError("--bootstrap must be >= 0")
    a = analyse(runs, opts)
    table = Path(args.table)
    out = args.out or table.with_name(f"{table.stem}_fit")
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        files = [plots.fitted_vs_observed(a.result, a.columns, out / "fitted_vs_observed.png")]
        if "depth" in a.columns and "width" in a.columns and a.result.law.phi is not None:
            files.append(plots.loss_vs_depth(a.result, a.columns, out / "loss_vs_depth.png"))
        lo, hi = a.summary["compute_optimal"]["compute_range"]
        files.append(plots.iso_compute(a.result, sorted({lo, (lo * hi) ** 0.5, hi}),
                                       out / "iso_compute.png"))
        a.summary["plots"] = [p.name for p in files]
    write_json(out / "fit.json", jsonable(a.summary))
    _print_summary(a.summary)
    print(f"wrote {out / 'fit.json'}" + (f" and {len(a.summary['plots'])} plots"
                                          if "plots" in a.summary else ""))
    return 0
