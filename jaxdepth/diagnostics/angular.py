"""Angular distance between the residual streams of layers l and l + n.

`d(x, y) = arccos(cos(x, y)) / pi` in [0, 1] (Gromov et al. 2024, "The unreasonable
ineffectiveness of the deeper layers", arXiv 2403.17887; ShortGPT's Block Influence,
Men et al. 2024, arXiv 2403.03853, is 1 - cos of the same pair; LNS, Sun et al. 2025,
arXiv 2502.05795, plots it on the last token). Two conventions are reported: the
last (non-pad) token of each sequence, as those papers do, and the mean over every
non-pad token. ShortGPT's Block Influence (1 - mean cos of consecutive states over every
non-pad token) comes out of the same pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.diagnostics.forward import (
    as_batches,
    forward_hidden,
    inputs_targets_mask,
    sum_over_batches,
)


def angular_distance(x, y, axis: int = -1):
    """`arccos(cos(x, y)) / pi` along `axis` (arXiv 2403.17887), computed as
    `2 atan2(|u - v|, |u + v|) / pi` on the unit vectors u, v (Kahan's form: the same angle,
    but exact at 0 and 1 where arccos loses half the digits). A zero vector counts as
    orthogonal to everything (distance 0.5)."""
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    unit = lambda a: a / jnp.maximum(jnp.linalg.norm(a, axis=axis, keepdims=True), 1e-30)  # noqa: E731
    u, v = unit(x), unit(y)
    return 2.0 * jnp.arctan2(jnp.linalg.norm(u - v, axis=axis),
                             jnp.linalg.norm(u + v, axis=axis)) / jnp.pi


def one_minus_cos(x, y, axis: int = -1):
    """`1 - cos(x, y)` along `axis`, the per-token term of ShortGPT's Block Influence
    (Men et al. 2024, arXiv 2403.03853), as `2 sin^2(pi d / 2)` with d =
    `angular_distance(x, y)` (the half-angle identity 1 - cos t = 2 sin^2(t / 2)): no
    cancellation when cos is near 1, and a zero vector is orthogonal (1) as in
    `angular_distance`."""
    return 2.0 * jnp.square(jnp.sin(0.5 * jnp.pi * angular_distance(x, y, axis)))


def last_token_index(mask_BT):
    """Index of the last counted (non-pad) position of each row, and whether the row has one."""
    T = mask_BT.shape[1]
    has_B = jnp.any(mask_BT > 0, axis=1)
    return T - 1 - jnp.argmax(mask_BT[:, ::-1] > 0, axis=1), has_B


@dataclass(frozen=True)
class AngularDistances:
    """`[i, j]` = mean angular distance between hidden states i and j; index 0 is the stream
    entering layer 0 (embeddings), index l + 1 the stream leaving layer l. Shape (X, X)."""

    last_token: np.ndarray
    all_tokens: np.ndarray
    n_sequences: int  # rows with at least one counted token
    n_tokens: int  # counted (non-pad) tokens
    # (L,) ShortGPT's Block Influence of each layer, 1 - E[cos(h_l, h_{l+1})] over every
    # counted token (arXiv 2403.03853): the mean of the cosine, not the cosine of the mean angle
    block_influence: np.ndarray | None = None


def pairwise_sums(h_XQW, weight_Q):
    """(X, Q, W) states of Q tokens -> (X, X): `[i, j] = sum_q weight_q d(h_iq, h_jq)`. One
    row i at a time (lax.map), each reduced over tokens before the next, so beyond the input
    the memory is one row's (X, Q) distances, never the (X, X, Q) of every pair and token."""
    return jax.lax.map(
        lambda h_QW: jnp.sum(angular_distance(h_QW[None], h_XQW) * weight_Q[None], axis=-1), h_XQW)


def consecutive_one_minus_cos_sums(h_XQW, weight_Q):
    """(X, Q, W) -> (X - 1,): `[l] = sum_q weight_q (1 - cos(h_lq, h_{l+1,q}))`, the numerator
    of ShortGPT's Block Influence (arXiv 2403.03853); one layer at a time (lax.map), like
    `pairwise_sums`."""
    return jax.lax.map(
        lambda l: jnp.sum(one_minus_cos(h_XQW[l], h_XQW[l + 1]) * weight_Q),
        jnp.arange(h_XQW.shape[0] - 1))


@functools.partial(jax.jit, static_argnames=("mcfg", "pad_id"))
def _angular_sums(params, mcfg, batches_CBS, pad_id: int):
    def per_batch(tokens_BS):
        inputs_BT, _, mask_BT = inputs_targets_mask(tokens_BS, pad_id)
        _, h_XBTW = forward_hidden(params, mcfg, inputs_BT)
        X, B, T, W = h_XBTW.shape
        last_B, has_B = last_token_index(mask_BT)
        h_last_XBW = h_XBTW[:, jnp.arange(B), last_B]
        h_XQW, mask_Q = h_XBTW.reshape(X, B * T, W), mask_BT.reshape(B * T)
        return dict(
            last=pairwise_sums(h_last_XBW, has_B.astype(jnp.float32)),
            all=pairwise_sums(h_XQW, mask_Q),
            bi=consecutive_one_minus_cos_sums(h_XQW, mask_Q),
            n_seq=jnp.sum(has_B).astype(jnp.float32),
            n_tok=jnp.sum(mask_BT))

    return sum_over_batches(per_batch, batches_CBS)


def angular_distances(params, mcfg, tokens, pad_id: int) -> AngularDistances:
    """Angular distance between every pair of hidden states, over one batch (B, S) or a
    stack (C, B, S) of token windows; positions whose target is `pad_id` never count, and
    "last token" is the last counted position of each row."""
    s = jax.device_get(_angular_sums(params, mcfg, as_batches(tokens), pad_id))
    n_seq, n_tok = int(s["n_seq"]), int(s["n_tok"])
    return AngularDistances(last_token=np.asarray(s["last"]) / max(n_seq, 1),
                            all_tokens=np.asarray(s["all"]) / max(n_tok, 1),
                            n_sequences=n_seq, n_tokens=n_tok,
                            block_influence=np.asarray(s["bi"], np.float64) / max(n_tok, 1))


def consecutive(d_XX: np.ndarray) -> np.ndarray:
    """(L,) distance between the stream entering and leaving each layer: d(h_l, h_{l+1})."""
    return np.diagonal(np.asarray(d_XX), offset=1).copy()


def by_block_size(d_XX: np.ndarray) -> np.ndarray:
    """(L, L) grid `[n - 1, l] = d(h_l, h_{l+n})` for block size n = 1..L and first layer l,
    NaN where l + n > L: the layout of Gromov et al. (arXiv 2403.17887) heatmaps."""
    d_XX = np.asarray(d_XX)
    L = d_XX.shape[0] - 1
    out = np.full((L, L), np.nan)
    for n in range(1, L + 1):
        out[n - 1, :L + 1 - n] = np.diagonal(d_XX, offset=n)
    return out
