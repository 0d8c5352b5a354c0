"""Small shared pieces: initialisers with logical axis names, norms, RMS."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model.precision import compute_dtype


def init(std: float, names: tuple[str, ...]):
    """normal(std) initialiser carrying logical axis names for sharding."""
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def make_norm(cfg: ModelConfig, name: str) -> nn.Module:
    """RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) or LayerNorm (Ba et al. 2016,
    arXiv 1607.06450), per `cfg.norm`."""
    dtype = compute_dtype(cfg)
    ones = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, scale_init=ones, name=name)
    zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
    return nn.LayerNorm(epsilon=cfg.norm_eps, dtype=dtype, scale_init=ones, bias_init=zeros,
                        name=name)


def rms(x_BTW: jnp.ndarray) -> jnp.ndarray:
    """Root-mean-square over every element, in float32."""
    return jnp.sqrt(jnp.mean(jnp.square(x_BTW.astype(jnp.float32))))
