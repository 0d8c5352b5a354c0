"""`python experiments/stacking_failure.py [args]` is `jaxdepth experiment stacking_failure [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/stacking_failure/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("stacking_failure", argv)


if __name__ == "__main__":
    sys.exit(main())
