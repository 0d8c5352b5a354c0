"""One transformer layer: a residual/normalisation scheme around attention and an FFN."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model import mod
from jaxdepth.model import parameterization as P
from jaxdepth.model.attention import Attention
from jaxdepth.model.ffn import FFN
from jaxdepth.model.layers import Projection, make_norm, rms, shard_batch
from jaxdepth.model.precision import param_dtype, residual_dtype
from jaxdepth.model.schemes import get_scheme, is_static


def _scale(s, x):
    """s * x in x's dtype, skipping the multiply when s is a static 1."""
    return x if is_static(s, 1.0) else (s * x).astype(x.dtype)


def _norm_if(on, norm: nn.Module, x):
    """`norm(x)` where `on` (a traced bool) holds, else x, running the norm only when it
    does (flax.linen.cond); the norm's parameters exist before the branch. Both branches
    return x's dtype (the norm's output is in the compute dtype)."""
    return nn.cond(on, lambda mdl, v: mdl(v).astype(v.dtype), lambda mdl, v: v, norm, x)


class Block(nn.Module):
    """`(x, l, keep) -> (x', (stats, hidden))` for layer index `l` (0-based, possibly
    traced). `keep=False` makes the layer the identity (layer-removal diagnostics); `keep`
    is a scalar or one bool per example, (B,). `stats` are scalars per layer: residual RMS
    entering and leaving the layer and the update ratio ||F(x)|| / ||x|| of each sublayer
    (in a routed layer over the tokens it routes), and with `mod_capacity < 1` the router's
    `mod.STAT_KEYS` (0.0 in a layer that does not route); `hidden` is x' when
    `return_hidden`, else None. The residual stream x is float32 (`precision.RESIDUAL_DTYPE`:
    a bfloat16 stream would round away small updates); sublayers compute in the compute
    dtype, and every parameter (scheme gates too) is stored in `cfg.param_dtype`.

    Mixture-of-Depths (arXiv 2404.02258, `jaxdepth.model.mod`): with `mod_capacity < 1`
    every layer holds a `router` kernel (W, 1) (the scan stacks one per layer), and a
    flax.linen.cond on the traced `l` runs a routed layer (`mod.route`: the layer on the
    top-k tokens, gathered at their original positions) or the plain one; both branches
    create the same sublayers, so the parameter tree is that of the plain model plus the
    router. With `mod_capacity == 1` nothing of this exists: the plain layer, bit for bit."""

    cfg: ModelConfig
    return_hidden: bool = False

    @nn.compact
    def __call__(self, x_BTW, l, keep):
        cfg = self.cfg
        x_BTW = shard_batch(x_BTW.astype(residual_dtype(cfg)))
        stats = {"rms_in": rms(x_BTW)}
        x0_BTW = x_BTW
        if cfg.mod_capacity < 1.0:
            router_W1, _ = Projection((cfg.width, 1), ("embed", None), cfg.init_std, False,
                                      param_dtype(cfg), name="router")()
            if self.is_initializing():  # the plain model's parameters, drawn as it draws them
                run_layer(self, x_BTW, l)
            x_BTW, layer_stats = nn.cond(mod.is_routed(l, cfg), _routed_layer, _unrouted_layer,
                                         self, x_BTW, l, router_W1)
        else:
            x_BTW, layer_stats = run_layer(self, x_BTW, l)
        stats.update(layer_stats)
        keep = jnp.asarray(keep)  # () or (B,): broadcast over the example's tokens
        x_BTW = jnp.where(keep.reshape(keep.shape + (1,) * (x_BTW.ndim - keep.ndim)),
                          x_BTW, x0_BTW)
        stats["rms_out"] = rms(x_BTW)
        return x_BTW, (stats, x_BTW if self.return_hidden else None)


def _routed_layer(mdl: Block, x_BTW, l, router_W1):
    """The layer on the top `mod_capacity` of each sequence's tokens (`mod.route`)."""
    return mod.route(x_BTW, router_W1, mdl.cfg.mod_capacity,
                     lambda xs_BKW, pos_BK: run_layer(mdl, xs_BKW, l, pos_BK))


