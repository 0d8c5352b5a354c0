"""`jaxdepth report RESULTS_DIR [...]`: regenerate an experiment's report.md and PNGs from
its results directory (written by `jaxdepth experiment NAME`), without training."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                   help="an experiment's results directory, e.g. results/curse_of_depth")


def run(args) -> int:
    from jaxdepth.errors import UserError
    from jaxdepth.report.experiment import write_report

    dirs = [Path(d) for d in args.results_dirs]
    for d in dirs:  # bad input before any work
        if not (d / "experiment.json").is_file():
            raise UserError(f"'{d}' is not an experiment results directory (no experiment.json)")
    for d in dirs:
        print(f"wrote {write_report(d)}")
    return 0
