"""Residual/normalisation schemes: one registry entry per scheme.

Every sublayer (attention, FFN) of layer `l` (0-based) in a stack of depth `L` computes

    h = pre * N_in(x) + (1 - pre) * x           normalised or raw input
    y = branch * gate * N_out?(F(in_scale * h))  the update (N_out only for sandwich/peri)
    z = residual * x + y                         the residual add (0: no skip path)
    x' = post * N_post(z) + (1 - post) * z       normalised or raw output

and a scheme is ONE function `coeffs(l, L, cfg) -> Coeffs` giving those numbers (Python
floats where they are static, traced scalars where they depend on the scanned layer
index), plus whether the stack ends with a final norm. The block applies the formula
above and has no per-scheme branches, so a new scheme is one entry in `SCHEMES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

Scalar = Any  # Python float (static) or a traced jnp scalar (depends on the layer index)


@dataclass(frozen=True)
class Coeffs:
    pre: Scalar = 1.0  # weight of the normalised input (1: Pre-LN, 0: raw input)
    in_scale: Scalar = 1.0  # multiplies the sublayer's (normalised) input, e.g. LNS
    out_norm: bool = False  # normalise the sublayer's output (Sandwich/Peri-LN)
    branch: Scalar = 1.0  # multiplies the update, e.g. depth-muP 1/sqrt(L)
    gate: str = ""  # "" | "scalar" | "channel": a learned gate on the update
    gate_init: float = 0.0
    residual: Scalar = 1.0  # multiplies the skip path (0: no residual, alpha: DeepNorm)
    post: Scalar = 0.0  # weight of the normalised sum (1: Post-LN)
    init_gain: float = 1.0  # gain on v, attention-out and FFN init (DeepNorm beta)


@dataclass(frozen=True)
class Scheme:
    coeffs: Callable[..., Coeffs]  # (l, L, cfg) -> Coeffs
    final_norm: bool
    cite: str


def _pre(l, L, cfg):
    """Pre-LN: x + F(N(x)) (Xiong et al. 2020, arXiv 2002.04745)."""
    return Coeffs()


def _post(l, L, cfg):
    """Post-LN: N(x + F(x)) (Vaswani et al. 2017, arXiv 1706.03762)."""
    return Coeffs(pre=0.0, post=1.0)


def _lns(l, L, cfg):
    """LayerNorm Scaling: x + F(N(x) / sqrt(l + 1)), 0-based l, on both sublayers' pre-norm
    outputs; the stream and the final norm are not scaled (Sun et al. 2025, arXiv 2502.05795,
    eq. 7; official code `scale_factor = 1 / math.sqrt(layer_index + 1)`)."""
    return Coeffs(in_scale=1.0 / jnp.sqrt(l + 1.0))


def _none(l, L, cfg):
    """Naive stack: x' = F(x), no residual and no norm (the "rails" tutorial, reference §2)."""
    return Coeffs(pre=0.0, residual=0.0)


SCHEMES: dict[str, Scheme] = {
    "pre": Scheme(_pre, final_norm=True, cite="arXiv 2002.04745"),
    "post": Scheme(_post, final_norm=False, cite="arXiv 1706.03762"),
    "lns": Scheme(_lns, final_norm=True, cite="arXiv 2502.05795"),
    "none": Scheme(_none, final_norm=False, cite="depth-literature §2"),
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(
            f"unknown scheme '{name}'; valid schemes: {', '.join(sorted(SCHEMES))}"
        ) from None


def is_static(c: Scalar, value: float) -> bool:
    """True when `c` is a Python number equal to `value` (so the block can skip work)."""
    return isinstance(c, (int, float)) and math.isclose(c, value)
