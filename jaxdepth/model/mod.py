"""Mixture-of-Depths routing (Raposo et al. 2024, arXiv 2404.02258): pure functions the
Block composes (`jaxdepth.model.block`).

In a routed layer (`is_routed`: every `mod_every`-th layer when `mod_capacity < 1`, the
paper's best setting being every other block, §4.1) a router scores each token,
`r_i = w^T x_i` (§3.4, eq. 1); the k = int(capacity * T) highest-scoring tokens of each
sequence (a static shape: "expert-choice" routing, §3.2) are gathered in increasing
position, so that the causal mask over the gathered order is the causal mask over the
original positions (RoPE takes their original positions, `attention.rope`), go through the
whole layer, and are scattered back (eq. 1):

    x_i <- x_i + g(r_i) (f(x~)_i - x~_i)   for the k selected tokens,  x_i otherwise,

f being the layer (both sublayers with their residuals and norms, whatever the scheme),
x~ the gathered tokens. The paper multiplies by r_i itself; we use g(r) = 2 sigmoid(r)
(our choice): it is 1 at r = 0, so a routed layer starts at the strength of a plain one
(the router's init is small) rather than with its update scaled by ~0, and it stays
positive and bounded whatever the router learns. The language-model gradient reaches the
router through g; the top-k choice itself has no gradient.

Sampling (§3.5): top-k over a sequence looks at later tokens, so it is not causal. We use
the paper's first method: an auxiliary binary cross-entropy on the router logits, target
"is in the top-k" (a stop-gradient constant), so that at sampling time `r_i > 0` decides
alone whether token i is routed (`router_stats`: the loss `mod_router_bce` and that
decision's accuracy against the top-k, `mod_router_acc`; the train step adds
`mod_aux_weight` times their sum over layers to the loss). Only the targets are
stop-gradient: the paper applies a stop-gradient only to its second method's separate
predictor, and reports that the first method's loss moves the language-model objective by
0.2-0.3%, i.e. it trains the router (and, through it, the stream) with the LM. Training and
validation losses route by top-k, as training does (as the paper reports them)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

STAT_KEYS = ("mod_router_bce", "mod_router_acc")


def is_routed(l, cfg):
    """Whether layer `l` (0-based, possibly traced) is routed: every `mod_every`-th layer,
    (l + 1) % mod_every == 0 (arXiv 2404.02258 §4.1: routing every other block), when
    `mod_capacity < 1`."""
    return (cfg.mod_capacity < 1.0) & ((l + 1) % cfg.mod_every == 0)


def capacity_tokens(capacity: float, T: int) -> int:
    """k = int(capacity * T), the tokens of each length-T sequence a routed layer processes
    (the capacity C/T of arXiv 2404.02258 §3.1, a static shape)."""
    return max(1, int(capacity * T))


def router_logits(x_BTW, kernel_W1):
    """r_i = w^T x_i (arXiv 2404.02258 eq. 1), (B, T) in float32 from the stream."""
    return jnp.einsum("btw,wo->bt", x_BTW.astype(jnp.float32), kernel_W1.astype(jnp.float32))


def router_weight(r):
    """g(r) = 2 sigmoid(r): 1 at r = 0, where the paper uses r itself (module docstring)."""
    return 2.0 * jax.nn.sigmoid(r)


def top_k_positions(r_BT, k: int):
    """The positions of each sequence's k largest router logits, sorted increasing (so the
    gathered tokens keep their causal order), (B, k) int32; ties go to the earlier token."""
    _, idx_BK = jax.lax.top_k(r_BT, k)
    return jnp.sort(idx_BK, axis=-1).astype(jnp.int32)


def gather(x_BT, idx_BK):
    """x[b, idx[b, j]]: (B, k, ...) from (B, T, ...)."""
    return x_BT[jnp.arange(x_BT.shape[0])[:, None], idx_BK]


def scatter_add(x_BT, idx_BK, u_BK):
    """x with u[b, j] added at (b, idx[b, j]); every other entry is left as it is."""
    return x_BT.at[jnp.arange(x_BT.shape[0])[:, None], idx_BK].add(u_BK.astype(x_BT.dtype))


def route(x_BTW, kernel_W1, capacity: float, layer):
    """One routed layer (module docstring): `layer(x~_BKW, positions_BK) -> (f(x~), stats)`
    runs on the top-k tokens gathered at their original positions; returns the new stream
    and the layer's stats with `router_stats` added."""
    r_BT = router_logits(x_BTW, kernel_W1)
    idx_BK = top_k_positions(r_BT, capacity_tokens(capacity, x_BTW.shape[1]))
    xs_BKW = gather(x_BTW, idx_BK)
    ys_BKW, stats = layer(xs_BKW, idx_BK)
    w_BK = router_weight(gather(r_BT, idx_BK))
    update = w_BK[..., None] * (ys_BKW.astype(jnp.float32) - xs_BKW.astype(jnp.float32))
    return scatter_add(x_BTW, idx_BK, update), {**stats, **router_stats(r_BT, idx_BK)}


def router_stats(r_BT, idx_BK) -> dict:
    """The auxiliary router loss of arXiv 2404.02258 §3.5 (first method): binary cross-entropy
    of sigmoid(r_i) against t_i = [i in the top-k] (a constant), mean over tokens,
    softplus(r) - t r; and the accuracy of the causal decision r_i > 0 against t_i. Float32
    scalars."""
    t_BT = jax.lax.stop_gradient(
        jnp.zeros(r_BT.shape, bool).at[jnp.arange(r_BT.shape[0])[:, None], idx_BK].set(True))
    bce = jnp.mean(jax.nn.softplus(r_BT) - t_BT.astype(jnp.float32) * r_BT)
    acc = jnp.mean(((r_BT > 0) == t_BT).astype(jnp.float32))
    return {"mod_router_bce": bce, "mod_router_acc": acc}


def zero_stats() -> dict:
    """`router_stats` of a layer that does not route: 0.0 each (same pytree)."""
    return {k: jnp.zeros((), jnp.float32) for k in STAT_KEYS}
