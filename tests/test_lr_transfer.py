"""The lr_transfer report: the optimal learning rate per shape (parabola vertex in log lr,
`jaxdepth.scaling.ucurve_minimum`) and its drift across widths and depths recover known
answers on synthetic rows, diverged runs are left out of the fits and counted, an optimum at
an edge of the lr grid makes the drift a lower bound; `jaxdepth experiment lr_transfer
--size tiny` writes the report and both figures; the depth reports name a non-sp
parameterisation."""

from __future__ import annotations

import math
import time

import pytest

from jaxdepth.cli import main
from jaxdepth.report import lr_transfer as lt
from jaxdepth.report.depth_delusion import parameterization_line
from jaxdepth.report.specs import (
    LR_TRANSFER,
    PARAMETERIZATIONS,
    lr_transfer_parameterizations,
    lr_transfer_shapes,
)

BASE = (64, 4)
LOG2_LRS = list(range(-12, -3))  # -12 .. -4
WIDTHS, DEPTHS = [32, 64, 128, 256], [2, 4, 8, 16]
# per parameterisation, how far the optimum's log2 lr moves per doubling of width / depth
SHIFT = {"sp": (-1.0, -0.5), "mup": (0.1, -0.4), "completep": (0.1, 0.2)}
CENTRE = -8.0  # optimum's log2 lr at the base shape
AXIS_INDEX = {"width": 0, "depth": 1}


def true_optimum(p: str, w: int, d: int) -> float:
    sw, sd = SHIFT[p]
    return CENTRE + sw * math.log2(w / BASE[0]) + sd * math.log2(d / BASE[1])


def row(p, w, d, k, loss, status="done"):
    return dict(parameterization=p, width=w, depth=d, lr=2.0 ** k, final_val_loss=loss,
                status=status, steps=100, batch_size=16, seq_len=64, tokens=102400, seed=0)


def synthetic_rows(optimum=true_optimum) -> list[dict]:
    """loss = 2 + 0.05 (log2 lr - optimum)^2: a parabola in log lr, whose vertex the fit
    recovers exactly."""
    shapes = list(dict.fromkeys([(w, BASE[1]) for w in WIDTHS] + [(BASE[0], d) for d in DEPTHS]))
    return [row(p, w, d, k, 2.0 + 0.05 * (k - optimum(p, w, d)) ** 2)
            for p in PARAMETERIZATIONS for w, d in shapes for k in LOG2_LRS]


def by_shape(opt):
    return {(o["parameterization"], o["width"], o["depth"]): o for o in opt}


def by_axis(drift):
    return {(d["parameterization"], d["axis"]): d for d in drift}


def test_optimum_and_drift_recover_a_known_shift():
    rows = synthetic_rows()
    opt = lt.optimum_rows(rows, BASE)
    assert len(opt) == 3 * 7  # the base shape once per parameterisation
    for (p, w, d), o in by_shape(opt).items():
        assert o["status"] == "ok" and o["runs"] == len(LOG2_LRS) and o["diverged"] == 0
        assert o["log2_lr_star"] == pytest.approx(true_optimum(p, w, d), abs=1e-6)
        assert o["lr_star"] == pytest.approx(2.0 ** true_optimum(p, w, d), rel=1e-5)
    assert by_shape(opt)[("sp", 64, 4)]["axes"] == ["width", "depth"]
    drift = by_axis(lt.drift_rows(opt))
    for (p, axis), d in drift.items():  # 3 doublings of width or depth on each axis
        assert d["drift_value"] == pytest.approx(3 * abs(SHIFT[p][AXIS_INDEX[axis]]), abs=1e-6)
        assert not d["lower_bound"] and d["shapes"] == "4 of 4"
    assert drift[("mup", "width")]["verdict"] == "within 1"
    assert drift[("mup", "width")]["target"] == "<= 1"
    assert drift[("completep", "depth")]["verdict"] == "within 1"
    assert drift[("sp", "width")]["verdict"] == "exceeds 1"
    assert drift[("mup", "depth")]["verdict"] == "exceeds 1"  # mup does not transfer in depth
    assert drift[("sp", "depth")]["target"] == "-"


