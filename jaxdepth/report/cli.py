"""`jaxdepth report RESULTS_DIR [...]`: regenerate an experiment's report.md and PNGs from
its results directory (written by `jaxdepth experiment NAME`), without training.
`--as NAME` reports a sweep of one's own (`jaxdepth sweep SPEC --out DIR/sweep`, e.g. an
experiment's grid resized for an accelerator) as experiment NAME: it writes DIR's
experiment.json (size `custom`, the sweep's spec) first."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                   help="an experiment's results directory, e.g. results/curse_of_depth")
    p.add_argument("--as", dest="as_experiment", metavar="NAME",
                   help="report RESULTS_DIR/sweep (a `jaxdepth sweep` out dir) as experiment "
                   "NAME, e.g. capability_depth")


def run(args) -> int:
    from jaxdepth.errors import UserError
    from jaxdepth.report.experiment import check_name, write_report
    from jaxdepth.rundir import read_json, write_json

    dirs = [Path(d) for d in args.results_dirs]
    as_experiment = getattr(args, "as_experiment", None)
    for d in dirs:  # bad input before any work
        if as_experiment:
            check_name(as_experiment)
            sweep = read_json(d / "sweep" / "sweep.json")
            if sweep is None:
                raise UserError(f"'{d / 'sweep'}' holds no sweep.json: run `jaxdepth sweep SPEC "
                                f"--out {d / 'sweep'}` first")
            write_json(d / "experiment.json", dict(
                experiment=as_experiment, size="custom", spec=sweep.get("spec"),
                overrides=[], command=f"jaxdepth sweep {sweep.get('spec')} --out {d / 'sweep'}; "
                f"jaxdepth report {d} --as {as_experiment}"), indent=1)
        elif not (d / "experiment.json").is_file():
            raise UserError(f"'{d}' is not an experiment results directory (no experiment.json)")
    for d in dirs:
        print(f"wrote {write_report(d)}")
    return 0
