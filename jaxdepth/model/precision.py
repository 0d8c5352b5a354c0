"""The precision policy and attention kernel of a model on a backend: `auto` resolved once,
where a model is built, from the platform (cpu / gpu / tpu) and the device kind.

- compute dtype `auto`: bfloat16 on GPU and TPU, float32 on CPU (where bfloat16 matmuls are
  emulated and slower). Whatever the compute dtype, norms, softmax, logits and the loss are
  computed in float32 (Micikevicius et al. 2018, arXiv 1710.03740, mixed precision; bfloat16
  keeps float32's exponent range, so no loss scaling is needed: Kalamkar et al. 2019,
  arXiv 1905.12322).
- attention `auto`: cuDNN's fused flash attention on NVIDIA GPUs in bfloat16
  (`jax.nn.dot_product_attention(implementation="cudnn")`), the Pallas splash kernel on TPU,
  XLA elsewhere. Forcing a kernel the backend lacks is a UserError before anything compiles.
- parameters are stored in `model.param_dtype` (float32 by default: the optimizer updates
  full-precision master weights) and cast to the compute dtype where they are used.
- the residual stream is float32 whatever the compute dtype (`RESIDUAL_DTYPE`).
- remat `auto`: `dots_saveable` on CPU, `none` elsewhere (`remat_for`).
"""

from __future__ import annotations

import dataclasses

from jaxdepth.errors import UserError

# kernel -> the platforms (and compute dtypes) it runs on
KERNELS = {
    "xla": "any backend, any dtype",
    "cudnn": "NVIDIA GPUs, bfloat16 compute, a head_dim that is a multiple of 8 and <= 256",
    "splash": "TPUs",
}
# cuDNN's flash attention takes head dims that are multiples of 8, up to 128 before Hopper and
# 256 from Hopper on (jax/_src/cudnn/fused_attention_stablehlo.py, check_is_flash_attention);
# `auto` keeps to 128 so that it never picks a kernel that fails on an older NVIDIA GPU.
CUDNN_AUTO_MAX_HEAD_DIM, CUDNN_MAX_HEAD_DIM = 128, 256

# The residual stream (the embeddings, every layer's output, `aux["hidden"]`) is float32 even
# with bfloat16 compute: bfloat16 has 8 significant bits, so x + y rounds away any update y
# smaller than about 2^-9 |x|, and small per-layer updates are what depth schemes make
# (LayerScale gates start at 1e-4, depth-muP scales branches by 1/sqrt(L)): a bfloat16 stream
# would silently make such layers the identity in the forward pass. Matmul inputs are still
# cast to the compute dtype, so this costs only the float32 copy of the (B, T, W) stream per
# layer (as under PyTorch autocast, where the residual adds run in float32).
RESIDUAL_DTYPE = "float32"


def backend() -> tuple[str, str]:
    """(platform, device kind) of the default backend, e.g. ("gpu", "NVIDIA H100 80GB HBM3")."""
    import jax

    dev = jax.devices()[0]
    return dev.platform, getattr(dev, "device_kind", "")


def is_nvidia(platform: str, device_kind: str) -> bool:
    return platform == "cuda" or (platform == "gpu" and "nvidia" in device_kind.lower())


