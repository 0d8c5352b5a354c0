"""The one table formatter (`jaxdepth.tables`) and the one figure helper (`jaxdepth.figures`):
markdown output, text alignment, and plotting modules that switch no matplotlib backend."""

import math
import subprocess
import sys

import pytest

from jaxdepth.tables import fmt, table

ROWS = [{"name": "pre", "depth": 3, "loss": None, "rms": 1.23456},
        {"name": "lns_long", "depth": 12, "loss": math.nan, "rms": 22.5}]
COLS = ["name", "depth", "loss", "rms"]


def test_markdown_table():
    assert table(ROWS, COLS, {"rms": ".2f"}) == (
        "| name | depth | loss | rms |\n"
        "|---|---|---|---|\n"
        "| pre | 3 | - | 1.23 |\n"
        "| lns_long | 12 | nan | 22.50 |")


def test_fmt():
    assert [fmt(None), fmt(""), fmt(math.inf), fmt(-math.inf), fmt(7), fmt(7, "03d"),
            fmt(0.5, ".2f"), fmt(True), fmt("x")] == \
        ["-", "-", "inf", "-inf", "7", "007", "0.50", "True", "x"]


def test_text_table_is_aligned():
    out = table(ROWS, COLS, {"rms": ".2f"}, style="text", headers={"rms": "rms L"})
    head, dashes, *body = lines = out.splitlines()
    spans, start = [], 0  # each column's (start, end) from the dashes line
    for d in dashes.split("  "):
        spans.append((start, start + len(d)))
        start += len(d) + 2
    cells = [[ln[s:e] for s, e in spans] for ln in lines]
    assert [c.strip() for c in cells[0]] == ["name", "depth", "loss", "rms L"]
    assert [[c.strip() for c in row] for row in cells[2:]] == \
        [["pre", "3", "-", "1.23"], ["lns_long", "12", "nan", "22.50"]]
    for ln in lines:  # two spaces between columns, nothing past the last, no trailing blanks
        assert all(ln[e:e + 2] in ("  ", "") for _, e in spans) and len(ln) <= spans[-1][1]
        assert ln == ln.rstrip()
    assert all(row[0] == row[0].lstrip() for row in cells)  # text: left-aligned
    assert all(c == c.rstrip() for row in cells for c in row[1:])  # numbers: right-aligned
    assert head.startswith("name") and body[1].startswith("lns_long")


def test_unknown_style_raises():
    with pytest.raises(ValueError, match="style"):
        table(ROWS, COLS, style="html")


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


# the backend as set (an unresolved "auto" unless someone called matplotlib.use), whether
# pyplot is loaded (checked first: get_backend() itself imports pyplot), the resolved backend
REPORT = ("b = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
          "print(b if isinstance(b, str) else 'auto', 'matplotlib.pyplot' in sys.modules,"
          " matplotlib.get_backend())")


def test_plot_modules_switch_no_backend():
    fresh = _python("import sys, matplotlib\n" + REPORT)
    after = _python(
        "import sys, matplotlib\n"
        "import jaxdepth.report.plots, jaxdepth.diagnostics.plots\n"
        "import jaxdepth.diagnostics.signal_plot, jaxdepth.scaling.plots\n" + REPORT)
    assert after == fresh and fresh.split()[1] == "False"


def test_save_writes_png(tmp_path):
    from jaxdepth import figures

    fig, axes = figures.panels(2)
    for ax in axes:
        ax.plot([0, 1], [1, 0])
    fig.suptitle("a long title " * 20)
    path = figures.save(fig, tmp_path / "sub" / "f.png")
    data = path.read_bytes()
    assert path == tmp_path / "sub" / "f.png" and data.startswith(b"\x89PNG") and len(data) > 1000
