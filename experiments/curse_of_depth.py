"""`python experiments/curse_of_depth.py [--tiny | --scale paper] [--out DIR] [--plan] [--no-progress]`
-> results/curse_of_depth/report.md + PNGs (jaxdepth.report.runner)."""
import sys

from jaxdepth.report.runner import main as run_experiment

def main(argv=None) -> int:
    return run_experiment("curse_of_depth", argv)

if __name__ == "__main__":
    sys.exit(main())
