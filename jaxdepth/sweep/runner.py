"""The resumable sweep runner: every run of a spec in its own `OUT/runs/<id>/`, trained by
`jaxdepth.train.loop.train`, claimed so that workers sharing only OUT never run the same
run, skipped when finished (done or diverged), resumed from its checkpoint when
interrupted. Runs of one shape share a compiled step within a process (`build` is cached).

Sharding: worker i of n takes runs i, i + n, i + 2n, ... of the spec's order; claims make
overlapping workers (e.g. two `--shard 0/1`) safe too.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from tqdm.auto import tqdm

from jaxdepth.config import RunConfig, to_dict
from jaxdepth.errors import UserError
from jaxdepth.rundir import STATUS, read_json, read_status, write_json
from jaxdepth.sweep.claim import try_claim
from jaxdepth.sweep.results import results_table
from jaxdepth.sweep.spec import SweepSpec, expand, load_spec
from jaxdepth.tables import fmt


def default_out(spec: SweepSpec) -> Path:
    return Path("results") / "sweeps" / spec.name


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return i, n


def is_finished(status: dict, cfg: RunConfig) -> bool:
    """Diverged (its loss is data), or done with all of `train.steps` (raising the steps
    in the spec changes the run id, so a done run is never extended in place)."""
    st = status.get("status")
    return st == "diverged" or (st == "done" and status.get("step", 0) >= cfg.train.steps)


def latest_checkpoint_step(run_dir: Path) -> int:
    d = run_dir / "checkpoints"
    steps = [int(p.name) for p in d.iterdir() if p.name.isdigit()] if d.is_dir() else []
    return max(steps, default=0)


def write_index(out_dir: Path, spec: SweepSpec, runs: list[RunConfig]) -> None:
    """`OUT/sweep.json`: the spec's runs in order (the results table lists them all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = {"name": spec.name, "spec": spec.path, "axes": list(spec.axes),
             "runs": {c.name: to_dict(c) for c in runs}}
    write_json(out_dir / "sweep.json", index, indent=1)


def run_one(cfg: RunConfig, run_dir: Path, *, progress: bool, claim_timeout: float,
            say) -> str:
    """Claim, train (or resume) and release one run; returns what happened."""
    claim = try_claim(run_dir / "claim.json", claim_timeout)
    if claim is None:
        info = read_json(run_dir / "claim.json", {})
        say(f"claimed by {info.get('host', '?')}:{info.get('pid', '?')}, skipped")
        return "claimed"
    from jaxdepth.train.loop import train  # jax import only when something trains

    try:
        claim.start_heartbeat(max(0.5, min(10.0, claim_timeout / 4)))
        status = read_status(run_dir)
        if is_finished(status, cfg):  # finished by another worker since we looked
            return status["status"]
        start = latest_checkpoint_step(run_dir)
        say(f"resuming from step {start}" if start else "training")
        try:
            st = train(cfg, run_dir, progress=progress)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - one broken run must not stop the sweep
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            (run_dir / "error.txt").write_text(traceback.format_exc())
            status = {**read_status(run_dir), "status": "failed", "error": msg}
            write_json(run_dir / STATUS, status)
            say(f"failed: {msg} (traceback in {run_dir / 'error.txt'})")
            return "failed"
        say(f"{st['status']} at step {st['step']}: loss {fmt(st.get('final_loss'))}, "
            f"val {fmt(st.get('final_val_loss'))}, {st.get('wall_time_s', 0):.1f}s")
        return st["status"]
    finally:
        claim.release()


def run_sweep(spec: SweepSpec | str | Path | dict, out_dir: str | Path | None = None, *,
              shard: tuple[int, int] = (0, 1), progress: bool = True,
              claim_timeout: float = 300.0) -> list[dict]:
    """Run this worker's share of the sweep; returns the results table rows (also written
    to OUT/results.csv and OUT/results.parquet)."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    runs = expand(spec)  # every run validated before anything trains
    out = Path(out_dir) if out_dir is not None else default_out(spec)
    i, n = shard
    mine = runs[i::n]
    write_index(out, spec, runs)
    tqdm.write(f"sweep {spec.name}: {len(runs)} runs, shard {i}/{n} has {len(mine)} -> {out}")
    for k, cfg in enumerate(mine, 1):
        run_dir = out / "runs" / cfg.name

        def say(msg, _k=k, _id=cfg.name):
            tqdm.write(f"[{_k}/{len(mine)}] {_id}: {msg}")

        status = read_status(run_dir)
        if is_finished(status, cfg):
            say(f"{status['status']} already, skipped")
            continue
        run_one(cfg, run_dir, progress=progress, claim_timeout=claim_timeout, say=say)
    return results_table(out)
