"""Pure train and eval steps: cross-entropy, gradients, per-layer gradient norms.

A batch is either packed corpus windows `{"tokens": (B, S)}` (every non-pad next token is a
target) or a synthetic task's `{"inputs", "targets", "weights", "answers"}`, each (B, T)
(`jaxdepth.data.tasks.stream`): `weights` are the loss's per-target weights (the answers
alone under `data.loss_on=answers`), `answers` the targets exact-match accuracy scores."""

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
    return weighted_ce_sum(logits_BTV, targets_BT, (targets_BT != pad_id).astype(jnp.float32))


def weighted_ce_sum(logits_BTV, targets_BT, weights_BT):
    """Sum of weights x cross-entropy of the targets, and the sum of the weights (float32)."""
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV.astype(jnp.float32), targets_BT)
    return jnp.sum(ce_BT * weights_BT), jnp.sum(weights_BT)


def lm_loss(logits_BTV, targets_BT, pad_id: int):
    """Mean next-token cross-entropy over non-pad targets."""
    total, count = lm_loss_sum(logits_BTV, targets_BT, pad_id)
    return total / jnp.maximum(count, 1.0)


def split_batch(tokens_BS):
    """(B, S) packed windows (S = T + 1) -> inputs (B, T), targets (B, T)."""
    return tokens_BS[:, :-1], tokens_BS[:, 1:]


def batch_lm(batch, pad_id: int):
    """inputs, targets (B, T) int32 and the loss weights (B, T) float32 of a batch: packed
    windows (weights 1 on non-pad targets) or a task's batch (its own weights)."""
    if "tokens" in batch:
        inputs_BT, targets_BT = split_batch(batch["tokens"])
        return inputs_BT, targets_BT, (targets_BT != pad_id).astype(jnp.float32)
    return batch["inputs"], batch["targets"], batch["weights"].astype(jnp.float32)


def answer_sums(logits_BTV, targets_BT, answers_BT):
    """Exact-match bookkeeping of a task batch (float32 sums): answer tokens right
    (`correct`) of `answers`, and examples whose every answer is right (`exact`) of the
    `examples` that hold an answer. Greedy (argmax) predictions."""
    answers_BT = answers_BT.astype(bool)
    right_BT = jnp.argmax(logits_BTV, axis=-1) == targets_BT
    has_B = jnp.any(answers_BT, axis=1)
    exact_B = jnp.all(right_BT | ~answers_BT, axis=1) & has_B
    f32 = lambda x: jnp.sum(x.astype(jnp.float32))  # noqa: E731
    return dict(correct=f32(right_BT & answers_BT), answers=f32(answers_BT),
                exact=f32(exact_B), examples=f32(has_B))


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


def split_microbatches(batch, k: int, sharding=None):
    """Every (B, S) array of a batch (an array or a dict of them) -> (k, B/k, S), micro-batch
    j = rows j, j + k, j + 2k, ...: a strided split, so that each device's contiguous block
    of rows holds B / (k * shards) rows of every micro-batch and no micro-batch lives on a
    subset of the devices. `sharding`: the NamedSharding of a (k, B/k, S) array (batch axes
    on its axis 1)."""

    def split(x_BS):
        B, S = x_BS.shape
        micro_KBS = jnp.swapaxes(x_BS.reshape(B // k, k, S), 0, 1)
        if sharding is not None:
            micro_KBS = jax.lax.with_sharding_constraint(micro_KBS, sharding)
        return micro_KBS

    return jax.tree.map(split, batch)


def accumulate_gradients(grad_fn, params, micro_batches):
    """Sum of `grad_fn(params, batch) -> ((loss, stats), grads)` over micro-batches (a
    batch's arrays with a leading micro-batch axis), a `lax.scan` holding one float32
    gradient accumulator: gradient accumulation, the update of the whole batch within float
    tolerance when the losses are sums over the whole batch's token count. Stats are
    averaged over micro-batches."""
    k = jax.tree.leaves(micro_batches)[0].shape[0]
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)

    def body(acc, micro):
        (loss, stats), grads = grad_fn(params, micro)
        acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc, grads)
        return acc, (loss, stats)

    acc, (losses, stats) = jax.lax.scan(body, zeros, micro_batches)
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

    def loss_fn(params, batch, n_targets):
        """Weighted loss sum / the whole batch's total weight: summing it over micro-batches
        gives the whole batch's mean loss (and gradient) even when pads fall unevenly."""
        inputs, targets, weights = batch_lm(batch, pad_id)
        logits, aux = model.apply({"params": params}, inputs)
        return weighted_ce_sum(logits, targets, weights)[0] / n_targets, aux["stats"]

    def train_step(state: TrainState, batch):
        n_targets = jnp.maximum(jnp.sum(batch_lm(batch, pad_id)[2]), 1.0)
        grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, n_targets), has_aux=True)
        if microbatches == 1:
            (loss, stats), grads = grad_fn(state.params, batch)
        else:
            (loss, stats), grads = accumulate_gradients(
                grad_fn, state.params, split_microbatches(batch, microbatches, micro_sharding))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        if layer_stats:
            metrics["layers"] = {**stats, **layer_grad_norms(grads, depth)}
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, metrics

    return train_step


def make_eval_step(model, pad_id: int, microbatches: int = 1, micro_sharding=None):
    """`eval_step(params, batch) -> {"loss": mean weighted loss}` on one batch, in the train
    step's micro-batches (so that evaluation never holds more logits than a train step
    does); a task's batch adds its `answer_sums` (exact-match bookkeeping)."""

    def sums(params, batch):
        inputs, targets, weights = batch_lm(batch, pad_id)
        logits, _ = model.apply({"params": params}, inputs)
        total, count = weighted_ce_sum(logits, targets, weights)
        out = dict(total=total, count=count)
        if "answers" in batch:
            out.update(answer_sums(logits, targets, batch["answers"]))
        return out

    def eval_step(params, batch):
        if microbatches == 1:
            s = sums(params, batch)
        else:
            micro = split_microbatches(batch, microbatches, micro_sharding)
            s = jax.tree.map(jnp.sum, jax.lax.map(lambda b: sums(params, b), micro))
        total, count = s.pop("total"), s.pop("count")
        return {"loss": total / jnp.maximum(count, 1.0), **s}

    return eval_step
