"""Sweeps: spec expansion and run ids, shape helpers, claims, the runner (skip, diverged,
shared compile), the results table, the plan, init_from, corrupt-checkpoint fallback."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from jaxdepth import checkpoint
from jaxdepth.cli import main
from jaxdepth.config import replace
from jaxdepth.diagnostics.grad_persistence import fit_grad_persistence, layer_grad_norms
from jaxdepth.errors import UserError
from jaxdepth.rundir import read_metrics
from jaxdepth.sweep import expand, load_spec, run_id, run_sweep, shapes
from jaxdepth.sweep.claim import claim_is_stale, try_claim
from jaxdepth.train import build as build_mod
from jaxdepth.train.loop import train

REPO = Path(__file__).resolve().parents[1]
BASE = dict(model=dict(depth=2, width=32, heads=2),
            data=dict(seq_len=16, batch_size=4),
            train=dict(steps=6, warmup_steps=1, log_every=1, eval_every=3, eval_batches=1,
                       ckpt_every=2))
# 4 runs of one shape: two seeds, each also with a divergence threshold every loss exceeds
SPEC = dict(name="t", base=BASE, grid={"train.seed": [0, 1], "train.diverge_loss": [0.0, 1.0]})


# ---------------------------------------------------------------- spec


def test_expand_grid_zip_helpers_and_stable_ids(tmp_path):
    spec = load_spec(dict(base=BASE, grid={"model.scheme": ["pre", "lns"]},
                          zip=[{"model.width": [32, 64], "train.lr": [3e-3, 1e-3]}], head_dim=16))
    runs = expand(spec)
    assert [(c.model.scheme, c.model.width, c.model.heads, c.train.lr) for c in runs] == [
        ("pre", 32, 2, 3e-3), ("pre", 64, 4, 1e-3), ("lns", 32, 2, 3e-3), ("lns", 64, 4, 1e-3)]
    assert [c.name for c in runs] == [c.name for c in expand(spec)]  # stable
    assert len({c.name for c in runs}) == 4 and runs[0].name.startswith("pre_d2_w32_")
    # the id ignores the name and the mesh, not what is trained
    assert run_id(replace(runs[0], name="x", parallel=dict(data=1))) == runs[0].name
    assert run_id(replace(runs[0], train=dict(seed=9))) != runs[0].name
    # a base config path is found relative to the spec file; CLI overrides apply to it
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "sweep_x.yaml").write_text(yaml.safe_dump(dict(base="b.yaml")))
    (cfg,) = expand(load_spec(tmp_path / "sweep_x.yaml", ["train.steps=3"]))
    assert (cfg.model.width, cfg.train.steps) == (32, 3)
    assert load_spec(tmp_path / "sweep_x.yaml").name == "sweep_x"


@pytest.mark.parametrize("spec, words", [
    (dict(grid={"model.width": [32, 48]}, head_dim=32), ["model.width=48", "head_dim 32"]),
    (dict(grid={"model.width": [33]}), ["model.width=33", "divisible by model.heads"]),
    (dict(grid={"model.dept": [2]}), ["model.dept=2", "did you mean 'model.depth'"]),
    (dict(grid={"model.depth": [2]}, compute_matched={"params": 1e5}), ["model.depth", "both"]),
    (dict(zip=[{"model.width": [32, 64], "train.lr": [1e-3]}]), ["zip[0]", "equal lengths"]),
    (dict(grdi={}), ["unknown sweep spec key 'grdi'", "did you mean 'grid'"]),
    (dict(compute_matched={"tokens": 5}), ["compute_matched", "{params: N}"]),
])
def test_bad_specs_are_one_line_errors_naming_the_run(spec, words):
    with pytest.raises(UserError) as e:
        expand(load_spec(dict(base=BASE, **spec)))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


def test_compute_matched_and_tokens_per_param():
    n = shapes.kaplan_params(4, 64)  # 12 D W^2
    spec = dict(base=BASE, zip=[{"model.width": [32, 64]}], head_dim=16,
                compute_matched={"params": n}, tokens_per_param=20)
    runs = expand(load_spec(spec))
    assert [(c.model.width, c.model.depth) for c in runs] == [(32, 16), (64, 4)]
    assert runs[1].train.steps == round(20 * n / (4 * 16))
    # a FLOP budget with a fixed number of steps: the depth that spends it
    tokens = 6 * 4 * 16
    c = shapes.train_flops(shapes.kaplan_params(5, 64), tokens, 5, 16, 64)
    (cfg,) = expand(load_spec(dict(base=BASE, grid={"model.width": [64]}, head_dim=16,
                                   compute_matched={"flops": c * 1.05})))
    assert cfg.model.depth == 5
    # exact counts: the depth whose real non-embedding count is nearest the target
    target = 150_000
    (cfg,) = expand(load_spec(dict(base=BASE, compute_matched={"params": target},
                                   param_count="exact")))
    counts = {d: shapes.exact_nonembed(replace(cfg, model=dict(depth=d)).model)
              for d in range(1, 12)}
    assert cfg.model.depth == min(counts, key=lambda d: abs(counts[d] - target))
    assert shapes.matched_depth(lambda d: 10.0 * d, 24.0) == 2  # rounded, not floored
    assert shapes.matched_depth(lambda d: 10.0 * d, 1.0) == 1  # at least 1


# ---------------------------------------------------------------- claims


def test_claims_live_stale_and_dead(tmp_path):
    c = try_claim(tmp_path / "a" / "claim.json", timeout=60)
    assert c is not None and try_claim(tmp_path / "a" / "claim.json", timeout=60) is None
    c.start_heartbeat(0.05)
    os.utime(c.path, (time.time() - 30, time.time() - 30))
    time.sleep(0.3)
    assert time.time() - c.path.stat().st_mtime < 1  # the heartbeat touched it
    c.release()
    assert not c.path.exists()
    # another host's claim: live while fresh, taken over once its heartbeat is old
    p = tmp_path / "b" / "claim.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
    assert try_claim(p, timeout=60) is None
    os.utime(p, (time.time() - 61, time.time() - 61))
    taken = try_claim(p, timeout=60)
    assert taken is not None and json.loads(p.read_text())["token"] == taken.token
    # a dead process on this host: taken over at once; a live one (our parent) is not
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid, stale in ((dead.pid, True), (os.getppid(), False)):
        p.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": "y"}))
        assert claim_is_stale(p, timeout=60) is stale


RACER = """
import sys, time
from pathlib import Path
from jaxdepth.sweep.claim import try_claim
root, start = Path(sys.argv[1]), float(sys.argv[2])
while time.time() < start:
    pass
