"""Results rows of an experiment, shared by its report modules: which runs finished, their
seed replicates, per-run curves. A row is one run of the results table
(`jaxdepth.sweep.results.run_row`); pure functions of rows, plus readers of run files."""

from __future__ import annotations

import math
from pathlib import Path

from jaxdepth.errors import UserError
from jaxdepth.report.markdown import mean_sd
from jaxdepth.rundir import CONFIG, read_config, read_metrics
from jaxdepth.tables import fmt


def run_dir_of(out: Path, row: dict) -> Path:
    """A row's run directory: its own `run_dir` (quickstart) or OUT/sweep/runs/<id>."""
    return Path(row["run_dir"]) if row.get("run_dir") else out / "sweep" / "runs" / row["run_id"]


def flat_rows(out: Path, names: list[str]) -> list[dict]:
    """Results rows of run directories OUT/<name> that are not part of a sweep."""
    from jaxdepth.sweep.results import run_row

    configs = {n: read_config(out / n) for n in names}
    missing = [n for n, c in configs.items() if c is None]
    if missing:
        raise UserError(f"'{out}' lists runs that have no {CONFIG}: {', '.join(missing)} "
                        "(never started, or not this directory's)")
    return [{**run_row(c, out / n), "run_dir": str(out / n)} for n, c in configs.items()]


def finished(rows, **match) -> list[dict]:
    """Rows that trained to the end (done) and match the given column values."""
    return [r for r in rows if r["status"] == "done" and r.get("final_val_loss") is not None
            and all(r.get(k) == v for k, v in match.items())]


def first_seed(rows) -> list[dict]:
    """The runs of the lowest init seed: one run per shape, for per-run figures."""
    seeds = [r.get("seed") or 0 for r in rows]
    return [r for r, sd in zip(rows, seeds) if sd == min(seeds, default=0)]


def seeds_text(rows) -> str:
    seeds = sorted({r.get("seed") or 0 for r in rows})
    return (f"init seed {seeds[0]}" if len(seeds) == 1 else
            f"init seeds {', '.join(map(str, seeds))}: mean ± sd (runs) over seeds")


def seed_stats(rows, **match) -> dict:
    """Mean, sample sd (NaN for one run), count and values of the final validation loss
    over the finished replicates (seeds) matching `match`."""
    v = [x for x in (r["final_val_loss"] for r in finished(rows, **match)) if math.isfinite(x)]
    mean, sd = mean_sd(v)
    return dict(mean=mean, sd=sd, n=len(v), values=v)


def loss_text(st: dict) -> str:
    """`mean ± sd` of a `seed_stats` (just the mean for one run)."""
    return fmt(st["mean"]) + (f" ± {fmt(st['sd'])}" if st["n"] > 1 else "")


def mean_by_depth(rows, **match) -> tuple[list, list, tuple[list, list]]:
    """(depths, mean final validation loss over seeds, (each run's depth, each run's
    loss)) of the finished runs matching `match`, for the loss-against-depth figures."""
    fin = finished(rows, **match)
    depths = sorted({r["depth"] for r in fin})
    return (depths, [seed_stats(rows, depth=d, **match)["mean"] for d in depths],
            ([r["depth"] for r in fin], [r["final_val_loss"] for r in fin]))


def curves(out: Path, rows, key: str = "loss") -> dict:
    """variant (the scheme and its connections) -> (steps, values of `key`) from each run's
    metrics.jsonl."""
    res = {}
    for r in rows:
        rec = [m for m in read_metrics(run_dir_of(out, r)) if key in m]
        res[r.get("variant", r["scheme"])] = ([m["step"] for m in rec], [m[key] for m in rec])
    return res


def summary_line(rows) -> str:
    """`3 done, 1 diverged; 120 s of training over 4 runs`."""
    counts: dict = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    wall = sum(r.get("wall_time_s") or 0.0 for r in rows)
    return (", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            + f"; {wall:.0f} s of training over {len(rows)} runs"
            + (" (NaN wall times skipped)" if any(r.get("wall_time_s") is None for r in rows)
               else ""))
