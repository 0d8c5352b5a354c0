"""The package's one table formatter: markdown tables for reports, aligned text for terminals.

`table(rows, cols, specs)` renders a list of dicts; each cell goes through `fmt`, so a
missing value prints as '-', a non-finite float as 'nan' / 'inf' / '-inf', an int as an
int, anything else as `format(x, spec)` or `str(x)`.
"""

from __future__ import annotations

import math

STYLES = ("markdown", "text")


def fmt(x, spec: str = ".4f") -> str:
    """A number for a table: '-' when missing, 'inf' / 'nan' spelled out."""
    if x is None or x == "":
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, int) and not isinstance(x, bool) and not spec.endswith("d"):
        return str(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return format(x, spec)
    return str(x)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def table(rows: list[dict], cols: list[str], specs: dict | None = None,
          style: str = "markdown", headers: dict | None = None,
          align: dict | None = None) -> str:
    """A table of `rows` over `cols`.

    specs: column -> format spec for `fmt` (default ".4f"), or a callable value -> str.
    style: "markdown" (a GitHub table) or "text" (aligned columns two spaces apart, a
    dashes line under the header; a column whose values are all numbers is right-aligned,
    any other left-aligned). headers: column -> printed header (default the column key).
    align: column -> "<" or ">" to override the text style's alignment.
    """
    if style not in STYLES:
        raise ValueError(f"unknown table style {style!r}; expected one of {STYLES}")
    specs, headers, align = specs or {}, headers or {}, dict(align or {})

    def cell(r: dict, c: str) -> str:
        spec = specs.get(c, ".4f")
        return spec(r.get(c)) if callable(spec) else fmt(r.get(c), spec)

    head = [str(headers.get(c, c)) for c in cols]
    body = [[cell(r, c) for c in cols] for r in rows]
    if style == "markdown":
        return "\n".join(["| " + " | ".join(head) + " |",
                          "|" + "|".join("---" for _ in cols) + "|",
                          *("| " + " | ".join(b) + " |" for b in body)])
    for c in cols:
        if c not in align:
            vals = [r.get(c) for r in rows if r.get(c) not in (None, "")]
            align[c] = ">" if vals and all(map(_is_number, vals)) else "<"
    widths = [max(len(s) for s in [h, *(b[i] for b in body)]) for i, h in enumerate(head)]

    def line(cells) -> str:
        return "  ".join(format(s, f"{align[c]}{w}")
                         for s, c, w in zip(cells, cols, widths)).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])
