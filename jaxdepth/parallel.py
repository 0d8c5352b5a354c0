"""Device mesh, logical axis rules, shardings and multi-host initialisation.

Parameters carry logical axis names (embed, heads, kv, mlp, vocab, layers); the rules in
`ParallelConfig.rules` map them to mesh axes `data`, `fsdp`, `tensor`. The defaults give
batch over (data, fsdp), every weight matrix and its optimizer moments sharded over `fsdp`
through its `embed` axis (ZeRO-3 style: no device holds a full copy), attention heads, FFN
hidden and vocabulary over `tensor`, and the scanned `layers` axis unsharded. On one device
every sharding is trivial, but the same code path runs, so a pod changes config, not code.

Multi-host: `maybe_initialize_distributed` calls `jax.distributed.initialize` from CLI flags
or `JAXDEPTH_*` environment variables; it must run before anything touches a JAX backend.
"""

from __future__ import annotations

import math
import os

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdepth.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")


# ---------------------------------------------------------------- mesh


def mesh_shape(pcfg, n_devices: int) -> tuple[int, int, int]:
    """Axis sizes with at most one -1 filled from the device count."""
    sizes = [pcfg.data, pcfg.fsdp, pcfg.tensor]
    named = ", ".join(f"parallel.{a}={s}" for a, s in zip(MESH_AXES, sizes))
    have = f"{n_devices} device{'s' if n_devices != 1 else ''}"
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UserError(f"mesh sizes {named}: each must be >= 1, and at most one may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise UserError(f"mesh sizes {named} do not divide the run's {have}")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise UserError(
            f"mesh sizes {named} multiply to {math.prod(sizes)}, but the run has {have}; "
            "make the product equal the device count (one size may be -1)")
    return tuple(sizes)


def make_mesh(pcfg, devices=None) -> Mesh:
    """Mesh over `devices` (default: every device of every process), laid out for the
    interconnect where JAX knows it (TPU torus), else in device order, which keeps each
    process's devices together so a process's batch rows are contiguous."""
    check_rules(pcfg)
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(pcfg, len(devices))
    try:
        from jax.experimental import mesh_utils

        arr = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):  # unusual topologies
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES)


# ---------------------------------------------------------------- rules


def _default_rules() -> tuple:
    from jaxdepth.config import ParallelConfig

    return ParallelConfig().rules


def _as_axes(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def rules(pcfg) -> tuple:
    """The configured rules; logical axes they do not name keep their default rule, so a
    YAML `rules: {mlp: fsdp}` changes one mapping and leaves the others alone."""
    given = tuple((k, _as_axes(v)) for k, v in pcfg.rules)
    named = {k for k, _ in given}
    return given + tuple((k, v) for k, v in _default_rules() if k not in named)


def check_rules(pcfg) -> None:
    """Every rule maps a logical axis to None, a mesh axis, or a list of distinct mesh axes."""
    for k, v in rules(pcfg):
        axes = v if isinstance(v, tuple) else (v,)
        bad = [a for a in axes if a is not None and a not in MESH_AXES]
        if bad or (isinstance(v, tuple) and (None in v or len(set(v)) != len(v))):
            raise UserError(f"parallel.rules: '{k}' maps to {v!r}; valid: null, one of "
                            f"{', '.join(MESH_AXES)}, or a list of distinct mesh axes")


def _ways(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))


def logical_shardings(abstract_boxed, mesh: Mesh, pcfg):
    """NamedShardings for a pytree whose leaves are `nn.Partitioned` boxes (or plain);
    a dimension its mesh axes do not divide is a UserError before anything compiles."""
    specs = nn.get_partition_spec(abstract_boxed)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules(pcfg))
    leaves = jax.tree_util.tree_leaves_with_path(nn.unbox(abstract_boxed))
    for (path, leaf), sh, logical in zip(leaves, jax.tree.leaves(shardings),
                                         jax.tree.leaves(specs, is_leaf=_is_spec)):
        for dim, (size, axes) in enumerate(zip(leaf.shape, sh.spec)):
            n = _ways(mesh, axes)
            if size % n:
                name = "/".join(str(getattr(k, "key", k)) for k in path)
                raise UserError(
                    f"parameter {name} axis {dim} ('{logical[dim]}', size {size}) is sharded "
                    f"{n} ways over {axes}, which does not divide it; change the model size, "
                    "the mesh (parallel.data/fsdp/tensor) or parallel.rules")
    return shardings


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


