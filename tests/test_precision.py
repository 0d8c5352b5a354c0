"""The precision policy and the attention kernels: `auto` per backend (pure functions of the
platform and device kind), forced kernels the backend lacks refused, bfloat16 compute close
to float32 with float32 logits and residual stream, bfloat16 parameters, and every kernel
that can run here against a float32 reference."""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model
from jax.sharding import Mesh

from jaxdepth.config import ModelConfig, load_config
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer, precision
from jaxdepth.model.attention import splash_attention, xla_attention

H100, MI300, TPU = "NVIDIA H100 80GB HBM3", "AMD Instinct MI300X", "TPU v5 lite"
ON_CPU = pytest.mark.skipif(jax.default_backend() != "cpu", reason="asserts CPU behaviour")
BF16_EPS = 2.0 ** -8  # bfloat16's unit roundoff (8 significant bits)


def init(cfg, B=2, T=8, seed=0):
    tokens = jax.random.randint(jax.random.key(seed + 1), (B, T), 0, cfg.vocab_size)
    params = jax.jit(Transformer(cfg).init)(jax.random.key(seed), tokens)["params"]
    return nn.unbox(params), tokens


def forward(cfg, params, tokens, **kw):
    """Jitted (one compile instead of an eager dispatch per op)."""
    return jax.jit(Transformer(cfg, **kw).apply)({"params": params}, tokens)


# ------------------------------------------------------------------ auto, per backend


@pytest.mark.parametrize("platform, kind, dtype, width, expect", [
    ("cpu", "cpu", "auto", 32, ("float32", "xla")),
    ("gpu", H100, "auto", 32, ("bfloat16", "cudnn")),
    ("gpu", H100, "float32", 32, ("float32", "xla")),  # cuDNN's kernel wants bf16
    ("gpu", H100, "auto", 48, ("bfloat16", "xla")),  # head_dim 12: not a multiple of 8
    ("gpu", MI300, "auto", 32, ("bfloat16", "xla")),
    ("tpu", TPU, "auto", 32, ("bfloat16", "splash")),
])
def test_auto_resolves_per_backend(platform, kind, dtype, width, expect):
    mcfg = ModelConfig(width=width, heads=4, dtype=dtype)
    got = precision.resolve(mcfg, platform, kind)
    assert (got.dtype, got.attention) == expect
    assert precision.resolve(got, platform, kind) == got  # idempotent


@pytest.mark.parametrize("platform, kind, attention, dtype, width, words", [
    ("cpu", "cpu", "cudnn", "auto", 32, ["model.attention=cudnn", "NVIDIA"]),
    ("gpu", H100, "cudnn", "float32", 32, ["model.attention=cudnn", "bfloat16"]),
    ("gpu", H100, "cudnn", "auto", 48, ["model.attention=cudnn", "head_dim is 12"]),
    ("gpu", H100, "splash", "auto", 32, ["model.attention=splash", "TPU"]),
    ("cpu", "cpu", "splash", "auto", 32, ["model.attention=splash", "TPU"]),
])
def test_forced_kernel_the_backend_lacks_is_a_user_error(platform, kind, attention, dtype,
                                                        width, words):
    mcfg = ModelConfig(width=width, heads=4, dtype=dtype, attention=attention)
    with pytest.raises(UserError) as e:
        precision.resolve(mcfg, platform, kind)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@ON_CPU
def test_resolve_model_refuses_cudnn_on_cpu():
    from jaxdepth.train.build import resolve_model

    cfg = load_config(None, ["model.attention=cudnn"])
    with pytest.raises(UserError, match="model.attention=cudnn"):
        resolve_model(cfg.model, 258)


@ON_CPU
def test_unresolved_auto_runs_on_cpu():
    """A model built outside `resolve_model` (ModelConfig() as is) resolves `auto` itself."""
    cfg = tiny_model()
    assert (cfg.dtype, cfg.attention) == ("auto", "auto")
    assert precision.compute_dtype(cfg) == jnp.float32
    assert precision.attention_kernel(cfg) == "xla"
    params, tokens = init(cfg)
    logits, _ = forward(cfg, params, tokens)
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


# ------------------------------------------------------------------ dtypes through the model


