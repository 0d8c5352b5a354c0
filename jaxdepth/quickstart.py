"""`jaxdepth quickstart`: Pre-LN vs LayerNorm Scaling at two depths on the embedded corpus.

The smallest honest version of the Curse of Depth comparison (Sun et al. 2025, arXiv
2502.05795), i.e. a shortened `experiments/curse_of_depth.py`: same data, same init, same
steps; only the scheme and the depth change. Each run keeps its directory, so `jaxdepth
analyze` can look inside afterwards, and OUT/report.md + PNGs are experiment 2's report
(loss by depth, loss against steps, per-layer RMS, angular distance and layer removal at
the deepest depth); `jaxdepth report OUT` regenerates it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULTS = dict(schemes=("pre", "lns"), depths=(3, 12), width=64, heads=4, seq_len=64,
                batch_size=16, steps=150)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/quickstart", help="where the run dirs go")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--depths", default=",".join(map(str, DEFAULTS["depths"])))
    p.add_argument("--schemes", default=",".join(DEFAULTS["schemes"]))
    p.add_argument("--no-progress", action="store_true")


def quickstart_configs(schemes, depths, steps):
    from jaxdepth.config import RunConfig, replace

    base = RunConfig()
    for depth in depths:
        for scheme in schemes:
            yield replace(
                base, name=f"{scheme}_d{depth}",
                model=dict(depth=depth, width=DEFAULTS["width"], heads=DEFAULTS["heads"],
                           scheme=scheme),
                data=dict(seq_len=DEFAULTS["seq_len"], batch_size=DEFAULTS["batch_size"]),
                train=dict(steps=steps, warmup_steps=max(1, steps // 10), log_every=10,
                           eval_every=max(10, steps // 3), ckpt_every=steps))


def summary_row(cfg, status: dict, metrics: list[dict]) -> dict:
    last = metrics[-1] if metrics else {}
    rms = last.get("layers", {}).get("rms_out", [float("nan")])
    return dict(scheme=cfg.model.scheme, depth=cfg.model.depth, status=status["status"],
                train_loss=status.get("final_loss"), val_loss=status.get("final_val_loss"),
                last_layer_rms=rms[-1], first_layer_rms=rms[0],
                wall_s=status.get("wall_time_s", 0.0))


def format_table(rows: list[dict]) -> str:
    from jaxdepth.tables import fmt, table

    def num(x):
        return "n/a" if x is None else fmt(x)

    heads = {"scheme": "scheme", "depth": "depth", "status": "status", "train_loss": "train",
             "val_loss": "val", "first_layer_rms": "rms L1", "last_layer_rms": "rms L",
             "wall_s": "time"}
    specs = {"train_loss": num, "val_loss": num, "first_layer_rms": num,
             "last_layer_rms": num, "wall_s": lambda x: f"{x:.1f}s"}
    return table(rows, list(heads), specs, style="text", headers=heads)


def run(args) -> int:
    from jaxdepth.errors import UserError

    try:
        depths = [int(d) for d in args.depths.split(",")]
    except ValueError:
        raise UserError(f"--depths '{args.depths}' must be comma-separated integers") from None
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    cfgs = list(quickstart_configs(schemes, depths, args.steps))  # validated before any jax
    from jaxdepth.rundir import read_metrics
    from jaxdepth.train.loop import train

    out = Path(args.out)
    t0 = time.time()
    rows = []
    for cfg in cfgs:
        run_dir = out / cfg.name
        status = train(cfg, run_dir, progress=not args.no_progress)
        rows.append(summary_row(cfg, status, read_metrics(run_dir)))
    table = format_table(rows)
    print(table)
    print(f"total {time.time() - t0:.1f}s; runs in {out}/ (try: jaxdepth analyze --compare "
          f"{out}/{schemes[0]}_d{depths[-1]} {out}/{schemes[-1]}_d{depths[-1]})")
    (out / "summary.txt").write_text(table + "\n")
    write_quickstart_report(out, cfgs, time.time() - t0)
    return 0


def write_quickstart_report(out: Path, cfgs, wall_s: float) -> Path:
    """OUT/experiment.json (experiment 2 over these run dirs) and OUT/report.md + PNGs."""

    from jaxdepth.report.experiment import write_report
    from jaxdepth.rundir import write_json

    meta = dict(experiment="curse_of_depth", size="quickstart", command="jaxdepth quickstart",
                runs=[c.name for c in cfgs], wall_time_s=wall_s)
    write_json(out / "experiment.json", meta, indent=1)
    path = write_report(out)
    print(f"report: {path}")
    return path
