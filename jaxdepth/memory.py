"""Per-device memory of a training step, estimated before anything compiles, and the check
that refuses a run which cannot fit.

`estimate(mcfg, tcfg, dcfg, pcfg, n_devices)` is arithmetic on the configs (no tracing, no
compile, no device): bytes per device of

- `params`: every weight in `model.param_dtype`, divided over the mesh axes its logical axes
  map to (`parallel.rules`: `embed` over fsdp, `heads`/`mlp`/`vocab` over tensor, the stacked
  `layers` axis unsharded; `shard_ways`). Norm scales are counted as two per layer (Pre-LN);
  other schemes differ by a few W-vectors per layer (< 1% of the parameters at W >= 64).
- `optimizer`: AdamW's two moments, each in the parameter's dtype (optax `scale_by_adam`:
  `mu` follows `mu_dtype`, unset here, and `nu` is `zeros_like(params)`), sharded like the
  parameters; plus, with `train.microbatches > 1`, the float32 gradient accumulator
  (`jaxdepth.train.step.accumulate_gradients`).
- `gradients`: the gradient tree in the parameter dtype, and the update's parameter-sized
  temporary (clipped gradients / the AdamW update) where it exceeds the activation memory it
  can reuse: the update runs after the backward pass has freed the activations. Measured:
  with a negligible batch the compiled step's temporaries are 2.0x the parameter bytes.
- `activations`: what the backward pass keeps (Chen et al. 2016, arXiv 1604.06174;
  Korthikanti et al. 2022, arXiv 2205.05198, sec. 4: `34 s b h + 5 a s^2 b` bytes per layer
  for GPT in fp16 without recomputation). This model differs from their GPT (SwiGLU with 3
  matrices and a written-out tangent, norms computed in float32, a float32 residual stream,
  no dropout), so instead of adapting their 34 we count what JAX saves for this model: the
  residuals of the loss's gradient as `jax.ad_checkpoint.print_saved_residuals` lists them
  (jax 0.10.2, flax 0.12.8, Pre-LN, the layers scanned), per layer and per token, by shape
  and dtype (`saved`). Without remat that is 6 float32 (B, T, W) arrays (the two RMSNorms'
  intermediates, 3 each), 2 in the compute dtype (the norms' outputs), 4 (B, T, N, H) (q, k, v in
  the kernel's BKGTH/BKSH layout and the attention output) and 3 (B, T, F) for SwiGLU
  (`ffn.swiglu`'s product and its two derivative factors; GELU: 6, the up projection and
  the tanh approximation's intermediates), against Korthikanti's 34 bytes = 17 fp16
  (B, T, W)-equivalents; plus, per layer whatever T, the concatenated q/k/v kernel and
  SwiGLU's concatenated gate/up kernel (`layers.fused_projections` copies them, in the
  compute dtype, and the matmul keeps its operand) or, with a compute dtype narrower than
  the parameters, the compute-dtype copies of all the layer's weight matrices.
  `model.remat` picks the policy (jax docs, "Gradient checkpointing":
  https://docs.jax.dev/en/latest/gradient-checkpointing.html, and `jax.checkpoint_policies`;
  `auto` is resolved for the platform, `precision.remat_for`): `none` saves every intermediate
  of every layer; `full` saves only each layer's input (the scan carry) and recomputes one
  layer at a time in the backward pass; `dots_saveable` saves the matmul outputs the
  backward pass needs (the fused q/k/v and gate/up outputs, the attention logits and p v,
  the attention projection) and recomputes norms, RoPE, softmax and activations;
  `dots_with_no_batch_dims_saveable` saves only matmuls against weights (no B, N batch
  dimensions), so attention is recomputed too. Total: `L x tokens x saved(policy)` plus the
  working set of the one layer whose backward runs, `WORKSPACE[policy]` times that layer's
  full intermediate set (its cotangents; with remat also its recomputed intermediates).
- `attention_scores`: the `xla` kernel (`attention.xla_attention`, a custom_jvp in BKGTH
  layout) materialises B x N x T x T float32 logits and probabilities per layer. `none`
  saves the float32 probabilities for every layer (and their compute-dtype cast for p v,
  where that dtype is narrower), `dots_saveable` the float32 logits, the others nothing; the
  layer being differentiated holds `WORKSPACE[policy][1]` float32 B x N x T x T buffers (the
  probabilities' cotangents, the recomputed logits and probabilities), on CPU
  `CPU_HIDDEN_SCORES` more. `cudnn` and `splash` are flash kernels (Dao et al. 2022, arXiv
  2205.14135): no T x T term (their O(B N T) statistics are neglected).
- `logits`: B x T x V float32, `LOGITS_COPIES` of them (the logits; their cotangent is
  computed in place), plus the compute-dtype matmul output where that dtype is narrower.

Activations, scores and logits are per device over the batch shards (the mesh axes of the
`batch` rule, data x fsdp by default) and divided by `train.microbatches` (each
micro-batch's activations are freed before the next; the per-layer weight copies are not
divided); the head/FFN/vocab-shaped ones also
over the mesh axes of `heads`/`mlp`/`vocab` (tensor). `total` is the sum of the terms, an
upper bound on the peak in that the working sets of different phases (logits at the top of
the backward pass, a layer's working set inside it) are added, not maxed.

This is a first-order model: XLA's buffer assignment and fusion decide the real peak, and
GSPMD may keep an all-gathered (FSDP) weight alive longer than counted. It assumes the
activations are sharded over the batch axes: GSPMD does that under data parallelism, but
with `parallel.fsdp > 1` only where the model constrains them (without a constraint on the
residual stream, a compiled step with fsdp=4 held every device's whole batch: 777 MiB per
device against 233 MiB estimated; with `with_sharding_constraint(x, P(("data", "fsdp")))`
at each layer's input it held 233 MiB). The fitted constants
(`WORKSPACE`, `LOGITS_COPIES`) are a least-squares fit (relative error, rounded to
quarters) to `compiled.memory_analysis()` (argument + output - alias + temp bytes) of 50
train steps compiled on CPU in float32: depth 4 and 8, width 128 to 512, T 64 to 1024, batch
2 to 16, vocab 256 to 8192, 11 to 13 per remat policy, 8 with GELU and 6 with untied
embeddings; the estimates are then 0.80x to 1.23x of those (root-mean-square relative error
8.7%; per policy: none 0.91x-1.04x, dots_saveable 0.89x-1.06x,
dots_with_no_batch_dims_saveable 0.88x-1.04x, full 0.80x-1.23x: with remat full the
largest share is the one layer's recomputed working set, which XLA fuses more or less of).
`benchmarks/bench_memory.py` checks the estimate against the peak resident memory of real
steps at three other shapes. bfloat16 and the flash kernels are counted from the
saved-residual lists, not measured (no GPU was available).
"""

