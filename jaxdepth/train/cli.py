"""`jaxdepth train CONFIG.yaml [key.sub=value ...] [--run-dir DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=8")
    p.add_argument("--run-dir", help="run directory (default: runs/<name>); re-run to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from jaxdepth.parallel import add_distributed_arguments

    add_distributed_arguments(p)


def run(args) -> int:
    from jaxdepth.config import load_config

    cfg = load_config(args.config, args.overrides)  # validated before jax work starts
    from jaxdepth.parallel import initialize_from_args

    initialize_from_args(args)  # before anything touches a jax backend
    from jaxdepth.train.loop import train

    run_dir = args.run_dir or Path("runs") / cfg.name  # a path or a gs:// URL
    st = train(cfg, run_dir, progress=not args.no_progress)
    loss = st.get("final_loss")
    val = st.get("final_val_loss")
    from jaxdepth.tables import fmt

    print(f"{st['status']}: step {st['step']}, train loss {fmt(loss)}, val loss {fmt(val)} "
          f"({fmt(st.get('final_val_bpb'))} bits/byte), {st.get('wall_time_s', 0):.1f}s -> "
          f"{run_dir}")
    return 0
