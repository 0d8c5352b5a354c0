"""The stacking-failure lab: chains x_{l+1} = a x_l, a classifier of norm trajectories, and
signal propagation through real jaxdepth blocks at initialisation and after training.

Chains (the "rails" tutorial, docs/literature.md §2): a stack without residual path and
without normalisation composes its layers, so its norm explodes (|a| > 1), collapses
(|a| < 1) or flips sign at every layer (a < 0). `chain` reproduces the tutorial's tables.

`classify(norms, cosines)` labels any trajectory of norms n_0..n_k (k steps), using

    ratio = n_k / n_0,  rate = ratio ** (1 / k)   (geometric-mean growth per step)

in this order (the first that holds):
    explode    a norm is inf/nan (overflow)
    oscillate  at least 1/3 of the finite consecutive cosines are sign flips, cos <= -0.5
               (the tutorial's a = -1.2 chain grows in norm but is an oscillation; a
               random rotation, cos ~ 0, is not a flip)
    explode    ratio >= 10 and rate >= 1.1
    collapse   n_k == 0 (underflow), or ratio <= 1/10 and rate <= 1/1.1
    stable     otherwise
so "explode"/"collapse" need an order of magnitude overall AND at least 10% per step
(sqrt(l)-like growth of a Pre-LN stream over 128 layers is not called an explosion).

`propagate` measures at init, per layer l = 0..L-1 of a real `Transformer`, in one jitted
call per (scheme, depth, width): the residual RMS entering/leaving (`rms_in`, `rms_out`),
the sublayer update ratios ||F(x)|| / ||x|| (`attn_update_ratio`, `ffn_update_ratio`,
from the model's own per-layer stats), the mean per-token cosine between the stream
entering and leaving the layer (`cosine`; cosine[l] for l >= 1 is the cosine between
consecutive layers' outputs), and the input-output sensitivity from one forward-mode
Jacobian-vector product: a random Gaussian tangent t on the embedding table gives the
tangent dh_0 = t[tokens] on the embedding output, and `jax.jvp` through the whole model
with `return_hidden` gives the tangent dh_{l+1} of every layer's output, so

    jvp_gain[l]    = ||dh_{l+1}|| / ||dh_0||                           (absolute growth)
    sensitivity[l] = (||dh_{l+1}|| / ||h_{l+1}||) / (||dh_0|| / ||h_0||) (relative growth)

(sensitivity ignores pure rescalings of the stream, e.g. by a Post-LN norm).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.model import Transformer

LABELS = ("explode", "collapse", "oscillate", "stable")
GROWTH = 10.0  # overall factor for explode / collapse
RATE = 1.1  # per-step geometric-mean factor for explode / collapse
FLIP_COSINE = -0.5  # a consecutive cosine at or below this is a sign flip
OSCILLATE_FRACTION = 1.0 / 3.0  # fraction of flips for oscillate

# The tutorial's three chains (docs/literature.md §2): factor, scalar starts, vector start.
TUTORIAL_CHAINS = {
    "explode": dict(a=1.8, starts=(1.0, 5.0), vector=(1.0, 2.0)),
    "collapse": dict(a=0.2, starts=(10.0,), vector=(3.0, 4.0)),
    "oscillate": dict(a=-1.2, starts=(5.0,), vector=(2.0, -1.0)),
}

# ------------------------------------------------------------------ chains and labels


def chain(x0, a, n_layers: int) -> np.ndarray:
    """States x_0..x_n of x_{l+1} = a x_l, shape (n + 1, *x0.shape); `a` a scalar or a
    matrix (then x_{l+1} = a @ x_l). float64, so the tutorial's numbers are exact."""
    x = np.asarray(x0, np.float64)
    a = np.asarray(a, np.float64)
    states = [x]
    for _ in range(n_layers):
        x = a @ x if a.ndim == 2 else a * x
        states.append(x)
    return np.stack(states)


def norms(states) -> np.ndarray:
    """Euclidean norm of every state (absolute value for scalar chains)."""
    s = np.asarray(states, np.float64)
    return np.sqrt(np.sum(np.square(s.reshape(len(s), -1)), axis=1))


def consecutive_cosines(states) -> np.ndarray:
    """cos(x_l, x_{l+1}) for l = 0..n-1 (the sign of x_l x_{l+1} for scalars); nan where a
    state is zero."""
    s = np.asarray(states, np.float64).reshape(len(states), -1)
    n = norms(states)
    denom = n[:-1] * n[1:]
    dots = np.sum(s[:-1] * s[1:], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, dots / denom, np.nan)


def classify(norms, cosines=None) -> str:
    """`explode`, `collapse`, `oscillate` or `stable` for a trajectory of norms (thresholds
    in the module docstring); `cosines` between consecutive states, if known."""
    n = np.asarray(norms, np.float64)
    if not np.all(np.isfinite(n)):
        return "explode"
    if len(n) < 2:
        return "stable"
    steps = len(n) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = n[-1] / n[0] if n[0] > 0 else (np.inf if n[-1] > 0 else 1.0)
        rate = ratio ** (1.0 / steps)
    c = np.asarray([] if cosines is None else cosines, np.float64)
    c = c[np.isfinite(c)]
    if c.size and np.mean(c <= FLIP_COSINE) >= OSCILLATE_FRACTION:
        return "oscillate"
    if ratio >= GROWTH and rate >= RATE:
        return "explode"
    if n[-1] == 0 or (ratio <= 1.0 / GROWTH and rate <= 1.0 / RATE):
        return "collapse"
    return "stable"


