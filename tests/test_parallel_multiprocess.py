"""Two JAX processes on 127.0.0.1 (gloo CPU collectives), two host devices each, launched
through `jaxdepth train` (process 0 with CLI flags, process 1 with JAXDEPTH_* environment
variables) on mesh (data=1, fsdp=2, tensor=2), params sharded across the processes: they
train 2 steps, then a second pair resumes from that checkpoint (restored by both processes,
each its own iterator state) to step 3. Then one single-device process
(`tests/_mesh_driver.py single`) trains the same config for 6 steps as the reference and
resumes the pair's run dir to 6 steps (a different process count and mesh).
Tolerances: see tests/test_parallel_mesh.py."""

from __future__ import annotations

import numpy as np
import pytest
from _mesh_driver import OVERRIDES
from _procs import ROOT, cpu_env, free_port, kill, run_driver, start, wait_all

from jaxdepth.rundir import read_json, read_metrics

LOSS_RTOL, STATS_RTOL, PARAM_ATOL = 1e-5, 1e-4, 1e-4
PAIR_ARGS = ["-m", "jaxdepth.cli", "train", ROOT / "configs" / "tiny.yaml", *OVERRIDES,
             "parallel.data=1", "parallel.fsdp=2", "parallel.tensor=2"]


def run_pair(run_dir, steps: int, logs) -> None:
    """`jaxdepth train` as processes 0 and 1 of 2, bounded in time, always cleaned up."""
    args = [*PAIR_ARGS, f"train.steps={steps}", "--no-progress", "--run-dir", run_dir]
    coord = f"127.0.0.1:{free_port()}"
    procs = []
    try:
        procs.append(start([*args, "--coordinator", coord, "--num-processes", "2",
                            "--process-id", "0"], cpu_env(2), logs[0]))
        procs.append(start(args, cpu_env(2, JAXDEPTH_COORDINATOR=coord,
                                         JAXDEPTH_NUM_PROCESSES="2",
                                         JAXDEPTH_PROCESS_ID="1"), logs[1]))
        wait_all(procs, logs, timeout=240)
    finally:
        kill(procs)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    run_dir = out / "run"
    listing = lambda: sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    run_pair(run_dir, 2, [out / "first0.log", out / "first1.log"])
    first_files = listing()
    logs = [out / "p0.log", out / "p1.log"]
    run_pair(run_dir, 3, logs)  # resumes from step 2
    # as the pair left them, before the single process resumes the run
    pair_metrics = read_metrics(run_dir)
    files = listing()
    single = run_driver(["single", out / "single", run_dir], devices=1,
                        log=out / "single.log", timeout=240)
    return out, run_dir, logs, (pair_metrics, files, first_files), single


def test_pair_ran_as_two_processes(pair):
    _, _, logs, _, _ = pair
    for log in logs:
        text = log.read_text()
        assert "done: step 3" in text
        assert "Gloo" in text  # collectives went through gloo between the processes


def test_only_process_0_writes_logs(pair):
    _, _, _, (metrics, files, first_files), _ = pair
    assert [m["step"] for m in metrics] == [1, 2, 3]  # one line per step, not two
    tb = lambda fs: [f for f in fs if f.startswith("tb/events.out.tfevents.")]
    assert len(tb(first_files)) == 1 and len(tb(files)) == 2  # one per launch of the pair


def test_each_process_saves_its_iterator_and_array_shards(pair):
    _, _, _, (_, files, _), single = pair
    assert single["pair_data_files"] == ["commit_success.txt", "process_0-of-2.json",
                                         "process_1-of-2.json"]
    for step in (2, 3):
        for i in (0, 1):
            assert f"checkpoints/{step}/data/process_{i}-of-2.json" in files
            assert f"checkpoints/{step}/state/ocdbt.process_{i}" in files


def test_pair_matches_one_process(pair):
    out, _, _, (pair_metrics, _, _), _ = pair
    ref = read_metrics(out / "single" / "ref")[:3]
    np.testing.assert_allclose([m["loss"] for m in pair_metrics], [m["loss"] for m in ref],
                               rtol=LOSS_RTOL)
    for g, r in zip(pair_metrics, ref):
        for name in r["layers"]:
            np.testing.assert_allclose(g["layers"][name], r["layers"][name], rtol=STATS_RTOL)


def test_pair_checkpoint_resumes_in_one_process(pair):
    """The pair's step-3 checkpoint restores on one device (resharded, iterator state taken
    from the 2-process files) and training continues as the uninterrupted run."""
    out, run_dir, _, _, single = pair
    assert single["resumed"] == "done" and read_json(run_dir / "status.json")["step"] == 6
    got, ref = read_metrics(run_dir), read_metrics(out / "single" / "ref")
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([m["loss"] for m in got], [m["loss"] for m in ref],
                               rtol=LOSS_RTOL)
    p, p_ref = np.load(run_dir / "params.npz"), np.load(out / "single" / "ref" / "params.npz")
    assert int(p["step"]) == int(p_ref["step"]) == 6
    for k in p_ref.files:
        np.testing.assert_allclose(p[k], p_ref[k], atol=PARAM_ATOL, rtol=0, err_msg=k)
