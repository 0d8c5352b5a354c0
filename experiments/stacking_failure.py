"""`python experiments/stacking_failure.py [--tiny | --scale paper] [--out DIR] [--plan] [--no-progress]`
-> results/stacking_failure/report.md + PNGs (jaxdepth.report.runner)."""
import sys

from jaxdepth.report.runner import main as run_experiment

def main(argv=None) -> int:
    return run_experiment("stacking_failure", argv)

if __name__ == "__main__":
    sys.exit(main())