def _unrouted_layer(mdl: Block, x_BTW, l, router_W1):
    """The plain layer inside a Mixture-of-Depths stack, with the router stats at 0."""
    x_BTW, stats = run_layer(mdl, x_BTW, l)
    return x_BTW, {**stats, **mod.zero_stats()}


def run_layer(mdl: Block, x_BTW, l, positions_BT=None):
    """Both sublayers of layer `l` with their residuals and norms (the scheme's formula,
    `jaxdepth.model.schemes`) on the float32 stream x: `(x', update-ratio stats)`. Creates
    the sublayers in `mdl` (the Block, or its clone inside a flax.linen.cond branch);
    `positions_BT`: the tokens' RoPE positions when they are not 0..T-1 (routed tokens)."""
    cfg = mdl.cfg
    L = cfg.depth
    stream = residual_dtype(cfg)
    c = get_scheme(cfg.scheme).coeffs(l, L, cfg)
    # Hidden weights: std s / sqrt(m_W) under muP (`parameterization.hidden_init_scale`).
    # Output projections: optional std / sqrt(2L) (GPT-2, Radford et al. 2019), times the
    # scheme's init gain (DeepNorm beta, arXiv 2203.00555) on v, out and FFN weights.
    std = cfg.init_std * P.hidden_init_scale(cfg)
    ffn_std = cfg.init_std * P.hidden_init_scale(cfg, ffn_out=True)  # fan-in F, not W
    denom = math.sqrt(2 * L) if cfg.scaled_init else 1.0
    out_std, ffn_out_std = std * c.init_gain / denom, ffn_std * c.init_gain / denom
    gain_std = std * c.init_gain
    # the parameterisation's depth multiplier m_L^-alpha is one more coefficient of the
    # update (CompleteP, arXiv 2505.01618), composed with the scheme's own
    branch = c.branch * P.branch_multiplier(cfg)
    attn = Attention(cfg, out_std=out_std, v_std=gain_std, qk_std=std, name="attn")
    sublayers = {
        "attn": lambda h: attn(h, positions_BT),
        "ffn": FFN(cfg, in_std=gain_std, out_std=ffn_out_std, name="ffn"),
    }
    # Mix-LN: pre and post are traced complements (a layer is Pre-LN or Post-LN), so each
    # sublayer holds ONE norm and runs it at whichever end is active.
    switched = not isinstance(c.pre, bool)
    assert switched != isinstance(c.post, bool), "pre and post are both static or both traced"
    stats = {}
    for name, sublayer in sublayers.items():
        if switched:
            norm = make_norm(cfg, f"{name}_norm", stream)  # post-norm: output is the stream
            if mdl.is_initializing():
                norm(x_BTW)  # create the parameters outside both branches
            h = _norm_if(c.pre, norm, x_BTW)
        else:
            h = make_norm(cfg, f"{name}_norm_in")(x_BTW) if c.pre else x_BTW
        y = sublayer(_scale(c.in_scale, h))
        if c.out_norm:
            y = make_norm(cfg, f"{name}_norm_out")(y)
        y = _scale(branch, y)
        if c.gate:
            shape, names = ((), ()) if c.gate == "scalar" else ((cfg.width,), ("embed",))
            g = mdl.param(f"{name}_gate", nn.with_logical_partitioning(
                nn.initializers.constant(c.gate_init), names), shape, param_dtype(cfg))
            y = y * g.astype(y.dtype).reshape((1,) * (y.ndim - g.ndim) + g.shape)
        stats[f"{name}_update_ratio"] = rms(y) / (rms(x_BTW) + 1e-30)
        z = y if is_static(c.residual, 0.0) else _scale(c.residual, x_BTW) + y
        z = z.astype(stream)  # the add runs in float32 (x is float32, y is promoted)
        if switched:
            x_BTW = _norm_if(c.post, norm, z)
        else:
            x_BTW = make_norm(cfg, f"{name}_norm_post", stream)(z) if c.post else z
    return x_BTW, stats
