"""Coordinate check: is a parameterisation's training width- (depth-) independent?

The muP coordinate check (Yang et al. 2022, arXiv 2203.03466, its appendix on verifying a
muP implementation; microsoft/mup's `get_coord_data`): train a model for a few steps at
several widths and record, after every step t, the size of each layer's activations and of
their change since initialisation, Delta h_t = h_t - h_0, as the root mean square over
coordinates. Under muP every such curve is flat in width: activations are Theta(1) per
coordinate and so is their per-step change ("maximal update": every layer's features move
by Theta(1)). Under the standard parameterisation (SP) with a fixed Adam learning rate the
change grows with width (a hidden matrix's update Delta W x sums `width` coordinated terms:
Theta(width) per coordinate for Adam), and the logits blow up. CompleteP (Dey et al. 2025,
arXiv 2505.01618, "complete feature learning") asks the same across depth: with the
residual branch scaled by m_L^-alpha and the hidden learning rate by m_L^(alpha - 1), the
change of the last layer's output, and of the logits, stays flat as layers are added
(depth-muP, Yang et al. 2023, arXiv 2310.02244, alpha = 1/2; Bordelon et al. 2023, arXiv
2309.16620).

Two axes: the width axis varies `model.width` at the config's depth, the depth axis varies
`model.depth` at the config's width; heads = width // head size, so the head size stays the
config's and the head count grows with width. Every shape is initialised from `train.seed`
and trained with the run's own optimiser (`jaxdepth.train.optim.make_optimizer`) and train
step at a constant learning rate (no warmup, no decay: the check compares fixed-lr updates)
on ONE fixed batch, the first of the config's training data; the probe runs on it too.

A row (`measure`) is one (parameterization, axis, shape, step t, quantity, layer) with the
RMS of the activation at step t and the RMS of its change since t = 0. Quantities:
`embedding` (the residual stream entering layer 0: the embedding output after the input
multiplier and, for schemes with one, the embedding norm; layer 0), `layer` (the residual
stream leaving layer l, layer = l = 1..L) and `logits` (layer None). `series` reduces them to
what exists at every depth (embedding, the last layer, the mean over layers, logits), and
`slopes` fits log2 RMS against log2 width (depth): the change per doubling, ~0 when
independent, > 0 when growing (SP: ~1 per doubling for the logits' change across width).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from jaxdepth.errors import UserError

AXES = ("width", "depth")
# what every depth has, in plotting/table order (`series`)
SERIES = ("embedding", "last_layer", "mean_layer", "logits")
SERIES_LABELS = {"embedding": "embedding", "last_layer": "last layer",
                 "mean_layer": "mean layer", "logits": "logits"}
ROW_KEYS = ("parameterization", "axis", "width", "depth", "step", "quantity", "layer", "rms",
            "delta_rms")


@dataclass(frozen=True)
class Shape:
    """One model to train: its validated run config and the axes it lies on (the config's
    own shape is on both and is trained once)."""

    parameterization: str
    width: int
    depth: int
    axes: tuple[str, ...]
    cfg: object  # RunConfig


def _check_values(values, what: str, kind=int) -> list:
    vals = list(values)
    if not vals:
        raise UserError(f"{what} is empty")
    bad = [v for v in vals if not isinstance(v, (int, float)) or isinstance(v, bool)
           or not v > 0 or (kind is int and int(v) != v)]
    if bad:
        raise UserError(f"{what} must be positive {'integers' if kind is int else 'numbers'}, "
                        f"got {', '.join(map(str, bad))}")
    return sorted({kind(v) for v in vals})


def plan(cfg, parameterizations, widths, depths, steps: int, lr: float | None = None
         ) -> list[Shape]:
    """The validated shapes of a coordinate check, before anything compiles: every bad
    input (an empty list, a non-positive value, a width that is not a multiple of the head
    size, an unknown parameterisation, a shape the config rejects) is a one-line UserError.
    `lr` None: the config's `train.lr`, held constant."""
    from jaxdepth.config import PARAMETERIZATIONS, replace

    params = list(dict.fromkeys(parameterizations))
    if not params:
        raise UserError("the list of parameterizations is empty")
    unknown = [p for p in params if p not in PARAMETERIZATIONS]
    if unknown:
        raise UserError(f"unknown parameterization '{unknown[0]}'; valid: "
                        f"{', '.join(PARAMETERIZATIONS)}")
    widths = _check_values(widths, "widths")
    depths = _check_values(depths, "depths")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be an integer >= 1, got {steps}")
    lr = cfg.train.lr if lr is None else lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
            lr > 0 and math.isfinite(lr)):
        raise UserError(f"lr must be a finite number > 0, got {lr}")
    m = cfg.model
    head = m.head_dim
    off = [w for w in widths if w % head]
    if off:
        raise UserError(f"width {off[0]} is not a multiple of the head size {head} "
                        f"(model.width / model.heads = {m.width} / {m.heads}); the check keeps "
                        f"the head size and varies the head count")
    axes: dict[tuple[int, int], list[str]] = {}
    for w in widths:
        axes.setdefault((w, m.depth), []).append("width")
    for d in depths:
        axes.setdefault((m.width, d), []).append("depth")
    train = dict(lr=float(lr), warmup_steps=0, min_lr_ratio=1.0, steps=steps)
    out = []
    for p in params:
        for (w, d), on in axes.items():
            run = replace(cfg, model=dict(parameterization=p, width=w, depth=d, heads=w // head),
                          train=train)
            out.append(Shape(p, w, d, tuple(on), run))
    return out


def first_batch(cfg):
    """(tokenizer, int32 (B, S + 1) tokens): the first training batch of the config's data
    (`jaxdepth.data.pipeline.train_iterator`), the one batch every shape trains and is
    probed on."""
    from jaxdepth.data.pipeline import load_corpus, train_iterator

    corpus = load_corpus(cfg.data)
    return corpus.tokenizer, np.asarray(next(train_iterator(corpus, cfg.data))["tokens"])


def _program(mcfg, tcfg, pad_id: int):
    """`(rng, tokens) -> (rms, delta)`, each float32 (steps + 1, L + 2): per step t = 0..N
    and per probe [embedding, layer 1..L, logits], the RMS at t and of the change since t = 0.
    Init as `jaxdepth.train.build` does, then N steps of the core's pure train step in a
    `lax.scan` (one compiled step, reused at every step), each followed by the probe."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxdepth.model import Transformer
    from jaxdepth.train.optim import lr_schedule, make_optimizer
    from jaxdepth.train.step import TrainState, make_train_step

    model, probe = Transformer(mcfg), Transformer(mcfg, return_hidden=True)
    tx = make_optimizer(mcfg, tcfg)
    step = make_train_step(model, tx, lr_schedule(tcfg), pad_id, mcfg.depth, tcfg.microbatches)

    def rms(x):  # per entry of the leading (probe) axis
        x = x.astype(jnp.float32)
        return jnp.sqrt(jnp.mean(jnp.square(x), axis=tuple(range(1, x.ndim))))

    def run(rng, tokens_BS):
        inputs_BT = tokens_BS[:, :-1]

        def acts(params):  # the residual stream (L + 1, B, T, W) and the logits (1, B, T, V)
            logits_BTV, aux = probe.apply({"params": params}, inputs_BT)
            return aux["hidden"], logits_BTV[None]

        params = nn.unbox(model.init(rng, inputs_BT)["params"])
        h0_XBTW, z0_1BTV = acts(params)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           opt_state=tx.init(params), rng=rng)

        def body(s, _):
            s, _ = step(s, {"tokens": tokens_BS})
            h_XBTW, z_1BTV = acts(s.params)
            return s, (jnp.concatenate([rms(h_XBTW), rms(z_1BTV)]),
                       jnp.concatenate([rms(h_XBTW - h0_XBTW), rms(z_1BTV - z0_1BTV)]))

        _, (rms_t, delta_t) = jax.lax.scan(body, state, None, length=tcfg.steps)
        rms0 = jnp.concatenate([rms(h0_XBTW), rms(z0_1BTV)])
        return (jnp.concatenate([rms0[None], rms_t]),
                jnp.concatenate([jnp.zeros_like(rms0)[None], delta_t]))

    return run


@functools.lru_cache(maxsize=32)
def _compiled(mcfg, tcfg, pad_id: int):
    """`_program` jitted, once per (resolved model, train config) in a process. A coordinate
    check is compile-bound (a few steps of small models): on CPU, XLA's LLVM backend at
    optimisation level 0 halves the compile (rows equal to 1e-7 relative, measured)."""
    import jax

    opts = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return jax.jit(_program(mcfg, tcfg, pad_id), compiler_options=opts)


def measure(shape: Shape, tokens, vocab: int, pad_id: int) -> list[dict]:
    """The rows of one shape (one compile): every step t = 0..N, every probe, on each axis
    the shape lies on. `vocab`: the tokenizer's vocabulary (`resolve_model`)."""
    import jax
    import jax.numpy as jnp

    from jaxdepth.train.build import resolve_model

    fn = _compiled(resolve_model(shape.cfg.model, vocab), shape.cfg.train, pad_id)
    rms_t, delta_t = jax.device_get(fn(jax.random.key(shape.cfg.train.seed),
                                       jnp.asarray(tokens, jnp.int32)))
    probes = ([("embedding", 0)] + [("layer", l) for l in range(1, shape.depth + 1)]
              + [("logits", None)])
    return [dict(parameterization=shape.parameterization, axis=axis, width=shape.width,
                 depth=shape.depth, step=t, quantity=q, layer=layer, rms=float(rms_t[t, i]),
                 delta_rms=float(delta_t[t, i]))
            for axis in shape.axes for t in range(rms_t.shape[0])
            for i, (q, layer) in enumerate(probes)]


def coordcheck(cfg, parameterizations, widths, depths, steps: int,
               lr: float | None = None) -> list[dict]:
    """Every row of a coordinate check (`plan`, then `first_batch`, then `measure` per
    shape)."""
    shapes = plan(cfg, parameterizations, widths, depths, steps, lr)
    tok, tokens = first_batch(cfg)
    return [r for s in shapes for r in measure(s, tokens, tok.vocab_size, tok.pad_id)]


def series(rows: list[dict]) -> list[dict]:
    """Rows reduced to the quantities every depth has (`SERIES`): embedding, the last
    layer's output, the mean over layers (of the per-layer RMS and of the per-layer change)
    and the logits; one dict per (parameterization, axis, width, depth, step, quantity)."""
    groups: dict[tuple, dict] = {}
    for r in rows:
        key = (r["parameterization"], r["axis"], r["width"], r["depth"], r["step"])
        groups.setdefault(key, {}).setdefault(r["quantity"], []).append(r)
    out = []
    for (p, axis, w, d, t), g in groups.items():
        layers = sorted(g.get("layer", []), key=lambda r: r["layer"])
        vals = {"embedding": g["embedding"][0], "logits": g["logits"][0]}
        if layers:
            vals["last_layer"] = layers[-1]
            vals["mean_layer"] = {k: float(np.mean([r[k] for r in layers]))
                                  for k in ("rms", "delta_rms")}
        for q in SERIES:
            if q in vals:
                out.append(dict(parameterization=p, axis=axis, width=w, depth=d, step=t,
                                quantity=q, rms=vals[q]["rms"], delta_rms=vals[q]["delta_rms"]))
    return out


def log2_slope(x, y) -> float:
    """Least-squares slope of log2(y) against log2(x): the change of log2 y per doubling of
    x; nan with fewer than two distinct x or any y that is not finite and > 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(np.unique(x)) < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return math.nan
    lx, ly = np.log2(x), np.log2(y)
    lx = lx - lx.mean()
    return float(np.sum(lx * (ly - ly.mean())) / np.sum(lx * lx))


def slopes(rows: list[dict]) -> list[dict]:
    """Per (parameterization, axis, quantity, step), over that axis's shapes (`series`):
    `rms_slope` and `delta_slope`, the slopes of log2 RMS and of log2 RMS-change per
    doubling of width (depth) (`log2_slope`; delta is nan at t = 0, where it is 0), and
    `n` the number of shapes."""
    groups: dict[tuple, list[dict]] = {}
    for r in series(rows):
        groups.setdefault((r["parameterization"], r["axis"], r["quantity"], r["step"]),
                          []).append(r)
    out = []
    for (p, axis, q, t), g in groups.items():
        x = [r[axis] for r in g]
        out.append(dict(parameterization=p, axis=axis, quantity=q, step=t,
                        rms_slope=log2_slope(x, [r["rms"] for r in g]),
                        delta_slope=log2_slope(x, [r["delta_rms"] for r in g]), n=len(g)))
    return out
