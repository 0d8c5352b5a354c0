"""`python experiments/stabilizers_vs_dcrit.py [args]` is `jaxdepth experiment stabilizers_vs_dcrit [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/stabilizers_vs_dcrit/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("stabilizers_vs_dcrit", argv)


if __name__ == "__main__":
    sys.exit(main())