def test_diverged_runs_are_counted_not_fitted():
    rows = synthetic_rows()
    # mup W256: the two largest lrs diverge, one flagged, one done with a non-finite loss;
    # a flagged run's finite loss must not enter the fit either
    for r in rows:
        if (r["parameterization"], r["width"], r["depth"]) == ("mup", 256, 4):
            if math.log2(r["lr"]) == -4:
                r.update(status="diverged", final_val_loss=50.0)
            elif math.log2(r["lr"]) == -5:
                r.update(final_val_loss=math.inf)
    o = by_shape(lt.optimum_rows(rows, BASE))[("mup", 256, 4)]
    assert o["diverged"] == 2 and o["runs"] == len(LOG2_LRS) - 2
    assert o["status"] == "ok"
    assert o["log2_lr_star"] == pytest.approx(true_optimum("mup", 256, 4), abs=1e-6)
    assert [lt.is_diverged(r) for r in (row("sp", 1, 1, -4, math.nan),
                                        row("sp", 1, 1, -4, 3.0, "diverged"),
                                        row("sp", 1, 1, -4, None, "pending"))] == [True, True, False]


def test_optimum_at_the_grid_edge_makes_the_drift_a_lower_bound():
    # sp W256's optimum lies past the smallest lr run: the loss still falls at log2 lr = -12
    rows = synthetic_rows(lambda p, w, d: -14.0 if (p, w) == ("sp", 256) else true_optimum(p, w, d))
    opt = by_shape(lt.optimum_rows(rows, BASE))
    o = opt[("sp", 256, 4)]
    assert o["status"] == "at_lower_edge" and math.isnan(o["log2_lr_star"])
    assert o["log2_lr_opt"] == -12 and o["interval_log2"] == "[-inf, -11.00]"
    d = by_axis(lt.drift_rows(list(opt.values())))[("sp", "width")]
    assert d["lower_bound"] and d["drift"].startswith(">= ")
    assert d["drift_value"] == pytest.approx(-7.0 - -12.0)  # W32's optimum is at -7
    assert "W256: <= -12.00" in d["log2_lr_opt"]
    # W256 anywhere in its bracket (-inf, -11]: still >= 4 octaves from W32's -7
    assert d["min_drift"] == pytest.approx(4.0)
    assert d["verdict"] == "exceeds 1 (lower bound, model-free: >= 4.00)"
    # an edge optimum whose bracket reaches the others' estimates decides nothing
    assert lt.verdict(1.5, 0.0, True, 4, 4).startswith("undetermined: an optimum at a grid edge")
    assert lt.verdict(0.5, 0.0, False, 3, 4) == "within 1; partial: 3 of 4 shapes"


def test_best_lr_below_a_diverged_one_is_bracketed_not_an_edge():
    rows = [row("mup", 64, 4, k, 3.0 - 0.1 * k) for k in (-9, -8, -7)]
    rows += [row("mup", 64, 4, k, math.nan, "diverged") for k in (-6, -5)]
    o = lt.shape_optimum(rows)
    assert o["status"] == "below_divergence" and o["log2_lr_opt"] == -7
    assert (o["lo"], o["hi"]) == (-8, -6) and o["diverged"] == 2


def test_a_vertex_outside_its_bracket_falls_back_on_the_best_lr():
    # a jagged curve (measured: mup W32 D4 of the default size): best at -8, a bad run at -7
    losses = {-10: 3.0078, -9: 2.7960, -8: 2.6614, -7: 2.9321, -6: 2.6639, -5: 2.7243}
    o = lt.shape_optimum([row("mup", 32, 4, k, v) for k, v in losses.items()])
    assert o["status"] == "vertex_outside_bracket" and (o["lo"], o["hi"]) == (-9, -7)
    assert not -9 <= o["log2_lr_star"] <= -7 and o["log2_lr_opt"] == -8


