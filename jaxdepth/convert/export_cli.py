"""`jaxdepth export RUN_DIR --out DIR [--step N] [--dtype float32|bfloat16]`: a jaxdepth run
becomes a Hugging Face model directory (`jaxdepth.convert.exporter`)."""

from __future__ import annotations

import argparse
import os

from jaxdepth.config import PARAM_DTYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a trained or imported run directory")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the Hugging Face directory to write")
    p.add_argument("--step", type=int, help="checkpoint step (default: the newest)")
    p.add_argument("--dtype", choices=PARAM_DTYPES, help="tensor storage (default: the params')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from jaxdepth.convert.exporter import export_run

    r = export_run(args.run_dir, args.out, step=args.step, dtype=args.dtype,
                   progress=not args.no_progress)
    print(f"exported step {r['step']} as {r['architecture']} ({r['tensors']} tensors, "
          f"{r['dtype']}) to {r['out']}")
    print(f"  evaluate: lm_eval --model hf --model_args pretrained={r['out']} --tasks ...")
    return 0
