"""Markdown pieces of the experiment reports (pure text, no files)."""

from __future__ import annotations

import math


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


def table(rows: list[dict], cols: list[str], specs: dict | None = None) -> str:
    """A markdown table of `rows` over `cols`; `specs`: column -> format spec."""
    specs = specs or {}
    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(c), specs.get(c, ".4f")) for c in cols) + " |"
            for r in rows]
    return "\n".join([head, sep, *body])


def pivot(rows: list[dict], row_key: str, col_key: str, value: str) -> tuple[list[dict], list[str]]:
    """Rows keyed by `row_key`, one column per distinct `col_key` value holding `value`
    (a diverged/failed run shows its status next to its loss)."""
    cols = sorted({r[col_key] for r in rows})
    out = {}
    for r in rows:
        cell = r.get(value)
        if r.get("status") not in ("done", None):
            cell = f"{fmt(cell)} ({r['status']})"
        out.setdefault(r[row_key], {row_key: r[row_key]})[f"{col_key}={r[col_key]}"] = cell
    return [out[k] for k in sorted(out, key=str)], [row_key] + [f"{col_key}={c}" for c in cols]
