"""`python experiments/lr_transfer.py [args]` is `jaxdepth experiment lr_transfer [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/lr_transfer/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("lr_transfer", argv)


if __name__ == "__main__":
    sys.exit(main())
