"""The results table of a sweep: one row per run, from the run directories on disk.

Columns: the config (run_id, name, scheme, depth, width, heads, ...), `params`
(non-embedding, Kaplan's N), `total_params`, `tokens` (trained so far), `flops` (of those
tokens), `final_loss`, `final_val_loss`, `status`, `wall_time_s`, and the diagnostics
summary of the last logged step (`diagnostics_summary`). `jaxdepth fit` reads the columns
`params, tokens, final_loss, final_val_loss, depth, width, flops, status` by these names.
Written as `results.csv` and `results.parquet` in the sweep's out dir (atomically: each
worker rewrites the whole table from disk, the last one to finish writes the complete one).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from jaxdepth.config import RunConfig, from_dict, get_dotted, to_dict
from jaxdepth.diagnostics.grad_persistence import fit_grad_persistence, layer_grad_norms
from jaxdepth.diagnostics.signal import profile_from_record
from jaxdepth.rundir import read_json, read_metrics, read_status
from jaxdepth.sweep import shapes

# A layer whose attention and FFN updates are both below 5% of the residual stream's RMS
# (||F(x)|| / ||x||, the block's update ratios) barely changes the stream while training:
# a low-update layer, the "identity collapse" of deep Pre-LN layers (arXiv 2502.05795). Not
# the removal-cost notion `removable_layers` of `jaxdepth analyze`.
LOW_UPDATE_RATIO = 0.05

CONFIG_COLUMNS = {  # column -> dotted config key
    "scheme": "model.scheme", "depth": "model.depth", "width": "model.width",
    "heads": "model.heads", "ffn": "model.ffn", "norm": "model.norm", "lr": "train.lr",
    "seed": "train.seed", "steps": "train.steps", "warmup_steps": "train.warmup_steps",
    "seq_len": "data.seq_len", "batch_size": "data.batch_size",
    "layer_lr_decay": "train.layer_lr_decay", "train_last_layers": "train.train_last_layers",
    "init_from": "train.init_from", "parameterization": "model.parameterization",
    "task": "data.task", "difficulty": "data.difficulty", "loss_on": "data.loss_on",
    "task_options": "data.task_options", "dwa": "model.dwa", "mod_capacity": "model.mod_capacity",
    "early_exit_scale": "train.early_exit_scale", "layer_dropout": "train.layer_dropout",
}


def variant(cfg) -> str:
    """The run's architecture in one label: its scheme and the connections beyond the
    residual stream it adds (`+dwa`, `+dwa2x3` for DenseFormer 2x3, `+mod0.125` for a
    Mixture-of-Depths capacity, `+exit` for LayerSkip's early-exit loss or layer dropout)."""
    m, t = cfg.model, cfg.train
    label = m.scheme
    if m.dwa:
        dense = (m.dwa_dilation, m.dwa_period) != (1, 1)
        label += f"+dwa{m.dwa_dilation}x{m.dwa_period}" if dense else "+dwa"
    if m.mod_capacity < 1:
        label += f"+mod{m.mod_capacity:g}"
    if t.early_exit_scale > 0 or t.layer_dropout > 0:
        label += "+exit"
    return label


def diagnostics_summary(record: dict | None, scheme: str = "", width: int = 0) -> dict:
    """From one metrics.jsonl record (per-layer stats and gradient norms):
    `residual_rms_growth` = last-layer rms_out / first-layer rms_out; `tau` = gradient
    persistence length of the whole-layer gradient norms sqrt(attn^2 + ffn^2) (arXiv
    2601.20994; `jaxdepth.diagnostics.grad_persistence`), with its R^2 and status;
    `low_update_layers` = layers whose attention and FFN update ratios are both below
    LOW_UPDATE_RATIO."""
    nan = float("nan")
    out = dict(residual_rms_growth=nan, tau=nan, tau_r2=nan, tau_status="",
               low_update_layers=None)
    if not record or "rms_out" not in record.get("layers", {}):
        return out
    layers = record["layers"]
    out["residual_rms_growth"] = profile_from_record(record, scheme, width).summary()["rms_ratio"]
    if "attn_grad_norm" in layers:
        fit = fit_grad_persistence(layer_grad_norms(record)["layer"])
        out.update(tau=fit.tau, tau_r2=fit.r2, tau_status=fit.status)
    attn = np.asarray(layers["attn_update_ratio"], np.float64)
    ffn = np.asarray(layers["ffn_update_ratio"], np.float64)
    out["low_update_layers"] = int(np.sum((attn < LOW_UPDATE_RATIO) & (ffn < LOW_UPDATE_RATIO)))
    return out


def median_tokens_per_s(records: list[dict]) -> float:
    """Throughput of the logged intervals after the first (which holds the compile)."""
    rates = [r["tokens_per_s"] for r in records[1:] if r.get("tokens_per_s")]
    return float(np.median(rates)) if rates else float("nan")


def run_row(cfg_dict: dict, run_dir: Path, extra_keys=()) -> dict:
    """One row: config columns, sizes, losses, status, timing, diagnostics (a run that has
    not started: status "pending", total_params and losses empty)."""
    cfg = from_dict(RunConfig, cfg_dict)
    m, d = cfg.model, cfg.data
    status = read_status(run_dir)
    records = [r for r in read_metrics(run_dir) if r.get("step", 0) <= status.get("step", 0)]
    row = {"run_id": run_dir.name, "name": cfg.name}
    full = to_dict(cfg)  # keys a config written by an older jaxdepth lacks: their defaults
    row.update({col: get_dotted(full, key) for col, key in CONFIG_COLUMNS.items()})
    row["variant"] = variant(cfg)
    row.update({key: get_dotted(cfg_dict, key) for key in extra_keys  # other axes, dotted
                if key not in CONFIG_COLUMNS.values()})
    n = status.get("non_embedding_params") or shapes.exact_nonembed(m)
    tokens = status.get("tokens", status.get("step", 0) * d.batch_size * d.seq_len)
    row.update(
        params=n, total_params=status.get("params"),
        tokens=tokens, flops=shapes.model_train_flops(m, n, tokens, d.seq_len),
        final_loss=status.get("final_loss"), final_val_loss=status.get("final_val_loss"),
        status=status.get("status", "pending"), step=status.get("step", 0),
        wall_time_s=status.get("wall_time_s"), tokens_per_s=median_tokens_per_s(records))
    if d.task:  # exact match on the held-out examples, and the step it was reached at
        row.update(final_val_accuracy=status.get("final_val_accuracy"),
                   final_val_exact_match=status.get("final_val_exact_match"),
                   solved_step=status.get("solved_step"))
    row.update(diagnostics_summary(records[-1] if records else None, m.scheme, m.width))
    return row


def results_table(out_dir: str | Path, write: bool = True) -> list[dict]:
    """Rows of the sweep in `out_dir`: the runs listed in its `sweep.json` (in spec order,
    pending ones included), else every `runs/<id>/config.json`. Writes results.csv and
    results.parquet unless `write=False`."""
    out_dir = Path(out_dir)
    sweep = read_json(out_dir / "sweep.json")
    if sweep is not None:
        configs, axes = sweep["runs"], sweep.get("axes", [])
    else:
        configs, axes = {}, []
        for p in sorted((out_dir / "runs").glob("*/config.json")):
            configs[p.parent.name] = read_json(p)
    rows = [run_row(c, out_dir / "runs" / rid, axes) for rid, c in configs.items()]
    if write and rows:
        write_table(rows, out_dir / "results")
    return rows


def _csv_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # nan, inf: read back by float()
    return "" if v is None else v


def write_table(rows: list[dict], stem: Path) -> tuple[Path, Path]:
    """`<stem>.csv` and `<stem>.parquet`, each written to a temp file and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(dict.fromkeys(k for r in rows for k in r))
    tag = f".tmp{os.getpid()}"
    csv_path, pq_path = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    with open(csv_path.with_suffix(tag), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows({k: _csv_value(r.get(k)) for k in cols} for r in rows)
    os.replace(csv_path.with_suffix(tag), csv_path)
    table = pa.Table.from_pylist([{k: r.get(k) for k in cols} for r in rows])
    pq.write_table(table, pq_path.with_suffix(tag))
    os.replace(pq_path.with_suffix(tag), pq_path)
    return csv_path, pq_path
