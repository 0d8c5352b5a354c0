"""Coordinated preemption: SIGTERM (or Ctrl-C) stops a run at a step boundary, the same
step on every process, with one checkpoint saved there by all of them; the resumed run
equals an uninterrupted one bit for bit.

The two-process runs use a constant learning rate, so that an interrupted run of "many"
steps (it never gets there) resumed as a run of S + 3 steps follows the schedule of an
uninterrupted run of S + 3 steps, whatever step S the processes agree on."""

from __future__ import annotations

import re
import signal
import time

import jax
import numpy as np
import pytest
from _mesh_driver import OVERRIDES, save_params
from _procs import ROOT, cpu_env, free_port, kill, start, tail, wait_all
from conftest import tiny_run

from jaxdepth import checkpoint, parallel
from jaxdepth.rundir import read_json, read_metrics
from jaxdepth.train import preempt
from jaxdepth.train.loop import train


@pytest.fixture(autouse=True)
def no_pending_request():
    preempt._requested.clear()
    yield
    preempt._requested.clear()


def wait_for_steps(run_dir, n: int, alive, timeout: float = 120) -> None:
    """Poll metrics.jsonl until it shows `n` steps (the run is in its loop)."""
    deadline = time.monotonic() + timeout
    while len(read_metrics(run_dir)) < n:
        assert alive() and time.monotonic() < deadline, "the run ended or stalled first"
        time.sleep(0.05)


def losses(run_dir) -> list:
    return [(m["step"], m["loss"], m.get("val_loss")) for m in read_metrics(run_dir)]


def checkpoint_steps(run_dir) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


# ---------------------------------------------------------------- one process


def test_a_signal_sets_a_flag_and_a_second_one_aborts():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with preempt.StopRequest() as stop:
        assert not stop.agreed(0)
        signal.raise_signal(signal.SIGTERM)  # the handler returns: no exception here
        assert stop.agreed(1) and stop.stopped_by == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # while stopping, Ctrl-C aborts
            signal.raise_signal(signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before
    with preempt.StopRequest() as stop:  # a request outlives the run it came too late for
        signal.raise_signal(signal.SIGINT)
    with preempt.StopRequest() as stop:
        assert stop.agreed(0) and stop.stopped_by == "SIGINT"


def test_sigterm_mid_step_stops_at_its_end_and_the_resumed_run_is_bit_identical(
        tmp_path, monkeypatch):
    """SIGTERM in the middle of step 4 (after its batch is drawn, before it is trained):
    the step finishes, a checkpoint is saved at it (not at step 3 with the iterator one batch
    ahead), status `interrupted` and KeyboardInterrupt; resumed, the run equals one never
    interrupted. The signal comes from inside the step so that the stop step is known: the
    config is test_train's, whose compiled step this test reuses."""
    cfg = tiny_run(train={"ckpt_every": 10_000})  # no checkpoint but the one the stop saves
    part = tmp_path / "part"
    global_batch = parallel.global_batch

    def drawing_batch_4_gets_sigterm(local, sharding):
        if len(read_metrics(part)) == 3 and not preempt._requested:
            signal.raise_signal(signal.SIGTERM)
        return global_batch(local, sharding)

    monkeypatch.setattr(parallel, "global_batch", drawing_batch_4_gets_sigterm)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM: stopped at step 4"):
        train(cfg, part, progress=False)
    monkeypatch.undo()
    st = read_json(part / "status.json")
    assert st["status"] == "interrupted" and st["step"] == 4
    assert [m["step"] for m in read_metrics(part)] == [1, 2, 3, 4]
    assert checkpoint_steps(part) == [4]

    assert train(cfg, part, progress=False)["status"] == "done"
    assert train(cfg, tmp_path / "full", progress=False)["status"] == "done"
    assert losses(part) == losses(tmp_path / "full") and len(losses(part)) == 6
    params = [_params(d) for d in (part, tmp_path / "full")]
    jax.tree.map(np.testing.assert_array_equal, *params)


def _params(run_dir):
    mngr = checkpoint.manager(run_dir, read_only=True)
    out = mngr.restore(mngr.latest_step(), args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))
    return out.state["params"]


# ---------------------------------------------------------------- two processes

MANY = 100_000  # steps of the interrupted pair: the signal always comes first

PAIR = ["-m", "jaxdepth.cli", "train", ROOT / "configs" / "tiny.yaml", *OVERRIDES,
        "parallel.data=1", "parallel.fsdp=2", "parallel.tensor=1",  # params across both
        "train.ckpt_every=10000", "--no-progress"]


def start_pair(run_dir, steps: int, logs, cache=None) -> list:
    """`jaxdepth train` as processes 0 and 1 of 2 (gloo), one CPU device each; `cache`: a
    persistent compilation cache, so that a second launch of the same programs skips
    compiling them (the same executables: the results do not change)."""
    coord = f"127.0.0.1:{free_port()}"
    args = [*PAIR, f"train.steps={steps}", "--run-dir", run_dir, "--coordinator", coord,
            "--num-processes", "2"]
    env = cpu_env(1, **({"JAX_COMPILATION_CACHE_DIR": str(cache),
                         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"} if cache else {}))
    return [start([*args, "--process-id", str(i)], env, log) for i, log in enumerate(logs)]


def run_pair(run_dir, steps: int, logs, cache=None) -> None:
    procs = start_pair(run_dir, steps, logs, cache)
    try:
        wait_all(procs, logs, timeout=240)
    finally:
        kill(procs)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
    """SIGTERM to process 1 only: both processes stop at the same step, save one checkpoint
    there together and exit 130 (`interrupted`); both restarted, they finish the run, whose
    losses and final params equal those of an uninterrupted two-process run."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    logs = [tmp_path / "p0.log", tmp_path / "p1.log"]
    procs = start_pair(run, MANY, logs)
    try:
        wait_for_steps(run, 3, alive=lambda: all(p.poll() is None for p in procs))
        procs[1].send_signal(signal.SIGTERM)
        for p, log in zip(procs, logs):
            p.wait(timeout=120)
            assert p.returncode == 130, f"exit code {p.returncode}:\n{tail(log)}"
    finally:
        kill(procs)
    said = [re.findall(r"stopping at step (\d+)", log.read_text()) for log in logs]
    assert len(said[0]) == len(said[1]) == 1 and said[0] == said[1], said
    s = int(said[0][0])
    assert "on SIGTERM (process 1 of 2)" in logs[1].read_text()  # the one signalled
    st = read_json(run / "status.json")
    assert st["status"] == "interrupted" and st["step"] == s
    assert [m["step"] for m in read_metrics(run)] == list(range(1, s + 1))
    assert checkpoint_steps(run) == [s]
    data = sorted(p.name for p in (run / "checkpoints" / str(s) / "data").iterdir())
    assert data == ["commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]

    cache = tmp_path / "xla_cache"  # the two runs of s + 3 steps compile the same programs
    run_pair(run, s + 3, [tmp_path / "r0.log", tmp_path / "r1.log"], cache)  # both restarted
    run_pair(ref, s + 3, [tmp_path / "ref0.log", tmp_path / "ref1.log"], cache)  # never stopped
    assert read_json(run / "status.json")["status"] == "done"
    assert losses(run) == losses(ref) and len(losses(ref)) == s + 3
    for d in (run, ref):
        save_params(s + 3, d)  # restored onto this process's one device
    got, want = np.load(run / "params.npz"), np.load(ref / "params.npz")
    assert int(got["step"]) == int(want["step"]) == s + 3
    for k in want.files:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