def batch_sharding(mesh: Mesh, pcfg) -> NamedSharding:
    """Leading (batch) axis over the mesh axes the `batch` rule names."""
    spec = nn.logical_to_mesh_axes(("batch", None), rules(pcfg))
    return NamedSharding(mesh, spec)


def batch_shards(sharding: NamedSharding) -> int:
    """How many ways a batch sharding splits the leading (batch) axis."""
    return _ways(sharding.mesh, sharding.spec[0])


def check_batch(batch_size: int, sharding: NamedSharding) -> None:
    """The global batch must split evenly over the batch shards."""
    n = batch_shards(sharding)
    if batch_size % n:
        raise UserError(f"data.batch_size ({batch_size}) must be divisible by the {n} batch "
                        f"shards (mesh axes {sharding.spec[0]} of the batch rule)")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This process's rows -> one global array per key, sharded over the batch axes.
    A process's rows fill, in order, the batch slices its devices hold: global rows
    [p * b, (p + 1) * b) with b = batch_size / process_count, when the mesh lists each
    process's devices together (CPU, GPU)."""
    for x in jax.tree.leaves(local):
        check_batch(x.shape[0] * jax.process_count(), sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


# ---------------------------------------------------------------- multi-host

ENV_COORDINATOR = "JAXDEPTH_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "JAXDEPTH_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXDEPTH_PROCESS_ID"
ENV_DISTRIBUTED = "JAXDEPTH_DISTRIBUTED"  # 1: let jax detect the cluster (TPU, SLURM, MPI)


def _env_int(env, key):
    v = env.get(key)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise UserError(f"environment variable {key}={v!r} must be an integer") from None


def distributed_settings(coordinator=None, num_processes=None, process_id=None,
                         auto: bool = False, env=None) -> dict | None:
    """Arguments for `jax.distributed.initialize`, or None for a single-process run.
    CLI values win over `JAXDEPTH_*` environment variables. With a coordinator, the process
    count and id are required; with `auto` (`--distributed`), missing values are left for
    jax to detect (TPU pods, SLURM, Open MPI)."""
    env = os.environ if env is None else env
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else _env_int(env, ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(env, ENV_PROCESS_ID)
    auto = auto or env.get(ENV_DISTRIBUTED, "").lower() in ("1", "true", "yes")
    if not auto and coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise UserError("--num-processes/--process-id need --coordinator HOST:PORT "
                            f"(or {ENV_COORDINATOR}), or --distributed to auto-detect")
        return None
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--coordinator '{coordinator}' must be HOST:PORT, e.g. 10.0.0.1:1234")
    if not auto:
        if num_processes is None or process_id is None:
            raise UserError("--coordinator needs --num-processes N and --process-id I "
                            f"(or {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})")
        if num_processes == 1:
            return None
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num-processes must be >= 1, got {num_processes}")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise UserError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    return {"coordinator_address": coordinator, "num_processes": num_processes,
                "process_id": process_id}


def maybe_initialize_distributed(coordinator=None, num_processes=None, process_id=None,
                                 auto: bool = False, env=None) -> bool:
    """`jax.distributed.initialize` when the settings ask for several processes; returns
    whether it ran. CPU processes exchange collectives through gloo."""
    kwargs = distributed_settings(coordinator, num_processes, process_id, auto, env)
    if kwargs is None:
        return False
    if jax.distributed.is_initialized():
        return True
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Preemption is coordinated by jaxdepth.train.preempt (a flag all-gathered at every step
    # boundary), not by JAX's preemption service: that one agrees on "the furthest process's
    # last reported step + 1" and is missed when a notice arrives while no step is reported
    # (restoring, compiling, between the runs of a sweep).
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(**kwargs)
    return True


def add_distributed_arguments(parser) -> None:
    """The multi-host flags of every verb that trains (`train`, `sweep`, `experiment`)."""
    g = parser.add_argument_group("multi-host (one command per host; see docs/pod.md)")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="address of process 0 (env JAXDEPTH_COORDINATOR)")
    g.add_argument("--num-processes", type=int, metavar="N",
                   help="number of processes (env JAXDEPTH_NUM_PROCESSES)")
    g.add_argument("--process-id", type=int, metavar="I",
                   help="this process, 0..N-1 (env JAXDEPTH_PROCESS_ID)")
    g.add_argument("--distributed", action="store_true",
                   help="let jax detect the cluster (TPU pod, SLURM, MPI; env JAXDEPTH_DISTRIBUTED=1)")


def initialize_from_args(args) -> bool:
    """`maybe_initialize_distributed` from the flags `add_distributed_arguments` added; call
    it after the config is validated and before anything touches a jax backend."""
    return maybe_initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                        args.distributed)