from __future__ import annotations

import dataclasses
import math
import os

from jaxdepth.errors import UserError

FLOAT32 = 4
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}

# A run is refused when its estimate exceeds this fraction of the device's memory: the
# rest covers what the estimate leaves out (the runtime and compiled code, allocator
# fragmentation, on CPU the Python process and the input pipeline's host buffers) and the
# estimate's own error (0.97x to 0.99x of the measured peak in benchmarks/bench_memory.py,
# 0.80x to 1.23x of XLA's accounting at the fitted shapes).
FIT_FRACTION = 0.9
# The estimate is an upper bound fitted on CPU; `JAXDEPTH_MEMORY_CHECK=0` lets a run that it
# refuses try anyway (read where a run is checked, at the edge: `check_run`).
ENV_CHECK = "JAXDEPTH_MEMORY_CHECK"

# Fitted against memory_analysis() (module docstring): least squares of the relative error
# over 50 compiled steps, rounded to quarters (unrounded: none 1.02, 1.69; full 0.47, 2.46;
# dots_saveable 0.73, 2.71; dots_with_no_batch_dims_saveable 0.81, 2.48; logits 1.01). Per
# remat policy, the working set of the layer whose backward runs: (its full intermediate
# set, in layers; float32 B x N x T x T buffers).
WORKSPACE = {
    "none": (1.0, 1.75),  # the layer's cotangents; d(probabilities), d(logits)
    "full": (0.5, 2.5),  # the recomputed layer's intermediates and their cotangents
    "dots_saveable": (0.75, 2.75),
    "dots_with_no_batch_dims_saveable": (0.75, 2.5),
}
LOGITS_COPIES = 1.0  # float32 B x T x V: the logits; their cotangent is computed in place

