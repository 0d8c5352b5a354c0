"""`python experiments/stabilizers_vs_dcrit.py [--tiny | --scale paper] [--out DIR] [--plan] [--no-progress]`
-> results/stabilizers_vs_dcrit/report.md + PNGs (jaxdepth.report.runner)."""
import sys

from jaxdepth.report.runner import main as run_experiment

def main(argv=None) -> int:
    return run_experiment("stabilizers_vs_dcrit", argv)

if __name__ == "__main__":
    sys.exit(main())
