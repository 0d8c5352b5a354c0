"""`python experiments/gradient_persistence.py [--tiny | --scale paper] [--out DIR] [--plan] [--no-progress]`
-> results/gradient_persistence/report.md + PNGs (jaxdepth.report.runner)."""
import sys

from jaxdepth.report.runner import main as run_experiment

def main(argv=None) -> int:
    return run_experiment("gradient_persistence", argv)

if __name__ == "__main__":
    sys.exit(main())
