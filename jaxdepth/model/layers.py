"""Small shared pieces: initialisers with logical axis names, norms, RMS."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.config import ModelConfig
from jaxdepth.model.precision import compute_dtype, param_dtype


def init(std: float, names: tuple[str, ...]):
    """normal(std) initialiser carrying logical axis names for sharding."""
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def zeros(names: tuple[str, ...]):
    """zeros initialiser (biases) carrying logical axis names for sharding."""
    return nn.with_logical_partitioning(nn.initializers.zeros, names)


class Projection(nn.Module):
    """A dense projection's parameters, `kernel` (in, *out) ~ normal(std) and an optional
    zero `bias` (*out), returned instead of applied, so that projections of one input run as
    one matmul (`fused_projections`) while each keeps the name, shape and initial value
    nn.Dense / nn.DenseGeneral give it (DenseGeneral draws the flattened kernel and reshapes
    it, which is the same draw: random bits are generated in row-major order)."""

    shape: tuple[int, ...]
    names: tuple[str, ...]
    std: float
    use_bias: bool
    param_dtype: Any

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", init(self.std, self.names), self.shape, self.param_dtype)
        bias = (self.param("bias", zeros(self.names[1:]), self.shape[1:], self.param_dtype)
                if self.use_bias else None)
        return kernel, bias


def fused_projections(x, projections, dtype, axis_name: str):
    """`[x @ kernel_i + bias_i for each (kernel_i, bias_i)]` (x's last axis contracted) in
    `dtype`, computed as ONE matmul with the kernels concatenated on their first output axis,
    whose logical name is `axis_name` ("heads", "mlp"). One (T, sum F_i) matmul instead of
    several: larger GEMMs, and on XLA:CPU a gradient laid out for the weight-gradient GEMM
    without a transposing copy (`jaxdepth bench`). Each kernel stays a separate parameter: the
    concatenation copies only the weights, the split only slices the output. Where the step's
    mesh splits `axis_name` over devices (tensor parallelism), concatenating would put the
    shards in the wrong places, so the projections run as separate matmuls there."""
    def project(kernel, bias):
        y = jnp.tensordot(x.astype(dtype), kernel.astype(dtype), axes=1)
        return y if bias is None else y + bias.astype(dtype).reshape(
            (1,) * (y.ndim - bias.ndim) + bias.shape)

    if _split_over_devices(axis_name):
        return [project(k, b) for k, b in projections]
    kernels = [k for k, _ in projections]
    y = project(jnp.concatenate(kernels, axis=1), None if projections[0][1] is None
                else jnp.concatenate([b for _, b in projections], axis=0))
    out_axis = x.ndim - 1  # where the kernels' first output axis lands
    sizes = [k.shape[1] for k in kernels]
    return jnp.split(y, list(itertools.accumulate(sizes))[:-1], axis=out_axis)


def _split_over_devices(axis_name: str) -> bool:
    """True when a step is being traced (`activation_sharding`) on a mesh whose axes that the
    logical axis `axis_name` maps to hold more than one device."""
    layout = _LAYOUT.get()
    if layout is None or layout[1] is None:
        return False
    mesh = layout[0].mesh
    (axes,) = nn.logical_to_mesh_axes((axis_name,), layout[1])
    axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    return any(mesh.shape.get(a, 1) > 1 for a in axes)


def make_norm(cfg: ModelConfig, name: str, dtype=None) -> nn.Module:
    """RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) or LayerNorm (Ba et al. 2016,
    arXiv 1607.06450), per `cfg.norm`, parameters in `cfg.param_dtype`.

    Whatever the compute dtype, flax computes the statistics in float32
    (`force_float32_reductions=True`, set here explicitly: `_compute_stats` promotes x to at
    least float32), normalises and scales in float32 (x - mean, rsqrt(var + eps) and the scale
    promote to float32) and casts only the output to `dtype` (default: the compute dtype; a
    norm whose output is the residual stream (post-norms, the embedding norm) passes the
    stream's float32, so that it is not rounded to bfloat16 on the way)."""
    kw = dict(epsilon=cfg.norm_eps, dtype=dtype or compute_dtype(cfg), param_dtype=param_dtype(cfg),
              force_float32_reductions=True, name=name,
              scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)))
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(**kw)
    return nn.LayerNorm(bias_init=zeros(("embed",)), **kw)


def rms(x_BTW: jnp.ndarray) -> jnp.ndarray:
    """Root-mean-square over every element, in float32."""
    return jnp.sqrt(jnp.mean(jnp.square(x_BTW.astype(jnp.float32))))


# How activations are laid out, set while a step is traced (`activation_sharding`, from
# `jaxdepth.train.build`): the NamedSharding of the batch axis and the run's logical axis
# rules. Without the batch constraint GSPMD may follow the FSDP weights' `embed` split and
# keep the whole batch's activations on every device; the rules place the splash kernel's
# shard_map (`attention.splash_attention`).
_LAYOUT: contextvars.ContextVar = contextvars.ContextVar("activation_layout", default=None)


@contextlib.contextmanager
def activation_sharding(batch_sharding, rules=None):
    """Trace-time context: activations are split over the batch axes of `batch_sharding`
    (a NamedSharding whose spec's first entry shards the leading axis); `rules`: the
    run's logical axis rules (`jaxdepth.parallel.rules`)."""
    token = _LAYOUT.set((batch_sharding, rules))
    try:
        yield
    finally:
        _LAYOUT.reset(token)


def layout_rules():
    """The logical axis rules of the step being traced, or None outside one."""
    layout = _LAYOUT.get()
    return None if layout is None else layout[1]


def shard_batch(x):
    """`x` (batch leading) constrained to the batch shards, where a step sets them."""
    layout = _LAYOUT.get()
    if layout is None:
        return x
    sh = layout[0]
    spec = jax.sharding.PartitionSpec(sh.spec[0], *([None] * (x.ndim - 1)))
    return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(sh.mesh, spec))
