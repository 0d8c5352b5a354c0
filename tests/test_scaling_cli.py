"""`jaxdepth fit` end to end on a jaxdepth-style results table, the Chinchilla file's column
mapping, and the errors bad input gets (one line, naming the column and the rows)."""

import csv
import json

import numpy as np
import pytest
from conftest import CHINCHILLA_CSV, NEEDS_SHARED

from jaxdepth.cli import main
from jaxdepth.errors import UserError
from jaxdepth.scaling.synthetic import depth_width_runs
from jaxdepth.scaling.table import load_runs

FIELDS = ["run_id", "depth", "width", "heads", "scheme", "params", "flops", "tokens",
          "final_loss", "final_val_loss", "status"]


def sweep_rows():
    cols = depth_width_runs([2, 4, 8, 16, 32], [64, 256], [1e7, 1e8, 1e9], noise=0.003)
    rows = []
    for i in range(len(cols["loss"])):
        d, w = int(cols["depth"][i]), int(cols["width"][i])
        rows.append({"run_id": f"pre_d{d}_w{w}_{i}", "depth": d, "width": w, "heads": 4,
                     "scheme": "pre", "params": 12 * d * w * w, "flops": cols["flops"][i],
                     "tokens": cols["tokens"][i], "final_loss": cols["loss"][i],
                     "final_val_loss": cols["loss"][i] * 1.01, "status": "done"})
    rows.append({**rows[0], "run_id": "pre_d64_w64_x", "depth": 64, "final_loss": "nan",
                 "status": "diverged"})
    rows.append({**rows[0], "run_id": "pre_d48_w64_y", "depth": 48, "final_loss": "",
                 "status": "pending"})
    return rows


def write_csv(path, rows, fields=FIELDS):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_fit_sweep_table_writes_json_and_plots(tmp_path, capsys):
    table = write_csv(tmp_path / "results.csv", sweep_rows())
    out = tmp_path / "out"
    rc = main(["fit", str(table), "--bootstrap", "4", "--quiet", "--out", str(out),
               "--max-starts", "300"])
    assert rc == 0
    s = json.loads((out / "fit.json").read_text())
    assert s["law"] == "depth_width[log_aspect]" and s["n_runs"] == 30
    assert any("dropped 2 runs with status != done" in n for n in s["notes"])
    assert s["fit"]["r2"] > 0.99
    assert set(s["critical_depth"]) == {"64", "256"}
    assert s["bootstrap"]["n"] == 4 and "alpha" in s["bootstrap"]["intervals"]
    laws = [e["law"] for e in s["extrapolation"]]
    assert laws == ["depth_width[log_aspect]", "depth_width[none]"]
    assert all("mae" in e for e in s["extrapolation"])
    for png in ("fitted_vs_observed.png", "loss_vs_depth.png", "iso_compute.png"):
        assert (out / png).stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "D_crit(W=64)" in printed and "extrapolation" in printed


@NEEDS_SHARED
def test_fit_chinchilla_file_with_column_mapping(tmp_path):
    rc = main(["fit", str(CHINCHILLA_CSV), "--law", "chinchilla", "--loss", "loss",
               "--params", "Model Size", "--flops", "Training FLOP", "--tokens-from-flops",
               "--drop-highest-loss", "5", "--bootstrap", "0", "--no-plots",
               "--no-extrapolation", "--max-starts", "300", "--out", str(tmp_path)])
    assert rc == 0
    s = json.loads((tmp_path / "fit.json").read_text())
    assert s["n_runs"] == 240
    assert abs(s["fit"]["natural"]["alpha"] - 0.348) < 0.005
    assert abs(s["compute_optimal_closed_form"]["params_exponent"] - 0.514) < 0.01


def test_missing_column_is_named_with_the_columns_present(tmp_path, capsys):
    rows = [{k: v for k, v in r.items() if k != "final_loss"} for r in sweep_rows()]
    table = write_csv(tmp_path / "r.csv", rows, [f for f in FIELDS if f != "final_loss"])
    assert main(["fit", str(table), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'final_loss' (--loss) not found" in err and "final_val_loss" in err


def test_nan_and_nonpositive_rows_are_named(tmp_path):
    rows = sweep_rows()[:30]
    rows[3]["final_loss"] = "nan"
    with pytest.raises(UserError, match=r"'final_loss'.*row 4 \(pre_d2_w256_3\)"):
        load_runs(write_csv(tmp_path / "a.csv", rows), ["loss", "tokens"])
    rows = sweep_rows()[:30]
    rows[7]["tokens"] = -5
    with pytest.raises(UserError, match=r"'tokens' must be positive.*row 8"):
        load_runs(write_csv(tmp_path / "b.csv", rows), ["loss", "tokens"])


def test_parquet_and_jsonl_read_like_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sweep_rows()
    csv_runs = load_runs(write_csv(tmp_path / "r.csv", rows), ["loss", "depth", "width"])
    typed = [{**r, "final_loss": float(r["final_loss"] or "nan")} for r in rows]
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "r.parquet")
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(
        {**r, "final_loss": None if r["status"] != "done" else r["final_loss"]}) for r in rows))
    for name in ("r.parquet", "r.jsonl"):
        other = load_runs(tmp_path / name, ["loss", "depth", "width"])
        assert other.labels == csv_runs.labels
        np.testing.assert_allclose(other.columns["loss"], csv_runs.columns["loss"])
    with pytest.raises(UserError, match="use a .csv"):
        load_runs(write_csv(tmp_path / "r.txt", rows), ["loss"])
