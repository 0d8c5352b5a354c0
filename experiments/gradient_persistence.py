"""`python experiments/gradient_persistence.py [args]` is `jaxdepth experiment gradient_persistence [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/gradient_persistence/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("gradient_persistence", argv)


if __name__ == "__main__":
    sys.exit(main())
