"""The run-directory contract: readers that survive a kill at any instant, atomic writers."""

from __future__ import annotations

import math

import numpy as np

from jaxdepth import rundir


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
