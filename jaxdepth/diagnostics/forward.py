"""Shared plumbing for the per-layer diagnostics: the forward pass with the residual stream,
the padding mask, and a sum over a stack of evaluation batches inside one jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdepth.model import Transformer
from jaxdepth.train.step import split_batch


def as_batches(tokens) -> jnp.ndarray:
    """(B, S) one batch or (C, B, S) a stack of batches -> int32 (C, B, S)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim == 2:
        tokens = tokens[None]
    if tokens.ndim != 3 or tokens.shape[-1] < 2:
        raise ValueError(f"expected token windows (B, S) or (C, B, S), got {tokens.shape}")
    return tokens


def inputs_targets_mask(tokens_BS, pad_id: int):
    """inputs (B, T), targets (B, T), mask (B, T) float32: 1 where the target is not padding
    (the positions the loss counts; every diagnostic counts exactly these)."""
    inputs_BT, targets_BT = split_batch(tokens_BS)
    return inputs_BT, targets_BT, (targets_BT != pad_id).astype(jnp.float32)


def forward_hidden(params, mcfg, inputs_BT, layer_mask_L=None):
    """`(logits_BTV, hidden_XBTW)`: hidden has depth + 1 entries, the stream entering layer 0
    (the embeddings) and leaving every layer."""
    model = Transformer(mcfg, return_hidden=True)
    logits_BTV, aux = model.apply({"params": params}, inputs_BT, layer_mask_L=layer_mask_L)
    return logits_BTV, aux["hidden"]


def unembed(params, mcfg, h_BTW):
    """Final norm + unembedding of any residual stream (the logit lens)."""
    return Transformer(mcfg).apply({"params": params}, h_BTW, method=Transformer.unembed)


def sum_over_batches(per_batch, batches_CBS):
    """The sum over the C batches of `per_batch(batch)`, a pytree of sums, as one `lax.scan`
    (one compile whatever C). `batches_CBS`: a stack of token windows (C, B, S), or any
    pytree of arrays with a leading batch axis C (a task's stacked batch dicts)."""
    first = jax.tree.map(lambda x: x[0], batches_CBS)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(per_batch, first))

    def body(acc, tokens_BS):
        return jax.tree.map(jnp.add, acc, per_batch(tokens_BS)), None

    return jax.lax.scan(body, zeros, batches_CBS)[0]
