"""`jaxdepth <verb>`: a thin dispatcher. Each verb lives in its own module exposing
`add_arguments(parser)` and `run(args) -> int`; modules are imported only when their verb
runs, so `jaxdepth --help` stays fast and a verb's heavy imports do not slow the others."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from jaxdepth.errors import UserError

# verb -> (module implementing it, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "train": ("jaxdepth.train.cli", "train one run from a YAML config (resumes in its run dir)"),
    "prepare": ("jaxdepth.data.cli", "tokenize corpora into memory-mapped shards + manifest"),
    "quickstart": ("jaxdepth.quickstart", "pre vs lns at two depths on the embedded corpus"),
    "signal": ("jaxdepth.diagnostics.signal_cli", "signal propagation through depth, per scheme"),
    "coordcheck": ("jaxdepth.diagnostics.coordcheck_cli",
                   "muP coordinate check across width and depth, per parameterization"),
    "analyze": ("jaxdepth.diagnostics.cli", "per-layer analysis of a trained run"),
    "fit": ("jaxdepth.scaling.cli", "fit scaling laws to a results table"),
    "sweep": ("jaxdepth.sweep.cli", "run a resumable depth x width x scheme sweep"),
    "experiment": ("jaxdepth.report.experiment",
                   "run (or plan) one published experiment and write its report"),
    "report": ("jaxdepth.report.cli", "regenerate an experiment's report from its results"),
    "import": ("jaxdepth.convert.import_cli",
               "import a Hugging Face (safetensors) or GGUF checkpoint as a run"),
    "export": ("jaxdepth.convert.export_cli",
               "export a Pre-LN run as a Hugging Face model directory"),
    "bench": ("jaxdepth.bench", "throughput benchmarks against this machine's matmul peak"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _overrides_only(args, extra: list[str]) -> bool:
    """Whether every leftover argument is a `k=v` override of a verb that takes them."""
    return isinstance(getattr(args, "overrides", None), list) and all(
        "=" in a and not a.startswith("-") for a in extra)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Parse the verb first, then let its module add its own arguments.
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="jaxdepth", description="jaxdepth: what depth does to a transformer (JAX/Flax).")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (module, help_) in VERBS.items():
        if not _available(module):
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        if name == verb:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    args, extra = parser.parse_known_args(argv)
    if extra and _overrides_only(args, extra):  # `VERB X --flag v k=v`: argparse stops
        args.overrides += extra  # collecting positionals at the first option
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    import absl.logging  # jax's own dependency; orbax logs read-only notices through it

    absl.logging.set_verbosity(absl.logging.ERROR)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; run the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
