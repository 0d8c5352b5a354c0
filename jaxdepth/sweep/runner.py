"""The resumable sweep runner: every run of a spec in its own `OUT/runs/<id>/`, trained by
`jaxdepth.train.loop.train`, claimed so that workers sharing only OUT never run the same
run, skipped when finished (done or diverged), resumed from its checkpoint when
interrupted. Runs of one shape share a compiled step within a process (`build` is cached).

Sharding: worker i of n takes runs i, i + n, i + 2n, ... of the spec's order; claims make
overlapping workers (e.g. two `--shard 0/1`) safe too.

Multi-host: the processes of one `jax.distributed` job are one worker. Process 0 alone reads
statuses, claims a run and writes the sweep's files; it broadcasts its decision
(`jax.experimental.multihost_utils.broadcast_one_to_all`), and all processes train the
run together, so their collectives always belong to the same run.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from tqdm.auto import tqdm

from jaxdepth import rundir
from jaxdepth.config import RunConfig, to_dict
from jaxdepth.errors import UserError
from jaxdepth.rundir import (
    CLAIM,
    STATUS,
    checkpoint_steps,
    read_json,
    read_status,
    write_json,
    write_text,
)
from jaxdepth.sweep.claim import check_claims_supported, try_claim
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
    """`rundir.is_finished` (raising the steps in the spec changes the run id, so a done
    run is never extended in place)."""
    return rundir.is_finished(status, cfg.train.steps)


def write_index(out_dir, spec: SweepSpec, runs: list[RunConfig]) -> None:
    """`OUT/sweep.json`: the spec's runs in order (the results table lists them all)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = {"name": spec.name, "spec": spec.path, "axes": list(spec.axes),
             "runs": {c.name: to_dict(c) for c in runs}}
    write_json(out_dir / "sweep.json", index, indent=1)


def check_memory(runs: list[RunConfig]) -> None:
    """Refuse the sweep (one line naming the run) when any run's memory estimate exceeds
    the device's, before anything trains (`jaxdepth.memory`)."""
    from jaxdepth import memory
    from jaxdepth.sweep.plan import resolved_vocab
    from jaxdepth.train.build import resolve_model

    for cfg in runs:
        vocab = cfg.model.vocab_size or resolved_vocab(cfg.data)
        memory.check_run(cfg, resolve_model(cfg.model, vocab))


def _multihost() -> bool:
    """Whether this process is one of several of a `jax.distributed` job (without importing
    jax when it has not been imported: a single-process sweep plans and skips without it)."""
    import sys

    if "jax" not in sys.modules:
        return False
    import jax

    return jax.process_count() > 1


def agree(decision: bool) -> bool:
    """Process 0's `decision`, on every process of the job (itself in a single process)."""
    if not _multihost():
        return decision
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(decision)))


def run_one(cfg: RunConfig, run_dir, *, progress: bool, claim_timeout: float, say) -> str:
    """Claim (process 0), train (or resume) with every process, release; returns what
    happened. The decision to train is process 0's, broadcast to the others."""
    leader = _is_leader()
    claim, status = None, {}
    if leader:
        claim = try_claim(run_dir / CLAIM, claim_timeout)
        if claim is not None:
            claim.start_heartbeat(max(0.5, min(10.0, claim_timeout / 4)))
            status = read_status(run_dir)  # finished by another worker since we looked?
    go = agree(claim is not None and not is_finished(status, cfg))
    if not go:
        if claim is None and leader:
            info = read_json(run_dir / CLAIM, {})
            say(f"claimed by {info.get('host', '?')}:{info.get('pid', '?')}, skipped")
        if claim is not None:
            claim.release()
        return "claimed" if claim is None else status.get("status", "skipped")
    from jaxdepth.train.loop import train  # jax import only when something trains

    try:
        start = max(checkpoint_steps(run_dir), default=0)
        say(f"resuming from step {start}" if start else "training")
        try:
            st = train(cfg, run_dir, progress=progress)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - one broken run must not stop the sweep
            if _multihost():  # it may have failed on some processes only, which would
                raise  # then pair their next collectives with the others' wrong ones
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            if leader:
                write_text(run_dir / "error.txt", traceback.format_exc())
                write_json(run_dir / STATUS, {**read_status(run_dir), "status": "failed",
                                              "error": msg})
            say(f"failed: {msg} (traceback in {run_dir / 'error.txt'})")
            return "failed"
        say(f"{st['status']} at step {st['step']}: loss {fmt(st.get('final_loss'))}, "
            f"val {fmt(st.get('final_val_loss'))}, {st.get('wall_time_s', 0):.1f}s")
        return st["status"]
    finally:
        if claim is not None:
            claim.release()


def _is_leader() -> bool:
    """Process 0 of a multi-host job, or the only process: the one that claims and writes."""
    if not _multihost():
        return True
    import jax

    return jax.process_index() == 0


def run_sweep(spec: SweepSpec | str | Path | dict, out_dir: str | Path | None = None, *,
              shard: tuple[int, int] = (0, 1), progress: bool = True,
              claim_timeout: float = 300.0) -> list[dict]:
    """Run this worker's share of the sweep; returns the results table rows (also written
    to OUT/results.csv and OUT/results.parquet)."""
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    runs = expand(spec)  # every run validated before anything trains
    check_memory(runs)
    out = rundir.path(out_dir if out_dir is not None else default_out(spec))
    check_claims_supported(out)
    i, n = shard
    mine = runs[i::n]
    leader = _is_leader()
    if leader:
        write_index(out, spec, runs)
    tqdm.write(f"sweep {spec.name}: {len(runs)} runs, shard {i}/{n} has {len(mine)} -> {out}")
    for k, cfg in enumerate(mine, 1):
        run_dir = out / "runs" / cfg.name

        def say(msg, _k=k, _id=cfg.name):
            if leader:
                tqdm.write(f"[{_k}/{len(mine)}] {_id}: {msg}")

        status = read_status(run_dir) if leader else {}
        if agree(is_finished(status, cfg)):
            say(f"{status.get('status')} already, skipped")
            continue
        run_one(cfg, run_dir, progress=progress, claim_timeout=claim_timeout, say=say)
    return results_table(out, write=leader)
