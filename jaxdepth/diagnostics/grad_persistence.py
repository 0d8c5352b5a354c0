"""Gradient persistence length tau from per-layer gradient norms.

The Depth Delusion (arXiv 2601.20994): `||g_l|| ~= ||g_L|| exp(-(L - l) / tau)`, i.e.
`log ||g_l|| = log ||g_L|| - (L - l) / tau`, fitted by least squares over the layers
l = 1..L. That is a straight line in l with slope `1 / tau`; the fit reports tau, its
standard error (delta method: se(tau) = se(slope) / slope^2), and R^2.

Sign: a slope significantly above zero (more than 2 standard errors) means the gradient
shrinks toward the input: a finite tau, the paper's picture ("decaying"). A slope within
2 standard errors of zero is "flat" (no decay measurable over this depth), and one
significantly below zero is "growing" toward the input (as Pre-LN often shows); both have
no finite decay length, so tau = inf, and `slope` keeps the fitted rate. `tau_lower` =
1 / (slope + 2 se), the decay length the data rule out below (about a 97.5% one-sided
bound; inf when even slope + 2 se <= 0): a flat profile over L layers still says tau is
at least that long. Layers with a zero or non-finite norm (frozen layers) are left out
of the fit; fewer than two usable layers gives tau = NaN with status "degenerate"; with
exactly two there is no standard error and the sign alone decides.

The norms come from the training loop (`jaxdepth.train.step.layer_grad_norms`, logged as
`layers.attn_grad_norm` / `layers.ffn_grad_norm` in metrics.jsonl); nothing is recomputed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from jaxdepth.errors import UserError


@dataclass(frozen=True)
class PersistenceFit:
    tau: float  # layers; inf when the norms do not decay toward the input, NaN if degenerate
    tau_stderr: float
    r2: float
    slope: float  # d log||g_l|| / d l = 1 / tau
    log_grad_last: float  # fitted log ||g_L||
    n_layers: int  # layers used in the fit
    status: str  # "decaying" | "flat" | "growing" | "degenerate"
    tau_lower: float = float("nan")  # 1 / (slope + 2 se): tau is at least this long

    def to_dict(self) -> dict:
        return asdict(self)


def fit_grad_persistence(grad_norms_L) -> PersistenceFit:
    """Least-squares fit of `log ||g_l|| = log ||g_L|| - (L - l) / tau` over layers
    l = 1..L (arXiv 2601.20994); see the module docstring for the sign conventions."""
    g = np.asarray(grad_norms_L, np.float64).reshape(-1)
    L = g.size
    layer = np.arange(1, L + 1, dtype=np.float64)
    ok = np.isfinite(g) & (g > 0)
    n = int(ok.sum())
    nan = float("nan")
    if n < 2:
        return PersistenceFit(nan, nan, nan, nan, nan, n, "degenerate")
    x, y = layer[ok], np.log(g[ok])
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    slope = float(np.sum((x - xm) * (y - ym)) / sxx)
    intercept = ym - slope * xm
    resid = y - (intercept + slope * x)
    ss_res, ss_tot = float(np.sum(resid ** 2)), float(np.sum((y - ym) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else nan
    slope_se = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else nan
    log_last = float(intercept + slope * L)
    margin = 2 * slope_se if n > 2 else 0.0
    upper = slope + margin
    tau_lower = 1.0 / upper if upper > 0 else math.inf
    if slope > margin:
        return PersistenceFit(1.0 / slope, slope_se / slope ** 2, r2, slope, log_last, n,
                              "decaying", tau_lower)
    status = "flat" if abs(slope) <= margin else "growing"
    return PersistenceFit(math.inf, nan, r2, slope, log_last, n, status, tau_lower)


def layer_grad_norms(record: dict) -> dict[str, np.ndarray]:
    """Per-layer gradient norms of one metrics.jsonl record: attention, FFN and the whole
    layer (sqrt(attn^2 + ffn^2), the norm of all the layer's parameters)."""
    layers = record.get("layers", {})
    if "attn_grad_norm" not in layers or "ffn_grad_norm" not in layers:
        raise UserError(f"metrics record at step {record.get('step')} has no per-layer gradient "
                        "norms (layers.attn_grad_norm / layers.ffn_grad_norm)")
    attn = np.asarray(layers["attn_grad_norm"], np.float64)
    ffn = np.asarray(layers["ffn_grad_norm"], np.float64)
    return {"attn": attn, "ffn": ffn, "layer": np.sqrt(attn ** 2 + ffn ** 2)}


def record_at(records: list[dict], step: int | None) -> dict:
    """The logged record at `step` (None: the last one); at a step that was not logged,
    the last record before it. UserError if there is none."""
    with_norms = [r for r in records if "attn_grad_norm" in r.get("layers", {})]
    if not with_norms:
        raise UserError("metrics.jsonl holds no per-layer gradient norms")
    if step is None:
        return with_norms[-1]
    before = [r for r in with_norms if r["step"] <= step]
    if not before:
        raise UserError(f"no gradient norms logged at or before step {step}; first logged step "
                        f"is {with_norms[0]['step']}")
    return before[-1]


def late_layer_grad_norms(records: list[dict], frac: float = 0.2) -> tuple[dict, int, int]:
    """Per-layer gradient norms averaged over the last `frac` of training: the geometric
    mean (the fit is in log space) over every logged record with step >= (1 - frac) x the
    last logged step, so that one batch's noise does not set tau. Returns (norms as in
    `layer_grad_norms`, first step, last step averaged). UserError if nothing is logged."""
    with_norms = [r for r in records if "attn_grad_norm" in r.get("layers", {})]
    if not with_norms:
        raise UserError("metrics.jsonl holds no per-layer gradient norms")
    last = with_norms[-1]["step"]
    late = [r for r in with_norms if r["step"] >= (1.0 - frac) * last]
    norms = [layer_grad_norms(r) for r in late]
    with np.errstate(divide="ignore"):  # a frozen layer's zero norm stays zero
        mean = {k: np.exp(np.mean([np.log(n[k]) for n in norms], axis=0)) for k in norms[0]}
    return mean, late[0]["step"], last


def tau_over_training(records: list[dict]) -> list[dict]:
    """tau fit of the whole-layer gradient norms at every logged step."""
    out = []
    for r in records:
        if "attn_grad_norm" in r.get("layers", {}):
            out.append({"step": r["step"], **fit_grad_persistence(layer_grad_norms(r)["layer"]).to_dict()})
    return out