# XLA:CPU has no native bfloat16 matmul: it computes them in float32, with float32 copies
# of the operands, so a bfloat16 step on CPU used more memory than the float32 one
# (memory_analysis, depth 4, width 256, T 256, batch 8, vocab 1024: 351 MiB against 312 MiB
# without remat; 247 against 237 MiB with dots_saveable; 136 MiB either way with full). On
# CPU the activations are counted as float32 whatever the compute dtype: the estimate is
# then 0.90x, 0.96x and 0.80x of memory_analysis for bfloat16 at that shape; counted as
# bfloat16 it was 0.75x without remat. Off CPU bfloat16 is counted as stored (not measured:
# no GPU here).
CPU_BF16 = "float32"

# XLA:CPU (jax 0.10.2) runs a matmul fused with its consumer (e.g. q k^T with the softmax)
# as a YNNPACK fusion that allocates the matmul's output itself, outside XLA's buffer
# assignment: invisible to memory_analysis(), but resident. Measured in real CPU train steps
# (`peakmem.measure`, float32, xla kernel, at five attention-heavy shapes other than the
# benchmark's: T 512 to 1024, every remat policy, one with GELU), peak RSS - memory_analysis
# was 1.20 to 1.55 float32 B x N x T x T buffers of one layer; with those fusions disabled
# (XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=) 0.21 to 0.82 (13 to 21 MiB, about
# constant: the runtime's own, not the scores'). The difference, 0.73 to 0.99 buffers,
# rounded: the hidden buffers of the layer being differentiated. (A standalone jit of the
# attention's gradient no longer shows them: 0.03 to 0.29 buffers at (B, T, N, H) =
# (4, 1024, 8, 16), (2, 768, 12, 32), (8, 512, 4, 64), where the kernel before
# `attention.xla_attention`'s rewrite showed 2.0 to 4.5.) Counted on CPU only.
CPU_HIDDEN_SCORES = 1.0

TERMS = ("params", "optimizer", "gradients", "activations", "attention_scores", "logits")


@dataclasses.dataclass(frozen=True)
class Saved:
    """Arrays saved per layer and per token, in units of their last dimension(s):
    `stream` float32 (B, T, W) arrays (the residual stream, norm statistics' inputs),
    `embed` compute-dtype (B, T, W), `heads` compute-dtype (B, T, N, H) (q, k, v, attention
    output), `mlp` compute-dtype (B, T, F); `scores_bytes` bytes per (B, N, T, T) element
    of the xla kernel; `weights`: the compute-dtype copies of the layer's weight matrices
    (all of them where that dtype is narrower than the parameters', else the concatenated
    q/k/v and gate/up kernels: `fused_matrix_params`)."""

    stream: float
    embed: float
    heads: float
    mlp: float
    scores_bytes: float
    weights: bool = False


def saved(policy: str, ffn: str, compute_bytes: int) -> Saved:
    """The per-layer residuals of `policy` (from `print_saved_residuals`, Pre-LN, jax 0.10.2,
    flax 0.12.8; the list in the module docstring). Without remat SwiGLU keeps 3 (B, T, F)
    arrays (its written-out tangent, `ffn.swiglu`: the product and its two derivative
    factors) and GELU 6 (the up projection and five tanh-approximation intermediates)."""
    c = compute_bytes
    up = 2 if ffn == "swiglu" else 1  # the up (and gate) matmul output: one (B, T, 2F) array
    if policy == "none":
        # the two RMSNorms' float32 intermediates (3 each) and compute-dtype outputs (2); q,
        # k, v (BKGTH/BKSH transposes) and the attention output (BTNH); the float32
        # probabilities, plus their compute-dtype cast for p v where that dtype is narrower
        return Saved(stream=6, embed=2, heads=4, mlp=3 if ffn == "swiglu" else 6,
                     scores_bytes=FLOAT32 + (c if c < FLOAT32 else 0), weights=True)
    if policy == "full":  # the layer's input (the scan carry)
        return Saved(stream=1, embed=0, heads=0, mlp=0, scores_bytes=0)
    if policy == "dots_saveable":
        # the carry; the attention projection's output; the fused q/k/v matmul output (3) and
        # p v (1); the fused gate/up (or up) output; the float32 logits q k^T
        return Saved(stream=1, embed=1, heads=4, mlp=up, scores_bytes=FLOAT32)
    if policy == "dots_with_no_batch_dims_saveable":  # as above without p v and q k^T
        return Saved(stream=1, embed=1, heads=3, mlp=up, scores_bytes=0)
    raise ValueError(f"unknown remat policy {policy!r}")


# ---------------------------------------------------------------- sharding arithmetic