@pytest.mark.parametrize("scheme", ["pre", "post"])
def test_bfloat16_compute_is_close_to_float32_with_the_same_params(scheme):
    """bfloat16 carries 8 significant bits: through a few layers the logits and log-probs
    stay within a few units of its roundoff (measured about 1-1.3 eps)."""
    cfg = tiny_model(dtype="float32", scheme=scheme, depth=4, width=64, heads=4, vocab_size=128)
    params, tokens = init(cfg, T=16)
    l32, _ = forward(cfg, params, tokens)
    l16, aux = forward(dataclasses.replace(cfg, dtype="bfloat16"), params, tokens,
                       return_hidden=True)
    chex.assert_type([l16, aux["hidden"]], jnp.float32)
    assert float(jnp.linalg.norm(l16 - l32) / jnp.linalg.norm(l32)) < 4 * BF16_EPS
    logp = jax.nn.log_softmax
    np.testing.assert_allclose(logp(l16), logp(l32), atol=4 * BF16_EPS * float(jnp.abs(l32).max()))


def test_float32_residual_stream_keeps_small_updates():
    """LayerScale's gates start at 1e-4: a layer's update is ~4e-5 of the stream, far below
    bfloat16's resolution. With bfloat16 compute the float32 stream keeps it (as the float32
    model computes it); added to a bfloat16 stream, nearly all of it would round away."""
    cfg = tiny_model(dtype="bfloat16", scheme="layerscale")
    params, tokens = init(cfg)
    h16 = forward(cfg, params, tokens, return_hidden=True)[1]["hidden"]
    h32 = forward(dataclasses.replace(cfg, dtype="float32"), params, tokens,
                  return_hidden=True)[1]["hidden"]
    d16, d32 = h16[1] - h16[0], h32[1] - h32[0]
    assert float(jnp.linalg.norm(d16 - d32) / jnp.linalg.norm(d32)) < 4 * BF16_EPS
    bf = jnp.bfloat16
    lost = (h16[0].astype(bf) + d16.astype(bf)) == h16[0].astype(bf)
    assert float(lost.mean()) > 0.9


@pytest.mark.parametrize("tied", [True, False])
def test_logits_accumulate_in_float32(tied):
    """Unembedding with bfloat16 compute = the float32 product of the bfloat16-rounded
    stream and table (no bfloat16 rounding of the logits themselves). `post` has no final
    norm, so `unembed(h)` is the matmul alone."""
    cfg = tiny_model(dtype="bfloat16", scheme="post", tied_embeddings=tied)
    params, _ = init(cfg)
    h_BTW = jax.random.normal(jax.random.key(5), (2, 8, cfg.width))
    logits = jax.jit(lambda p, h: Transformer(cfg).apply(
        {"params": p}, h, method=Transformer.unembed))(params, h_BTW)
    chex.assert_type(logits, jnp.float32)
    table = params["embed"]["embedding"].T if tied else params["head"]["kernel"]
    r32 = lambda x: np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32), np.float64)  # noqa: E731
    np.testing.assert_allclose(logits, r32(h_BTW) @ r32(table), rtol=1e-5, atol=1e-6)
    assert float(jnp.mean(logits != logits.astype(jnp.bfloat16).astype(jnp.float32))) > 0.9


def test_bfloat16_params_keep_names_and_shapes_and_train():
    """Every parameter (Dense kernels, embedding, head, norm scales and biases, scheme
    gates) in bfloat16; the tree has the float32 model's names and shapes (checkpoints)."""
    kw = dict(dtype="bfloat16", scheme="layerscale", norm="layernorm", tied_embeddings=False)
    cfg = tiny_model(param_dtype="bfloat16", **kw)
    params, tokens = init(cfg)
    ref, _ = init(tiny_model(**kw))
    chex.assert_trees_all_equal_shapes(params, ref)
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda p: p.astype(jnp.bfloat16), ref))

    def loss(p):
        logits, _ = forward(cfg, p, tokens)
        return -jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    chex.assert_type(value, jnp.float32)
    chex.assert_trees_all_equal_dtypes(grads, params)
    chex.assert_tree_all_finite((value, grads))


# ------------------------------------------------------------------ attention kernels


def reference_attention(q_BTNH, k_BTNH, v_BTNH):
    """softmax(q k^T / sqrt(H) + causal mask) v in float64 numpy."""
    q, k, v = (np.asarray(x.astype(jnp.float32), np.float64) for x in (q_BTNH, k_BTNH, v_BTNH))
    T, H = q.shape[1], q.shape[-1]
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(H)
    logits = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bnts,bsnh->btnh", p / p.sum(-1, keepdims=True), v)


