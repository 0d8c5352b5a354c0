"""Device mesh, logical axis rules and shardings.

Parameters carry logical axis names (embed, heads, kv, mlp, vocab, layers); the rules in
`ParallelConfig.rules` map them to mesh axes `data`, `fsdp`, `tensor`. On one device every
sharding is trivial, but the same code path runs, so a pod changes config, not code.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdepth.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(pcfg, n_devices: int) -> tuple[int, int, int]:
    """Axis sizes with at most one -1 filled from the device count."""
    sizes = [pcfg.data, pcfg.fsdp, pcfg.tensor]
    named = ", ".join(f"parallel.{a}={s}" for a, s in zip(MESH_AXES, sizes))
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise UserError(f"mesh sizes {named}: each must be >= 1, and at most one may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if n_devices % known:
            raise UserError(f"mesh sizes {named} do not divide the {n_devices} devices")
        sizes[sizes.index(-1)] = n_devices // known
    if math.prod(sizes) != n_devices:
        raise UserError(
            f"mesh sizes {named} multiply to {math.prod(sizes)}, but there are {n_devices} "
            "devices; make the product equal the device count (one size may be -1)")
    return tuple(sizes)


def make_mesh(pcfg, devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(pcfg, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules(pcfg) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in pcfg.rules)


def logical_shardings(abstract_boxed, mesh: Mesh, pcfg):
    """NamedShardings for a pytree whose leaves are `nn.Partitioned` boxes (or plain)."""
    specs = nn.get_partition_spec(abstract_boxed)
    return nn.logical_to_mesh_sharding(specs, mesh, rules(pcfg))


def batch_sharding(mesh: Mesh, pcfg) -> NamedSharding:
    """Leading (batch) axis over the mesh axes the `batch` rule names."""
    spec = nn.logical_to_mesh_axes(("batch", None), rules(pcfg))
    return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: dict, sharding: NamedSharding) -> dict:
    """This process's rows -> one global array per key, sharded over the batch axes."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)
