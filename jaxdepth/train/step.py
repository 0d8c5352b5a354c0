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


def lm_loss(logits_BTV, targets_BT, pad_id: int):
    """Mean next-token cross-entropy over non-pad targets."""
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    mask_BT = (targets_BT != pad_id).astype(jnp.float32)
    return jnp.sum(ce_BT * mask_BT) / jnp.maximum(jnp.sum(mask_BT), 1.0)


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


def make_train_step(model, tx, schedule, pad_id: int, depth: int):
    """`train_step(state, batch) -> (state, metrics)`, pure; jit it at the call site."""

    def loss_fn(params, tokens):
        inputs, targets = split_batch(tokens)
        logits, aux = model.apply({"params": params}, inputs)
        return lm_loss(logits, targets, pad_id), aux["stats"]

    def train_step(state: TrainState, batch):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch["tokens"])
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state.step),
            "layers": {**stats, **layer_grad_norms(grads, depth)},
        }
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, metrics

    return train_step


def make_eval_step(model, pad_id: int):
    """`eval_step(params, batch) -> loss` on one batch of packed windows."""

    def eval_step(params, batch):
        inputs, targets = split_batch(batch["tokens"])
        logits, _ = model.apply({"params": params}, inputs)
        return lm_loss(logits, targets, pad_id)

    return eval_step
