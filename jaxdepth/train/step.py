"""Pure train and eval steps: cross-entropy, gradients, per-layer gradient norms."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    opt_state: Any
    rng: jnp.ndarray


def lm_loss_sum(logits_BTV, targets_BT, pad_id: int):
    """Summed next-token cross-entropy over non-pad targets, and their count (float32)."""
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV.astype(jnp.float32), targets_BT)
    mask_BT = (targets_BT != pad_id).astype(jnp.float32)
    return jnp.sum(ce_BT * mask_BT), jnp.sum(mask_BT)


def lm_loss(logits_BTV, targets_BT, pad_id: int):
    """Mean next-token cross-entropy over non-pad targets."""
    total, count = lm_loss_sum(logits_BTV, targets_BT, pad_id)
    return total / jnp.maximum(count, 1.0)


def split_batch(tokens_BS):
    """(B, S) packed windows (S = T + 1) -> inputs (B, T), targets (B, T)."""
    return tokens_BS[:, :-1], tokens_BS[:, 1:]


def stacked_layers(params, depth: int):
    """The layer params with a leading layer axis, for a scanned (`layers`) or an
    unrolled (`layers_0..`) stack."""
    if "layers" in params:
        return params["layers"]
    return jax.tree.map(lambda *a: jnp.stack(a), *[params[f"layers_{i}"] for i in range(depth)])


def layer_grad_norms(grads, depth: int) -> dict:
    """||g|| per layer for the attention and the FFN sublayer separately (norms and gates
    of a sublayer counted with it), from the stacked leading layer axis; shape (depth,)."""
    layers = stacked_layers(grads, depth)
    out = {}
    for group in ("attn", "ffn"):
        sq = [jnp.sum(jnp.square(g.astype(jnp.float32)), axis=tuple(range(1, g.ndim)))
              for k, sub in layers.items() if k.startswith(group)
              for g in jax.tree.leaves(sub)]
        out[f"{group}_grad_norm"] = jnp.sqrt(sum(sq))
    return out


def split_microbatches(tokens_BS, k: int, sharding=None):
    """(B, S) -> (k, B/k, S), micro-batch j = rows j, j + k, j + 2k, ...: a strided split,
    so that each device's contiguous block of rows holds B / (k * shards) rows of every
    micro-batch and no micro-batch lives on a subset of the devices. `sharding`: the
    NamedSharding of the (k, B/k, S) array (batch axes on its axis 1)."""
    B, S = tokens_BS.shape
    micro_KBS = jnp.swapaxes(tokens_BS.reshape(B // k, k, S), 0, 1)
    if sharding is not None:
        micro_KBS = jax.lax.with_sharding_constraint(micro_KBS, sharding)
    return micro_KBS


def accumulate_gradients(grad_fn, params, micro_KBS):
    """Sum of `grad_fn(params, tokens) -> ((loss, stats), grads)` over micro-batches, a
    `lax.scan` holding one float32 gradient accumulator: gradient accumulation, the update
    of the whole batch within float tolerance when the losses are sums over the whole
    batch's token count. Stats are averaged over micro-batches."""
    k = micro_KBS.shape[0]
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

    def body(acc, tokens):
        (loss, stats), grads = grad_fn(params, tokens)
        acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grads)
        return acc, (loss, stats)

    acc, (losses, stats) = jax.lax.scan(body, zeros, micro_KBS)
    grads = jax.tree.map(lambda a, p: a.astype(p.dtype), acc, params)
    return (jnp.sum(losses), jax.tree.map(lambda s: jnp.sum(s, 0) / k, stats)), grads


def make_train_step(model, tx, schedule, pad_id: int, depth: int, microbatches: int = 1,
                    micro_sharding=None, layer_stats: bool = True):
    """`train_step(state, batch) -> (state, metrics)`, pure; jit it at the call site. With
    `microbatches = k > 1` the batch is processed in k slices (`split_microbatches`) and
    their gradients summed, so activations scale with B / k. `layer_stats=False` leaves the
    per-layer statistics (`metrics["layers"]`) out: XLA then drops their computation as dead
    code (the model's `aux["stats"]` is unused), and the per-layer gradient norms are not
    computed."""

    def loss_fn(params, tokens, n_targets):
        """Summed loss / the whole batch's target count: summing it over micro-batches gives
        the whole batch's mean loss (and gradient) even when pads fall unevenly."""
        inputs, targets = split_batch(tokens)
        logits, aux = model.apply({"params": params}, inputs)
        return lm_loss_sum(logits, targets, pad_id)[0] / n_targets, aux["stats"]

    def train_step(state: TrainState, batch):
        tokens = batch["tokens"]
        n_targets = jnp.maximum(jnp.sum((split_batch(tokens)[1] != pad_id).astype(jnp.float32)),
                                1.0)
        grad_fn = jax.value_and_grad(lambda p, t: loss_fn(p, t, n_targets), has_aux=True)
        if microbatches == 1:
            (loss, stats), grads = grad_fn(state.params, tokens)
        else:
            (loss, stats), grads = accumulate_gradients(
                grad_fn, state.params, split_microbatches(tokens, microbatches, micro_sharding))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        if layer_stats:
            metrics["layers"] = {**stats, **layer_grad_norms(grads, depth)}
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, metrics

    return train_step


def make_eval_step(model, pad_id: int, microbatches: int = 1, micro_sharding=None):
    """`eval_step(params, batch) -> loss` on one batch of packed windows, in the train step's
    micro-batches (so that evaluation never holds more logits than a train step does)."""

    def sums(params, tokens):
        inputs, targets = split_batch(tokens)
        logits, _ = model.apply({"params": params}, inputs)
        return lm_loss_sum(logits, targets, pad_id)

    def eval_step(params, batch):
        if microbatches == 1:
            total, count = sums(params, batch["tokens"])
        else:
            micro = split_microbatches(batch["tokens"], microbatches, micro_sharding)
            total, count = jax.tree.map(jnp.sum, jax.lax.map(lambda t: sums(params, t), micro))
        return total / jnp.maximum(count, 1.0)

    return eval_step