def compute_dtype_for(dtype: str, platform: str) -> str:
    """`model.dtype` with `auto` resolved: bfloat16 on GPU/TPU, float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float32" if platform == "cpu" else "bfloat16"


def cudnn_head_dim_ok(head_dim: int | None, limit: int = CUDNN_MAX_HEAD_DIM) -> bool:
    return head_dim is None or (head_dim % 8 == 0 and head_dim <= limit)


def attention_for(attention: str, dtype: str, platform: str, device_kind: str,
                  head_dim: int | None = None) -> str:
    """`model.attention` with `auto` resolved for a (resolved) compute dtype; a forced kernel
    the backend lacks is a UserError naming what it needs and what would work. `head_dim`
    (None: not checked) keeps `auto` off cuDNN for head sizes it does not take."""
    nvidia = is_nvidia(platform, device_kind)
    if attention == "auto":
        if (nvidia and dtype == "bfloat16"
                and cudnn_head_dim_ok(head_dim, CUDNN_AUTO_MAX_HEAD_DIM)):
            return "cudnn"
        if platform == "tpu":
            return "splash"
        return "xla"
    where = f"{platform} ({device_kind})" if device_kind else platform
    if attention == "cudnn" and not (nvidia and dtype == "bfloat16"):
        raise UserError(f"model.attention=cudnn needs {KERNELS['cudnn']}; this run has "
                        f"{dtype} compute on {where}: use model.attention=auto or xla")
    if attention == "cudnn" and not cudnn_head_dim_ok(head_dim):
        raise UserError(f"model.attention=cudnn needs {KERNELS['cudnn']}; this model's "
                        f"head_dim is {head_dim}: use model.attention=auto or xla")
    if attention == "splash" and platform != "tpu":
        raise UserError(f"model.attention=splash needs {KERNELS['splash']}; this run is on "
                        f"{where}: use model.attention=auto or xla")
    return attention


def remat_for(remat: str, platform: str) -> str:
    """`model.remat` with `auto` resolved: `dots_saveable` on CPU, where saving only the
    matmul outputs and recomputing norms, RoPE, softmax and SwiGLU in the backward pass was
    both faster and smaller than saving everything (`jaxdepth bench --only remat` at width
    512, depth 8, batch 8 x 256 on 2 cores: 2.16 s and 1.01 GiB against 2.33 s and 1.34 GiB):
    XLA:CPU's scan stacks every saved residual with a zero fill, a copy in and a copy out,
    which costs more than the elementwise recomputation. `none` (save everything) on GPU/TPU,
    where it was not measured."""
    if remat != "auto":
        return remat
    return "dots_saveable" if platform == "cpu" else "none"


def resolve(mcfg, platform: str | None = None, device_kind: str | None = None):
    """`mcfg` with `dtype`, `attention` and `remat` resolved for the backend (default: this process's
    default backend). Idempotent: a resolved config resolves to itself."""
    if platform is None:
        platform, kind = backend()
        device_kind = kind if device_kind is None else device_kind
    dtype = compute_dtype_for(mcfg.dtype, platform)
    attention = attention_for(mcfg.attention, dtype, platform, device_kind or "", mcfg.head_dim)
    return dataclasses.replace(mcfg, dtype=dtype, attention=attention,
                               remat=remat_for(mcfg.remat, platform))


def compute_dtype(mcfg):
    """The jnp compute dtype of a model config; an unresolved `auto` (a model built outside
    `resolve`, e.g. in a notebook) is resolved for the default backend."""
    import jax.numpy as jnp

    if mcfg.dtype == "auto":
        return jnp.dtype(compute_dtype_for("auto", backend()[0]))
    return jnp.dtype(mcfg.dtype)


def param_dtype(mcfg):
    """The jnp storage dtype of every parameter."""
    import jax.numpy as jnp

    return jnp.dtype(mcfg.param_dtype)


def residual_dtype(mcfg):
    """The jnp dtype of the residual stream: float32 (see `RESIDUAL_DTYPE`)."""
    import jax.numpy as jnp

    return jnp.dtype(RESIDUAL_DTYPE)


def attention_kernel(mcfg) -> str:
    """The attention kernel of a model config; an unresolved `auto` is resolved for the
    default backend (as `compute_dtype` does). A concrete kernel is taken as given: configs
    that come through `resolve` were checked against the backend there."""
    if mcfg.attention != "auto":
        return mcfg.attention
    platform, kind = backend()
    return attention_for("auto", compute_dtype(mcfg).name, platform, kind, mcfg.head_dim)
