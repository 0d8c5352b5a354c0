"""Feed-forward sublayers: SwiGLU and GELU."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model.layers import init, zeros
from jaxdepth.model.precision import compute_dtype, param_dtype


class FFN(nn.Module):
    """SwiGLU `(silu(x W_gate) * (x W_up)) W_down` (Shazeer 2020, arXiv 2002.05202) or
    GELU `gelu(x W_up + b) W_down + b` (Hendrycks & Gimpel 2016, arXiv 1606.08415; its tanh
    approximation, GPT-2's `gelu_new`), biases where `cfg.proj_bias` (GPT-2), hidden size
    `cfg.ffn_hidden_size`; weights stored in `cfg.param_dtype`, matmuls and activations in the compute dtype."""

    cfg: ModelConfig
    in_std: float
    out_std: float

    @nn.compact
    def __call__(self, x_BTW: jnp.ndarray) -> jnp.ndarray:
        cfg = self.cfg
        dtype, pdtype = compute_dtype(cfg), param_dtype(cfg)
        dense = lambda feats, name, std, names: nn.Dense(  # noqa: E731
            feats, use_bias=cfg.proj_bias, dtype=dtype, param_dtype=pdtype, name=name,
            kernel_init=init(std, names), bias_init=zeros(names[1:]))
        F = cfg.ffn_hidden_size
        up_BTF = dense(F, "up", self.in_std, ("embed", "mlp"))(x_BTW)
        if cfg.ffn == "swiglu":
            gate_BTF = dense(F, "gate", self.in_std, ("embed", "mlp"))(x_BTW)
            h_BTF = nn.silu(gate_BTF) * up_BTF
        else:
            h_BTF = nn.gelu(up_BTF)
        return dense(cfg.width, "down", self.out_std, ("mlp", "embed"))(h_BTF)
