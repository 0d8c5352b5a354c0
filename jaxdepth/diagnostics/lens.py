"""Logit lens: read every layer's residual stream through the final norm and unembedding.

`logits_l = W_U N_final(h_l)` (nostalgebraist 2020, "interpreting GPT: the logit lens";
tuned-lens paper, Belrose et al. 2023, arXiv 2303.08112). Per layer: the LM loss,
`KL(p_final || p_l)` (the direction of arXiv 2303.08112) and the top-1 agreement with the
final layer; and for one prompt the top tokens each layer predicts next.
Index 0 is the embedding stream, index l + 1 the stream leaving layer l, so index L is the
model's own output.
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
    unembed,
)


@dataclass(frozen=True)
class LogitLens:
    loss: np.ndarray  # (X,) cross-entropy of the lens at each hidden state
    kl: np.ndarray  # (X,) KL(final || lens), nats per token
    top1_agreement: np.ndarray  # (X,) fraction of tokens whose argmax matches the final
    n_tokens: int


@functools.partial(jax.jit, static_argnames=("mcfg",))
def lens_logits(params, mcfg, inputs_BT):
    """(X, B, T, V) float32 logits of the lens at every hidden state (small inputs only:
    this materialises every layer's logits)."""
    _, h_XBTW = forward_hidden(params, mcfg, inputs_BT)
    return jax.lax.map(lambda h: unembed(params, mcfg, h), h_XBTW)


@functools.partial(jax.jit, static_argnames=("mcfg", "pad_id"))
def _lens_sums(params, mcfg, batches_CBS, pad_id: int):
    def per_batch(tokens_BS):
        inputs_BT, targets_BT, mask_BT = inputs_targets_mask(tokens_BS, pad_id)
        logits_BTV, h_XBTW = forward_hidden(params, mcfg, inputs_BT)
        logp_final = jax.nn.log_softmax(logits_BTV)
        top_final = jnp.argmax(logits_BTV, axis=-1)

        def layer(h_BTW):  # one layer's logits at a time: memory of one (B, T, V)
            logits_l = unembed(params, mcfg, h_BTW)
            logp_l = jax.nn.log_softmax(logits_l)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits_l, targets_BT)
            kl = jnp.sum(jnp.exp(logp_final) * (logp_final - logp_l), axis=-1)
            agree = (jnp.argmax(logits_l, axis=-1) == top_final).astype(jnp.float32)
            return jnp.stack([jnp.sum(x * mask_BT) for x in (ce, kl, agree)])

        return dict(sums=jax.lax.map(layer, h_XBTW), n_tok=jnp.sum(mask_BT))

    return sum_over_batches(per_batch, batches_CBS)


def logit_lens(params, mcfg, tokens, pad_id: int) -> LogitLens:
    """Lens loss, KL to the final layer and top-1 agreement per hidden state, token-weighted
    over the non-pad targets of one batch (B, S) or a stack (C, B, S)."""
    s = jax.device_get(_lens_sums(params, mcfg, as_batches(tokens), pad_id))
    n = int(s["n_tok"])
    sums = np.asarray(s["sums"], np.float64) / max(n, 1)
    return LogitLens(loss=sums[:, 0], kl=sums[:, 1], top1_agreement=sums[:, 2], n_tokens=n)


def lens_top_tokens(params, mcfg, prompt_T, k: int = 5):
    """Top-k next-token ids (X, k) and their probabilities at the prompt's last position,
    per hidden state: the layer at which the answer emerges."""
    logits_XV = lens_logits(params, mcfg, jnp.asarray(prompt_T, jnp.int32)[None])[:, 0, -1]
    probs_XV = jax.nn.softmax(logits_XV, axis=-1)
    p, ids = jax.lax.top_k(probs_XV, k)
    return np.asarray(ids), np.asarray(p)
