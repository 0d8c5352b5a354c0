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

Memory per device (`jaxdepth.memory.estimate`, for this machine's devices and the run's mesh
and remat policy): parameters, Adam state, activations (saved activations, attention scores
and logits) and the total; a total over `memory.FIT_FRACTION` of one device's memory is
marked `!`: `jaxdepth train`/`sweep` would refuse that run before compiling.
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
@functools.lru_cache(maxsize=8)
def resolved_vocab(dcfg) -> int:
    """The model's vocab size for this data config (the tokenizer's, rounded up to 64); one
    corpus load per data config, however many runs share it."""
    from jaxdepth.data.pipeline import load_data
    from jaxdepth.train.build import resolve_model

    return resolve_model(ModelConfig(), load_data(dcfg).tokenizer.vocab_size).vocab_size


def planned(cfg: RunConfig) -> dict:
    """Exact sizes of a run as configured: params (non-embedding), total_params, tokens
    (steps * batch * seq_len) and flops (`shapes.model_train_flops`)."""
    m, d = cfg.model, cfg.data
    vocab = m.vocab_size or resolved_vocab(d)
    n, total = shapes.exact_param_counts(dataclasses.replace(m, vocab_size=vocab))
    tokens = cfg.train.steps * d.batch_size * d.seq_len
    return dict(params=n, total_params=total, tokens=tokens,
                flops=shapes.model_train_flops(m, n, tokens, d.seq_len))


def flops_per_token(cfg: RunConfig, n_params: int) -> float:
    return shapes.model_train_flops(cfg.model, n_params, 1, cfg.data.seq_len)


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


def planned_memory(cfg: RunConfig, n_devices: int, capacity: int | None,
                   platform: str | None = None) -> dict:
    """Bytes per device (`memory.estimate`) as plan columns: mem_params, mem_optimizer,
    mem_activations (activations + attention scores + logits), mem_total, mem_fits and
    mem_capacity; NaN (printed `?`) where the run cannot be placed on this machine (a mesh
    that does not match its devices, a forced kernel it lacks)."""
    from jaxdepth import memory
    from jaxdepth.errors import UserError
    from jaxdepth.model import precision

    m = cfg.model
    try:
        mcfg = precision.resolve(dataclasses.replace(m, vocab_size=m.vocab_size
                                                     or resolved_vocab(cfg.data)),
                                 platform, "NVIDIA" if platform == "gpu" else "")
        est = memory.estimate(mcfg, cfg.train, cfg.data, cfg.parallel, n_devices, platform)
    except UserError:
        nan = float("nan")
        return dict(mem_params=nan, mem_optimizer=nan, mem_activations=nan, mem_total=nan,
                    mem_fits=True, mem_capacity=capacity)
    return dict(mem_params=est["params"], mem_optimizer=est["optimizer"],
                mem_activations=est["activations"] + est["attention_scores"] + est["logits"],
                mem_total=est["total"], mem_fits=memory.fits(est, capacity),
                mem_capacity=capacity)


def add_target_arguments(p) -> None:
    """`--devices`, `--device-memory`, `--platform`: plan memory for another machine (a pod)
    than this one."""
    g = p.add_argument_group("memory plan for another machine (default: this one's devices)")
    g.add_argument("--devices", type=int, metavar="N", help="with --plan: devices of the run")
    g.add_argument("--device-memory", type=float, metavar="GIB",
                   help="with --plan: memory of one device in GiB (e.g. 80 for an H100)")
    g.add_argument("--platform", choices=("cpu", "gpu", "tpu"),
                   help="with --plan: resolves model.dtype/attention auto (gpu: NVIDIA)")


def target_from_args(args) -> dict:
    """plan_rows' target from `add_target_arguments`' flags (a UserError on bad values)."""
    from jaxdepth.errors import UserError

    if args.devices is not None and args.devices < 1:
        raise UserError(f"--devices must be >= 1, got {args.devices}")
    if args.device_memory is not None and args.device_memory <= 0:
        raise UserError(f"--device-memory must be > 0 GiB, got {args.device_memory}")
    memory = None if args.device_memory is None else int(args.device_memory * 2**30)
    return dict(n_devices=args.devices, capacity=memory, platform=args.platform)


