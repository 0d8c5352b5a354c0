"""One transformer layer: a residual/normalisation scheme around attention and an FFN."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxdepth.model.attention import Attention
from jaxdepth.model.ffn import FFN
from jaxdepth.model.layers import make_norm, rms
from jaxdepth.model.schemes import get_scheme, is_static


def _mix(w, a, b):
    """w * a + (1 - w) * b, skipping the arithmetic when w is a static 0 or 1."""
    if is_static(w, 1.0):
        return a
    if is_static(w, 0.0):
        return b
    return (w * a + (1.0 - w) * b).astype(a.dtype)


def _scale(s, x):
    """s * x in x's dtype, skipping the multiply when s is a static 1."""
    return x if is_static(s, 1.0) else (s * x).astype(x.dtype)


class Block(nn.Module):
    """`(x, l, keep) -> (x', (stats, hidden))` for layer index `l` (0-based, possibly
    traced). `keep=False` makes the layer the identity (layer-removal diagnostics).
    `stats` are scalars per layer: residual RMS entering and leaving the layer and the
    update ratio ||F(x)|| / ||x|| of each sublayer; `hidden` is x' when
    `return_hidden`, else None."""

    cfg: object
    return_hidden: bool = False

    @nn.compact
    def __call__(self, x_BTW, l, keep):
        cfg = self.cfg
        L = cfg.depth
        c = get_scheme(cfg.scheme).coeffs(l, L, cfg)
        # Output projections: optional std / sqrt(2L) (GPT-2, Radford et al. 2019), times the
        # scheme's init gain (DeepNorm beta, arXiv 2203.00555) on v, out and FFN weights.
        out_std = cfg.init_std * c.init_gain / (math.sqrt(2 * L) if cfg.scaled_init else 1.0)
        gain_std = cfg.init_std * c.init_gain
        sublayers = {
            "attn": Attention(cfg, out_std=out_std, v_std=gain_std, name="attn"),
            "ffn": FFN(cfg, in_std=gain_std, out_std=out_std, name="ffn"),
        }
        stats = {"rms_in": rms(x_BTW)}
        x0_BTW = x_BTW
        if not is_static(c.stream_norm, 0.0):  # a norm on the incoming stream (Peri-LN, l = 0)
            x_BTW = _mix(c.stream_norm, make_norm(cfg, "attn_norm_stream")(x_BTW), x_BTW)
        for name, sublayer in sublayers.items():
            h = x_BTW if is_static(c.pre, 0.0) else make_norm(cfg, f"{name}_norm_in")(x_BTW)
            h = _scale(c.in_scale, _mix(c.pre, h, x_BTW))
            y = sublayer(h)
            if c.out_norm:
                y = make_norm(cfg, f"{name}_norm_out")(y)
            y = _scale(c.branch, y)
            if c.gate:
                shape, names = ((), ()) if c.gate == "scalar" else ((cfg.width,), ("embed",))
                g = self.param(f"{name}_gate", nn.with_logical_partitioning(
                    nn.initializers.constant(c.gate_init), names), shape)
                y = y * g.astype(y.dtype)
            stats[f"{name}_update_ratio"] = rms(y) / (rms(x_BTW) + 1e-30)
            z = y if is_static(c.residual, 0.0) else _scale(c.residual, x_BTW) + y
            zn = z if is_static(c.post, 0.0) else make_norm(cfg, f"{name}_norm_post")(z)
            x_BTW = _mix(c.post, zn, z)
        x_BTW = jnp.where(keep, x_BTW, x0_BTW)
        stats["rms_out"] = rms(x_BTW)
        return x_BTW, (stats, x_BTW if self.return_hidden else None)
