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
"""

from __future__ import annotations

import dataclasses

from jaxdepth.errors import UserError

# kernel -> the platforms (and compute dtypes) it runs on
KERNELS = {
    "xla": "any backend, any dtype",
    "cudnn": "NVIDIA GPUs, bfloat16 compute",
    "splash": "TPUs",
}


def backend() -> tuple[str, str]:
    """(platform, device kind) of the default backend, e.g. ("gpu", "NVIDIA H100 80GB HBM3")."""
    import jax

    dev = jax.devices()[0]
    return dev.platform, getattr(dev, "device_kind", "")


def is_nvidia(platform: str, device_kind: str) -> bool:
    return platform in ("gpu", "cuda") and "nvidia" in device_kind.lower() or platform == "cuda"


def compute_dtype_for(dtype: str, platform: str) -> str:
    """`model.dtype` with `auto` resolved: bfloat16 on GPU/TPU, float32 on CPU."""
    if dtype != "auto":
        return dtype
    return "float32" if platform == "cpu" else "bfloat16"


def attention_for(attention: str, dtype: str, platform: str, device_kind: str) -> str:
    """`model.attention` with `auto` resolved for a (resolved) compute dtype; a forced kernel
    the backend lacks is a UserError naming what it needs and what would work."""
    nvidia = is_nvidia(platform, device_kind)
    if attention == "auto":
        if nvidia and dtype == "bfloat16":
            return "cudnn"
        if platform == "tpu":
            return "splash"
        return "xla"
    where = f"{platform} ({device_kind})" if device_kind else platform
    if attention == "cudnn" and not (nvidia and dtype == "bfloat16"):
        raise UserError(f"model.attention=cudnn needs {KERNELS['cudnn']}; this run has "
                        f"{dtype} compute on {where}: use model.attention=auto or xla")
    if attention == "splash" and platform != "tpu":
        raise UserError(f"model.attention=splash needs {KERNELS['splash']}; this run is on "
                        f"{where}: use model.attention=auto or xla")
    return attention


def resolve(mcfg, platform: str | None = None, device_kind: str | None = None):
    """`mcfg` with `dtype` and `attention` resolved for the backend (default: this process's
    default backend). Idempotent: a resolved config resolves to itself."""
    if platform is None:
        platform, kind = backend()
        device_kind = kind if device_kind is None else device_kind
    dtype = compute_dtype_for(mcfg.dtype, platform)
    attention = attention_for(mcfg.attention, dtype, platform, device_kind or "")
    return dataclasses.replace(mcfg, dtype=dtype, attention=attention)


def compute_dtype(mcfg):
    """The jnp compute dtype of a model config; an unresolved `auto` (a model built outside
    `resolve`, e.g. in a notebook) is resolved for the default backend."""
    import jax.numpy as jnp

    if mcfg.dtype == "auto":
        return jnp.dtype(compute_dtype_for("auto", backend()[0]))
    return jnp.dtype(mcfg.dtype)
