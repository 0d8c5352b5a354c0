"""Build the model, optimiser, shardings and compiled steps for a run configuration.

`build` is cached on the (frozen, hashable) configuration, so runs of the same shape in one
process share one compiled train step (sweeps rely on this)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxdepth import parallel
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer, precision
from jaxdepth.model.layers import activation_sharding
from jaxdepth.train.optim import lr_schedule, make_optimizer
from jaxdepth.train.step import TrainState, make_eval_step, make_train_step


def resolve_model(mcfg, tokenizer_vocab: int):
    """Fill `vocab_size` from the tokenizer, rounded up to a multiple of 64 (so that the
    vocab axis shards evenly; an explicit size must hold the tokenizer's vocabulary), and
    resolve `auto` dtype and attention for this backend (`jaxdepth.model.precision`)."""
    if mcfg.vocab_size == 0:
        mcfg = dataclasses.replace(mcfg, vocab_size=-(-tokenizer_vocab // 64) * 64)
    elif mcfg.vocab_size < tokenizer_vocab:
        raise UserError(f"model.vocab_size ({mcfg.vocab_size}) is smaller than the tokenizer's "
                        f"vocabulary ({tokenizer_vocab}); use 0 (automatic) or >= {tokenizer_vocab}")
    return precision.resolve(mcfg)


@dataclass(frozen=True)
class Built:
    model: Transformer
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: Mesh
    state_shardings: TrainState
    batch_sharding: jax.sharding.NamedSharding
    init_state: object  # jitted: rng -> TrainState, created directly sharded
    train_step: object  # jitted: (state, batch) -> (state, metrics), state donated
    eval_step: object  # jitted: (params, batch) -> loss


def boxed_param_init(model, seq_len: int):
    """`init(rng) -> params` with logical-axis boxes, and its abstract (shape-only) output."""

    def init(rng):
        return model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]

    return init, jax.eval_shape(init, jax.random.key(0))


def in_mesh(fn, mesh: Mesh, batch_sh, pcfg, mcfg):
    """`fn` traced with activations pinned to the batch shards (`layers.shard_batch`) and,
    for the splash kernel, inside the mesh: splash shards itself with `shard_map` over the
    mesh it finds in context (XLA cannot partition its Mosaic custom call)."""

    @functools.wraps(fn)
    def traced_in_mesh(*args):
        with contextlib.ExitStack() as stack:
            stack.enter_context(activation_sharding(batch_sh, parallel.rules(pcfg)))
            if mcfg.attention == "splash":
                stack.enter_context(jax.sharding.use_abstract_mesh(mesh.abstract_mesh))
            return fn(*args)

    return traced_in_mesh


@functools.lru_cache(maxsize=16)
def build(mcfg, tcfg, pcfg, seq_len: int, pad_id: int, mesh: Mesh | None = None) -> Built:
    mesh = mesh if mesh is not None else parallel.make_mesh(pcfg)
    model = Transformer(mcfg)
    schedule = lr_schedule(tcfg)
    tx = make_optimizer(mcfg, tcfg)
    init_params, boxed = boxed_param_init(model, seq_len)
    param_sh = parallel.logical_shardings(boxed, mesh, pcfg)
    repl = parallel.replicated(mesh)
    abstract_params = nn.unbox(boxed)
    opt_abstract = jax.eval_shape(tx.init, abstract_params)
    # optimizer moments follow their params' shardings; counters are replicated; the
    # placeholders of a per-role optimizer (multi_transform's MaskedNode) stay as they are
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    opt_sh = optax.tree_map_params(tx, lambda a, s: a if masked(a) else s, opt_abstract,
                                   param_sh, transform_non_params=lambda _: repl,
                                   is_leaf=masked)
    state_sh = TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl)

    def init_state(rng):
        params = nn.unbox(init_params(rng))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params), rng=rng)

    batch_sh = parallel.batch_sharding(mesh, pcfg)
    k = tcfg.microbatches
    micro_sh = _micro_sharding(batch_sh, k)
    train_step = in_mesh(make_train_step(model, tx, schedule, pad_id, mcfg.depth, k, micro_sh,
                                         tcfg.layer_stats, tcfg),
                         mesh, batch_sh, pcfg, mcfg)
    return Built(
        model=model, tx=tx, schedule=schedule, mesh=mesh, state_shardings=state_sh,
        batch_sharding=batch_sh,
        init_state=jax.jit(init_state, out_shardings=state_sh),
        train_step=jax.jit(train_step, in_shardings=(state_sh, batch_sh),
                           out_shardings=(state_sh, repl), donate_argnums=0),
        eval_step=_eval_step(mcfg, pcfg, seq_len, pad_id, k, mesh),
    )


def _micro_sharding(batch_sh, k: int):
    """Sharding of a batch split into k micro-batches (leading axis), or None for k = 1."""
    if k == 1:
        return None
    return jax.sharding.NamedSharding(batch_sh.mesh, jax.sharding.PartitionSpec(
        None, *batch_sh.spec))


@functools.lru_cache(maxsize=16)
def _eval_step(mcfg, pcfg, seq_len: int, pad_id: int, k: int, mesh: Mesh):
    """The jitted eval step, which depends on the model and layout only: runs that differ in
    the optimiser (a learning-rate sweep) share one compiled evaluation."""
    model = Transformer(mcfg)
    _, boxed = boxed_param_init(model, seq_len)
    param_sh = parallel.logical_shardings(boxed, mesh, pcfg)
    batch_sh = parallel.batch_sharding(mesh, pcfg)
    step = in_mesh(make_eval_step(model, pad_id, k, _micro_sharding(batch_sh, k)), mesh,
                   batch_sh, pcfg, mcfg)
    return jax.jit(step, in_shardings=(param_sh, batch_sh),
                   out_shardings=parallel.replicated(mesh))
