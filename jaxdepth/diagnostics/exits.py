"""Early exit: how many layers each token needs, read through the logit lens.

CALM (Schuster et al. 2022, "Confident Adaptive Language Modeling", arXiv 2207.07061): a
token exits after the first layer l in 1 .. L whose prediction `softmax(W_U N_final(h_l))`
(the logit lens, `lens.py`) has confidence `c_l >= lambda`, and after layer L if none does
(layer 0, the embeddings, is no exit). Per threshold lambda: the mean exit depth, the
fraction of tokens exiting before layer L, the loss of the exit layer's prediction against
the target ("the loss if it did exit there"; later tokens still attend to the full-depth
states, where CALM copies the exit state up to the skipped layers), the top-1 agreement of
the exit prediction with layer L's (CALM's consistency with the full model) and the
histogram of exit layers. Confidence measures (`confidence`): "top1", the top-1
probability, or "gap", the top-1 minus the top-2 probability (CALM's "softmax response").
Exit layer l (1-based) is the stream leaving layer l - 1 of the 0-based model, the lens's
hidden state l.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdepth.diagnostics.forward import (
    as_batches,
    forward_hidden,
    inputs_targets_mask,
    sum_over_batches,
    unembed,
)

DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.99)
MEASURES = ("top1", "gap")
DEFAULT_MEASURE = "gap"  # CALM's softmax response (arXiv 2207.07061 §3.5)


@dataclass(frozen=True)
class EarlyExits:
    measure: str  # the confidence measure, one of MEASURES
    thresholds: np.ndarray  # (K,) lambda
    mean_depth: np.ndarray  # (K,) mean exit layer, in 1 .. L (layers used per token)
    early_fraction: np.ndarray  # (K,) fraction of tokens exiting before layer L
    exit_loss: np.ndarray  # (K,) cross-entropy of the exit layer's prediction
    full_loss: float  # cross-entropy of layer L, the model's own loss
    agreement: np.ndarray  # (K,) fraction whose exit top-1 matches layer L's
    histogram: np.ndarray  # (K, L) tokens exiting after layer l = 1 .. L
    n_tokens: int

    def to_dict(self) -> dict:
        """JSON-ready: lists; `histogram[k][l - 1]` counts the tokens exiting after layer l."""
        return {"measure": self.measure, "thresholds": self.thresholds.tolist(),
                "mean_depth": self.mean_depth.tolist(),
                "early_fraction": self.early_fraction.tolist(),
                "exit_loss": self.exit_loss.tolist(), "full_loss": self.full_loss,
                "agreement": self.agreement.tolist(), "histogram": self.histogram.tolist(),
                "n_tokens": self.n_tokens}


def check_thresholds(thresholds) -> np.ndarray:
    """(K,) float64 thresholds, K >= 1 and every one finite; ValueError otherwise."""
    t = np.asarray(thresholds, np.float64).reshape(-1)
    if t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"expected one or more finite exit thresholds, got {thresholds!r}")
    return t


def confidence(logits_BTV, measure: str = DEFAULT_MEASURE):
    """(B, T) confidence of each prediction p = softmax(logits): "top1" p_(1), the maximum
    softmax probability (Hendrycks & Gimpel 2017, arXiv 1610.02136); "gap" p_(1) - p_(2),
    CALM's softmax response (Schuster et al. 2022, arXiv 2207.07061)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown confidence measure {measure!r}; expected one of {MEASURES}")
    p_BT2 = jnp.exp(jax.lax.top_k(jax.nn.log_softmax(logits_BTV), 2)[0])
    return p_BT2[..., 0] if measure == "top1" else p_BT2[..., 0] - p_BT2[..., 1]


