"""A sweep worker killed with SIGKILL mid-run and started again: finished runs are not
re-run, the killed run resumes from its checkpoint, and the results table equals that of
an uninterrupted sweep (losses exactly, on CPU)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from jaxdepth.sweep import expand, load_spec, results_table, run_sweep

REPO = Path(__file__).resolve().parents[1]
SPEC = dict(
    name="kill",
    base=dict(model=dict(depth=2, width=32, heads=2), data=dict(seq_len=16, batch_size=4),
              train=dict(steps=40, warmup_steps=1, log_every=2, eval_every=20, eval_batches=1,
                         ckpt_every=4)),
    grid={"train.seed": [0, 1, 2]},
)
TIMING = ("wall_time_s", "tokens_per_s")


def worker(spec: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "jaxdepth.cli", "sweep", str(spec), "--out",
                             str(out), "--no-progress"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def checkpoint_steps(run_dir: Path) -> list[int]:
    d = run_dir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def test_killed_worker_resumes_and_matches_an_uninterrupted_sweep(tmp_path):
    spec = tmp_path / "sweep_kill.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    ids = [c.name for c in expand(load_spec(spec))]
    out = tmp_path / "out"
    runs = [out / "runs" / i for i in ids]
    proc = worker(spec, out)
    deadline = time.time() + 90
    while not (status(runs[0]).get("status") == "done" and checkpoint_steps(runs[1])):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = status(runs[1])
    assert killed_at.get("status") == "running", f"run 2 was not killed mid-run: {killed_at}"
    assert (runs[1] / "claim.json").exists()  # left behind by the dead worker
    first = (runs[0] / "status.json").read_bytes()

    proc = worker(spec, out)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, log
    assert f"[1/3] {ids[0]}: done already, skipped" in log
    resumed = [ln for ln in log.splitlines() if f"{ids[1]}: resuming from step" in ln]
    assert resumed and int(resumed[0].split()[-1]) > 0, log
    assert (runs[0] / "status.json").read_bytes() == first  # not re-run, not rewritten
    assert not (runs[1] / "claim.json").exists()

    rows = run_sweep(spec, tmp_path / "straight", progress=False)  # uninterrupted
    assert all(r["status"] == "done" for r in rows)
    assert comparable(results_table(out, write=False)) == comparable(rows)


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without timing columns, NaN as None (NaN != NaN)."""
    nan = lambda v: isinstance(v, float) and math.isnan(v)
    return [{k: None if nan(v) else v for k, v in r.items() if k not in TIMING} for r in rows]
