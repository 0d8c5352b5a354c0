"""Causal multi-head self-attention with rotary position embedding."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model.layers import init
from jaxdepth.model.precision import compute_dtype


def rope(x_BTNH: jnp.ndarray, theta: float) -> jnp.ndarray:
    """Rotary position embedding, rotate-half form (Su et al. 2021, arXiv 2104.09864)."""
    _, T, _, H = x_BTNH.shape
    inv_freq_G = 1.0 / theta ** (jnp.arange(0, H, 2, dtype=jnp.float32) / H)
    angle_TG = jnp.arange(T, dtype=jnp.float32)[:, None] * inv_freq_G[None, :]
    sin, cos = jnp.sin(angle_TG)[None, :, None, :], jnp.cos(angle_TG)[None, :, None, :]
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


class Attention(nn.Module):
    """softmax(q k^T / sqrt(H) + causal mask) v over `heads` heads (Vaswani et al. 2017)."""

    cfg: ModelConfig
    out_std: float
    v_std: float

    @nn.compact
    def __call__(self, x_BTW: jnp.ndarray) -> jnp.ndarray:
        cfg = self.cfg
        dtype = compute_dtype(cfg)
        N, H = cfg.heads, cfg.head_dim
        proj = lambda name, std: nn.DenseGeneral(  # noqa: E731
            (N, H), use_bias=False, dtype=dtype, name=name,
            kernel_init=init(std, ("embed", "heads", "kv")))
        q_BTNH = rope(proj("query", cfg.init_std)(x_BTW), cfg.rope_theta)
        k_BTNH = rope(proj("key", cfg.init_std)(x_BTW), cfg.rope_theta)
        v_BTNH = proj("value", self.v_std)(x_BTW)
        o_BTNH = jax.nn.dot_product_attention(q_BTNH, k_BTNH, v_BTNH, is_causal=True)
        return nn.DenseGeneral(
            cfg.width, axis=(-2, -1), use_bias=False, dtype=dtype, name="out",
            kernel_init=init(self.out_std, ("heads", "kv", "embed")))(o_BTNH)