def exit_sums(layer_logits, xs_L, targets_BT, mask_BT, thresholds_K,
              measure: str = DEFAULT_MEASURE) -> dict:
    """Per-threshold sums over the counted tokens (`mask_BT` 1) of one batch. `layer_logits(
    xs_L[l - 1])` are the (B, T, V) logits after layer l = 1 .. L, taken one layer at a time
    (`lax.map`: one (B, T, V) in memory). Exit layer `e = min{l : c_l >= lambda}`, L if
    none (CALM, arXiv 2207.07061). Returns `hist` (K, L) int32 token counts per exit layer,
    `ce` (K,) summed cross-entropy at the exit, `agree` (K,) tokens whose exit argmax is
    layer L's, `full_ce` layer L's summed cross-entropy, `n_tok` int32."""

    def layer(x):
        logits_BTV = layer_logits(x)
        ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
        return confidence(logits_BTV, measure), ce_BT, jnp.argmax(logits_BTV, axis=-1)

    conf_LBT, ce_LBT, top_LBT = jax.lax.map(layer, xs_L)
    L = conf_LBT.shape[0]
    thr_K = jnp.asarray(thresholds_K, jnp.float32)
    ok_KLBT = conf_LBT[None] >= thr_K[:, None, None, None]
    ok_KLBT = ok_KLBT.at[:, L - 1].set(True)  # layer L always exits
    exit_KBT = jnp.argmax(ok_KLBT, axis=1)  # the first exit, 0-based
    ce_KBT = jnp.take_along_axis(ce_LBT[None], exit_KBT[:, None], axis=1)[:, 0]
    top_KBT = jnp.take_along_axis(top_LBT[None], exit_KBT[:, None], axis=1)[:, 0]
    agree_KBT = (top_KBT == top_LBT[L - 1][None]).astype(jnp.float32)
    count_BT = (mask_BT > 0).astype(jnp.int32)
    hist_KL = jnp.sum(jax.nn.one_hot(exit_KBT, L, dtype=jnp.int32) * count_BT[None, ..., None],
                      axis=(1, 2))
    return dict(hist=hist_KL, ce=jnp.sum(ce_KBT * mask_BT[None], axis=(1, 2)),
                agree=jnp.sum(agree_KBT * mask_BT[None], axis=(1, 2)),
                full_ce=jnp.sum(ce_LBT[L - 1] * mask_BT), n_tok=jnp.sum(count_BT))


def _summarize(sums: dict, thresholds, measure: str) -> EarlyExits:
    """Token-weighted means of `exit_sums` (summed over any number of batches)."""
    s = jax.device_get(sums)
    n = int(s["n_tok"])
    hist = np.asarray(s["hist"], np.int64)
    L = hist.shape[1]
    per_tok = lambda x: np.asarray(x, np.float64) / max(n, 1)  # noqa: E731
    return EarlyExits(measure=measure, thresholds=check_thresholds(thresholds),
                      mean_depth=per_tok(hist @ np.arange(1, L + 1)),
                      early_fraction=per_tok(hist[:, :L - 1].sum(axis=1)),
                      exit_loss=per_tok(s["ce"]), full_loss=float(per_tok(s["full_ce"])),
                      agreement=per_tok(s["agree"]), histogram=hist, n_tokens=n)


@functools.partial(jax.jit, static_argnames=("measure",))
def _logits_exit_sums(logits_LBTV, targets_BT, mask_BT, thresholds_K, measure: str):
    return exit_sums(lambda x: x, logits_LBTV, targets_BT, mask_BT, thresholds_K, measure)


def exits_of_logits(logits_XBTV, targets_BT, mask_BT, thresholds=DEFAULT_THRESHOLDS,
                    measure: str = DEFAULT_MEASURE) -> EarlyExits:
    """`EarlyExits` of lens logits at every hidden state (X = L + 1, index 0 the embeddings,
    which is no exit, as `lens.lens_logits`), targets and a 0/1 mask of counted targets."""
    return _summarize(_logits_exit_sums(jnp.asarray(logits_XBTV)[1:], targets_BT, mask_BT,
                                        check_thresholds(thresholds), measure),
                      thresholds, measure)


@functools.partial(jax.jit, static_argnames=("mcfg", "pad_id", "measure"))
def _exit_sums(params, mcfg, batches_CBS, thresholds_K, pad_id: int, measure: str):
    def per_batch(tokens_BS):
        inputs_BT, targets_BT, mask_BT = inputs_targets_mask(tokens_BS, pad_id)
        _, h_XBTW = forward_hidden(params, mcfg, inputs_BT)
        return exit_sums(lambda h: unembed(params, mcfg, h), h_XBTW[1:], targets_BT, mask_BT,
                         thresholds_K, measure)

    return sum_over_batches(per_batch, batches_CBS)


def early_exits(params, mcfg, tokens, pad_id: int, thresholds=DEFAULT_THRESHOLDS,
                measure: str = DEFAULT_MEASURE) -> EarlyExits:
    """Early exit by lens confidence at each threshold, token-weighted over the non-pad
    targets of one batch (B, S) or a stack (C, B, S); one compile per number of thresholds."""
    thr = check_thresholds(thresholds)
    sums = _exit_sums(params, mcfg, as_batches(tokens), thr, pad_id, measure)
    return _summarize(sums, thr, measure)
