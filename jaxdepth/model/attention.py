"""Causal multi-head self-attention with rotary position embedding, and its kernels.

`softmax(q k^T / sqrt(H) + causal mask) v` per head (Vaswani et al. 2017, arXiv 1706.03762),
q, k, v in BTNH layout, computed by the kernel `cfg.attention` names (resolved per backend by
`jaxdepth.model.precision`):

- `xla`: plain XLA ops (`xla_attention`), which materialise the (T, T) logits. With bfloat16
  q, k the logits are accumulated and returned in float32 (`preferred_element_type`), the
  softmax runs in float32, and the probabilities are cast to v's dtype for `p v`, as
  `jax.nn.dot_product_attention(implementation="xla")` does; its tangent is written out
  (`_causal_attention_jvp`) so that the backward pass is lean.
- `cudnn`: cuDNN's fused flash attention (Dao et al. 2022, arXiv 2205.14135; Dao 2023,
  arXiv 2307.08691): tiles over the key axis with an online float32 softmax, never
  materialising the logits; bfloat16 inputs; sharded over batch and heads by JAX's own
  partitioning rule.
- `splash`: the Pallas TPU splash kernel (`jax.experimental.pallas.ops.tpu.splash_attention`),
  a block-sparse flash attention that skips the blocks the causal mask empties; float32
  softmax inside the kernel.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model.layers import Projection, fused_projections, init, layout_rules, zeros
from jaxdepth.model.parameterization import attention_scale
from jaxdepth.model.precision import attention_kernel, compute_dtype, param_dtype

SPLASH_LANES = 128  # the splash kernel's kv blocks are multiples of the TPU's 128 lanes


def rope_tables(T: int, H: int, theta: float, dtype, positions=None):
    """cos and sin of the rotary angles t / theta^(2i/H) at t = 0..T-1, (T, H/2) each, or at
    `positions` (any shape P, e.g. (B, T): (*P, H/2) each), computed in float32 and
    returned in `dtype`."""
    inv_freq_G = 1.0 / theta ** (jnp.arange(0, H, 2, dtype=jnp.float32) / H)
    t = jnp.arange(T, dtype=jnp.float32) if positions is None else positions.astype(jnp.float32)
    angle = t[..., None] * inv_freq_G.reshape((1,) * t.ndim + inv_freq_G.shape)
    return jnp.cos(angle).astype(dtype), jnp.sin(angle).astype(dtype)


def rope(*xs_BTNH: jnp.ndarray, theta: float, positions_BT=None):
    """Rotary position embedding, rotate-half form (Su et al. 2021, arXiv 2104.09864), of
    each (B, T, heads, H) array (a tuple, in order), with one table in the arrays' dtype (as Hugging Face's Llama
    applies it: in the compute dtype). Token t sits at position t, or at `positions_BT[b, t]`
    (the original positions of the tokens a Mixture-of-Depths layer gathered,
    `jaxdepth.model.mod`)."""
    _, T, _, H = xs_BTNH[0].shape
    cos, sin = rope_tables(T, H, theta, xs_BTNH[0].dtype, positions_BT)
    if positions_BT is None:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]

    def rotate(x):
        x1, x2 = jnp.split(x, 2, axis=-1)
        return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    return tuple(rotate(x) for x in xs_BTNH)


def _attention_probs(q_BKGTH, k_BKSH, scale):
    """softmax(q k^T * scale + causal mask) in float32, (B, K, G, T, S): logits accumulated
    in float32 (`preferred_element_type`) from compute-dtype q, k."""
    T = q_BKGTH.shape[3]
    logits = jnp.einsum("bkgth,bksh->bkgts", q_BKGTH, k_BKSH,
                        preferred_element_type=jnp.float32) * scale
    logits = jnp.where(jnp.tril(jnp.ones((T, T), bool)), logits, -jnp.inf)  # row t sees s <= t
    return jax.nn.softmax(logits, axis=-1)


def _attend(p_BKGTS, v_BKSH):
    """p v, the probabilities cast to v's dtype (as jax.nn.dot_product_attention does)."""
    return jnp.einsum("bkgts,bksh->bkgth", p_BKGTS.astype(v_BKSH.dtype), v_BKSH)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _causal_attention(q_BKGTH, k_BKSH, v_BKSH, scale: float):
    return _attend(_attention_probs(q_BKGTH, k_BKSH, scale), v_BKSH)


