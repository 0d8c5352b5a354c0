"""The run-directory contract: readers that survive a kill at any instant, atomic writers,
one "same run" rule, local and object-store paths, claims refused where they cannot be
atomic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from etils.epath import testing as epath_testing

from jaxdepth import rundir
from jaxdepth.config import RunConfig, to_dict
from jaxdepth.errors import UserError
from jaxdepth.sweep.claim import try_claim


def test_read_json_gives_the_default_for_missing_torn_or_unreadable(tmp_path):
    assert rundir.read_json(tmp_path / "none.json", {}) == {}
    (tmp_path / "torn.json").write_text('{"status": "do')
    assert rundir.read_json(tmp_path / "torn.json") is None
    assert rundir.read_json(tmp_path, "dir") == "dir"  # a directory, not a file


def test_write_json_is_atomic_and_keeps_nan_unless_made_strict(tmp_path):
    p = tmp_path / "status.json"
    rundir.write_json(p, {"final_loss": math.nan, "step": 3})
    assert list(tmp_path.iterdir()) == [p]  # no temporary file left behind
    back = rundir.read_json(p)
    assert back["step"] == 3 and math.isnan(back["final_loss"])
    strict = rundir.jsonable({"a": np.array([1.0, np.inf]), 2: (np.float32(0.5), math.nan)})
    assert strict == {"a": [1.0, None], "2": [0.5, None]}


def test_metrics_reader_skips_torn_lines_and_truncate_keeps_earlier_steps(tmp_path):
    for step in (1, 2, 3):
        rundir.append_metrics(tmp_path, {"step": step, "loss": 1.0 / step})
    with (tmp_path / rundir.METRICS).open("a") as f:
        f.write('{"step": 4, "lo')
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    rundir.truncate_metrics(tmp_path, 2)
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2]
    assert rundir.read_metrics(tmp_path / "elsewhere") == []


def test_same_run_rule():
    cfg = to_dict(RunConfig())
    longer = {**cfg, "train": {**cfg["train"], "steps": 999},
              "parallel": {**cfg["parallel"], "fsdp": 4}}
    assert rundir.run_changes(cfg, longer) == []  # extended, resharded: the same run
    deeper = {**cfg, "model": {**cfg["model"], "depth": 9}}
    assert rundir.run_changes(cfg, deeper) == ["model.depth"]
    older = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "microbatches"}}
    assert rundir.run_changes(older, cfg) == []  # a key written by a later version: default


def test_run_dir_on_an_object_store(tmp_path, monkeypatch):
    """gs:// paths through epath (its os backend stands in for GCS here): JSON replaced
    whole, metrics appended by rewriting the object, truncated on resume."""
    monkeypatch.chdir(tmp_path)
    with epath_testing.mock_epath():
        run = rundir.path("gs://bucket/runs/a")
        assert rundir.is_remote(run) and str(run) == "gs://bucket/runs/a"
        run.mkdir(parents=True, exist_ok=True)
        rundir.write_json(run / rundir.STATUS, {"status": "running"})
        for step in (1, 2, 3):
            rundir.append_metrics(run, {"step": step, "loss": 1.0 / step})
        rundir.truncate_metrics(run, 2)
        assert rundir.read_status(run) == {"status": "running"}
        assert [r["step"] for r in rundir.read_metrics(run)] == [1, 2]
        assert rundir.checkpoint_steps(run) == []
    assert not list(tmp_path.rglob("*.tmp"))  # no local temp-and-rename on an object store


def test_claims_refused_on_an_object_store(tmp_path):
    with pytest.raises(UserError, match="object-store URL.*gcsfuse"):
        try_claim("gs://bucket/sweep/runs/a/claim.json")
    assert try_claim(tmp_path / "a" / "claim.json") is not None  # local: O_EXCL


def test_layout_keys_keep_the_run_and_its_id():
    """Micro-batches and the attention kernel change how a run is laid out, not what it
    computes: a resume may change them, and a sweep's run ids do not hold them."""
    from jaxdepth.config import replace
    from jaxdepth.sweep.spec import run_id

    cfg = RunConfig()
    laid_out = replace(cfg, train=dict(microbatches=4), model=dict(attention="xla"))
    assert rundir.run_changes(to_dict(cfg), to_dict(laid_out)) == []
    assert run_id(laid_out) == run_id(cfg) != run_id(replace(cfg, model=dict(depth=9)))


def test_sweep_out_on_an_object_store_is_refused_before_path_folds_it(capsys):
    from pathlib import Path

    from jaxdepth.cli import main

    spec = Path(__file__).resolve().parents[1] / "configs" / "sweep_tiny.yaml"
    assert main(["sweep", str(spec), "--out", "gs://bucket/sweeps/x"]) == 2
    assert "object-store URL" in capsys.readouterr().err