def test_partial_results_give_partial_drift():
    rows = synthetic_rows()
    for r in rows:  # mup has only its first 2 lrs done, completep W256 nothing yet
        if r["parameterization"] == "mup" and math.log2(r["lr"]) > -11 or (
                r["parameterization"], r["width"]) == ("completep", 256):
            r.update(status="pending", final_val_loss=None)
    opt = by_shape(lt.optimum_rows(rows, BASE))
    assert opt[("mup", 32, 4)]["status"] == "too_few_lrs"
    assert opt[("completep", 256, 4)]["status"] == "no_runs"
    drift = by_axis(lt.drift_rows(list(opt.values())))
    assert drift[("mup", "width")]["verdict"].startswith("undetermined (0 of 4")
    assert drift[("completep", "width")]["shapes"] == "3 of 4"
    assert "partial: 3 of 4 shapes" in drift[("completep", "width")]["verdict"]


def test_base_shape_from_the_spec_then_the_users_overrides():
    spec = {"overrides": {"model.base_width": 48, "model.base_depth": 6}}
    assert lt.base_shape({"size": "default", "spec": spec}) == (48, 6)
    assert lt.base_shape({"size": "default", "spec": spec,
                          "overrides": ["model.base_depth=3"]}) == (48, 3)
    assert lt.base_shape({"size": "tiny"}) == LR_TRANSFER["tiny"]["base"]


def test_report_on_synthetic_rows(tmp_path):
    rows = synthetic_rows()
    rows[0].update(status="diverged", final_val_loss=math.nan)
    md = lt.report(tmp_path, {"size": "default"}, rows)
    for png in ("lr_vs_width.png", "lr_vs_depth.png"):
        assert (tmp_path / png).stat().st_size > 1000 and f"![]({png})" in md
    assert "Diverged runs: 1" in md and "nan (diverged)" in md
    assert "arXiv 2203.03466" in md and "arXiv 2505.01618" in md and "nanoGPT-mup" in md
    assert "- mup across widths: drift 0.30 octaves, target <= 1: within 1." in md


def test_depth_reports_name_a_non_sp_parameterization():
    rows = [dict(parameterization="sp", lr=3e-3)]
    assert parameterization_line(rows) == []
    rows = [dict(parameterization="completep", lr=2.0 ** -7)]
    assert parameterization_line(rows)[0] == "Parameterisation: completep; learning rate: 0.007812."


def test_tiny_experiment_writes_report(tmp_path):
    out = tmp_path / "lr_transfer"
    t0 = time.time()
    assert main(["experiment", "lr_transfer", "--size", "tiny", "--out", str(out),
                 "--no-progress"]) == 0
    print(f"lr_transfer --size tiny: {time.time() - t0:.0f}s")  # reported, not asserted
    report = (out / "report.md").read_text()
    assert report.startswith("# Learning-rate transfer") and "Size: `tiny`" in report
    for png in ("lr_vs_width.png", "lr_vs_depth.png"):
        assert (out / png).stat().st_size > 1000 and f"![]({png})" in report
    section = report.split("## Optimal learning rate per shape")[1].split("\n## ")[0]
    table_rows = [ln.split("|")[1:4] for ln in section.splitlines() if ln.startswith("| ")][1:]
    got = {(p.strip(), int(w), int(d)) for p, w, d in table_rows}
    params = lr_transfer_parameterizations("tiny")
    assert len(table_rows) == len(got) == len(params) * len(lr_transfer_shapes("tiny"))
    assert got == {(p, w, d) for p in params for w, d in lr_transfer_shapes("tiny")}
    assert "## Drift of the optimal learning rate across width and depth" in report
    # the coordinate check of the same shapes, at the base shape and lr, with its figures
    assert "## Coordinate check" in report
    for png in ("coordcheck_width.png", "coordcheck_depth.png"):
        assert (out / "coordcheck" / png).is_file() and f"(coordcheck/{png})" in report