won = [i for i in range(60) if try_claim(root / str(i) / "claim.json", timeout=30)]
print(" ".join(map(str, won)), flush=True)
time.sleep(max(0.0, start + 4 - time.time()))  # stay alive: a dead holder's claim is stale

"""


def test_two_workers_racing_never_claim_the_same_run(tmp_path):
    for i in range(30, 60):  # half the runs hold a stale claim: both race to take it over
        p = tmp_path / str(i) / "claim.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps({"host": "gone", "pid": 1, "token": "old"}))
        os.utime(p, (time.time() - 100, time.time() - 100))
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    won = [set(map(int, p.communicate(timeout=60)[0].split())) for p in procs]
    assert won[0].isdisjoint(won[1]) and won[0] | won[1] == set(range(60))


# ---------------------------------------------------------------- the runner


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The 4-run SPEC swept once (one shape, so one compile); shared by later tests."""
    d = tmp_path_factory.mktemp("sweep")
    (d / "sweep_t.yaml").write_text(yaml.safe_dump(SPEC))
    before = build_mod.build.cache_info()
    rows = run_sweep(d / "sweep_t.yaml", d / "out", progress=False)
    after = build_mod.build.cache_info()
    return d, rows, after.hits - before.hits


def test_sweep_runs_records_divergence_and_shares_one_compile(swept):
    d, rows, hits = swept
    assert hits >= 3  # 4 runs that differ only in seed and diverge_loss: one build
    by = {(r["seed"], r["status"]): r for r in rows}
    assert set(by) == {(0, "done"), (1, "done"), (0, "diverged"), (1, "diverged")}
    assert by[0, "done"]["final_loss"] != by[1, "done"]["final_loss"]  # the seed still counts
    n, total = shapes.exact_param_counts(
        build_mod.resolve_model(expand(load_spec(SPEC))[0].model, 258))
    for r in rows:
        assert (r["params"], r["total_params"], r["depth"], r["width"]) == (n, total, 2, 32)
        assert r["tokens"] == r["step"] * 4 * 16
        assert r["flops"] == 6 * n * r["tokens"] + 6 * 2 * 16 * 32 * r["tokens"]
    done = by[0, "done"]
    assert done["step"] == 6 and by[0, "diverged"]["step"] == 1
    last = read_metrics(d / "out" / "runs" / done["run_id"])[-1]
    rms = last["layers"]["rms_out"]
    assert done["residual_rms_growth"] == pytest.approx(rms[-1] / rms[0], rel=1e-12)
    fit = fit_grad_persistence(layer_grad_norms(last)["layer"])
    assert done["tau"] == fit.tau or (math.isinf(done["tau"]) and math.isinf(fit.tau))
    ratios = zip(last["layers"]["attn_update_ratio"], last["layers"]["ffn_update_ratio"])
    assert done["low_update_layers"] == sum(a < 0.05 and f < 0.05 for a, f in ratios)
    # the table on disk: the columns `jaxdepth fit` reads, CSV and Parquet alike
    table = pq.read_table(d / "out" / "results.parquet").to_pylist()
    assert [r["run_id"] for r in table] == [r["run_id"] for r in rows]
    assert table[0]["final_loss"] == rows[0]["final_loss"]
    header = (d / "out" / "results.csv").read_text().splitlines()[0].split(",")
    for col in ("params", "tokens", "final_loss", "final_val_loss", "depth", "width", "flops",
                "status", "total_params", "tau", "low_update_layers", "wall_time_s"):
        assert col in header