def mesh_sizes(pcfg, n_devices: int) -> dict[str, int]:
    from jaxdepth.parallel import MESH_AXES, mesh_shape

    return dict(zip(MESH_AXES, mesh_shape(pcfg, n_devices)))


def shard_ways(logical: tuple, sizes: dict[str, int], rules: tuple) -> int:
    """How many ways an array with these logical axes is split: each axis takes the mesh
    axes of the first rule naming it whose mesh axes no earlier axis took (as flax's
    `logical_to_mesh_axes` does); `None` is unsharded."""
    used: set[str] = set()
    ways = 1
    for name in logical:
        if name is None:
            continue
        for key, axes in rules:
            if key != name:
                continue
            axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
            if used & set(axes):
                continue
            used |= set(axes)
            ways *= math.prod(sizes[a] for a in axes)
            break
    return ways


def param_groups(mcfg) -> list[tuple[int, tuple]]:
    """(count, logical axes) of every parameter group of `Transformer(mcfg)`."""
    L, W, F, V = mcfg.depth, mcfg.width, mcfg.ffn_hidden_size, mcfg.vocab_size
    N, K, H = mcfg.heads, mcfg.kv_head_count, mcfg.head_dim
    n_ffn_in = 2 if mcfg.ffn == "swiglu" else 1
    per_norm = 2 if mcfg.norm == "layernorm" else 1  # LayerNorm has a bias
    groups = [
        (V * W, ("vocab", "embed")),
        (L * W * (N + 2 * K) * H, ("layers", "embed", "heads", "kv")),  # q, k, v
        (L * N * H * W, ("layers", "heads", "kv", "embed")),  # attention out
        (n_ffn_in * L * W * F, ("layers", "embed", "mlp")),
        (L * F * W, ("layers", "mlp", "embed")),
        (2 * per_norm * L * W, ("layers", "embed")),  # two norms per layer
        (per_norm * W, ("embed",)),  # final norm
    ]
    if not mcfg.tied_embeddings:
        groups.append((W * V, ("embed", "vocab")))
    return groups


def layer_matrix_params(mcfg) -> int:
    """Parameters of one layer's weight matrices (attention and FFN)."""
    N, K, H, W = mcfg.heads, mcfg.kv_head_count, mcfg.head_dim, mcfg.width
    n_ffn = 3 if mcfg.ffn == "swiglu" else 2
    return W * (2 * N + 2 * K) * H + n_ffn * W * mcfg.ffn_hidden_size


def fused_matrix_params(mcfg) -> int:
    """Parameters of one layer's concatenated kernels (`layers.fused_projections`): q/k/v,
    and SwiGLU's gate/up (GELU's single up kernel is not copied)."""
    N, K, H, W = mcfg.heads, mcfg.kv_head_count, mcfg.head_dim, mcfg.width
    return W * (N + 2 * K) * H + (2 * W * mcfg.ffn_hidden_size if mcfg.ffn == "swiglu" else 0)


def param_count(mcfg) -> int:
    return sum(n for n, _ in param_groups(mcfg))


def sharded_params(mcfg, sizes: dict, rules: tuple) -> float:
    """Parameters per device (fractional: a shard of every group)."""
    return sum(n / shard_ways(axes, sizes, rules) for n, axes in param_groups(mcfg))


# ---------------------------------------------------------------- the estimate