# ------------------------------------------------------------------ real blocks


@dataclass(frozen=True)
class Profile:
    """Per-layer statistics of one model (arrays of shape (depth,)) and where they come
    from: `when` is "init" or "step k"."""

    scheme: str
    depth: int
    width: int
    when: str
    stats: dict = field(hash=False)

    def summary(self) -> dict:
        """label (on the layer outputs' RMS and consecutive-output cosines), last/first
        layer-output RMS, mean consecutive cosine (nan when not measured)."""
        rms = np.asarray(self.stats["rms_out"], np.float64)
        cos = np.asarray(self.stats.get("cosine", np.full(len(rms), np.nan)), np.float64)[1:]
        finite = cos[np.isfinite(cos)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = float(rms[-1] / rms[0]) if rms[0] > 0 else float("inf")
        if not np.all(np.isfinite(rms)):
            ratio = float("inf")  # overflowed on the way
        return dict(label=classify(rms, cos), rms_ratio=ratio,
                    mean_cosine=float(finite.mean()) if finite.size else float("nan"))


def _token_cosine(a_XBTW, b_XBTW):
    """Mean over tokens of the cosine over the width axis; nan where a vector is zero."""
    a, b = a_XBTW.astype(jnp.float32), b_XBTW.astype(jnp.float32)
    denom = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
    cos = jnp.where(denom > 0, jnp.sum(a * b, axis=-1) / jnp.where(denom > 0, denom, 1.0), jnp.nan)
    return jnp.nanmean(cos, axis=(1, 2))


@functools.lru_cache(maxsize=64)
def _propagate_fn(mcfg, batch: int, seq_len: int):
    """The jitted `(init_key, data_key) -> stats` for one model shape (cached: one compile
    per (scheme, depth, width, ...), reused by every later call)."""
    model = Transformer(mcfg, return_hidden=True)

    def run(init_key, data_key):
        k_tok, k_tan = jax.random.split(data_key)
        tokens_BT = jax.random.randint(k_tok, (batch, seq_len), 0, mcfg.vocab_size)
        params = nn.unbox(model.init(init_key, tokens_BT)["params"])

        def hidden(table_VW):
            p = {**params, "embed": {**params["embed"], "embedding": table_VW}}
            _, aux = model.apply({"params": p}, tokens_BT)
            return aux["hidden"], aux["stats"]

        table_VW = params["embed"]["embedding"]
        tangent_VW = jax.random.normal(k_tan, table_VW.shape, table_VW.dtype)
        h_XBTW, dh_XBTW, stats = jax.jvp(hidden, (table_VW,), (tangent_VW,), has_aux=True)
        flat = lambda x: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=(1, 2, 3)))  # noqa: E731
        h_norm, dh_norm = flat(h_XBTW), flat(dh_XBTW)
        return {
            **stats,
            "cosine": _token_cosine(h_XBTW[:-1], h_XBTW[1:]),
            "jvp_gain": dh_norm[1:] / dh_norm[0],
            "sensitivity": (dh_norm[1:] / h_norm[1:]) / (dh_norm[0] / h_norm[0]),
        }

    # At these sizes the call is compile-bound (a forward + JVP at init runs in well under a
    # second on CPU), and XLA's CPU backend optimisation costs more than it saves.
    opts = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return jax.jit(run, compiler_options=opts)


def propagate(mcfg, *, batch: int = 4, seq_len: int = 64, seed: int = 0) -> Profile:
    """Signal propagation at init through `Transformer(mcfg)` on uniformly random tokens:
    per-layer stats (module docstring), one jitted call. Params are initialised from
    `jax.random.key(seed)` exactly as `jaxdepth train` does with `train.seed`, so schemes
    with the same parameter tree (pre, lns, depth_mup, ...) are compared on the same weights."""
    fn = _propagate_fn(mcfg, batch, seq_len)
    out = fn(jax.random.key(seed), jax.random.fold_in(jax.random.key(seed), 1))
    stats = {k: np.asarray(v, np.float64) for k, v in jax.device_get(out).items()}
    return Profile(mcfg.scheme, mcfg.depth, mcfg.width, "init", stats)


def profile_from_record(record: dict, scheme: str, width: int) -> Profile:
    """A `Profile` from one `metrics.jsonl` record of `jaxdepth train` (its `layers` stats,
    measured in the forward pass of step k, i.e. after k - 1 updates); no cosine or JVP."""
    layers = record["layers"]
    stats = {k: np.asarray(v, np.float64) for k, v in layers.items()}
    return Profile(scheme, len(stats["rms_out"]), width, f"step {record['step']}", stats)
