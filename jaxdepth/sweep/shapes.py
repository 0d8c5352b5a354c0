"""Shape arithmetic for sweeps: parameter counts, training FLOPs, compute-matched depth and
steps from a tokens-per-parameter ratio. Pure functions, except `exact_param_counts`, which
traces the model's init abstractly (`jax.eval_shape`: shapes only, no compile, no memory)."""

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
