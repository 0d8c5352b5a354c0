"""The on-disk run contract: what a run directory holds and the one reader/writer of each file.

A run directory (written by `jaxdepth.train.loop.train`) holds `config.json` (the resolved
config), `status.json` (`running`, `done`, `diverged`, `interrupted` or `failed`, with the
final losses), `metrics.jsonl` (one JSON record per logged step), `tokenizer.json`, `tb/`
(TensorBoard), `checkpoints/<step>/` (Orbax) and, once analysed, `analysis/analysis.json`.
A run may be killed at any instant, so every reader here tolerates a half-written file and
every JSON writer replaces its file atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
ANALYSIS = "analysis/analysis.json"


def read_json(path: str | Path, default=None):
    """The JSON in `path`, or `default` when it is missing, unreadable (e.g. a directory)
    or torn (killed mid-write)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    """Write `obj` as JSON via a temporary file and a rename, so readers never see half."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    tmp.replace(path)


def jsonable(x):
    """`x` as strict JSON values: numpy arrays and scalars to lists and numbers, tuples to
    lists, keys to strings, and NaN / inf to null (JSON has neither; `write_json` alone
    keeps them as Python's NaN / Infinity, which `read_json` reads back)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def parse_metrics(text: str) -> list[dict]:
    """The records of a metrics.jsonl text, skipping any line a kill cut short."""
    out = []
    for ln in text.splitlines():
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete record of `run_dir/metrics.jsonl` in order ([] if there is none)."""
    path = Path(run_dir) / METRICS
    return parse_metrics(path.read_text()) if path.exists() else []


def append_metrics(run_dir: str | Path, rec: dict) -> None:
    with (Path(run_dir) / METRICS).open("a") as f:
        f.write(json.dumps(rec) + "\n")


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Drop the records logged after `step` (a resumed run logs them anew) and torn lines."""
    path = Path(run_dir) / METRICS
    if path.exists():
        keep = [r for r in parse_metrics(path.read_text()) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def read_config(run_dir: str | Path) -> dict | None:
    return read_json(Path(run_dir) / CONFIG)


def read_status(run_dir: str | Path) -> dict:
    return read_json(Path(run_dir) / STATUS, {})