@_causal_attention.defjvp
def _causal_attention_jvp(scale, primals, tangents):
    """Tangent of o = P v, P = softmax(S), S = q k^T * scale: dS = (dq k^T + q dk^T) scale,
    dP = P (dS - rowsum(P dS)) (the softmax Jacobian), do = dP v + P dv. Written out so that
    reverse mode (JAX transposes this rule) keeps only P, q, k, v for the backward pass and
    runs the softmax backward as one fused elementwise pass; forward mode (the signal
    diagnostics' `jax.jvp`) works as well, which a custom_vjp would not allow."""
    (q, k, v), (dq, dk, dv) = primals, tangents
    p = _attention_probs(q, k, scale)
    ds = (jnp.einsum("bkgth,bksh->bkgts", dq, k, preferred_element_type=jnp.float32)
          + jnp.einsum("bkgth,bksh->bkgts", q, dk, preferred_element_type=jnp.float32)) * scale
    dp = p * (ds - jnp.sum(p * ds, axis=-1, keepdims=True))
    return _attend(p, v), _attend(dp, v) + _attend(p, dv)


def xla_attention(q_BTNH, k_BTKH, v_BTKH, scale=None):
    """Causal softmax attention in plain XLA ops, materialising the (T, T) logits and
    probabilities (float32) per head; grouped k, v as they are; `scale` default 1/sqrt(H).
    Heads are moved ahead of the sequence first ((B, K, G, T, H), G = N / K query heads per
    key/value head): on XLA:CPU the per-head (T, H) x (H, T) products run about 1.4-2x faster
    in that layout than with BTNH operands. Against `jax.nn.dot_product_attention(
    implementation="xla")`, which it replaced: the same values within float32 rounding, and
    a faster backward pass (the written-out tangent above)."""
    B, T, N, H = q_BTNH.shape
    K = k_BTKH.shape[2]
    scale = 1.0 / math.sqrt(H) if scale is None else scale
    q_BKGTH = q_BTNH.reshape(B, T, K, N // K, H).transpose(0, 2, 3, 1, 4)
    k_BKSH, v_BKSH = (jnp.swapaxes(x, 1, 2) for x in (k_BTKH, v_BTKH))
    o_BKGTH = _causal_attention(q_BKGTH, k_BKSH, v_BKSH, float(scale))
    return o_BKGTH.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H)


def cudnn_attention(q_BTNH, k_BTNH, v_BTNH, scale=None):
    return jax.nn.dot_product_attention(q_BTNH, k_BTNH, v_BTNH, scale=scale, is_causal=True,
                                        implementation="cudnn")


