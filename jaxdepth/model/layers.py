"""Small shared pieces: dtypes, initialisers with logical axis names, norms."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def init(std: float, names: tuple[str, ...]):
    """normal(std) initialiser carrying logical axis names for sharding."""
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def make_norm(cfg, name: str) -> nn.Module:
    """RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) or LayerNorm (Ba et al. 2016)."""
    dtype = DTYPES[cfg.dtype]
    ones = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, scale_init=ones, name=name)
    zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
    return nn.LayerNorm(epsilon=cfg.norm_eps, dtype=dtype, scale_init=ones, bias_init=zeros,
                        name=name)


def rms(x_BTW: jnp.ndarray) -> jnp.ndarray:
    """Root-mean-square over every element, in float32."""
    return jnp.sqrt(jnp.mean(jnp.square(x_BTW.astype(jnp.float32))))
