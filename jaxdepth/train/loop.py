"""The training driver: build, restore, step, log, evaluate, checkpoint, stop on divergence.

Side effects live here: it writes the run directory that `jaxdepth.rundir` describes.
Re-running the same command on the same run directory resumes from the newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxdepth import checkpoint, memory, parallel, rundir
from jaxdepth.config import RunConfig, TrainConfig, check_paths, to_dict
from jaxdepth.data.pipeline import load_data
from jaxdepth.data.shards import bits_per_byte
from jaxdepth.errors import UserError
from jaxdepth.model import count_params, precision
from jaxdepth.rundir import (
    CONFIG,
    STATUS,
    TOKENIZER,
    append_metrics,
    check_same_run,
    read_status,
    truncate_metrics,
    write_json,
)
from jaxdepth.train import preempt
from jaxdepth.train.build import build, resolve_model

# TrainConfig fields `build` does not read: neutral values in its cache key, so that runs
# differing only in seed, logging or checkpointing share one compiled step (sweeps).
_NOT_BUILT = ("seed", "log_every", "eval_every", "eval_batches", "ckpt_every",
              "keep_checkpoints", "diverge_loss", "init_from", "stop_at_accuracy")


# the last logged values a finished run records in status.json as final_<key>: always, and
# (a synthetic task's) when logged
LAST_KEYS = ("loss", "val_loss", "val_bpb")
TASK_KEYS = ("val_accuracy", "val_exact_match")


def build_key(t_cfg: TrainConfig) -> TrainConfig:
    return dataclasses.replace(t_cfg, **{k: getattr(TrainConfig(), k) for k in _NOT_BUILT})


def check_microbatches(batch_size: int, k: int, sharding) -> None:
    """Each micro-batch must split evenly over the batch shards (else every micro-batch is
    resharded in the step): a UserError before compiling."""
    shards = parallel.batch_shards(sharding)
    if k > 1 and batch_size % (k * shards):
        raise UserError(f"data.batch_size ({batch_size}) must be divisible by train.microbatches "
                        f"({k}) x the {shards} batch shards of the mesh = {k * shards}")


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(x).tolist(), jax.device_get(tree))


def train(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True,
          stop_at: int | None = None, mesh=None) -> dict:
    """Train (or resume) the run in `run_dir`; returns the final status dict.
    `stop_at`: stop after the checkpoint at that step (as if killed), for tests.

    SIGTERM (preemption) or Ctrl-C stops the run at a step boundary, the same step on every
    process (`jaxdepth.train.preempt`): every process saves a checkpoint there, status
    `interrupted` is written, and KeyboardInterrupt is raised (the CLI exits 130, a sweep
    stops). A second Ctrl-C aborts at once, without a further checkpoint."""
    check_paths(cfg)  # a missing data source or init_from run: an error, and no run dir
    # `auto` dtype and kernel resolved for this backend before anything is recorded: a run
    # started in float32 on a CPU is not resumed in bfloat16 on a GPU under the same config
    cfg = dataclasses.replace(cfg, model=precision.resolve(cfg.model))
    run_dir = rundir.path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = to_dict(cfg)
    if read_status(run_dir).get("status") == "imported":
        raise UserError(f"'{run_dir}' holds an imported model (params only, no optimiser "
                        "state); fine-tune it into a new run directory with "
                        f"train.init_from={run_dir}")
    check_same_run(run_dir, cfg_dict)
    t_cfg, d_cfg = cfg.train, cfg.data
    status = read_status(run_dir)
    if rundir.is_finished(status, t_cfg.steps):  # a diverged run is a result
        return status
    pid, pcount = jax.process_index(), jax.process_count()
    is_writer = pid == 0

    data = load_data(d_cfg, progress=None if progress and is_writer else False)
    tok = data.tokenizer
    mcfg = resolve_model(cfg.model, tok.vocab_size)
    memory.check_run(cfg, mcfg, n_devices=mesh.size if mesh is not None else None)
    b = build(mcfg, build_key(t_cfg), cfg.parallel, d_cfg.seq_len, tok.pad_id, mesh)
    check_microbatches(d_cfg.batch_size, t_cfg.microbatches, b.batch_sharding)
    data_iter = data.train_iterator(pid, pcount)
    val = [parallel.global_batch(v, b.batch_sharding)
           for v in data.val_batches(t_cfg.eval_batches, pid, pcount)]
    if is_writer:  # after the mesh and batch checks, so a rejected config leaves no trace
        write_json(run_dir / CONFIG, cfg_dict)
        _save_tokenizer(tok, run_dir / TOKENIZER)

    mngr = checkpoint.manager(run_dir, t_cfg.keep_checkpoints)
    state = b.init_state(jax.random.key(t_cfg.seed))
    restored = checkpoint.restore(mngr, checkpoint.abstract_like(state, b.state_shardings),
                                  data_iter)
    start = 0
    if restored is not None:
        start, state, _ = restored
        for bad in [s for s in mngr.all_steps() if s > start]:  # unreadable, skipped by
            mngr.delete(bad)  # restore: training past them must save those steps anew
    elif t_cfg.init_from:  # a new run starting from another run's params (fine-tuning)
        state = state.replace(params=checkpoint.restore_params(
            t_cfg.init_from, checkpoint.abstract_like(state.params, b.state_shardings.params),
            what="train.init_from"))
    if is_writer:
        truncate_metrics(run_dir, start)
    bpt_train, bpt_val = data.bytes_per_token("train"), data.bytes_per_token("val")
    n_params = count_params(state.params)
    n_nonembed = count_params(state.params, non_embedding=True)
    tokens_per_step = d_cfg.batch_size * d_cfg.seq_len
    diverge_at = t_cfg.diverge_loss or 3.0 * math.log(mcfg.vocab_size)
    base = dict(params=n_params, non_embedding_params=n_nonembed, vocab_size=mcfg.vocab_size,
                tokens_per_step=tokens_per_step)
    status = {**status, **base, "status": "running", "step": start}
    if is_writer:
        write_json(run_dir / STATUS, status)
    tb = None
    if is_writer and not rundir.is_remote(run_dir):  # metrics.jsonl is the record anywhere
        from tensorboardX import SummaryWriter
        tb = SummaryWriter(str(run_dir / "tb"))

    def evaluate(params) -> dict:
        """val_loss (the mean over the held-out batches) and, for a task, `val_accuracy`
        (answer tokens right) and `val_exact_match` (examples with every answer right)."""
        sums = [jax.device_get(b.eval_step(params, v)) for v in val]
        out = {"val_loss": float(np.mean([s["loss"] for s in sums]))}
        if "answers" in sums[0]:
            total = {k: sum(float(s[k]) for s in sums) for k in sums[0] if k != "loss"}
            out["val_accuracy"] = total["correct"] / max(total["answers"], 1.0)
            out["val_exact_match"] = total["exact"] / max(total["examples"], 1.0)
        return out

    bar = tqdm(total=t_cfg.steps, initial=start, disable=not (progress and is_writer),
               desc=cfg.name, unit="step", dynamic_ncols=True)
    t0, t_last, step_last = time.time(), time.time(), start
    last = {}
    step = saved = start  # `saved`: the newest checkpoint's step
    stop = preempt.StopRequest()
    try:
        with stop:  # from here a signal only asks to stop at a step boundary
            solved = False
            while step < t_cfg.steps:
                if stop.agreed(step):  # at every boundary, on every process alike
                    who = f" (process {pid} of {pcount})" if pcount > 1 else ""
                    tqdm.write(f"stopping at step {step} on {stop.stopped_by}{who}",
                               file=sys.stderr)
                    if step != saved:  # every process saves this same step (collectively)
                        checkpoint.save(mngr, step, state, data_iter, cfg_dict)
                        saved = step
                    mngr.wait_until_finished()
                    status.update(status="interrupted", step=step)
                    break
                batch = parallel.global_batch(next(data_iter), b.batch_sharding)
                state, m = b.train_step(state, batch)
                step += 1
                final = step == t_cfg.steps
                if step % t_cfg.log_every == 0 or final:
                    rec = {"step": step, **_host(m)}
                    now = time.time()
                    rec["tokens_per_s"] = (step - step_last) * tokens_per_step / (now - t_last)
                    t_last, step_last = now, step
                    if bpt_train is not None:
                        rec["bpb"] = bits_per_byte(rec["loss"], bpt_train)
                    if (t_cfg.eval_every and step % t_cfg.eval_every == 0) or final:
                        rec.update(evaluate(state.params))
                        if bpt_val is not None:
                            rec["val_bpb"] = bits_per_byte(rec["val_loss"], bpt_val)
                    diverged = not math.isfinite(rec["loss"]) or rec["loss"] > diverge_at
                    last.update({k: rec[k] for k in LAST_KEYS + TASK_KEYS if k in rec})
                    if is_writer:
                        append_metrics(run_dir, rec)
                        _tensorboard(tb, rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}",
                                    tok_s=f"{rec['tokens_per_s']:.0f}")
                    if diverged:
                        status.update(status="diverged", step=step, final_loss=rec["loss"],
                                      final_val_loss=last.get("val_loss"),
                                      reason=f"loss {rec['loss']:.4g} is not finite or above "
                                             f"{diverge_at:.3g}")
                        break
                    if (t_cfg.stop_at_accuracy > 0
                            and rec.get("val_exact_match", -1.0) >= t_cfg.stop_at_accuracy):
                        solved = final = True  # the task is solved: done at this step
                        status["solved_step"] = step
                bar.update(1)
                if step % t_cfg.ckpt_every == 0 or final:
                    checkpoint.save(mngr, step, state, data_iter, cfg_dict)
                    saved = step
                if solved:
                    break
                if stop_at is not None and step >= stop_at:
                    mngr.wait_until_finished()
                    status.update(status="interrupted", step=step)
                    break
            if solved or (step >= t_cfg.steps and status["status"] == "running"):
                status.update(status="done", step=step,
                              **{f"final_{k}": last.get(k) for k in LAST_KEYS},
                              **{f"final_{k}": last[k] for k in TASK_KEYS if k in last})
    except KeyboardInterrupt:  # aborted (a second Ctrl-C): no checkpoint mid-step
        status.update(status="interrupted", step=saved)
        raise
    finally:
        bar.close()
        mngr.wait_until_finished()
        mngr.close()
        status.update(tokens=status["step"] * tokens_per_step,
                      wall_time_s=status.get("wall_time_s", 0.0) + time.time() - t0)
        if is_writer:
            write_json(run_dir / STATUS, status)
            if tb is not None:
                tb.close()
    if stop.stopped_by:  # after the status is written: the caller stops too
        raise KeyboardInterrupt(f"{stop.stopped_by}: stopped at step {step}")
    return status


def _save_tokenizer(tok, dest) -> None:
    """The run's tokenizer.json, through a local temporary file for an object store."""
    if not rundir.is_remote(dest):
        tok.save(Path(dest))
        return
    with tempfile.TemporaryDirectory() as d:
        tok.save(Path(d) / TOKENIZER)
        if (Path(d) / TOKENIZER).exists():  # the byte tokenizer saves nothing
            dest.write_bytes((Path(d) / TOKENIZER).read_bytes())


def _tensorboard(tb, rec: dict) -> None:
    if tb is None:
        return
    step = rec["step"]
    for k, v in rec.items():
        if k == "layers":
            for name, vals in v.items():
                for i, x in enumerate(vals):
                    tb.add_scalar(f"layers/{name}/{i:03d}", x, step)
        elif k != "step":
            tb.add_scalar(k, v, step)