def splash_attention(q_BTNH, k_BTNH, v_BTNH, scale=None, *, interpret: bool | None = None):
    """The splash kernel over a batch. Under a mesh context (`jax.sharding.use_abstract_mesh`,
    as `jaxdepth.train.build` traces a step; `jax.set_mesh`, as maxtext does) the kernel runs
    in `shard_map` over the mesh axes the logical axis rules give `batch` and `heads` (the
    rules of the step being traced, `layers.layout_rules`; else flax's `nn.logical_axis_rules`
    context; else the default `parallel.rules`). Without a mesh, XLA's SPMD partitioner
    cannot split the Mosaic custom call: a batch-sharded run then gathers q, k, v and every device computes the whole
    batch's attention (correct, not scalable). `interpret` (default: off TPU) runs the kernel
    in Pallas interpret mode, for tests on CPU."""
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    N = q_BTNH.shape[2]
    if k_BTNH.shape[2] != N:  # grouped-query: the kernel takes one k, v head per query head
        k_BTNH, v_BTNH = (jnp.repeat(x, N // x.shape[2], axis=2) for x in (k_BTNH, v_BTNH))
    local = functools.partial(_splash_local, scale=scale, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return local(q_BTNH, k_BTNH, v_BTNH)
    spec = _batch_heads_spec(mesh)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec,
                         check_vma=False)(q_BTNH, k_BTNH, v_BTNH)


def _batch_heads_spec(mesh):
    """PartitionSpec of a BTNH array: batch and heads over their mesh axes (those of `mesh`)."""
    from jaxdepth.config import ParallelConfig
    from jaxdepth.parallel import rules

    spec = nn.logical_to_mesh_axes(
        ("batch", None, "heads", None),
        layout_rules() or nn.get_logical_axis_rules() or rules(ParallelConfig()))

    def present(axes):
        kept = tuple(a for a in (axes if isinstance(axes, tuple) else (axes,))
                     if a in mesh.axis_names)
        return kept or None

    return jax.sharding.PartitionSpec(*(present(a) for a in spec))


def _splash_local(q_BTNH, k_BTNH, v_BTNH, *, scale, interpret: bool):
    """Splash attention on (a shard of) the batch: the kernel works per example on
    (heads, seq, head_dim) and does not scale q, so q is scaled by `scale` (default
    1/sqrt(H)) and the kernel
    vmapped over the batch. T is padded at the end to a multiple of 128: under the causal
    mask no real query sees a padded key, and the padded queries' outputs are dropped."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    B, T, N, H = q_BTNH.shape
    T_pad = -(-T // SPLASH_LANES) * SPLASH_LANES
    block = next(b for b in (512, 256, SPLASH_LANES) if T_pad % b == 0)

    def to_BNTH(x_BTNH):
        x_BTNH = jnp.pad(x_BTNH, ((0, 0), (0, T_pad - T), (0, 0), (0, 0)))
        return jnp.swapaxes(x_BTNH, 1, 2)

    q_f32 = q_BTNH.astype(jnp.float32)
    q_BTNH = (q_f32 / math.sqrt(H) if scale is None else q_f32 * scale).astype(q_BTNH.dtype)
    kernel = sa.make_splash_mha(
        sa.MultiHeadMask([sa.CausalMask((T_pad, T_pad))] * N),
        block_sizes=sa.BlockSizes(
            block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
            block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
            block_kv_dq=block),
        head_shards=1, q_seq_shards=1, interpret=interpret)
    o_BNTH = jax.vmap(kernel)(to_BNTH(q_BTNH), to_BNTH(k_BTNH), to_BNTH(v_BTNH))
    return jnp.swapaxes(o_BNTH, 1, 2)[:, :T]


KERNEL_FNS = {"xla": xla_attention, "cudnn": cudnn_attention, "splash": splash_attention}


class Attention(nn.Module):
    """softmax(q k^T / sqrt(H) + causal mask) v over `heads` query heads and `kv_heads`
    key/value heads, each shared by heads / kv_heads query heads (grouped-query attention,
    Ainslie et al. 2023, arXiv 2305.13245; every kernel takes the grouped k, v as they are),
    q k^T / H under muP (`parameterization.attention_scale`), rotary positions unless the
    model learns them (`cfg.positions`), optional q/k/v biases (Qwen2) and output bias
    (GPT-2); projections stored in `cfg.param_dtype` and computed in the compute dtype.
    `positions_BT`: the tokens' positions for RoPE when they are not 0..T-1 (tokens gathered
    in increasing position by a Mixture-of-Depths layer, whose causal mask over the gathered
    order is then the causal mask over the original positions)."""

    cfg: ModelConfig
    out_std: float
    v_std: float
    qk_std: float

    @nn.compact
    def __call__(self, x_BTW: jnp.ndarray, positions_BT=None) -> jnp.ndarray:
        cfg = self.cfg
        dtype, pdtype = compute_dtype(cfg), param_dtype(cfg)
        N, K, H = cfg.heads, cfg.kv_head_count, cfg.head_dim
        proj = lambda heads, name, std: Projection(  # noqa: E731
            (x_BTW.shape[-1], heads, H), ("embed", "heads", "kv"), std, cfg.qkv_bias, pdtype,
            name=name)()
        q_BTNH, k_BTKH, v_BTKH = fused_projections(
            x_BTW, [proj(N, "query", self.qk_std), proj(K, "key", self.qk_std),
                    proj(K, "value", self.v_std)], dtype, "heads")
        if cfg.positions == "rope":
            q_BTNH, k_BTKH = rope(q_BTNH, k_BTKH, theta=cfg.rope_theta, positions_BT=positions_BT)
        # None under sp: each kernel's own 1/sqrt(H), bit for bit what it computed before
        scale = None if cfg.parameterization == "sp" else attention_scale(cfg)
        o_BTNH = KERNEL_FNS[attention_kernel(cfg)](q_BTNH, k_BTKH, v_BTKH, scale)
        return nn.DenseGeneral(
            cfg.width, axis=(-2, -1), use_bias=cfg.proj_bias, dtype=dtype, param_dtype=pdtype,
            name="out", kernel_init=init(self.out_std, ("heads", "kv", "embed")),
            bias_init=zeros(("embed",)))(o_BTNH)
