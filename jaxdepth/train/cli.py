"""`jaxdepth train CONFIG.yaml [key.sub=value ...] [--run-dir DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.depth=8")
    p.add_argument("--run-dir", help="run directory (default: runs/<name>); re-run to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("multi-host (one command per host; see docs/pod.md)")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0 (env JAXDEPTH_COORDINATOR)")
    g.add_argument("--num-processes", type=int, metavar="N",
                   help="number of processes (env JAXDEPTH_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, metavar="I",
                   help="this process, 0..N-1 (env JAXDEPTH_PROCESS_ID)")
    g.add_argument("--distributed", action="store_true",
                   help="let jax detect the cluster (TPU pod, SLURM, MPI; env JAXDEPTH_DISTRIBUTED=1)")


def run(args) -> int:
    from jaxdepth.config import load_config

    cfg = load_config(args.config, args.overrides)  # validated before jax work starts
    from jaxdepth.parallel import maybe_initialize_distributed

    maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                 args.distributed)  # before anything touches a jax backend
    from jaxdepth.train.loop import train

    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    st = train(cfg, run_dir, progress=not args.no_progress)
    loss = st.get("final_loss")
    val = st.get("final_val_loss")
    from jaxdepth.tables import fmt

    print(f"{st['status']}: step {st['step']}, train loss {fmt(loss)}, val loss {fmt(val)} "
          f"({fmt(st.get('final_val_bpb'))} bits/byte), {st.get('wall_time_s', 0):.1f}s -> "
          f"{run_dir}")
    return 0
