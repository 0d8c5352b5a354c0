"""A sweep as one job of two JAX processes on 127.0.0.1 (gloo CPU collectives, one host
device each): process 0 claims each run and broadcasts it, both train it together. Each of
the 4 runs is trained once, and the results table equals that of one process with two
devices (the same mesh)."""

from __future__ import annotations

import csv

import pytest
from _procs import ROOT, cpu_env, free_port, kill, start, wait_all

from jaxdepth.rundir import read_metrics

SPEC = f"""
name: pair
base: {ROOT / "configs" / "tiny.yaml"}
overrides: {{model.width: 32, model.heads: 2, data.seq_len: 16, data.batch_size: 4,
            train.steps: 4, train.warmup_steps: 1, train.log_every: 2, train.eval_every: 4,
            train.eval_batches: 1, train.ckpt_every: 4}}
grid: {{model.depth: [1, 2], train.seed: [0, 1]}}
"""
SWEEP = ["-m", "jaxdepth.cli", "sweep"]


def _table(out):
    with open(out / "results.csv") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost_sweep")
    spec = tmp / "pair.yaml"
    spec.write_text(SPEC)
    coord = f"127.0.0.1:{free_port()}"
    logs = [tmp / "p0.log", tmp / "p1.log", tmp / "one.log"]
    procs = []
    try:
        for i in range(2):
            procs.append(start([*SWEEP, spec, "--out", tmp / "pair", "--no-progress",
                                "--coordinator", coord, "--num-processes", "2",
                                "--process-id", str(i)], cpu_env(1), logs[i]))
        wait_all(procs, logs[:2], timeout=300)
        procs.append(start([*SWEEP, spec, "--out", tmp / "one", "--no-progress"], cpu_env(2),
                           logs[2]))
        wait_all(procs[2:], logs[2:], timeout=300)
    finally:
        kill(procs)
    return tmp, logs


def test_each_run_trained_once_by_both_processes(sweeps):
    tmp, logs = sweeps
    table = _table(tmp / "pair")
    assert len(table) == 4 and {r["status"] for r in table.values()} == {"done"}
    lead = logs[0].read_text()
    for run_id in table:
        assert lead.count(f"{run_id}: training") == 1  # claimed once, by process 0
        steps = [r["step"] for r in read_metrics(tmp / "pair" / "runs" / run_id)]
        assert steps == [2, 4]  # logged once per step: not trained twice
    assert "training" not in logs[1].read_text()  # process 1 follows, it does not claim
    assert not list((tmp / "pair" / "runs").glob("*/claim.json"))  # all released


def test_results_table_equals_one_process(sweeps):
    tmp, _ = sweeps
    pair, one = _table(tmp / "pair"), _table(tmp / "one")
    assert pair.keys() == one.keys()
    for run_id, a in pair.items():
        b = one[run_id]
        for col in ("status", "step", "params", "total_params", "tokens", "depth", "seed"):
            assert a[col] == b[col], (run_id, col)
        for col in ("final_loss", "final_val_loss"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-5), (run_id, col)


def test_experiment_as_two_processes_trains_and_leaves_the_report_to_one_host(tmp_path):
    """`jaxdepth experiment` with the multi-host flags: both processes train the sweep,
    process 0 records experiment.json and names the report command (a report restores
    checkpoints, which Orbax does with every process), then `jaxdepth report` writes it."""
    out = tmp_path / "gp"
    args = [*SWEEP[:2], "experiment", "gradient_persistence", "--size", "tiny", "--out", out,
            "--no-progress", "train.steps=4", "train.log_every=2", "train.eval_every=4",
            "train.ckpt_every=4", "--coordinator", f"127.0.0.1:{free_port()}",
            "--num-processes", "2"]
    logs = [tmp_path / "e0.log", tmp_path / "e1.log"]
    procs = []
    try:
        for i in range(2):
            procs.append(start([*args, "--process-id", str(i)], cpu_env(1), logs[i]))
        wait_all(procs, logs, timeout=300)
    finally:
        kill(procs)
    assert f"jaxdepth report {out}" in logs[0].read_text()
    assert not (out / "report.md").exists()
    table = _table(out / "sweep")
    assert len(table) == 3 and {r["status"] for r in table.values()} == {"done"}
    report = start(["-m", "jaxdepth.cli", "report", out], cpu_env(1), tmp_path / "r.log")
    try:
        wait_all([report], [tmp_path / "r.log"], timeout=300)
    finally:
        kill([report])
    assert (out / "report.md").exists()
