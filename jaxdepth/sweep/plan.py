"""What a sweep will cost before it runs: exact parameter counts, FLOPs, estimated wall time.

Wall time is estimated from a throughput reference: `flops_per_token` and `tokens_per_s`
of a run actually trained on this machine, plus its fixed `overhead_s` (compile,
evaluation, checkpoints: wall time minus tokens / throughput). References are, in order:
(1) the finished runs already in the out dir (`source="finished runs"`); (2) else a short
calibration run of the smallest shape, 8 steps in a temporary directory
(`source="calibration"`). Each planned run is scaled from the reference nearest in
FLOPs per token: `overhead_s + tokens * flops_per_token / (ref_flops_per_token *
ref_tokens_per_s)`. Larger shapes usually run at a higher utilisation than a small
reference, so estimates far from every reference err long.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jaxdepth.config import ModelConfig, RunConfig, from_dict, to_dict
from jaxdepth.rundir import read_metrics, read_status
from jaxdepth.sweep import shapes
from jaxdepth.sweep.results import median_tokens_per_s
from jaxdepth.tables import table

CALIBRATION_STEPS = 8


@dataclass(frozen=True)
class Reference:
    flops_per_token: float
    tokens_per_s: float
    overhead_s: float
    run: str


@functools.lru_cache(maxsize=32)
def resolved_vocab(dcfg) -> int:
    """The model's vocab size for this data config (the tokenizer's, rounded up to 64)."""
    from jaxdepth.data.pipeline import load_corpus
    from jaxdepth.train.build import resolve_model

    return resolve_model(ModelConfig(), load_corpus(dcfg).tokenizer.vocab_size).vocab_size


def planned(cfg: RunConfig) -> dict:
    """Exact sizes of a run as configured: params (non-embedding), total_params, tokens
    (steps * batch * seq_len) and flops (`shapes.train_flops`)."""
    m, d = cfg.model, cfg.data
    vocab = m.vocab_size or resolved_vocab(d)
    n, total = shapes.exact_param_counts(dataclasses.replace(m, vocab_size=vocab))
    tokens = cfg.train.steps * d.batch_size * d.seq_len
    return dict(params=n, total_params=total, tokens=tokens,
                flops=shapes.train_flops(n, tokens, m.depth, d.seq_len, m.width))


def flops_per_token(cfg: RunConfig, n_params: int) -> float:
    return shapes.train_flops(n_params, 1, cfg.model.depth, cfg.data.seq_len, cfg.model.width)


def reference_from_run(cfg: RunConfig, run_dir: Path) -> Reference | None:
    """A throughput reference from a finished run directory, or None."""
    status = read_status(run_dir)
    tps = median_tokens_per_s(read_metrics(run_dir))
    if status.get("status") != "done" or not math.isfinite(tps) or not status.get("tokens"):
        return None
    n = status.get("non_embedding_params") or shapes.exact_nonembed(cfg.model)
    overhead = max(0.0, status.get("wall_time_s", 0.0) - status["tokens"] / tps)
    return Reference(flops_per_token(cfg, n), tps, overhead, run_dir.name)


def calibrate(cfg: RunConfig) -> Reference:
    """Train `cfg` for CALIBRATION_STEPS steps in a temporary directory and measure it."""
    from jaxdepth.train.loop import train

    steps = CALIBRATION_STEPS
    short = dict(steps=steps, warmup_steps=min(cfg.train.warmup_steps, steps), log_every=1,
                 eval_every=0, ckpt_every=steps, init_from="")
    data = to_dict(cfg)
    data["train"].update(short)
    ccfg = from_dict(RunConfig, data)
    with tempfile.TemporaryDirectory(prefix="jaxdepth-calibrate-") as tmp:
        train(ccfg, tmp, progress=False)
        ref = reference_from_run(ccfg, Path(tmp))
    return dataclasses.replace(ref, run=f"calibration of {cfg.name}")


def references(runs: list[RunConfig], out_dir: Path, calibrate_ok: bool = True):
    """(references, source) for `estimate_s`; see the module docstring."""
    refs = [r for cfg in runs if (r := reference_from_run(cfg, out_dir / "runs" / cfg.name))]
    if refs:
        return refs, "finished runs"
    if not calibrate_ok or not runs:
        return [], "none"
    smallest = min(runs, key=lambda c: flops_per_token(c, shapes.exact_nonembed(c.model)))
    return [calibrate(smallest)], "calibration"


def estimate_s(cfg: RunConfig, sizes: dict, refs: list[Reference]) -> float:
    if not refs:
        return float("nan")
    fpt = flops_per_token(cfg, sizes["params"])
    ref = min(refs, key=lambda r: abs(math.log(fpt / r.flops_per_token)))
    return ref.overhead_s + sizes["tokens"] * fpt / (ref.flops_per_token * ref.tokens_per_s)


def plan_rows(runs: list[RunConfig], out_dir: Path, calibrate_ok: bool = True):
    """(rows, calibration source): one row per run with its sizes, estimate and status."""
    refs, source = references(runs, out_dir, calibrate_ok)
    rows = []
    for cfg in runs:
        sizes = planned(cfg)
        st = read_status(out_dir / "runs" / cfg.name)
        rows.append(dict(run_id=cfg.name, scheme=cfg.model.scheme, depth=cfg.model.depth,
                         width=cfg.model.width, heads=cfg.model.heads, lr=cfg.train.lr,
                         seed=cfg.train.seed, steps=cfg.train.steps, **sizes,
                         est_s=estimate_s(cfg, sizes, refs),
                         status=st.get("status", "pending")))
    return rows, source


def _si(x: float) -> str:
    for unit, div in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(rows: list[dict], source: str) -> str:
    cols = ["run_id", "scheme", "depth", "width", "heads", "lr", "seed", "steps", "tokens",
            "params", "total_params", "flops", "est_s", "status"]
    specs = {c: str for c in cols} | {
        "tokens": _si, "params": _si, "total_params": _si, "flops": _si,
        "est_s": lambda x: "?" if math.isnan(x) else f"{x:.1f}", "lr": lambda x: f"{x:g}"}
    total = sum(r["est_s"] for r in rows if r["status"] not in ("done", "diverged"))
    n_left = sum(r["status"] not in ("done", "diverged") for r in rows)
    foot = (f"{len(rows)} runs, {n_left} to train; total {_si(sum(r['flops'] for r in rows))} "
            f"FLOPs; estimated {total:.0f} s for the runs left on one worker "
            f"(throughput reference: {source}). params = non-embedding (Kaplan's N); FLOPs = "
            "6 N T + attention 6 D S W T.")
    return table(rows, cols, specs, style="text") + "\n" + foot
