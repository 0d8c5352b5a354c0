"""Markdown pieces of the experiment reports (pure text, no files)."""

from __future__ import annotations

import math

from jaxdepth.tables import fmt


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than two values; NaN mean for none)."""
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return mean, sd


def pivot(rows: list[dict], row_key: str, col_key: str, value: str) -> tuple[list[dict], list[str]]:
    """Rows keyed by `row_key`, one column per distinct `col_key` value holding `value`.
    Replicates in a cell (seeds) show as `mean ± sd (n)` over the finished runs; a run
    that did not finish (diverged, failed) is named in its cell instead of averaged."""
    cols = sorted({r[col_key] for r in rows})
    cells: dict = {}
    for r in rows:
        cells.setdefault(r[row_key], {}).setdefault(r[col_key], []).append(r)
    out = []
    for k in sorted(cells, key=str):
        row = {row_key: k}
        for c, rs in cells[k].items():
            row[f"{col_key}={c}"] = cell_text(rs, value)
        out.append(row)
    return out, [row_key] + [f"{col_key}={c}" for c in cols]


def cell_text(rows: list[dict], value: str) -> str:
    """One table cell over replicate runs: `mean ± sd (n)` of the finished ones (just the
    value for one run), then `value (status)` for each run that did not finish."""
    done = [r[value] for r in rows if r.get("status") in ("done", None)
            and isinstance(r.get(value), (int, float)) and math.isfinite(r[value])]
    parts = []
    if len(done) == 1:
        parts.append(fmt(float(done[0])))
    elif done:
        mean, sd = mean_sd(done)
        parts.append(f"{fmt(mean)} ± {fmt(sd)} ({len(done)})")
    parts += [f"{fmt(r.get(value))} ({r.get('status')})" for r in rows
              if r.get("status") not in ("done", None)]
    return "; ".join(parts) if parts else "-"