def estimate(mcfg, tcfg, dcfg, pcfg, n_devices: int, platform: str | None = None) -> dict:
    """Bytes per device of a train step: `params`, `optimizer`, `gradients`, `activations`,
    `attention_scores`, `logits` and `total` (module docstring). `mcfg` has its vocab size
    resolved; an unresolved `dtype`/`attention` (`auto`) is resolved for `platform` as
    `precision.resolve` does, `remat` (`auto`) by `precision.remat_for`; `platform` None is
    this process's backend where something is `auto`. `platform="cpu"` adds XLA:CPU's own
    costs: bfloat16 activations counted as float32 (`CPU_BF16`) and `CPU_HIDDEN_SCORES`;
    None (nothing `auto`) or another platform counts activations as stored."""
    from jaxdepth.parallel import rules as logical_rules

    if mcfg.vocab_size <= 0:
        raise ValueError("estimate needs a resolved vocab_size (> 0)")
    if "auto" in (mcfg.dtype, mcfg.attention, mcfg.remat):
        from jaxdepth.model import precision

        if platform is None:
            platform = precision.backend()[0]
        if mcfg.dtype == "auto" or mcfg.attention == "auto":
            mcfg = precision.resolve(mcfg, platform, "NVIDIA" if platform == "gpu" else "")
        mcfg = dataclasses.replace(mcfg, remat=precision.remat_for(mcfg.remat, platform))
    sizes, rules = mesh_sizes(pcfg, n_devices), logical_rules(pcfg)
    ways = lambda *axes: shard_ways(axes, sizes, rules)  # noqa: E731
    p_bytes, c = DTYPE_BYTES[mcfg.param_dtype], DTYPE_BYTES[mcfg.dtype]
    if platform == "cpu":
        c = DTYPE_BYTES[CPU_BF16]  # XLA:CPU computes bfloat16 matmuls in float32
    n_local = sharded_params(mcfg, sizes, rules)
    k = max(tcfg.microbatches, 1)

    params = n_local * p_bytes
    optimizer = 2 * n_local * p_bytes + (n_local * FLOAT32 if k > 1 else 0)

    L, W, F, N, V = mcfg.depth, mcfg.width, mcfg.ffn_hidden_size, mcfg.heads, mcfg.vocab_size
    T = dcfg.seq_len
    rows = dcfg.batch_size / (ways("batch") * k)  # sequences per device per micro-batch
    tokens = rows * T
    # tensor-parallel ways of head-, FFN- and vocab-shaped activations (beyond the batch's)
    tw_heads, tw_mlp, tw_vocab = (ways("batch", None, axis) / ways("batch")
                                  for axis in ("heads", "mlp", "vocab"))

    def per_token(s: Saved) -> float:
        return (s.stream * W * FLOAT32 + s.embed * W * c + s.heads * W * c / tw_heads
                + s.mlp * F * c / tw_mlp)

    policy = saved(mcfg.remat, mcfg.ffn, c)
    layer_all = saved("none", mcfg.ffn, c)
    # the weight copies saved without remat, in the compute dtype (even on CPU): every
    # matrix cast where that dtype differs from the parameters', else only the fused kernels
    cast = DTYPE_BYTES[mcfg.dtype]
    copied = layer_matrix_params(mcfg) if cast != p_bytes else fused_matrix_params(mcfg)
    weights = L * copied * cast * n_local / param_count(mcfg) if policy.weights else 0.0
    ws_layers, ws_scores = WORKSPACE[mcfg.remat]
    # Mixture-of-Depths (jaxdepth.model.mod): a routed layer's own residuals are those of its
    # k = capacity x T tokens and a k x k attention map, but every layer is a cond on the
    # layer index, whose linearisation saves the residuals of both branches (the branch not
    # taken as zeros): 1 + c layers' worth per layer (`jaxdepth bench`: 1.15 GiB against the
    # plain model's 1.01 at the reference shape, capacity 0.125)
    from jaxdepth.model.mod import capacity_tokens
    from jaxdepth.sweep.shapes import routed_layers

    c_mod = capacity_tokens(mcfg.mod_capacity, T) / T if routed_layers(mcfg) else 0.0
    layers_eff, scores_eff = L * (1 + c_mod), L * (1 + c_mod ** 2)
    activations = (layers_eff * tokens * per_token(policy)
                   + ws_layers * tokens * per_token(layer_all)
                   + weights + dcfg.batch_size / ways("batch") * (T + 1) * 4)
    if mcfg.dwa:  # DenseFormer's history of the L + 1 block outputs (jaxdepth.model.dwa): the
        # scan's backward pass keeps one per layer, the unrolled stack one in all
        activations += (L if mcfg.scan_layers else 1) * (L + 1) * tokens * W * FLOAT32

    scores = 0.0
    if mcfg.attention == "xla":
        per_layer = rows * N * T * T / tw_heads  # elements of one layer's B x N x T x T
        if platform == "cpu":
            ws_scores += CPU_HIDDEN_SCORES
        scores = per_layer * (scores_eff * policy.scores_bytes + ws_scores * FLOAT32)

    logits = tokens * V / tw_vocab * (LOGITS_COPIES * FLOAT32 + (c if c < FLOAT32 else 0))
    # the gradients live at the end of the backward pass; the update's parameter-sized
    # temporary comes after it, in memory the activations no longer hold
    grads = n_local * p_bytes
    gradients = grads + max(0.0, grads - (activations + scores + logits))
    out = dict(params=params, optimizer=optimizer, gradients=gradients,
               activations=activations, attention_scores=scores, logits=logits)
    out = {key: int(round(v)) for key, v in out.items()}
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------- capacity and the check


