"""DenseFormer depth-weighted averaging (DWA; Pagliardini et al. 2024, arXiv 2402.02622).

After block i (1-based) the stream passed on is a learned average of the embedding X_0 and
the block outputs so far, `Y_i = sum_{j=0..i} a_ij X_j` (the paper's eq. 2), with
`a_ii = 1` and every other weight 0 at initialisation, so that at step 0 the model is the
plain one exactly. DenseFormer kxp (the paper's §3.3): with dilation k only the outputs a
multiple of k blocks back take part (`(i - j) % k == 0`), and with period p only every p-th
block has a DWA (`i % p == 0`); elsewhere `Y_i = X_i`.

Here the weights are stored as `a = I + delta`, `delta` (L, L + 1) zero-initialised and
masked to the allowed entries (`dwa_mask`): the identity at init is then exact whatever the
parameter dtype, and weight decay pulls a DWA towards the plain model rather than towards
zero. In the scanned stack the history of block outputs, (L + 1, B, T, W), is scan state
(`Transformer`): its memory is that of L + 1 residual streams, and the backward pass keeps
one history per layer (O(L^2) streams); the unrolled stack (`model.scan_layers=false`)
keeps one copy of each output, O(L) streams.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxdepth.config import ModelConfig


def dwa_mask(cfg: ModelConfig) -> np.ndarray:
    """(L, L + 1) float32: 1 where DWA i + 1 (after 0-based layer i) weights stream j
    (learned weights, a_ii included); 0 elsewhere and on every row without a DWA."""
    L, k, p = cfg.depth, cfg.dwa_dilation, cfg.dwa_period
    i = np.arange(1, L + 1)[:, None]  # the paper's 1-based block index
    j = np.arange(L + 1)[None, :]
    allowed = (j <= i) & ((i - j) % k == 0) & (i % p == 0)
    return allowed.astype(np.float32)


def dwa_weights(delta_LX, cfg: ModelConfig):
    """(L, L + 1) float32 weights `a`: row i averages the streams 0..i+1 after layer i."""
    L = cfg.depth
    eye = np.eye(L, L + 1, k=1, dtype=np.float32)  # a_ii = 1: the block's own output
    return jnp.asarray(eye) + delta_LX.astype(jnp.float32) * jnp.asarray(dwa_mask(cfg))


def dwa_active(cfg: ModelConfig) -> np.ndarray:
    """(L,) bools: layers followed by a DWA (the period's)."""
    return dwa_mask(cfg).any(axis=1)


def average(a_X, hist_XBTW):
    """`sum_j a_j X_j` over the history's leading axis, in the stream's float32."""
    return jnp.einsum("x,xbtw->btw", a_X, hist_XBTW.astype(jnp.float32))
