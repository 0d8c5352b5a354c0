"""The on-disk run contract: what a run directory holds, the one reader/writer of each file,
and the one rule for "the same run", over `etils.epath` so that a run directory may be a
local path or a `gs://` (or `s3://`, ...) URL.

A run directory (written by `jaxdepth.train.loop.train`) holds `config.json` (the resolved
config), `status.json` (`running`, `done`, `diverged`, `interrupted` or `failed`, with the
final losses), `metrics.jsonl` (one JSON record per logged step), `tokenizer.json`, `tb/`
(TensorBoard, local run directories only), `checkpoints/<step>/` (Orbax, which writes
`gs://` itself), `claim.json` while a sweep worker trains it (`jaxdepth.sweep.claim`) and,
once analysed, `analysis/analysis.json`.

A run may be killed at any instant, so every reader tolerates a half-written file and every
JSON writer replaces its file whole: locally by writing a temporary file and renaming it
(atomic on POSIX), on an object store by writing the object in one request (an object
appears whole or not at all). Object stores cannot append, so a metrics record there
rewrites the (small) metrics object.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from etils import epath

from jaxdepth.errors import UserError

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
ANALYSIS = "analysis/analysis.json"
TOKENIZER = "tokenizer.json"
CLAIM = "claim.json"
CHECKPOINTS = "checkpoints"


def path(p) -> epath.Path:
    """A run-directory path: a URL (`gs://bucket/run`) as it is, a local path absolute."""
    p = epath.Path(p)
    return p if is_remote(p) else epath.Path(Path(os.fspath(p)).expanduser().resolve())


def is_remote(p) -> bool:
    """True for an object-store URL (gs://, s3://, ...), False for a local (or mounted) path."""
    return "://" in os.fspath(p)


def read_text(p, default: str | None = None) -> str | None:
    try:
        return epath.Path(p).read_text()
    except (OSError, ValueError):
        return default


def read_json(p, default=None):
    """The JSON in `p`, or `default` when it is missing, unreadable (e.g. a directory) or
    torn (killed mid-write)."""
    text = read_text(p)
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def write_text(p, text: str) -> None:
    """Replace `p` whole (see the module docstring): readers never see half a file."""
    p = epath.Path(p)
    if is_remote(p):
        p.write_text(text)
        return
    tmp = Path(os.fspath(p))
    tmp = tmp.with_name(f"{tmp.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(os.fspath(p))


def write_json(p, obj, indent: int | None = 2) -> None:
    write_text(p, json.dumps(obj, indent=indent))


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


# ---------------------------------------------------------------- metrics


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


def read_metrics(run_dir) -> list[dict]:
    """Every complete record of `run_dir/metrics.jsonl` in order ([] if there is none)."""
    return parse_metrics(read_text(epath.Path(run_dir) / METRICS, ""))


def append_metrics(run_dir, rec: dict) -> None:
    p = epath.Path(run_dir) / METRICS
    line = json.dumps(rec) + "\n"
    if is_remote(p):  # objects cannot be appended to: rewrite the object
        p.write_text(read_text(p, "") + line)
        return
    with open(os.fspath(p), "a") as f:
        f.write(line)


def truncate_metrics(run_dir, step: int) -> None:
    """Drop the records logged after `step` (a resumed run logs them anew) and torn lines."""
    p = epath.Path(run_dir) / METRICS
    if p.exists():
        keep = [r for r in parse_metrics(p.read_text()) if r["step"] <= step]
        write_text(p, "".join(json.dumps(r) + "\n" for r in keep))


# ---------------------------------------------------------------- config and status


def read_config(run_dir) -> dict | None:
    return read_json(epath.Path(run_dir) / CONFIG)


def read_status(run_dir) -> dict:
    return read_json(epath.Path(run_dir) / STATUS, {})


def is_finished(status: dict, steps: int) -> bool:
    """Nothing left to train: diverged (its loss is data), done with all `steps`, or done
    early because it solved its task (`solved_step`, `train.stop_at_accuracy`)."""
    st = status.get("status")
    return st == "diverged" or (st == "done" and (status.get("step", 0) >= steps
                                                  or "solved_step" in status))


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_diff(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


# How a run is laid out on the machine, which changes the arithmetic's order or what is
# recorded, not what is computed: the number of micro-batches (a smaller slice needs more),
# the attention kernel (flash or not), the per-layer statistics (logged or not) and the remat
# policy (what the backward pass saves or recomputes); with the mesh (`parallel`), they may
# change when a run resumes, and run ids (`jaxdepth.sweep.spec.run_id`) ignore them (remat
# aside, see there).
LAYOUT_KEYS = ("train.microbatches", "model.attention", "train.layer_stats", "model.remat")


def run_changes(old: dict, new: dict) -> list[str]:
    """The dotted keys in which config `new` makes a different run from `old`. The one rule
    of "the same run": `train.steps` may change (a finished run is extended), and so may
    `parallel` and the `LAYOUT_KEYS`. Keys an older jaxdepth did
    not write count as their defaults. The train loop records `model.dtype` resolved
    (`auto` -> float32 or bfloat16), so a run cannot change precision on resuming."""
    from jaxdepth.config import RunConfig, from_dict, to_dict

    def complete(d):
        try:
            return to_dict(from_dict(RunConfig, d))
        except UserError:  # a key this version does not know: compare as written
            return d

    return [k for k in config_diff(complete(old), complete(new))
            if k not in (*LAYOUT_KEYS, "train.steps") and k != "parallel"
            and not k.startswith("parallel.")]


def check_same_run(run_dir, cfg_dict: dict) -> None:
    """A run directory belongs to one configuration (`run_changes`); UserError otherwise."""
    old = read_config(run_dir)
    diff = [] if old is None else run_changes(old, cfg_dict)
    if diff:
        raise UserError(f"run dir '{run_dir}' holds a run with a different config (differs in "
                        f"{', '.join(diff)}); use another --run-dir or the same config")


# ---------------------------------------------------------------- checkpoints


def checkpoint_dir(run_dir) -> epath.Path:
    return path(run_dir) / CHECKPOINTS


def checkpoint_steps(run_dir) -> list[int]:
    """The steps with a checkpoint directory, ascending (complete or not: Orbax decides)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def has_checkpoint(run_dir) -> bool:
    return bool(checkpoint_steps(run_dir))


# ---------------------------------------------------------------- a run, read back


def open_run(run_dir, need_records: bool = True):
    """(RunConfig, status dict, metrics records) of a trained run directory; a UserError
    naming what is missing when it is not one."""
    from jaxdepth.config import RunConfig, from_dict

    cfg_dict, status = read_config(run_dir), read_status(run_dir)
    records = read_metrics(run_dir)
    if cfg_dict is None or "vocab_size" not in status or (need_records and not records):
        raise UserError(f"'{run_dir}' is not a run directory with logged steps ({CONFIG}, "
                        f"{STATUS}, {METRICS} from `jaxdepth train`)")
    return from_dict(RunConfig, cfg_dict), status, records
