"""`python experiments/capability_depth.py [args]` is `jaxdepth experiment capability_depth [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/capability_depth/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("capability_depth", argv)


if __name__ == "__main__":
    sys.exit(main())
