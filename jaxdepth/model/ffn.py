"""Feed-forward sublayers: SwiGLU and GELU."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model.layers import Projection, fused_projections, init, zeros
from jaxdepth.model.precision import compute_dtype, param_dtype


@jax.custom_jvp
def swiglu(gate, up):
    """silu(gate) * up, the SwiGLU gate (Shazeer 2020, arXiv 2002.05202), with its tangent
    written out (`_swiglu_jvp`)."""
    return nn.silu(gate) * up


@swiglu.defjvp
def _swiglu_jvp(primals, tangents):
    """d(silu(g) u) = dg u s (1 + g (1 - s)) + du silu(g), s = sigmoid(g), in float32: the
    backward pass (JAX transposes this) is two multiplies by what the forward pass kept,
    instead of autodiff's chain through sigmoid; forward mode works too (a custom_vjp would
    not allow the signal diagnostics' `jax.jvp`)."""
    (gate, up), (d_gate, d_up) = primals, tangents
    g, u = gate.astype(jnp.float32), up.astype(jnp.float32)
    s = jax.nn.sigmoid(g)
    silu = g * s
    out = (silu * u).astype(jnp.result_type(gate, up))
    dsilu_u = (u * s * (1.0 + g * (1.0 - s))).astype(d_gate.dtype)
    return out, d_gate * dsilu_u + d_up * silu.astype(d_up.dtype)


class FFN(nn.Module):
    """SwiGLU `(silu(x W_gate) * (x W_up)) W_down` (Shazeer 2020, arXiv 2002.05202) or
    GELU `gelu(x W_up + b) W_down + b` (Hendrycks & Gimpel 2016, arXiv 1606.08415; its tanh
    approximation, GPT-2's `gelu_new`), biases where `cfg.proj_bias` (GPT-2), hidden size
    `cfg.ffn_hidden_size`; weights stored in `cfg.param_dtype`, matmuls and activations in
    the compute dtype. SwiGLU's gate and up projections are separate parameters computed as
    one matmul (`layers.fused_projections`)."""

    cfg: ModelConfig
    in_std: float
    out_std: float

    @nn.compact
    def __call__(self, x_BTW: jnp.ndarray) -> jnp.ndarray:
        cfg = self.cfg
        dtype, pdtype = compute_dtype(cfg), param_dtype(cfg)
        W, F = x_BTW.shape[-1], cfg.ffn_hidden_size
        into = lambda name: Projection(  # noqa: E731
            (W, F), ("embed", "mlp"), self.in_std, cfg.proj_bias, pdtype, name=name)()
        if cfg.ffn == "swiglu":
            gate_BTF, up_BTF = fused_projections(x_BTW, [into("gate"), into("up")], dtype,
                                                  "mlp")
            h_BTF = swiglu(gate_BTF, up_BTF)
        else:
            (up_BTF,) = fused_projections(x_BTW, [into("up")], dtype, "mlp")
            h_BTF = nn.gelu(up_BTF)
        return nn.Dense(cfg.width, use_bias=cfg.proj_bias, dtype=dtype, param_dtype=pdtype,
                        name="down", kernel_init=init(self.out_std, ("mlp", "embed")),
                        bias_init=zeros(("embed",)))(h_BTF)
