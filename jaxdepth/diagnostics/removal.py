"""Layer removal: validation loss with layer l made the identity, for every l.

The performance drop when one layer is deleted from a trained model (ShortGPT, Men et al.
2024, arXiv 2403.03853; LNS, Sun et al. 2025, arXiv 2502.05795): a layer whose removal
costs nothing contributes nothing. All L + 1 masks (none removed, then each layer alone)
run through one compiled function: the model's `layer_mask_L` is an input, not a constant.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdepth.diagnostics.forward import (
    as_batches,
    forward_hidden,
    inputs_targets_mask,
    sum_over_batches,
)


@dataclass(frozen=True)
class LayerRemoval:
    base_loss: float  # every layer kept
    loss: np.ndarray  # (L,) loss with layer l skipped
    delta: np.ndarray  # (L,) loss - base_loss
    n_tokens: int


def removal_masks(depth: int) -> jnp.ndarray:
    """(L + 1, L) bools: row 0 keeps every layer, row l + 1 drops layer l only."""
    return jnp.concatenate([jnp.ones((1, depth), bool), ~jnp.eye(depth, dtype=bool)])


@functools.partial(jax.jit, static_argnames=("mcfg", "pad_id"))
def masked_loss_sums(params, mcfg, batches_CBS, masks_ML, pad_id: int):
    """Summed cross-entropy per layer mask (M,) and the counted-token total, over a stack of
    batches; one compile for any set of M masks of a given M."""

    def per_batch(tokens_BS):
        inputs_BT, targets_BT, mask_BT = inputs_targets_mask(tokens_BS, pad_id)

        def ce_sum(keep_L):
            logits_BTV, _ = forward_hidden(params, mcfg, inputs_BT, layer_mask_L=keep_L)
            ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
            return jnp.sum(ce_BT * mask_BT)

        return dict(ce=jax.lax.map(ce_sum, masks_ML), n_tok=jnp.sum(mask_BT))

    return sum_over_batches(per_batch, batches_CBS)


def layer_removal(params, mcfg, tokens, pad_id: int) -> LayerRemoval:
    """Loss with each layer skipped and its increase over the full model, on one batch
    (B, S) or a stack (C, B, S); losses are token-weighted means over non-pad targets."""
    s = jax.device_get(masked_loss_sums(params, mcfg, as_batches(tokens),
                                        removal_masks(mcfg.depth), pad_id))
    n = int(s["n_tok"])
    losses = np.asarray(s["ce"], np.float64) / max(n, 1)
    return LayerRemoval(base_loss=float(losses[0]), loss=losses[1:],
                        delta=losses[1:] - losses[0], n_tokens=n)