def qkv(B=2, T=8, N=2, H=16, dtype=jnp.float32):
    return [jax.random.normal(k, (B, T, N, H)).astype(dtype)
            for k in jax.random.split(jax.random.key(7), 3)]


def eqns(jaxpr):
    """Every equation of a jaxpr, nested ones included."""
    for e in jaxpr.eqns:
        yield e
        for p in e.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from eqns(inner)


def test_xla_attention_matches_float32_reference():
    q, k, v = qkv()
    np.testing.assert_allclose(xla_attention(q, k, v), reference_attention(q, k, v),
                               rtol=1e-5, atol=1e-6)


def test_xla_attention_bfloat16_has_float32_logits_and_softmax():
    """With bfloat16 q, k, v: the q k^T product accumulates and returns float32, every exp
    (the softmax) is float32, and the output is within bfloat16 rounding of the reference
    (p and the output are rounded to bfloat16, each ~eps/2 relative)."""
    q, k, v = qkv(dtype=jnp.bfloat16)
    jaxpr = jax.make_jaxpr(xla_attention)(q, k, v).jaxpr
    all_eqns = list(eqns(jaxpr))
    exps = [e for e in all_eqns if e.primitive.name == "exp"]
    assert exps and all(o.aval.dtype == jnp.float32 for e in exps for o in e.outvars)
    assert any(e.primitive.name == "dot_general" and e.outvars[0].aval.dtype == jnp.float32
               and all(i.aval.dtype == jnp.bfloat16 for i in e.invars) for e in all_eqns)
    out = xla_attention(q, k, v)
    chex.assert_type(out, jnp.bfloat16)
    np.testing.assert_allclose(out.astype(jnp.float32), reference_attention(q, k, v),
                               atol=4 * BF16_EPS * float(jnp.abs(v.astype(jnp.float32)).max()))


def test_splash_interpret_matches_xla_forward_and_gradients():
    """The TPU splash kernel in Pallas interpret mode on CPU; T = 40 is padded to one
    128-block (the causal mask keeps the padding out of every real query's softmax)."""
    q, k, v = qkv(B=1, T=40)

    def f(attend):
        def loss(q, k, v):
            o = attend(q, k, v)
            return jnp.sum(o * v), o
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))

    (_, o_s), g_s = f(lambda *a: splash_attention(*a, interpret=True))(q, k, v)
    (_, o_x), g_x = f(xla_attention)(q, k, v)
    np.testing.assert_allclose(o_s, reference_attention(q, k, v), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g_s, g_x, rtol=1e-4, atol=1e-5)


def test_splash_under_a_mesh_runs_in_shard_map_and_in_the_model():
    """With a mesh in context the kernel runs inside shard_map over (batch, heads); through
    the whole model (interpret mode, as off TPU) it gives the xla kernel's logits."""
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    cfg = tiny_model(attention="xla")
    params, tokens = init(cfg)
    with jax.set_mesh(mesh):
        logits_splash, _ = forward(dataclasses.replace(cfg, attention="splash"), params, tokens)
        jaxpr = jax.make_jaxpr(lambda *a: splash_attention(*a, interpret=True))(*qkv())
    assert any(e.primitive.name == "shard_map" for e in jaxpr.jaxpr.eqns)
    np.testing.assert_allclose(logits_splash, forward(cfg, params, tokens)[0],
                               rtol=1e-5, atol=1e-5)


def test_built_step_with_splash_matches_xla():
    """The configured path: `build` traces the splash kernel (Pallas interpret mode on CPU)
    inside the mesh, where it shards itself; one train step's loss equals the xla kernel's."""
    from jaxdepth.config import ParallelConfig, TrainConfig
    from jaxdepth.train.build import build

    mcfg = dataclasses.replace(tiny_model(depth=1, dtype="float32"), attention="xla")
    tokens = jax.random.randint(jax.random.key(1), (2, 17), 0, 64)
    losses = []
    for kernel in ("xla", "splash"):
        b = build(dataclasses.replace(mcfg, attention=kernel), TrainConfig(), ParallelConfig(),
                  16, -1)
        state = b.init_state(jax.random.key(0))
        losses.append(float(b.train_step(state, jax.device_put({"tokens": tokens},
                                                               b.batch_sharding))[1]["loss"]))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
