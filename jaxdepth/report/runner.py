"""One command per published claim: `python experiments/<name>.py [--tiny | --scale
{default,paper}] [--out DIR] [--plan] [--no-progress]`. Sweeps go through the resumable
sweep runner (re-run the same command to resume); the report is regenerated from the
results directory (`jaxdepth report DIR` does only that).

Layout of OUT (default results/<name>): experiment.json (name, size, spec), sweep/ (the
sweep's out dir: sweep.json, runs/<id>/, results.csv/.parquet), report.md, *.png. Each
experiment's report is the module `jaxdepth.report.<name>`, whose `report(out, meta, rows)`
returns the markdown body and writes its PNGs into OUT.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from jaxdepth.errors import UserError
from jaxdepth.rundir import read_json, write_json

EXPERIMENTS = ("stacking_failure", "curse_of_depth", "depth_delusion", "gradient_persistence",
               "stabilizers_vs_dcrit")
TITLES = {
    "stacking_failure": "Stacking failure: chains and the naive stack at init",
    "curse_of_depth": "The Curse of Depth (arXiv 2502.05795): Pre-LN, LNS, Post-LN, Mix-LN, DeepNorm",
    "depth_delusion": "The Depth Delusion (arXiv 2601.20994): loss against depth, D_crit per width",
    "gradient_persistence": "Gradient persistence tau ~ W^p (arXiv 2601.20994)",
    "stabilizers_vs_dcrit": "Do stabilisers move D_crit? (open question of arXiv 2601.20994)",
}


def parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"experiments/{name}.py", description=TITLES[name])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tiny", action="store_true", help="CI size (minutes on 2 cores)")
    g.add_argument("--scale", choices=("default", "paper"), default="default",
                   help="default: < 30 min on a 2-core CPU; paper: the published shapes (a pod)")
    p.add_argument("--out", help=f"results directory (default results/{name})")
    p.add_argument("--plan", action="store_true", help="print the runs and estimated time; "
                   "train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _spec(name: str, size: str):
    from jaxdepth.report.specs import sweep_spec
    from jaxdepth.sweep import load_spec

    raw = sweep_spec(name, size)
    return raw, load_spec(raw)


def plan(name: str, size: str, out: Path) -> str:
    """The plan text (runs, sizes, FLOPs, estimated wall time) of one experiment."""
    if name == "stacking_failure":
        from jaxdepth.report.stacking_failure import models

        ms = models(size)
        return (f"{len(ms)} models propagated at init (one forward + JVP each), nothing "
                "trained: " + ", ".join(f"{lab} d{m.depth}" for lab, m in ms))
    from jaxdepth.sweep import expand
    from jaxdepth.sweep.plan import format_plan, plan_rows

    _, spec = _spec(name, size)
    rows, source = plan_rows(expand(spec), out / "sweep", calibrate_ok=size != "paper")
    return format_plan(rows, source)


def write_report(out: Path) -> Path:
    """Regenerate OUT/report.md and its PNGs from the results in OUT (never trains)."""
    meta = read_json(out / "experiment.json")
    if meta is None:
        raise UserError(f"'{out}' holds no experiment.json: not an experiment results directory")
    name = meta["experiment"]
    command = meta.get("command") or (f"python experiments/{name}.py " + (
        "--tiny" if meta["size"] == "tiny" else f"--scale {meta['size']}"))
    head = [f"# {TITLES[name]}", "",
            f"Size: `{meta['size']}`; command: `{command}`. "
            f"Wall time of the last invocation: {meta.get('wall_time_s', float('nan')):.0f} s.", ""]
    rows = None
    if name != "stacking_failure":  # the others read their runs' results rows
        from jaxdepth.report.rows import flat_rows, summary_line
        from jaxdepth.sweep import results_table

        rows = flat_rows(out, meta["runs"]) if meta.get("runs") else results_table(out / "sweep")
        if not rows:
            raise UserError(f"'{out / 'sweep'}' holds no runs yet")
        head += [f"Runs: {summary_line(rows)}. Results table: "
                 f"`{'(per run dir)' if meta.get('runs') else 'sweep/results.csv'}`.", ""]
    body = importlib.import_module(f"jaxdepth.report.{name}").report(out, meta, rows)
    path = out / "report.md"
    path.write_text("\n".join(head) + "\n" + body + "\n")
    return path


def main(name: str, argv=None) -> int:
    """Run (or plan) one experiment and write its report; bad input -> "error: ...", 2."""
    try:
        return _main(name, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(name: str, argv=None) -> int:
    args = parser(name).parse_args(argv)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)  # orbax's read-only notices
    size = "tiny" if args.tiny else args.scale
    out = Path(args.out or f"results/{name}")
    if args.plan:
        print(plan(name, size, out))
        return 0
    raw = None if name == "stacking_failure" else _spec(name, size)[0]  # validated first
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    meta = dict(experiment=name, size=size, spec=raw)
    write_json(out / "experiment.json", meta, indent=1)
    if name == "stacking_failure":
        from jaxdepth.report.stacking_failure import run_signal

        run_signal(out, size, progress=not args.no_progress)
    else:
        from jaxdepth.sweep import run_sweep

        run_sweep(_spec(name, size)[1], out / "sweep", progress=not args.no_progress)
    meta["wall_time_s"] = time.time() - t0
    write_json(out / "experiment.json", meta, indent=1)
    path = write_report(out)
    meta["wall_time_s"] = time.time() - t0  # including the report's analyses
    write_json(out / "experiment.json", meta, indent=1)
    write_report(out)
    print(f"{name} ({size}): {meta['wall_time_s']:.0f} s -> {path}")
    return 0