def device_memory_bytes(device=None) -> int | None:
    """Memory of one device: GPU/TPU `memory_stats()["bytes_limit"]` (what XLA's allocator
    may use); CPU: the host's total RAM (psutil) over the local CPU devices, which share it
    (total, not available: a refusal should not depend on what else runs right now);
    None when unknown."""
    import jax

    dev = device if device is not None else jax.local_devices()[0]
    if dev.platform == "cpu":
        try:
            import psutil
        except ImportError:
            return None
        n_cpu = sum(d.platform == "cpu" for d in jax.local_devices()) or 1
        return int(psutil.virtual_memory().total // n_cpu)
    try:
        stats = dev.memory_stats()
    except Exception:  # some backends do not implement it
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"])


def human_bytes(n: float) -> str:
    """1536 -> '1.5KiB', binary units, no space (one token in a text table)."""
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            v = n / div  # 1000 to 1023 units: no exponent ('1e+03')
            return f"{v:.3g}{unit}" if abs(v) < 1000 else f"{v:.0f}{unit}"
    return f"{n:.0f}B"


ADVICE = {
    "params": "parallel.fsdp (shards parameters and Adam moments), model.param_dtype="
              "bfloat16, or a smaller model",
    "optimizer": "parallel.fsdp (shards parameters and Adam moments), model.param_dtype="
                 "bfloat16, or a smaller model",
    "gradients": "parallel.fsdp (shards gradients with the parameters), or a smaller model",
    "activations": "model.remat=full (or dots_with_no_batch_dims_saveable), "
                   "train.microbatches=k, more data-parallel devices, or a smaller "
                   "data.seq_len / data.batch_size",
    "attention_scores": "a smaller data.seq_len, model.attention=cudnn/splash (no T x T "
                        "scores) where the backend has one, model.remat=full, "
                        "train.microbatches=k, or a smaller data.batch_size",
    "logits": "train.microbatches=k, a smaller data.batch_size / data.seq_len, or "
              "parallel.tensor (shards the vocabulary)",
}


def fits(estimate_dict: dict, capacity: int | None) -> bool:
    """Whether the estimate is within `FIT_FRACTION` of `capacity` (True when unknown)."""
    return capacity is None or estimate_dict["total"] <= FIT_FRACTION * capacity


def check_fits(estimate_dict: dict, capacity: int | None, what: str = "run") -> None:
    """A one-line UserError when the estimate exceeds `FIT_FRACTION` of `capacity` (bytes
    per device; None: unknown, no check), naming the estimate, the capacity, the largest
    term and what would shrink it."""
    if fits(estimate_dict, capacity):
        return
    largest = max(TERMS, key=lambda t: estimate_dict.get(t, 0))
    parts = ", ".join(f"{t} {human_bytes(estimate_dict[t])}" for t in TERMS
                      if estimate_dict.get(t))
    raise UserError(
        f"{what} needs about {human_bytes(estimate_dict['total'])} per device ({parts}), "
        f"more than {FIT_FRACTION:.0%} of the device's {human_bytes(capacity)}; the largest "
        f"term is {largest}: try {ADVICE[largest]} ({ENV_CHECK}=0 tries anyway)")


def check_run(cfg, mcfg_resolved, n_devices: int | None = None,
              capacity: int | None = None, platform: str | None = None) -> dict:
    """Refuse (UserError, one line) a run whose estimate does not fit one device, before
    anything compiles; returns the estimate. `mcfg_resolved`: `cfg.model` with its vocab
    size (and dtype/attention) resolved, as `train.build.resolve_model` returns it.
    Defaults: `n_devices` every device of the run (`jax.device_count()`; pass the mesh's
    size when training on a given mesh), `capacity` `device_memory_bytes()`, `platform`
    the default backend's."""
    if n_devices is None or capacity is None or platform is None:
        import jax

        n_devices = jax.device_count() if n_devices is None else n_devices
        capacity = device_memory_bytes() if capacity is None else capacity
        platform = jax.devices()[0].platform if platform is None else platform
    est = estimate(mcfg_resolved, cfg.train, cfg.data, cfg.parallel, n_devices, platform)
    if os.environ.get(ENV_CHECK, "1").lower() not in ("0", "false", "no"):
        check_fits(est, capacity, what=f"run '{cfg.name}'")
    return est
