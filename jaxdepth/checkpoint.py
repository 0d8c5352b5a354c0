"""Orbax CheckpointManager over the train state, the grain iterator and the config.

One step directory holds `state` (params, optimizer state, step, RNG; sharded arrays
written by every process), `data` (each process's grain iterator state) and `config`
(the resolved run config as JSON). A step that fails to restore (corrupt or partial) is
skipped with a warning and the previous good step is used.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxdepth import rundir
from jaxdepth.errors import UserError


def manager(run_dir: Path, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=True)
    return ocp.CheckpointManager(rundir.checkpoint_dir(run_dir), options=options,
                                 item_names=("state", "data", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_iter, config: dict) -> None:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(config)), force=True)


def save_params(run_dir, step: int, params, config: dict) -> None:
    """A checkpoint holding only `state.params` (numpy arrays) and the config: an imported
    model (`jaxdepth import`), which has no optimiser or data state. Every tool that reads
    params (`restore_params`: analysis, `train.init_from`, export) reads it.

    Written without a second copy of the weights in memory: Orbax's numpy handler would
    deep-copy every array before its background write, and zstd compression holds the
    compressed chunks until a data file fills (together 3x the weights at 1B parameters,
    `benchmarks/bench_import.py`); the save here waits for the write, so neither is needed."""
    import numpy as np

    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)))
    mngr = ocp.CheckpointManager(
        rundir.checkpoint_dir(run_dir), options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(
            use_compression=False, type_handler_registry=registry),
            "config": ocp.JsonCheckpointHandler()})
    try:
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave({"params": params}), config=ocp.args.JsonSave(config)),
            force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()


def restore_params(run_dir, abstract_params, step: int | None = None, what: str = "run"):
    """Only the params of a run's checkpoint at `step` (default: the newest), placed on the
    shardings of `abstract_params` (Orbax partial restore: the optimiser state, if any, is
    not read, so it may differ or be absent); the parameter shapes must match (a UserError
    naming the first that differs otherwise). `what` names the run in errors."""
    mngr = manager(run_dir, read_only=True)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{what} '{run_dir}' has no checkpoint")
        saved = ocp.PyTreeCheckpointHandler().metadata(
            mngr.directory / str(step) / "state").tree["params"]
        shapes = [{jax.tree_util.keystr(k): tuple(v.shape) for k, v in
                   jax.tree_util.tree_flatten_with_path(t)[0]} for t in (saved, abstract_params)]
        there, here = shapes
        diff = [f"{k}: {there.get(k)} there, {here.get(k)} here"
                for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)]
        if diff:
            raise UserError(f"{what} '{run_dir}' holds a model of another shape "
                            f"({len(diff)} params differ, e.g. {diff[0]})")
        item = {"params": abstract_params}
        out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True)))
    finally:
        mngr.close()
    return out.state["params"]


def abstract_like(state, shardings):
    """ShapeDtypeStructs carrying the target shardings (restore reshards onto them)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def restore(mngr: ocp.CheckpointManager, abstract_state, data_iter=None, step: int | None = None):
    """Restore `step` (default: the newest that restores cleanly). Returns
    (step, state, config dict), or None when there is no checkpoint."""
    steps = sorted(mngr.all_steps(), reverse=True)
    if step is not None:
        if step not in steps:
            raise UserError(f"no checkpoint at step {step}; saved steps: {sorted(steps) or 'none'}")
        steps = [step]
    for s in steps:
        items = dict(state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore())
        moved = _data_state_of_other_layout(mngr, s) if data_iter is not None else None
        if data_iter is not None and moved is None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            out = mngr.restore(s, args=ocp.args.Composite(**items))
            if moved is not None:
                data_iter.set_state(moved)
        except Exception as e:  # noqa: BLE001 - any unreadable step falls back to an older one
            if step is not None or s == steps[-1]:
                raise UserError(f"checkpoint at step {s} could not be restored: "
                                f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
            warnings.warn(f"checkpoint at step {s} is unreadable ({type(e).__name__}); "
                          "falling back to the previous step", stacklevel=2)
            continue
        return s, out.state, out.config
    return None


def _data_state_of_other_layout(mngr: ocp.CheckpointManager, step: int):
    """The iterator state saved by a different process count, or None when this process's
    own file exists (grain then restores it). jaxdepth's pipeline deals windows round-robin
    to processes in lockstep, so every process's state is the same batch index and global
    batch k holds the same windows for any process count: any saved file serves."""
    d = epath.Path(mngr.directory) / str(step) / "data"
    own = d / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
    files = sorted(d.glob("process_*-of-*.json"))
    if own.exists() or not files:
        return None
    return json.loads(files[0].read_text())


def restore_config(run_dir: Path, step: int | None = None) -> tuple[int, dict]:
    """Only the config (and its step) of a run's checkpoint, for tools that rebuild the model."""
    mngr = manager(run_dir, read_only=True)
    steps = mngr.all_steps()
    if not steps:
        raise UserError(f"'{run_dir}' has no checkpoint (expected {run_dir}/checkpoints/<step>)")
    s = max(steps) if step is None else step
    if s not in steps:
        raise UserError(f"no checkpoint at step {s} in '{run_dir}'; saved steps: {sorted(steps)}")
    out = mngr.restore(s, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return s, out.config