def test_rerun_skips_finished_and_diverged_runs(swept):
    d, rows, _ = swept
    st = {r["run_id"]: (d / "out" / "runs" / r["run_id"] / "status.json").read_bytes()
          for r in rows}
    again = run_sweep(d / "sweep_t.yaml", d / "out", progress=False)
    assert [r["wall_time_s"] for r in again] == [r["wall_time_s"] for r in rows]
    assert st == {r: (d / "out" / "runs" / r / "status.json").read_bytes() for r in st}


def test_plan_prints_sizes_and_estimates_from_finished_runs(swept, capsys):
    d, rows, _ = swept
    assert main(["sweep", str(d / "sweep_t.yaml"), "--out", str(d / "out"), "--plan",
                 "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert all(r["run_id"] in out for r in rows[1::2])
    assert not any(r["run_id"] in out for r in rows[0::2])
    assert "reference: finished runs" in out and "2 runs, 0 to train" in out
    assert main(["sweep", str(d / "sweep_t.yaml"), "--shard", "2/2"]) == 2
    # nothing finished in a new out dir: a short calibration run gives the throughput
    assert main(["sweep", str(d / "sweep_t.yaml"), "--out", str(d / "new"), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "reference: calibration" in out and "4 runs, 4 to train" in out
    est = [float(ln.split()[-2]) for ln in out.splitlines() if ln.startswith("pre_d2")]
    assert len(est) == 4 and all(0 < e < 600 for e in est)
    assert not (d / "new" / "runs").exists()  # planning trains nothing in the out dir


# ---------------------------------------------------------------- init_from, corrupt


def _src(swept) -> tuple[Path, dict]:
    d, rows, _ = swept
    row = next(r for r in rows if r["status"] == "done" and r["seed"] == 0)
    return d / "out" / "runs" / row["run_id"], row


def _saved_params(run_dir: Path):
    mngr = checkpoint.manager(run_dir, read_only=True)
    out = mngr.restore(mngr.latest_step(), args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))
    return out.state["params"]


def test_init_from_starts_from_the_source_params_and_freezes(swept, tmp_path):
    src, _ = _src(swept)
    cfg = expand(load_spec(dict(base=BASE)))[0]
    ft = replace(cfg, train=dict(init_from=str(src), train_last_layers=1, steps=2, seed=5))
    b = build_mod.build(build_mod.resolve_model(ft.model, 258), ft.train, ft.parallel, 16, 257)
    state = jax.eval_shape(b.init_state, jax.random.key(0))
    got = checkpoint.restore_params(
        src, checkpoint.abstract_like(state.params, b.state_shardings.params))
    want = _saved_params(src)
    jax.tree.map(np.testing.assert_array_equal, got, want)
    train(ft, tmp_path / "ft", progress=False)
    after = _saved_params(tmp_path / "ft")
    np.testing.assert_array_equal(after["embed"]["embedding"], want["embed"]["embedding"])
    q0, q1 = (p["layers"]["attn"]["query"]["kernel"] for p in (want, after))
    np.testing.assert_array_equal(q1[0], q0[0])  # layer 0 frozen at the source's values
    assert not np.array_equal(q1[1], q0[1])  # the last layer fine-tunes
    with pytest.raises(UserError, match="another shape"):
        train(replace(ft, model=dict(depth=3)), tmp_path / "bad", progress=False)
    with pytest.raises(UserError, match="train.init_from '/no/such/run'"):
        train(replace(cfg, train=dict(init_from="/no/such/run")), tmp_path / "none",
              progress=False)
    assert not (tmp_path / "none").exists()  # refused before anything was written


@pytest.mark.parametrize("damage", ["corrupt", "partial"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_step(swept, tmp_path, damage):
    src, row = _src(swept)
    cfg = expand(load_spec(dict(base=BASE)))[0]
    run = tmp_path / "r"
    assert train(cfg, run, progress=False, stop_at=4)["status"] == "interrupted"
    state4 = run / "checkpoints" / "4" / "state"
    if damage == "corrupt":
        for f in state4.rglob("*"):
            if f.is_file() and f.parent.name == "d":
                f.write_bytes(b"\x00garbage" * 8)
    else:  # the array data of a half-written step is missing
        shutil.rmtree(state4 / "ocdbt.process_0")
    with pytest.warns(UserWarning, match="checkpoint at step 4 is unreadable"):
        st = train(cfg, run, progress=False)
    assert st["status"] == "done" and st["final_loss"] == row["final_loss"]
    a = [(m["step"], m["loss"]) for m in read_metrics(run)]
    assert a == [(m["step"], m["loss"]) for m in read_metrics(src)]
