"""`python experiments/layerwise_finetune.py [args]` is `jaxdepth experiment layerwise_finetune [args]`
(`--size tiny|default|paper`, `k=v` overrides, `--plan`, `--out DIR`; see `--help`)
-> results/layerwise_finetune/report.md + PNGs."""
import sys

from jaxdepth.report.experiment import main as run_experiment


def main(argv=None) -> int:
    return run_experiment("layerwise_finetune", argv)


if __name__ == "__main__":
    sys.exit(main())
