"""Residual/normalisation schemes: one registry entry per scheme.

Every layer `l` (0-based) in a stack of depth `L` runs each sublayer F (attention, FFN) as

    h = N_in(x) if pre else x                    normalised or raw input
    y = branch * gate * N_out?(F(in_scale * h))  the update (N_out only for sandwich/peri)
    z = residual * x + y                         the residual add (0: no skip path)
    x' = N_post(z) if post else z                normalised or raw output

and a scheme is ONE function `coeffs(l, L, cfg) -> Coeffs` giving those numbers (Python
values where they are static, traced scalars where they depend on the scanned layer
index), plus whether the stack normalises the embeddings before layer 0 (Peri-LN) and
whether it ends with a final norm. The block applies the formula above and has no
per-scheme branches, so a new scheme is one entry in `SCHEMES`. Every layer holds only the
parameters it uses: when `pre` and `post` depend on l (Mix-LN: a layer is Pre-LN or
Post-LN), each sublayer holds one norm and runs it at the active end only.

LNS composes with the Pre-LN family: `lns+<scheme>` (see `with_lns`) multiplies the
normalised sublayer input of `<scheme>` by 1/sqrt(l + 1); `lns` itself is `lns+pre`.

Final norm, per scheme: a stack whose last operation leaves the stream unnormalised
(Pre-LN family, ``no_residual``, ``mix``'s Pre-LN tail) gets one before the unembedding;
stacks that already end in a norm (``post``, ``deepnorm``) do not need it; stacks defined
by having no norm at all (``none``, ``no_norm``, ``rezero``) do not get one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import jax.numpy as jnp

Scalar = Any  # Python float (static) or a traced jnp scalar (depends on the layer index)


@dataclass(frozen=True)
class Coeffs:
    pre: Scalar = True  # normalise the sublayer input (Pre-LN); traced bool: Mix-LN
    in_scale: Scalar = 1.0  # multiplies the sublayer's (normalised) input, e.g. LNS
    out_norm: bool = False  # normalise the sublayer's output (Sandwich/Peri-LN)
    branch: Scalar = 1.0  # multiplies the update, e.g. depth-muP 1/sqrt(L)
    gate: str = ""  # "" | "scalar" | "channel": a learned gate on the update
    gate_init: float = 0.0
    residual: Scalar = 1.0  # multiplies the skip path (0: no residual, alpha: DeepNorm)
    post: Scalar = False  # normalise the residual sum (Post-LN); traced: `not pre` (Mix-LN)
    init_gain: float = 1.0  # gain on v, attention-out and FFN init (DeepNorm beta)


@dataclass(frozen=True)
class Scheme:
    coeffs: Callable[..., Coeffs]  # (l, L, cfg) -> Coeffs
    final_norm: bool
    cite: str
    embed_norm: bool = False  # normalise the embeddings before layer 0 (Peri-LN)


def _pre(l, L, cfg):
    """Pre-LN: x + F(N(x)) (Xiong et al. 2020, arXiv 2002.04745)."""
    return Coeffs()


def _post(l, L, cfg):
    """Post-LN: N(x + F(x)) (Vaswani et al. 2017, arXiv 1706.03762)."""
    return Coeffs(pre=False, post=True)


def _none(l, L, cfg):
    """Naive stack: x' = F(x), no residual and no norm (the "rails" tutorial,
    docs/literature.md §2)."""
    return Coeffs(pre=False, residual=0.0)


def _deepnorm(l, L, cfg):
    """DeepNorm: Post-LN with x' = N(alpha x + F(x)), decoder-only alpha = (2L)^(1/4), and
    value, attention-output and FFN weights initialised with gain beta = (8L)^(-1/4)
    (q, k keep gain 1) (Wang et al. 2022, DeepNet, arXiv 2203.00555, Table 1 / Fig. 2;
    microsoft/torchscale decoder). L counts layers (each with two sublayers)."""
    return Coeffs(pre=False, post=True, residual=(2.0 * L) ** 0.25,
                  init_gain=(8.0 * L) ** -0.25)


def mix_is_pre(l, L, cfg):
    """True for the Pre-LN layers of Mix-LN (l >= floor(mix_fraction * L)), traced in l."""
    return jnp.asarray(l) >= math.floor(cfg.mix_fraction * L)


def _mix(l, L, cfg):
    """Mix-LN: Post-LN in the first floor(mix_fraction * L) layers (default 0.25), Pre-LN
    after (Li et al. 2024, arXiv 2412.13795). `pre` and `post = not pre` are traced bools of l."""
    pre = mix_is_pre(l, L, cfg)
    return Coeffs(pre=pre, post=jnp.logical_not(pre))


def _sandwich(l, L, cfg):
    """Sandwich-LN: x + N(F(N(x))) (Ding et al. 2021, CogView, arXiv 2105.13290, §2.4).
    The embedding output enters layer 0 unnormalised (the difference from `peri`)."""
    return Coeffs(out_norm=True)


def _peri(l, L, cfg):
    """Peri-LN: x + N(F(N(x))) and, in addition, the embedding output is normalised before
    the first layer, y_0 = N(x_embed) (Kim et al. 2025, arXiv 2502.02732, §3; the embedding
    norm is the paper's optional extra and the only difference from `sandwich` here): the
    scheme's `embed_norm`, one norm outside the scanned layers."""
    return Coeffs(out_norm=True)


def _rezero(l, L, cfg):
    """ReZero: x + a_l F(x), a learned scalar a_l initialised to 0, no normalisation, so
    every layer is exactly the identity at init (Bachlechner et al. 2020, arXiv 2003.04887)."""
    return Coeffs(pre=False, gate="scalar", gate_init=0.0)


def _layerscale(l, L, cfg):
    """LayerScale: x + diag(a_l) F(N(x)), a per-channel gate initialised to the small
    `cfg.layerscale_init` (Touvron et al. 2021, CaiT, arXiv 2103.17239, eq. 2)."""
    return Coeffs(gate="channel", gate_init=cfg.layerscale_init)


def _depth_mup(l, L, cfg):
    """Depth-muP: x + F(N(x)) / sqrt(L), the residual branch scaled by total depth
    (Yang et al. 2023, Tensor Programs VI, arXiv 2310.02244; Bordelon et al. 2023,
    arXiv 2309.16620)."""
    return Coeffs(branch=1.0 / math.sqrt(L))


def _no_residual(l, L, cfg):
    """Ablation, normalisation rail only: x' = F(N(x)), no skip path (docs/literature.md §2)."""
    return Coeffs(residual=0.0)


def _no_norm(l, L, cfg):
    """Ablation, residual rail only: x' = x + F(x), no norm anywhere (docs/literature.md §2)."""
    return Coeffs(pre=False)


def lns_factor(l):
    """LayerNorm Scaling factor 1/sqrt(l + 1) for 0-based l (Sun et al. 2025, arXiv
    2502.05795, eq. 7; official code `scale_factor = 1 / math.sqrt(layer_index + 1)`)."""
    return 1.0 / jnp.sqrt(jnp.asarray(l, jnp.float32) + 1.0)


def with_lns(base: Scheme, cite: str = "") -> Scheme:
    """`base` with LayerNorm Scaling: the normalised sublayer input N(x) of layer l is
    multiplied by 1/sqrt(l + 1), on both sublayers; the stream and the final norm are not
    scaled and no parameter is added (Sun et al. 2025, arXiv 2502.05795, eq. 7). Only a
    normalised input is scaled, so in Mix-LN's Post-LN layers (pre False) the factor is 1."""

    def coeffs(l, L, cfg):
        c = base.coeffs(l, L, cfg)
        f = lns_factor(l)
        scale = f if c.pre is True else jnp.where(c.pre, f, 1.0)
        return dataclasses.replace(c, in_scale=c.in_scale * scale)

    return Scheme(coeffs, final_norm=base.final_norm, embed_norm=base.embed_norm,
                  cite=cite or f"arXiv 2502.05795 + {base.cite}")


SCHEMES: dict[str, Scheme] = {
    # final norm: the stream leaves the last layer unnormalised
    "pre": Scheme(_pre, final_norm=True, cite="arXiv 2002.04745"),
    # no final norm: every sublayer already ends with N
    "post": Scheme(_post, final_norm=False, cite="arXiv 1706.03762"),
    # no final norm: the naive stack has no normalisation by definition
    "none": Scheme(_none, final_norm=False, cite="docs/literature.md §2"),
    "deepnorm": Scheme(_deepnorm, final_norm=False, cite="arXiv 2203.00555"),
    # final norm: the last layers are Pre-LN (unless mix_fraction = 1, where it is harmless)
    "mix": Scheme(_mix, final_norm=True, cite="arXiv 2412.13795"),
    # final norm: x + N(F(.)) is a sum of normalised terms, its scale still grows with l
    "sandwich": Scheme(_sandwich, final_norm=True, cite="arXiv 2105.13290"),
    "peri": Scheme(_peri, final_norm=True, cite="arXiv 2502.02732", embed_norm=True),
    # no final norm: ReZero removes normalisation; the stream is the embedding at init
    "rezero": Scheme(_rezero, final_norm=False, cite="arXiv 2003.04887"),
    "layerscale": Scheme(_layerscale, final_norm=True, cite="arXiv 2103.17239"),
    "depth_mup": Scheme(_depth_mup, final_norm=True, cite="arXiv 2310.02244"),
    # final norm: the stream is a raw FFN output
    "no_residual": Scheme(_no_residual, final_norm=True, cite="docs/literature.md §2"),
    # no final norm: the point of the ablation is that nothing is normalised
    "no_norm": Scheme(_no_norm, final_norm=False, cite="docs/literature.md §2"),
}
SCHEMES["lns"] = with_lns(SCHEMES["pre"], cite="arXiv 2502.05795")

# LNS counters the growth of the residual stream that a pre-norm reads, so it is composed
# only with schemes that have a pre-norm on a growing stream (the Pre-LN family). Not with
# post/deepnorm (no pre-norm), none/no_norm/rezero (no norm), no_residual (no growing stream).
LNS_BASES = ("sandwich", "peri", "layerscale", "depth_mup", "mix")
SCHEMES.update({f"lns+{name}": with_lns(SCHEMES[name]) for name in LNS_BASES})


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
