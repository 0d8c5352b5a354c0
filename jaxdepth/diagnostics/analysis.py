"""Every per-layer measurement of one trained model in one JSON-ready dict, the effective-depth
summary and the comparison row. Pure: params and arrays in, numbers out (no files)."""

from __future__ import annotations

import math

import numpy as np

from jaxdepth.diagnostics.angular import angular_distances, by_block_size, consecutive
from jaxdepth.diagnostics.exits import DEFAULT_MEASURE, DEFAULT_THRESHOLDS, early_exits
from jaxdepth.diagnostics.grad_persistence import (
    fit_grad_persistence,
    layer_grad_norms,
    record_at,
    tau_over_training,
)
from jaxdepth.diagnostics.lens import lens_top_tokens, logit_lens
from jaxdepth.diagnostics.pruning import layer_pruning
from jaxdepth.diagnostics.removal import layer_removal

REMOVAL_THRESHOLD = 0.01  # nats: removing the layer raises perplexity by less than ~1%
LENS_TOLERANCE = 0.10  # "within 10% of the final loss"
ANALYSIS_STAGES = 5


def last_third(depth: int) -> slice:
    """Layers l >= floor(2 L / 3) (0-based): the deep end where identity collapse shows."""
    return slice((2 * depth) // 3, depth)


def effective_depth(delta_L, lens_loss_X, threshold: float = REMOVAL_THRESHOLD,
                    tolerance: float = LENS_TOLERANCE) -> dict:
    """Two readings of how many layers do work (the question of arXiv 2502.05795 and
    arXiv 2403.17887): `removable` layers, whose removal costs less than `threshold` nats
    (a removal-cost notion, not the update-ratio `low_update_layers` of the results table);
    and the first hidden state whose logit-lens loss is within `tolerance`
    (relative) of the final loss (index 0 = embeddings, l + 1 = after layer l)."""
    delta_L = np.asarray(delta_L, np.float64)
    lens_loss_X = np.asarray(lens_loss_X, np.float64)
    removable = delta_L < threshold
    final = lens_loss_X[-1]
    within = np.nonzero(lens_loss_X <= final * (1.0 + tolerance))[0]
    return {
        "removal_threshold": threshold,
        "removable_layers": [int(i) for i in np.nonzero(removable)[0]],
        "n_removable": int(removable.sum()),
        "fraction_removable": float(removable.mean()),
        "lens_tolerance": tolerance,
        "first_lens_within_tolerance": int(within[0]),  # the final state always qualifies
    }


def analyze(params, mcfg, tokens, pad_id: int, *, records=(), step: int | None = None,
            prompt_ids=None, decode=None, top_k: int = 5,
            threshold: float = REMOVAL_THRESHOLD, exit_thresholds=DEFAULT_THRESHOLDS,
            exit_measure: str = DEFAULT_MEASURE, progress=None) -> dict:
    """All diagnostics of `params` on held-out `tokens` (C, B, S); `records` are the run's
    metrics.jsonl lines (gradient norms), `step` the checkpoint step; `prompt_ids` and
    `decode` give the per-layer top tokens of a prompt; `exit_thresholds` and `exit_measure`
    the early exits (`exits.early_exits`); `progress(stage)` is called after each
    measurement (ANALYSIS_STAGES of them)."""
    tick = progress or (lambda stage: None)
    L = mcfg.depth
    ang = angular_distances(params, mcfg, tokens, pad_id)
    tick("angular distance")
    rem = layer_removal(params, mcfg, tokens, pad_id)
    tick("layer removal")
    prune = layer_pruning(params, mcfg, tokens, pad_id, ang.last_token, ang.block_influence)
    tick("layer pruning")
    lens = logit_lens(params, mcfg, tokens, pad_id)
    tick("logit lens")
    exits = early_exits(params, mcfg, tokens, pad_id, exit_thresholds, exit_measure)
    tick("early exits")
    out = {
        "depth": L, "scheme": mcfg.scheme, "width": mcfg.width, "step": step,
        "n_sequences": ang.n_sequences, "n_tokens": ang.n_tokens,
        "angular_distance": {
            "last_token": ang.last_token.tolist(), "all_tokens": ang.all_tokens.tolist(),
            "consecutive_last_token": consecutive(ang.last_token).tolist(),
            "consecutive_all_tokens": consecutive(ang.all_tokens).tolist(),
            "by_block_size_last_token": by_block_size(ang.last_token).tolist(),
        },
        "layer_removal": {"base_loss": rem.base_loss, "loss": rem.loss.tolist(),
                          "delta": rem.delta.tolist()},
        "logit_lens": {"loss": lens.loss.tolist(), "kl": lens.kl.tolist(),
                       "top1_agreement": lens.top1_agreement.tolist()},
        "effective_depth": effective_depth(rem.delta, lens.loss, threshold),
        "pruning": prune.to_dict(),
        "exits": exits.to_dict(),
    }
    if records:
        rec = record_at(list(records), step)
        norms = layer_grad_norms(rec)
        out["grad_persistence"] = {
            "step": rec["step"],
            "grad_norm": {k: v.tolist() for k, v in norms.items()},
            "fit": {k: fit_grad_persistence(v).to_dict() for k, v in norms.items()},
            "over_training": tau_over_training(records),
        }
    if prompt_ids is not None:
        ids, probs = lens_top_tokens(params, mcfg, prompt_ids, top_k)
        out["prompt_top_tokens"] = [
            [{"id": int(i), "token": decode([int(i)]) if decode else str(int(i)), "p": float(p)}
             for i, p in zip(ids_k, p_k)] for ids_k, p_k in zip(ids, probs)]
    return out


def comparison_row(a: dict) -> dict:
    """The numbers that tell Pre-LN from LNS (arXiv 2502.05795): mean consecutive last-token
    angular distance over the last third of layers, removable layer count, tau."""
    cons = np.asarray(a["angular_distance"]["consecutive_last_token"])
    fit = a.get("grad_persistence", {}).get("fit", {}).get("layer", {})
    return {
        "scheme": a["scheme"], "depth": a["depth"], "step": a["step"],
        "val_loss": a["layer_removal"]["base_loss"],
        "mean_consecutive_angular_last_third": float(cons[last_third(a["depth"])].mean()),
        "n_removable": a["effective_depth"]["n_removable"],
        "tau": fit.get("tau", math.nan), "tau_stderr": fit.get("tau_stderr", math.nan),
        "tau_r2": fit.get("r2", math.nan), "tau_slope": fit.get("slope", math.nan),
        "tau_status": fit.get("status", "n/a"),
    }
