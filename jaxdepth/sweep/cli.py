"""`jaxdepth sweep SPEC.yaml [k=v ...] [--out DIR] [--shard i/n] [--plan] [--no-progress]
[--claim-timeout S] [multi-host flags]`: run (or plan) a resumable sweep; re-run the same
command to resume. `k=v` overrides apply to the spec's base config."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="sweep spec YAML (see configs/sweep_*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config, e.g. "
                   "data.seq_len=32")
    p.add_argument("--out", help="results directory (default: results/sweeps/<spec name>)")
    p.add_argument("--shard", default="0/1", metavar="i/n",
                   help="run every n-th run starting at i (workers share only --out)")
    p.add_argument("--plan", action="store_true",
                   help="print the runs, their sizes, FLOPs and estimated time; train nothing")
    p.add_argument("--no-calibrate", action="store_true",
                   help="with --plan: no calibration run when no finished run gives a "
                   "throughput reference (time estimates then print as ?)")
    p.add_argument("--no-progress", action="store_true", help="no per-run progress bar")
    p.add_argument("--claim-timeout", type=float, default=300.0, metavar="S",
                   help="a claim whose heartbeat is older than S seconds is taken over "
                   "(default 300; a dead process on this host is taken over at once)")
    from jaxdepth.parallel import add_distributed_arguments
    from jaxdepth.sweep.plan import add_target_arguments

    add_target_arguments(p)

    add_distributed_arguments(p)


def run(args) -> int:
    from jaxdepth.errors import UserError
    from jaxdepth.sweep.runner import default_out, parse_shard
    from jaxdepth.sweep.spec import expand, load_spec

    spec = load_spec(args.spec, args.overrides)
    shard = parse_shard(args.shard)
    if args.claim_timeout <= 0:
        raise UserError(f"--claim-timeout must be > 0, got {args.claim_timeout}")
    from jaxdepth.sweep.claim import check_claims_supported

    check_claims_supported(args.out or "")  # before Path() folds gs:// into gs:/
    out = Path(args.out) if args.out else default_out(spec)
    if args.plan:
        from jaxdepth.sweep.plan import format_plan, plan_rows, target_from_args

        runs = expand(spec, check_disk=False)  # a plan needs no corpus here
        rows, source = plan_rows(runs[shard[0]::shard[1]], out, not args.no_calibrate,
                                 **target_from_args(args))
        print(format_plan(rows, source))
        return 0
    expand(spec)  # every run validated before jax work starts
    from jaxdepth.parallel import initialize_from_args

    initialize_from_args(args)  # before anything touches a jax backend
    from jaxdepth.sweep.runner import run_sweep

    t0 = time.time()
    rows = run_sweep(spec, out, shard=shard, progress=not args.no_progress,
                     claim_timeout=args.claim_timeout)
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print(f"sweep {spec.name}: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))} "
          f"({time.time() - t0:.1f}s) -> {out / 'results.csv'}, {out / 'results.parquet'}")
    return 1 if counts.get("failed") else 0
