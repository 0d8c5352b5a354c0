"""Shape arithmetic for sweeps: parameter counts, training FLOPs, compute-matched depth and
steps from a tokens-per-parameter ratio. Pure functions, except `exact_param_counts`, which
traces the model's init abstractly (`jax.eval_shape`: shapes only, no compile, no memory),
and what calls it (`layer_params`; `model_train_flops` of a Mixture-of-Depths model)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

from jaxdepth.errors import UserError


def kaplan_params(depth: int, width: int) -> float:
    """Non-embedding parameter count `N ~= 12 D W^2` (Kaplan et al. 2020, arXiv 2001.08361,
    eq. 2.1: attention 4 W^2 + a 4W FFN 8 W^2 per layer)."""
    return 12.0 * depth * width ** 2


def train_flops(n_params: float, tokens: float, depth: int, seq_len: int, width: int) -> float:
    """Training FLOPs `6 N T` (Kaplan et al. 2020, arXiv 2001.08361, sec. 2.1) plus the
    attention map `6 D S W` per token for a causal model (half of the `12 D S W` of PaLM,
    Chowdhery et al. 2022, arXiv 2204.02311, appendix B); S is the context length."""
    return 6.0 * n_params * tokens + 6.0 * depth * seq_len * width * tokens


def routed_layers(mcfg) -> int:
    """Layers a Mixture-of-Depths model routes (`jaxdepth.model.mod.is_routed`): those with
    (l + 1) % mod_every == 0, D // mod_every of them; 0 at mod_capacity 1."""
    return mcfg.depth // mcfg.mod_every if mcfg.mod_capacity < 1 else 0


def layer_params(mcfg) -> int:
    """Exact parameter count of one plain layer (no MoD router, no DenseFormer weights): the
    non-embedding count is affine in depth without them (`exact_nonembed`, depths 1 and 2)."""
    plain = dataclasses.replace(mcfg, mod_capacity=1.0, dwa=False)
    n1, n2 = (exact_nonembed(dataclasses.replace(plain, depth=k)) for k in (1, 2))
    return n2 - n1


def dwa_terms(mcfg) -> int:
    """Streams DenseFormer's weighted sums add up per token (Pagliardini et al. 2024, arXiv
    2402.02622, eq. 2 and §3.3): after block i (1-based) with i % period == 0, the embedding
    and block outputs j <= i with (i - j) % dilation == 0, 1 + i // dilation of them."""
    if not mcfg.dwa:
        return 0
    return sum(1 + i // mcfg.dwa_dilation for i in range(1, mcfg.depth + 1)
               if i % mcfg.dwa_period == 0)


def model_train_flops(mcfg, n_params: float, tokens: float, seq_len: int) -> float:
    """`train_flops` of the model `mcfg` describes, with what Mixture-of-Depths skips and
    DenseFormer adds; `train_flops(n_params, tokens, depth, seq_len, width)` for a plain
    model. `n_params` as `count_params(non_embedding=True)` counts it: under MoD every layer
    holds a router kernel (W), which the scan stacks but only routed layers run.

    - MoD (Raposo et al. 2024, arXiv 2404.02258 §3.1): each of the R routed layers runs on
      k = int(capacity * S) of each sequence's S tokens, so at the fraction c = k / S its
      parameter FLOPs are c 6 N_layer per token (N_layer: `layer_params`) and its causal
      attention map (k queries over k keys) c^2 6 S W; plus its router, 6 W per token.
    - DWA (arXiv 2402.02622): every weighted sum is one multiply-add (2 FLOPs) per term and
      channel forward, x3 for training (Kaplan et al. 2020, arXiv 2001.08361, sec. 2.1):
      6 W `dwa_terms` per token. (Its L (L + 1) weights, part of `n_params`, are counted at
      6 per token as if they were matmul weights: negligible.)"""
    D, W = mcfg.depth, mcfg.width
    flops = train_flops(n_params, tokens, D, seq_len, W)
    if R := routed_layers(mcfg):
        from jaxdepth.model.mod import capacity_tokens

        c = capacity_tokens(mcfg.mod_capacity, seq_len) / seq_len
        skipped = R * (1 - c) * layer_params(mcfg) + (D - R) * W  # and the idle routers
        flops -= 6.0 * tokens * skipped + 6.0 * tokens * R * (1 - c * c) * seq_len * W
    return flops + 6.0 * W * dwa_terms(mcfg) * tokens


def steps_for_tokens_per_param(ratio: float, n_params: float, batch_size: int,
                               seq_len: int) -> int:
    """Steps that train `ratio * N` tokens (e.g. 20 tokens per parameter, Hoffmann et al.
    2022, arXiv 2203.15556): `round(ratio * N / (batch_size * seq_len))`, at least 1."""
    return max(1, round(ratio * n_params / (batch_size * seq_len)))


def matched_depth(measure: Callable[[int], float], target: float, max_depth: int = 4096) -> int:
    """The integer depth >= 1 whose `measure(depth)` (parameters or FLOPs, increasing in
    depth) is nearest to `target`: the continuous solution rounded to an integer."""
    best, best_err = 1, math.inf
    for d in range(1, max_depth + 1):
        err = abs(measure(d) - target)
        if err < best_err:
            best, best_err = d, err
        if measure(d) > target:  # increasing: every deeper model is further away
            break
    else:
        raise UserError(f"compute_matched: target {target:.3g} needs more than {max_depth} layers")
    return best


@functools.lru_cache(maxsize=256)
def exact_param_counts(mcfg, seq_len: int = 8) -> tuple[int, int]:
    """(non-embedding, total) parameter counts of `Transformer(mcfg)` from `jax.eval_shape`
    of its init; non-embedding drops the embedding/unembedding tables (arXiv 2001.08361).
    `mcfg.vocab_size` must be resolved (> 0) for the total to mean anything."""
    import jax
    import jax.numpy as jnp

    from jaxdepth.model import Transformer, count_params

    if mcfg.vocab_size <= 0:
        mcfg = dataclasses.replace(mcfg, vocab_size=64)
    model = Transformer(mcfg)
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, seq_len), jnp.int32))["params"],
                            jax.random.key(0))
    return count_params(shapes, non_embedding=True), count_params(shapes)


def exact_nonembed(mcfg) -> int:
    """Exact non-embedding count (independent of the vocabulary size)."""
    return exact_param_counts(dataclasses.replace(mcfg, vocab_size=64))[0]
