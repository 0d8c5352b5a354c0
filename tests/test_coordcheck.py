"""The coordinate check (`jaxdepth coordcheck`): under muP the RMS change of the activations
after a few Adam steps does not grow with width, under CompleteP not with depth, where SP's
does (Yang et al. 2022, arXiv 2203.03466; Dey et al. 2025, arXiv 2505.01618). Compile-bound:
one module fixture trains 11 tiny shapes once (3 steps, batch 8 x 32 tokens); the CLI test
reuses two of its compiled programs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from jaxdepth.cli import main
from jaxdepth.config import load_config
from jaxdepth.diagnostics import coordcheck as C

STEPS = 3
WIDTHS, DEPTHS = [32, 64, 128], [2, 4, 8]
# SwiGLU: its hidden size (8/3 W rounded up to a multiple of 64) is 4 W at width 32 but 3 W
# at 64 and 128, so the FFN output projection's multiplier must be its own fan-in ratio
# (`parameterization.ffn_width_mult`); with W's ratio instead, mup's last-layer change fell
# 0.19 -> 0.14 -> 0.14 over widths 32..128 (slope -0.24, measured).
CONFIG = f"""name: coordcheck_test
model: {{depth: 2, width: 32, heads: 2, base_width: 32, base_depth: 2}}
data: {{seq_len: 32, batch_size: 8}}
train: {{lr: {2 ** -7}}}
"""
TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("coordcheck") / "cc.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def rows(config_path) -> list[dict]:
    """sp on both axes; mup across width (at depth 2), completep across depth (at width
    32): 11 compiles. (32, 2) is on both axes."""
    cfg = load_config(config_path)
    return (C.coordcheck(cfg, ["sp"], WIDTHS, DEPTHS, STEPS)
            + C.coordcheck(cfg, ["mup"], WIDTHS, [2], STEPS)
            + C.coordcheck(cfg, ["completep"], [32], DEPTHS, STEPS))


@pytest.fixture(scope="module")
def last(rows) -> dict:
    """(parameterization, axis, quantity) -> its slope row at the last step."""
    return {(r["parameterization"], r["axis"], r["quantity"]): r
            for r in C.slopes(rows) if r["step"] == STEPS}


def test_rows_cover_every_shape_step_and_layer(rows):
    shapes = {(r["parameterization"], r["axis"], r["width"], r["depth"]) for r in rows}
    assert len(shapes) == 6 + 3 + 1 + 3 + 1  # (32, 2) once per axis
    sp8 = [r for r in rows if r["parameterization"] == "sp" and r["depth"] == 8]
    assert len(sp8) == (STEPS + 1) * (1 + 8 + 1)
    assert [r["layer"] for r in sp8[:10]] == [0, *range(1, 9), None]
    assert all(r["delta_rms"] == 0 for r in rows if r["step"] == 0)
    assert all(r["rms"] > 0 and r["delta_rms"] > 0 for r in rows if r["step"] > 0)
    # the shared shape is trained once, its rows repeated on both axes
    both = [[(r["step"], r["quantity"], r["layer"], r["rms"]) for r in rows
             if r["parameterization"] == "sp" and (r["width"], r["depth"]) == (32, 2)
             and r["axis"] == axis] for axis in C.AXES]
    assert both[0] == both[1] and both[0]


def test_log2_slope():
    assert C.log2_slope([2, 4, 8], [3, 6, 12]) == pytest.approx(1.0)
    assert C.log2_slope([2, 4, 8], [5, 5, 5]) == pytest.approx(0.0)
    assert math.isnan(C.log2_slope([4, 4], [1, 2]))  # one distinct x
    assert math.isnan(C.log2_slope([2, 4], [0.0, 1.0]))  # log of 0 (the change at t = 0)


# Slopes of log2 RMS-change per doubling at step 3, measured on this fixture: across width
# (32..128) mup last layer +0.03, logits -0.04; sp +2.04, +0.87. Across depth (2..8)
# completep last layer +0.12, logits +0.00; sp last layer +0.90 (sp's logits do not grow
# with depth at 3 steps, -0.11, so depth contrasts the last layer only). A muP rule lost
# (no output multiplier, no hidden lr 1/m_W, no branch multiplier m_L^-alpha) puts that
# parameterisation back near sp's slope.


@pytest.mark.parametrize("quantity", ["logits", "last_layer"])
def test_mup_change_is_flat_in_width_where_sp_grows(last, quantity):
    mup, sp = (last[(p, "width", quantity)]["delta_slope"] for p in ("mup", "sp"))
    assert abs(mup) < 0.25, (mup, sp)
    assert sp > 0.5, (mup, sp)


def test_completep_change_is_flat_in_depth_where_sp_grows(last):
    cp = {q: last[("completep", "depth", q)]["delta_slope"] for q in C.SERIES}
    sp = {q: last[("sp", "depth", q)]["delta_slope"] for q in C.SERIES}
    assert abs(cp["last_layer"]) < 0.25 and abs(cp["logits"]) < 0.25, (cp, sp)
    assert sp["last_layer"] > 0.5, (cp, sp)


def test_cli_writes_csv_table_and_figures(rows, config_path, tmp_path, capsys):
    """Two shapes of mup, both compiled by the `rows` fixture (same model and train config)."""
    out = tmp_path / "cc"
    assert main(["coordcheck", str(config_path), "--parameterizations", "mup", "--widths",
                 "32,64", "--depths", "2", "--steps", str(STEPS), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    with open(out / "coordcheck.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == list(C.ROW_KEYS)
    assert len(got) == 3 * (STEPS + 1) * (1 + 2 + 1)  # (32, 2) on both axes, (64, 2)
    ours = [r for r in rows if r["parameterization"] == "mup" and r["width"] == 64]
    cli = [r for r in got if r["width"] == "64"]
    assert [float(r["delta_rms"]) for r in cli] == pytest.approx(
        [r["delta_rms"] for r in ours], rel=1e-6)
    md = (out / "coordcheck.md").read_text()
    assert "| parameterization | axis | shapes | embedding Δ |" in md
    assert "| mup | width | 2 |" in md and "| mup | width | 2 |" in printed
    for axis in C.AXES:
        assert (out / f"coordcheck_{axis}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, words", [
    (["--widths", ""], ["widths is empty"]),
    (["--depths", "2,-4"], ["depths must be positive integers", "-4"]),
    (["--depths", "2,x"], ["--depths must be a comma-separated list of integers"]),
    (["--widths", "32,40"], ["width 40 is not a multiple of the head size 16"]),
    (["--parameterizations", "sp,mupp"], ["unknown parameterization 'mupp'", "completep"]),
    (["--parameterizations", ","], ["parameterizations is empty"]),
    (["--steps", "0"], ["steps must be an integer >= 1"]),
    (["--lr", "0"], ["lr must be a finite number > 0"]),
    (["model.depth=0"], ["model.depth must be >= 1"]),
])
def test_bad_input_is_one_line_before_any_compile(tmp_path, capsys, monkeypatch, argv, words):
    def compiled(*a):
        raise AssertionError("compiled despite bad input")

    monkeypatch.setattr(C, "_compiled", compiled)
    monkeypatch.setattr(C, "first_batch", compiled)
    out = tmp_path / "cc"
    assert main(["coordcheck", str(TINY), *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words), err
    assert not out.exists()
