"""Reading a table of runs (CSV, Parquet or JSONL) into the numeric columns a fit needs.

Columns are addressed by role (`loss`, `params`, `tokens`, `depth`, `width`, `flops`,
`status`, `run_id`) and mapped to the file's own names, so jaxdepth's sweep results and
published runs from other projects are read the same way. Every problem with the input
is a `UserError` that names the column, the rows (1-based data rows, header excluded) and,
when the table has them, the run ids.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxdepth.errors import UserError

# role -> default column name (jaxdepth's sweep results table)
DEFAULT_COLUMNS = {"loss": "final_loss", "params": "params", "tokens": "tokens",
                   "depth": "depth", "width": "width", "flops": "flops",
                   "status": "status", "run_id": "run_id"}
NUMERIC_ROLES = ("loss", "params", "tokens", "depth", "width", "flops")


@dataclass
class Runs:
    """Numeric columns by role (float64 arrays of equal length), run labels, and notes on
    what was dropped or derived (printed by the CLI, kept in fit.json)."""

    columns: dict[str, np.ndarray]
    labels: list[str]
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask) -> Runs:
        mask = np.asarray(mask, bool)
        return Runs({k: v[mask] for k, v in self.columns.items()},
                    [lab for lab, m in zip(self.labels, mask) if m], self.source,
                    list(self.notes))


def read_table(path: str | Path) -> dict[str, list]:
    """The file as {column: list of values}; format from the suffix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"results table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
        names = list(rows[0].keys()) if rows else []
        return {n: [r.get(n) for r in rows] for n in names}
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq
        return pq.read_table(path).to_pydict()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: line {i} is not JSON ({e.msg})") from None
        names = list(dict.fromkeys(k for r in rows for k in r))
        return {n: [r.get(n) for r in rows] for n in names}
    raise UserError(f"cannot read {path.name}: use a .csv, .tsv, .parquet or .jsonl table")


def _to_float(values) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v) if v not in (None, "") else np.nan
        except (TypeError, ValueError):
            pass
    return out


def _rows_text(idx, labels, values=None, limit=8) -> str:
    parts = []
    for i in idx[:limit]:
        s = f"row {i + 1}"
        if labels[i]:
            s += f" ({labels[i]})"
        if values is not None:
            s += f" = {values[i]}"
        parts.append(s)
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(parts) + more


def load_runs(path, need: list[str], names: dict[str, str] | None = None,
              tokens_from_flops: bool = False, drop_highest_loss: int = 0,
              keep_status: str = "done") -> Runs:
    """Read `path` and return the roles in `need` (plus `flops` when present) as validated
    float arrays. `tokens_from_flops`: tokens = flops / (6 params) (Chinchilla-style files,
    arXiv 2203.15556 C = 6 N T). Rows whose status is not `keep_status` are dropped first
    (when a status column exists); then the `drop_highest_loss` highest-loss runs."""
    names = {**DEFAULT_COLUMNS, **(names or {})}
    raw = read_table(path)
    present = list(raw)
    n_rows = len(next(iter(raw.values()))) if raw else 0
    labels = [str(v) if v not in (None, "") else "" for v in
              raw.get(names["run_id"], [""] * n_rows)]
    notes = []
    need = list(need)
    if tokens_from_flops and "tokens" in need:
        need = [r for r in need if r != "tokens"]
        need += [r for r in ("params", "flops") if r not in need]
    missing = [f"'{names[r]}' (--{r.replace('_', '-')})" for r in need if names[r] not in raw]
    if missing:
        raise UserError(f"{Path(path).name}: column {', '.join(missing)} not found; columns "
                        f"present: {', '.join(present) or '(none)'}")
    keep = np.ones(n_rows, bool)
    if names["status"] in raw:
        status = [str(s) for s in raw[names["status"]]]
        keep = np.array([s == keep_status for s in status])
        if (~keep).any():
            counts = {s: status.count(s) for s in sorted(set(status)) if s != keep_status}
            notes.append(f"dropped {int((~keep).sum())} runs with status != {keep_status} "
                         f"({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    roles = need + [r for r in ("flops",) if r not in need and names[r] in raw]
    cols = {}
    for role in roles:
        v = _to_float(raw[names[role]])
        bad = np.flatnonzero(keep & ~np.isfinite(v))
        if len(bad):
            raise UserError(f"column '{names[role]}' has missing, non-numeric or infinite "
                            f"values at {_rows_text(bad, labels, raw[names[role]])}")
        bad = np.flatnonzero(keep & (v <= 0))
        if len(bad):
            raise UserError(f"column '{names[role]}' must be positive; not at "
                            f"{_rows_text(bad, labels, v)}")
        cols[role] = v
    idx = np.flatnonzero(keep)
    cols = {k: v[idx] for k, v in cols.items()}
    labels = [labels[i] or f"row {i + 1}" for i in idx]
    if tokens_from_flops:
        cols["tokens"] = cols["flops"] / (6.0 * cols["params"])
        notes.append("tokens = flops / (6 params)")
    runs = Runs(cols, labels, str(path), notes)
    if drop_highest_loss:
        if drop_highest_loss >= len(runs):
            raise UserError(f"--drop-highest-loss {drop_highest_loss} would drop all "
                            f"{len(runs)} runs")
        order = np.argsort(runs.columns["loss"], kind="stable")
        mask = np.zeros(len(runs), bool)
        mask[order[: len(runs) - drop_highest_loss]] = True
        dropped = [runs.labels[i] for i in order[len(runs) - drop_highest_loss:]]
        runs = runs.subset(mask)
        runs.notes.append(f"dropped the {drop_highest_loss} highest-loss runs: "
                          f"{', '.join(dropped)}")
    if len(runs) == 0:
        raise UserError(f"{Path(path).name}: no runs left to fit")
    return runs