def plan_rows(runs: list[RunConfig], out_dir: Path, calibrate_ok: bool = True, *,
              n_devices: int | None = None, capacity: int | None = None,
              platform: str | None = None):
    """(rows, calibration source): one row per run with its sizes, memory per device,
    estimate and status. Memory is planned for `n_devices` devices of `capacity` bytes on
    `platform` (each defaults to this machine's)."""
    import jax

    from jaxdepth.memory import device_memory_bytes

    refs, source = references(runs, out_dir, calibrate_ok)
    if n_devices is None:
        n_devices = jax.device_count()
    if capacity is None and platform is None:
        capacity = device_memory_bytes()
    platform = platform or jax.devices()[0].platform
    rows = []
    for cfg in runs:
        sizes = planned(cfg)
        st = read_status(out_dir / "runs" / cfg.name)
        rows.append(dict(run_id=cfg.name, scheme=cfg.model.scheme, depth=cfg.model.depth,
                         width=cfg.model.width, heads=cfg.model.heads, lr=cfg.train.lr,
                         seed=cfg.train.seed, steps=cfg.train.steps,
                         **({"task": f"{cfg.data.task} {cfg.data.difficulty}"}
                            if cfg.data.task else {}), **sizes,
                         **planned_memory(cfg, n_devices, capacity, platform),
                         est_s=estimate_s(cfg, sizes, refs),
                         status=st.get("status", "pending")))
    return rows, source


def _si(x: float) -> str:
    for unit, div in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _mem(x) -> str:
    from jaxdepth.memory import human_bytes

    return "?" if x is None or math.isnan(x) else human_bytes(x)


MEM_HEADERS = {"mem_params": "params/dev", "mem_optimizer": "opt/dev",
               "mem_activations": "act/dev", "mem_total": "total/dev"}


def format_plan(rows: list[dict], source: str) -> str:
    mem = [c for c in MEM_HEADERS if all(c in r for r in rows)]
    task = ["task"] if any("task" in r for r in rows) else []  # a synthetic task, difficulty
    cols = ["run_id", "scheme", "depth", "width", "heads", "lr", "seed", "steps", *task,
            "tokens", "params", "total_params", "flops", *mem, "est_s", "status"]
    specs = {c: str for c in cols} | {
        "tokens": _si, "params": _si, "total_params": _si, "flops": _si,
        "est_s": lambda x: "?" if math.isnan(x) else f"{x:.1f}", "lr": lambda x: f"{x:g}"}
    specs |= {c: _mem for c in mem}
    shown = [r | {"mem_total": _mem(r["mem_total"]) + ("!" if not r.get("mem_fits", True)
                                                       else "")} if "mem_total" in r else r
             for r in rows]
    specs["mem_total"] = str
    total = sum(r["est_s"] for r in rows if r["status"] not in ("done", "diverged"))
    n_left = sum(r["status"] not in ("done", "diverged") for r in rows)
    foot = (f"{len(rows)} runs, {n_left} to train; total {_si(sum(r['flops'] for r in rows))} "
            f"FLOPs; estimated {'?' if math.isnan(total) else f'{total:.0f}'} s for the runs "
            f"left on one worker (throughput reference: {source}). params = non-embedding (Kaplan's N); FLOPs = "
            "6 N T + attention 6 D S W T (Mixture-of-Depths layers: their routed tokens only; "
            "DenseFormer: + its weighted sums).")
    if mem:
        foot += "\n" + memory_footnote(rows)
    return (table(shown, cols, specs, style="text", headers=MEM_HEADERS,
                  align={c: ">" for c in mem})
            + "\n" + foot)


def memory_footnote(rows: list[dict]) -> str:
    from jaxdepth.memory import FIT_FRACTION

    capacity = next((r["mem_capacity"] for r in rows if r.get("mem_capacity")), None)
    over = [r["run_id"] for r in rows if not r.get("mem_fits", True)]
    where = (f"of one device's {_mem(capacity)}" if capacity
             else "(this device's memory is unknown: nothing marked)")
    foot = ("/dev = estimated bytes per device (jaxdepth.memory; "
            "opt = Adam moments (+ the gradient accumulator with train.microbatches > 1); "
            "act = saved activations + attention scores + logits; total adds the "
            f"gradients); ! = total over {FIT_FRACTION:.0%} {where}")
    if over:
        foot += (f": {len(over)} run{'s' if len(over) != 1 else ''} would be refused "
                 f"({', '.join(over[:5])}{', ...' if len(over) > 5 else ''}); try model.remat, "
                 "train.microbatches, parallel.fsdp or a smaller data.seq_len / batch_size")
    return foot + "."
