"""The run-directory contract: one "same run" rule, local and object-store paths, claims
refused where they cannot be atomic."""

from __future__ import annotations

import pytest
from etils.epath import testing as epath_testing

from jaxdepth import rundir
from jaxdepth.config import RunConfig, to_dict
from jaxdepth.errors import UserError
from jaxdepth.sweep.claim import try_claim


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
