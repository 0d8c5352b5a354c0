"""`jaxdepth experiment NAME --size tiny` completes and writes its report for the five
experiments (run in-process, in an order that lets later experiments reuse the compiled
steps of earlier ones), the report regenerates without training, the paper-size plan
prints without training, overrides reach the runs (and an axis, an unknown key or an
unknown experiment is refused), `experiments/<name>.py` is the same command, and the
small fits recover known answers."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxdepth.cli import main
from jaxdepth.errors import UserError
from jaxdepth.report.fits import per_width_minimum, power_law

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["stacking_failure", "curse_of_depth", "depth_delusion", "gradient_persistence",
         "stabilizers_vs_dcrit", "capability_depth"]
# a no-op override (the spec's own value): recorded in experiment.json, retrains nothing
OVERRIDES = {"gradient_persistence": ["train.log_every=5"]}
FLAGS: dict = {}  # command-line flags per experiment (--connections: test_connections.py)


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("experiments")
    times = {}
    for name in ORDER:
        t0 = time.time()
        assert main(["experiment", name, "--size", "tiny", "--out", str(base / name),
                     "--no-progress", *OVERRIDES.get(name, []), *FLAGS.get(name, [])]) == 0
        times[name] = time.time() - t0
    return base, times


@pytest.mark.parametrize("name", ORDER)
def test_tiny_experiment_writes_report(tiny_results, name):
    base, times = tiny_results
    out = base / name
    report = (out / "report.md").read_text()
    assert report.startswith("# ")
    assert "Size: `tiny`" in report
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    for ref in [ln[4:-1] for ln in report.splitlines() if ln.startswith("![](")]:
        assert (out / ref).is_file(), ref  # every figure the report shows exists
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["overrides"] == OVERRIDES.get(name, [])
    assert meta["command"] == " ".join(["jaxdepth experiment", name, "--size tiny",
                                        *OVERRIDES.get(name, []), *FLAGS.get(name, []),
                                        "--out", str(out)])
    assert f"command: `{meta['command']}`" in report
    print(f"{name} --size tiny: {times[name]:.0f}s")  # wall time is reported, not asserted
    if name != "stacking_failure":
        import csv

        rows = list(csv.DictReader((out / "sweep" / "results.csv").open()))
        assert rows and all(r["status"] in ("done", "diverged") for r in rows)
    if name == "curse_of_depth":  # the per-token exit depth of every scheme's deepest run
        per_layer = report.split("## Per-layer diagnostics")[1].split("\n## ")[0]
        pre = next(ln for ln in per_layer.splitlines() if ln.startswith("| pre |"))
        assert "layers_per_token |" in per_layer and 1 <= float(pre.split("|")[-2]) <= 4


def test_report_regenerates_without_training(tiny_results, capsys):
    from jaxdepth.report import cli

    out = tiny_results[0] / "depth_delusion"
    (out / "report.md").unlink()
    before = {p: p.stat().st_mtime for p in (out / "sweep" / "runs").glob("*/metrics.jsonl")}
    assert cli.run(argparse.Namespace(results_dirs=[str(out)])) == 0
    assert "U-curve minimum per width" in (out / "report.md").read_text()
    assert before == {p: p.stat().st_mtime for p in before}  # nothing retrained


def test_report_as_experiment_reports_a_plain_sweep(tiny_results, tmp_path, capsys):
    """`jaxdepth report DIR --as NAME`: a sweep of one's own (here the tiny capability sweep
    copied without its experiment.json) reported as that experiment."""
    import shutil

    shutil.copytree(tiny_results[0] / "capability_depth" / "sweep", tmp_path / "sweep")
    assert main(["report", str(tmp_path), "--as", "capability_depth"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Size: `custom`" in report and "## Exact match by depth and difficulty" in report
    assert json.loads((tmp_path / "experiment.json").read_text())["experiment"] == "capability_depth"
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nothing"), "--as", "capability_depth"]) == 2
    assert "holds no sweep.json" in capsys.readouterr().err


def test_report_rejects_non_experiment_dir(tmp_path):
    from jaxdepth.report import cli

    with pytest.raises(UserError, match="experiment.json"):
        cli.run(argparse.Namespace(results_dirs=[str(tmp_path)]))


def test_paper_plan_prints_published_shapes(tmp_path, capsys):
    assert main(["experiment", "depth_delusion", "--size", "paper", "--plan", "--out",
                 str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "21 runs" in text
    assert " 512 " in text and "pre_d24_w512_" in text
    assert not (tmp_path / "sweep" / "runs").exists()  # planned, not trained
    assert main(["experiment", "curse_of_depth", "--scale", "paper", "--plan", "--out",
                 str(tmp_path)]) == 0  # --scale: the old spelling of --size
    text = capsys.readouterr().out
    for scheme in ("pre", "lns", "post", "mix", "deepnorm"):
        assert f"{scheme}_d24_w1024_" in text  # the 350M model of the LNS table


def _plan_steps_and_depths(text: str) -> set[tuple[int, int]]:
    """(steps, depth) of every run in a printed plan (columns: run_id scheme depth ...)."""
    rows = [ln.split() for ln in text.splitlines() if ln.startswith("pre_")]
    assert rows, text
    return {(int(r[7]), int(r[2])) for r in rows}


def test_overrides_reach_the_runs_after_the_specs_own(tmp_path, capsys):
    from jaxdepth.report.experiment import experiment_spec
    from jaxdepth.sweep import expand

    # k=v after the options; model.depth=6 beats the spec's own override (depth 4)
    assert main(["experiment", "gradient_persistence", "--size", "tiny", "--plan",
                 "--no-calibrate", "--out", str(tmp_path), "train.steps=7",
                 "model.depth=6"]) == 0
    assert _plan_steps_and_depths(capsys.readouterr().out) == {(7, 6)}
    runs = expand(experiment_spec("gradient_persistence", "tiny", ["train.steps=7"])[1])
    assert [c.train.steps for c in runs] == [7, 7, 7]
    assert {c.model.depth for c in runs} == {4}
    assert not (tmp_path / "sweep").exists()  # planned, not trained


@pytest.mark.parametrize("argv, words", [
    (["depth_delusion", "model.depth=3"], ["model.depth", "grid axis: 1, 2, 4"]),
    (["curse_of_depth", "model.heads=4"], ["model.heads", "head_dim"]),
    (["curse_of_depth", "train.stepz=4"], ["unknown config key 'train.stepz'"]),
    (["stacking_failure", "model.width=8"], ["takes no overrides"]),
    (["depth_illusion"], ["unknown experiment 'depth_illusion'", ", ".join(ORDER[:5]),
                          "capability_depth"]),
])
def test_refused_before_anything_runs(tmp_path, capsys, argv, words):
    out = tmp_path / "out"
    assert main(["experiment", *argv, "--size", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert all(w in err for w in words), err
    assert not out.exists()


def test_script_is_the_same_command(tiny_results):
    """`python experiments/x.py --tiny --plan`: the wrapper and the old spelling of --size;
    the finished tiny runs are the throughput reference (no calibration run)."""
    out = tiny_results[0] / "depth_delusion"
    res = subprocess.run([sys.executable, str(ROOT / "experiments" / "depth_delusion.py"),
                          "--tiny", "--plan", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "9 runs, 0 to train" in res.stdout and "finished runs" in res.stdout


def test_per_width_minimum_recovers_a_known_minimum():
    d = np.array([1, 2, 4, 8, 16, 32], float)
    true_star = 6.0
    rng = np.random.default_rng(0)
    loss = 2.0 + 0.3 * (np.log(d) - np.log(true_star)) ** 2
    m = per_width_minimum(d, loss)
    assert m["status"] == "ok" and m["d_star"] == pytest.approx(true_star, rel=1e-6)
    noisy = per_width_minimum(np.repeat(d, 2), np.repeat(loss, 2) + rng.normal(0, 0.01, 12))
    assert noisy["lo"] <= noisy["d_star"] <= noisy["hi"]
    edge = per_width_minimum(d, 3.0 - 0.1 * np.log(d))  # still falling at the deepest run
    assert edge["status"] == "at_upper_edge" and math.isnan(edge["d_star"])
    assert edge["d_best"] == 32.0


def test_power_law_recovers_exponent_and_skips_infinite_tau():
    w = np.array([32.0, 64.0, 128.0, 256.0])
    p = 0.37
    fit = power_law(np.append(w, 512.0), np.append(1.7 * w ** p, math.inf))
    assert fit["n"] == 4
    assert fit["p"] == pytest.approx(p, rel=1e-9) and fit["k"] == pytest.approx(1.7, rel=1e-9)


def test_per_width_minimum_falls_back_to_the_bracket():
    d = np.array([1, 2, 4, 8, 16], float)
    loss = 2.0 + 0.3 * (np.log(d) - np.log(6.0)) ** 2 + np.array([0, 1e-3, 0, -1e-3, 0])
    m = per_width_minimum(d, loss)
    assert m["interval_from"] == "bracket" and (m["lo"], m["hi"]) == (4.0, 16.0)
    two = per_width_minimum(np.repeat(d, 2), np.repeat(loss, 2)
                            + np.random.default_rng(1).normal(0, 0.01, 10))
    assert two["interval_from"] == "bootstrap" and two["lo"] <= two["d_star"] <= two["hi"]


def test_pivot_pools_seed_replicates_and_names_unfinished_runs():
    from jaxdepth.report.markdown import pivot

    rows = [dict(width=32, depth=2, seed=0, status="done", final_val_loss=2.0),
            dict(width=32, depth=2, seed=1, status="done", final_val_loss=2.2),
            dict(width=32, depth=4, seed=0, status="done", final_val_loss=1.9),
            dict(width=32, depth=4, seed=1, status="diverged", final_val_loss=float("nan"))]
    piv, cols = pivot(rows, "width", "depth", "final_val_loss")
    assert cols == ["width", "depth=2", "depth=4"]
    sd = float(np.std([2.0, 2.2], ddof=1))
    assert piv[0]["depth=2"] == f"2.1000 ± {sd:.4f} (2)"
    assert piv[0]["depth=4"] == "1.9000; nan (diverged)"


def test_curse_verdict_tests_gaps_across_seeds():
    from jaxdepth.report.curse_of_depth import verdict as curse_verdict

    def rows(lns_losses):
        pre = [dict(scheme="pre", variant="pre", depth=12, seed=s, status="done",
                    final_val_loss=v) for s, v in enumerate([2.00, 2.01, 2.02])]
        lns = [dict(scheme="lns", variant="lns", depth=12, seed=s, status="done",
                    final_val_loss=v) for s, v in enumerate(lns_losses)]
        return pre + lns

    clear = curse_verdict(rows([1.90, 1.91, 1.92]), 12)[0]
    assert "LNS 1.9100 ± 0.0100" in clear and "-0.1000 vs Pre-LN" in clear
    assert "p = " in clear and ": p = " in clear and "resolved)" in clear
    assert "not resolved" not in clear
    noisy = curse_verdict(rows([1.80, 2.20, 2.00]), 12)[0]
    assert "not resolved at this scale" in noisy
