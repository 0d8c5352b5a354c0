"""`jaxdepth experiment NAME [--size tiny|default|paper] [k=v ...] [--plan] [--out DIR]
[--no-progress] [multi-host flags]`: one command per published claim (`experiments/<name>.py`
is the same command). Sweeps go through the resumable sweep runner (re-run the same
command to resume); the report is regenerated from the results directory (`jaxdepth report
DIR` does only that). `k=v` dotted overrides apply to the experiment's base config after
the spec's own overrides; a key the sweep sets per run (an axis, or model.heads through
head_dim) is refused.

Layout of OUT (default results/<name>): experiment.json (name, size, spec, overrides,
command), sweep/ (the sweep's out dir: sweep.json, runs/<id>/, results.csv/.parquet),
report.md, *.png. Each experiment's report is the module `jaxdepth.report.<name>`, whose
`report(out, meta, rows)` returns the markdown body and writes its PNGs into OUT.
Multi-host: every process runs the sweep; only process 0 writes experiment.json and the
report.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from pathlib import Path

from jaxdepth.errors import UserError
from jaxdepth.report.specs import SIZES
from jaxdepth.rundir import read_json, write_json
from jaxdepth.sweep.claim import check_claims_supported

EXPERIMENTS = ("stacking_failure", "curse_of_depth", "depth_delusion", "gradient_persistence",
               "stabilizers_vs_dcrit", "lr_transfer", "pretrained_depth", "layerwise_finetune",
               "capability_depth")
# experiments that are not a sweep: their module's `run_experiment(out, size, overrides,
# progress)` does the work (on process 0) and `plan_text(size, overrides)` describes it
PROCEDURES = ("pretrained_depth", "layerwise_finetune")
TITLES = {
    "stacking_failure": "Stacking failure: chains and the naive stack at init",
    "curse_of_depth": "The Curse of Depth (arXiv 2502.05795): Pre-LN, LNS, Post-LN, Mix-LN, DeepNorm",
    "depth_delusion": "The Depth Delusion (arXiv 2601.20994): loss against depth, D_crit per width",
    "gradient_persistence": "Gradient persistence tau ~ W^p (arXiv 2601.20994)",
    "stabilizers_vs_dcrit": "Do stabilisers move D_crit? (open question of arXiv 2601.20994)",
    "lr_transfer": "Learning-rate transfer across width and depth: sp, muP (arXiv 2203.03466), "
                   "CompleteP (arXiv 2505.01618)",
    "pretrained_depth": "Depth in a pretrained model: near-identity layers and block pruning "
                        "(arXiv 2502.05795, 2403.17887, 2403.03853)",
    "layerwise_finetune": "Fine-tuning only later layers: gain on a new corpus against what "
                          "is forgotten",
    "capability_depth": "Depth for capability: the minimal depth that solves k-hop induction, "
                        "variable chains, state tracking and fact composition (arXiv 2402.09268, "
                        "2503.03961)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help=f"the experiment: {', '.join(EXPERIMENTS)}")
    p.add_argument("overrides", nargs="*", metavar="k=v",
                   help="dotted overrides of the experiment's base config, e.g. train.steps=50 "
                   "(not of a key its sweep varies)")
    p.add_argument("--size", choices=SIZES, default="default",
                   help="tiny: CI size (minutes on 2 cores); default: < 30 min on a 2-core "
                   "CPU (lr_transfer: about 45); paper: the published shapes (a pod)")
    # deprecated spellings of --size, kept for old command lines
    p.add_argument("--tiny", dest="size", action="store_const", const="tiny",
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--scale", dest="size", choices=SIZES, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--connections", default="",
                   help="curse_of_depth, stabilizers_vs_dcrit: connections beyond the residual "
                   "stream run beside the schemes, on Pre-LN at the same training FLOPs, "
                   "comma-separated: dwa (DenseFormer), mod (Mixture-of-Depths), exit "
                   "(LayerSkip's early-exit loss and layer dropout)")
    p.add_argument("--out", help="results directory (default results/NAME)")
    p.add_argument("--plan", action="store_true", help="print the runs and estimated time; "
                   "train nothing")
    p.add_argument("--no-calibrate", action="store_true",
                   help="with --plan: no calibration run when no finished run gives a "
                   "throughput reference (time estimates then print as ?)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from jaxdepth.parallel import add_distributed_arguments
    from jaxdepth.sweep.plan import add_target_arguments

    add_target_arguments(p)

    add_distributed_arguments(p)


def check_name(name: str) -> str:
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment '{name}'; experiments: {', '.join(EXPERIMENTS)}")
    return name


def per_run_keys(spec) -> dict[str, str]:
    """Dotted keys the sweep sets per run -> how (an override of them would be ignored)."""
    keys = {k: f"grid axis: {', '.join(map(str, v))}" for k, v in spec.grid}
    for names, rows in spec.zips:
        for i, k in enumerate(names):
            keys[k] = f"zipped axis: {', '.join(str(r[i]) for r in rows)}"
    if spec.head_dim:
        keys.setdefault("model.heads", f"model.width // head_dim {spec.head_dim}")
    if spec.matched_params or spec.matched_flops:
        keys.setdefault("model.depth", "compute_matched")
    if spec.tokens_per_param:
        keys.setdefault("train.steps", "tokens_per_param")
    return keys


def experiment_spec(name: str, size: str, overrides=(), connections=()):
    """(raw spec mapping, SweepSpec) of a sweep experiment with the user's `k=v` overrides
    applied after the spec's own (and `connections` run beside its schemes,
    `specs.with_connections`); an override of a per-run key is a UserError."""
    from jaxdepth.report.specs import sweep_spec
    from jaxdepth.sweep import load_spec

    raw = sweep_spec(name, size, connections)
    fixed = per_run_keys(load_spec(raw))
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key in fixed:
            raise UserError(f"override '{item}': the {name} sweep sets {key} per run "
                            f"({fixed[key]}); it cannot be overridden")
    return raw, load_spec(raw, list(overrides))


def plan(name: str, size: str, out: Path, spec=None, calibrate: bool = True,
         target: dict | None = None, overrides=()) -> str:
    """The plan text (runs, sizes, FLOPs, estimated wall time) of one experiment; `spec`:
    its SweepSpec (default: the experiment's, without overrides)."""
    if name == "stacking_failure":
        from jaxdepth.report.stacking_failure import models

        ms = models(size)
        return (f"{len(ms)} models propagated at init (one forward + JVP each), nothing "
                "trained: " + ", ".join(f"{lab} d{m.depth}" for lab, m in ms))
    if name in PROCEDURES:
        return importlib.import_module(f"jaxdepth.report.{name}").plan_text(size, overrides)
    from jaxdepth.sweep import expand
    from jaxdepth.sweep.plan import format_plan, plan_rows

    spec = spec or experiment_spec(name, size)[1]
    rows, source = plan_rows(expand(spec, check_disk=False), out / "sweep",
                             calibrate_ok=calibrate and size != "paper", **(target or {}))
    return format_plan(rows, source)


def write_report(out: Path) -> Path:
    """Regenerate OUT/report.md and its PNGs from the results in OUT (never trains)."""
    meta = read_json(out / "experiment.json")
    if meta is None:
        raise UserError(f"'{out}' holds no experiment.json: not an experiment results directory")
    name = meta["experiment"]
    command = meta.get("command") or f"jaxdepth experiment {name} --size {meta['size']}"
    head = [f"# {TITLES[name]}", "",
            f"Size: `{meta['size']}`; command: `{command}`. "
            f"Wall time of the last invocation: {meta.get('wall_time_s', float('nan')):.0f} s.", ""]
    rows = None
    if name != "stacking_failure" and name not in PROCEDURES:  # sweeps: their results rows
        from jaxdepth.report.rows import flat_rows, summary_line
        from jaxdepth.sweep import results_table

        rows = flat_rows(out, meta["runs"]) if meta.get("runs") else results_table(out / "sweep")
        if not rows:
            raise UserError(f"'{out / 'sweep'}' holds no runs yet")
        head += [f"Runs: {summary_line(rows)}. Results table: "
                 f"`{'(per run dir)' if meta.get('runs') else 'sweep/results.csv'}`.", ""]
    body = importlib.import_module(f"jaxdepth.report.{name}").report(out, meta, rows)
    path = out / "report.md"
    path.write_text("\n".join(head) + "\n" + body + "\n")
    return path


def lr_transfer_coordcheck(spec, size: str, out: Path, progress: bool = True) -> Path:
    """The coordinate check behind lr_transfer's figures: its base config (the base shape,
    the base lr), its widths and depths, 5 steps, into OUT/coordcheck (one process: a
    multi-host job leaves it to `jaxdepth coordcheck`)."""
    from jaxdepth.config import RunConfig, from_dict, validate
    from jaxdepth.diagnostics.coordcheck_cli import write_coordcheck
    from jaxdepth.report.specs import LR_TRANSFER, lr_transfer_parameterizations

    g = LR_TRANSFER[size]
    cfg = validate(from_dict(RunConfig, spec.base))
    return write_coordcheck(cfg, lr_transfer_parameterizations(size), g["widths"], g["depths"], COORDCHECK_STEPS,
                            None, out / "coordcheck", progress=progress)


COORDCHECK_STEPS = 5


def command_line(args) -> str:
    """The `jaxdepth experiment ...` command that reproduces this invocation's results."""
    parts = ["jaxdepth", "experiment", args.name, "--size", args.size, *args.overrides]
    if getattr(args, "connections", ""):
        parts += ["--connections", args.connections]
    if args.out:
        parts += ["--out", args.out]
    return shlex.join(parts)


def run(args) -> int:
    name, size = check_name(args.name), args.size
    check_claims_supported(args.out or "")  # before Path() folds gs:// into gs:/
    out = Path(args.out or f"results/{name}")
    raw = spec = None
    from jaxdepth.report.specs import parse_connections

    connections = parse_connections(name, getattr(args, "connections", ""))
    if name == "stacking_failure":
        if args.overrides:
            raise UserError("stacking_failure trains nothing (signal propagation at init) and "
                            "takes no overrides; `jaxdepth signal` propagates other shapes")
    elif name in PROCEDURES:
        importlib.import_module(f"jaxdepth.report.{name}").parse_overrides(args.overrides)
    else:
        raw, spec = experiment_spec(name, size, args.overrides, connections)
    if args.plan:
        from jaxdepth.sweep.plan import target_from_args

        print(plan(name, size, out, spec, calibrate=not args.no_calibrate,
                   target=target_from_args(args), overrides=args.overrides))
        return 0
    if spec is not None:
        from jaxdepth.sweep import expand

        expand(spec)  # every run validated before jax work starts
    from jaxdepth.parallel import initialize_from_args

    initialize_from_args(args)  # before anything touches a jax backend
    import jax

    lead = jax.process_index() == 0
    t0 = time.time()
    meta = dict(experiment=name, size=size, spec=raw, overrides=list(args.overrides),
                command=command_line(args))
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "experiment.json", meta, indent=1)
    if name in PROCEDURES:
        if lead:
            importlib.import_module(f"jaxdepth.report.{name}").run_experiment(
                out, size, args.overrides, progress=not args.no_progress)
    elif spec is None:
        if lead:  # a few forward passes at init: one process does them
            from jaxdepth.report.stacking_failure import run_signal

            run_signal(out, size, progress=not args.no_progress)
    else:
        from jaxdepth.sweep import run_sweep

        run_sweep(spec, out / "sweep", progress=not args.no_progress)
        if name == "lr_transfer" and jax.process_count() == 1:
            lr_transfer_coordcheck(spec, size, out, progress=not args.no_progress)
    if not lead:
        return 0
    meta["wall_time_s"] = time.time() - t0
    write_json(out / "experiment.json", meta, indent=1)
    if jax.process_count() > 1:  # the report restores checkpoints: Orbax's restore waits for
        # every process, and the others have finished: write it on one host afterwards
        print(f"{name} ({size}): trained in {meta['wall_time_s']:.0f} s; write the report on "
              f"one host: jaxdepth report {out}")
        return 0
    path = write_report(out)
    meta["wall_time_s"] = time.time() - t0  # including the report's analyses
    write_json(out / "experiment.json", meta, indent=1)
    write_report(out)
    print(f"{name} ({size}): {meta['wall_time_s']:.0f} s -> {path}")
    return 0


def main(name: str, argv=None) -> int:
    """`experiments/<name>.py [args]`: the same as `jaxdepth experiment NAME [args]`."""
    from jaxdepth.cli import main as jaxdepth

    return jaxdepth(["experiment", name, *(sys.argv[1:] if argv is None else argv)])
