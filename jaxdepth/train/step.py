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


def early_exit_weights(step, depth: int, scale: float, curriculum: str, steps: int):
    """(L,) float32 weights of the layers' exit losses, summing to 1 (LayerSkip, Elhoushi et
    al. 2024, arXiv 2404.16710, §4.2): `e(l) = scale * sum_{i=0..l} i` for l < L - 1 and
    `e(L-1) = L - 1 + scale * sum_{i=0..L-2} i`, times the curriculum `C(t, l)` and
    normalised. Curricula: "none" (C = 1) or "gradual" (the last layer's exit from the start,
    one more layer towards the first every T / (2L) steps)."""
    i = jnp.arange(depth, dtype=jnp.float32)
    e = scale * jnp.cumsum(i)
    e = e.at[-1].set((depth - 1) + scale * jnp.sum(i[:-1]))
    if curriculum == "gradual":
        e = e * (step >= (depth - 1 - i) * steps / (2 * depth))
    return e / jnp.maximum(jnp.sum(e), 1e-30) if depth > 1 else jnp.ones(1, jnp.float32)


def layer_dropout_rates(depth: int, p_max: float):
    """(L,) per-layer drop probabilities rising with depth (LayerSkip, arXiv 2404.16710,
    §4.1): `p_l = p_max * (exp(l ln 2 / (L - 1)) - 1)`, 0 at the first layer and p_max at
    the last (the constant time schedule S(t) = 1)."""
    if depth == 1:
        return jnp.zeros(1, jnp.float32)
    return p_max * (jnp.exp2(jnp.arange(depth, dtype=jnp.float32) / (depth - 1)) - 1.0)


def layer_keep(key, step, batch_size: int, depth: int, p_max: float):
    """(B, L) bools: the layers each example keeps this step under LayerSkip's layer dropout
    (`layer_dropout_rates`), drawn from `key` folded with the step."""
    u = jax.random.uniform(jax.random.fold_in(key, step), (batch_size, depth))
    return u >= layer_dropout_rates(depth, p_max)[None]


def make_train_step(model, tx, schedule, pad_id: int, depth: int, microbatches: int = 1,
                    micro_sharding=None, layer_stats: bool = True, tcfg=None):
    """`train_step(state, batch) -> (state, metrics)`, pure; jit it at the call site. With
    `microbatches = k > 1` the batch is processed in k slices (`split_microbatches`) and
    their gradients summed, so activations scale with B / k. `layer_stats=False` leaves the
    per-layer statistics (`metrics["layers"]`) out: XLA then drops their computation as dead
    code (the model's `aux["stats"]` is unused), and the per-layer gradient norms are not
    computed.

    What the gradient follows beyond the LM loss (`tcfg`, a TrainConfig, and the model's
    config): LayerSkip's early-exit losses of every layer (`early_exit_weights`) and its
    layer dropout per example (`layer_dropout_rates`), and Mixture-of-Depths' auxiliary
    router loss (`jaxdepth.model.mod`). `metrics["loss"]` stays the last layer's LM loss,
    comparable across runs: the loss function returns `objective + stop_gradient(lm -
    objective)`, whose value is the LM loss and whose gradient is the objective's."""
    mcfg = model.cfg
    exit_scale = tcfg.early_exit_scale if tcfg is not None else 0.0
    p_drop = tcfg.layer_dropout if tcfg is not None else 0.0
    router_weight = mcfg.mod_aux_weight if mcfg.mod_capacity < 1.0 else 0.0
    hidden_model = model.clone(return_hidden=True) if exit_scale > 0 else None

    def exit_losses(params, hidden_XBTW, targets, weights):
        """(L - 1,) weighted CE sums of the exits after layers 0..L-2, one layer's logits at
        a time (rematerialised: the backward pass holds one (B, T, V) too)."""
        @jax.checkpoint
        def one(h_BTW):
            logits = model.apply({"params": params}, h_BTW, method="unembed")
            return weighted_ce_sum(logits, targets, weights)[0]
        return jax.lax.map(one, hidden_XBTW[1:-1])

    def loss_fn(params, batch, n_targets, step):
        """Weighted loss sum / the whole batch's total weight: summing it over micro-batches
        gives the whole batch's mean loss (and gradient) even when pads fall unevenly."""
        inputs, targets, weights = batch_lm(batch, pad_id)
        keep = batch["layer_keep"].T if "layer_keep" in batch else None  # (L, B)
        if hidden_model is None:
            logits, aux = model.apply({"params": params}, inputs, layer_mask_L=keep)
        else:
            logits, aux = hidden_model.apply({"params": params}, inputs, layer_mask_L=keep)
        lm = weighted_ce_sum(logits, targets, weights)[0] / n_targets
        objective = lm
        if hidden_model is not None:
            w_L = early_exit_weights(step, depth, exit_scale, tcfg.early_exit_curriculum,
                                     tcfg.steps)
            exits = exit_losses(params, aux["hidden"], targets, weights) / n_targets
            objective = w_L[-1] * lm + jnp.sum(w_L[:-1] * exits)
        if router_weight:  # per micro-batch share of the batch: its weight / the batch's
            share = jnp.sum(weights) / n_targets
            objective = objective + router_weight * share * jnp.sum(aux["stats"]["mod_router_bce"])
        if objective is not lm:
            objective = objective + jax.lax.stop_gradient(lm - objective)
        return objective, aux["stats"]

    def with_layer_keep(state, batch):
        """The batch plus `layer_keep` (B, L): each example's kept layers this step, drawn
        from the state's key and step (split into micro-batches with the rows)."""
        B = jax.tree.leaves(batch)[0].shape[0]
        return {**batch, "layer_keep": layer_keep(state.rng, state.step, B, depth, p_drop)}

    def train_step(state: TrainState, batch):
        n_targets = jnp.maximum(jnp.sum(batch_lm(batch, pad_id)[2]), 1.0)
        if p_drop > 0:
            batch = with_layer_keep(state, batch)
        grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, n_targets, state.step),
                                     has_aux=True)
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
