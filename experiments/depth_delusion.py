"""`python experiments/depth_delusion.py [--tiny | --scale paper] [--out DIR] [--plan] [--no-progress]`
-> results/depth_delusion/report.md + PNGs (jaxdepth.report.runner)."""
import sys

from jaxdepth.report.runner import main as run_experiment

def main(argv=None) -> int:
    return run_experiment("depth_delusion", argv)

if __name__ == "__main__":
    sys.exit(main())
