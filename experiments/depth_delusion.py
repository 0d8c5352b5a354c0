"""`python experiments/depth_delusion.py [args]` is `jaxdepth experiment depth_delusion [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/depth_delusion/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("depth_delusion", argv)


if __name__ == "__main__":
    sys.exit(main())
