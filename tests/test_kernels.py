"""The step's hand-written pieces against what they replaced: the fused projections, the
SwiGLU and causal-attention tangents (values, reverse- and forward-mode derivatives)."""

from __future__ import annotations

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.config import ParallelConfig
from jaxdepth.model.attention import xla_attention
from jaxdepth.model.ffn import swiglu
from jaxdepth.model.layers import activation_sharding, fused_projections
from jaxdepth.parallel import rules


def _normal(i, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.fold_in(jax.random.key(0), i), shape)


def _mesh(**sizes):
    """A stand-in batch sharding whose mesh has these axis sizes (what the check reads)."""
    return types.SimpleNamespace(mesh=types.SimpleNamespace(shape=sizes))


@pytest.mark.parametrize("bias", [False, True])
def test_fused_projections_equal_separate_matmuls_and_are_not_fused_over_split_heads(bias):
    x = _normal(0, (2, 5, 8))
    projs = [(_normal(1, (8, 3, 4)), _normal(2, (3, 4)) if bias else None),
             (_normal(3, (8, 2, 4)), _normal(4, (2, 4)) if bias else None)]
    want = [jnp.einsum("btw,wnh->btnh", x, k) + (0 if b is None else b[None, None])
            for k, b in projs]
    got = fused_projections(x, projs, jnp.float32, "heads")
    chex.assert_trees_all_close(got, want, atol=1e-5)
    jaxpr = lambda: str(jax.make_jaxpr(  # noqa: E731
        lambda x: fused_projections(x, projs, jnp.float32, "heads"))(x))
    assert "concatenate" in jaxpr()
    with activation_sharding(_mesh(data=4, fsdp=1, tensor=2), rules(ParallelConfig())):
        assert "concatenate" not in jaxpr()  # heads split over `tensor`: separate matmuls
        chex.assert_trees_all_close(fused_projections(x, projs, jnp.float32, "heads"), want,
                                    atol=1e-5)
    with activation_sharding(_mesh(data=8, fsdp=1, tensor=1), rules(ParallelConfig())):
        assert "concatenate" in jaxpr()  # data parallel: fused


def test_swiglu_tangent_matches_autodiff():
    g, u, t = _normal(0, (3, 7), 3.0), _normal(1, (3, 7)), _normal(2, (3, 7))
    ref = lambda g, u: jax.nn.silu(g) * u  # noqa: E731
    chex.assert_trees_all_close(swiglu(g, u), ref(g, u), atol=1e-6)
    loss = lambda f: lambda g, u: jnp.sum(jnp.sin(f(g, u)) * t)  # noqa: E731
    chex.assert_trees_all_close(jax.grad(loss(swiglu), (0, 1))(g, u),
                                jax.grad(loss(ref), (0, 1))(g, u), atol=1e-5)
    chex.assert_trees_all_close(jax.jvp(swiglu, (g, u), (t, g))[1],
                                jax.jvp(ref, (g, u), (t, g))[1], atol=1e-5)


def _reference(q, k, v, scale):
    return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                        implementation="xla")


@pytest.mark.parametrize("kv_heads,scale", [(4, None), (2, 0.3)])
def test_xla_attention_matches_jax_values_gradients_and_tangents(kv_heads, scale):
    B, T, N, H = 2, 6, 4, 8
    q, k, v = (_normal(i, (B, T, n, H)) for i, n in enumerate((N, kv_heads, kv_heads)))
    chex.assert_trees_all_close(xla_attention(q, k, v, scale), _reference(q, k, v, scale),
                                atol=1e-5)
    w = _normal(5, (B, T, N, H))
    loss = lambda f: lambda *a: jnp.sum(jnp.tanh(f(*a, scale)) * w)  # noqa: E731
    chex.assert_trees_all_close(jax.grad(loss(xla_attention), (0, 1, 2))(q, k, v),
                                jax.grad(loss(_reference), (0, 1, 2))(q, k, v), atol=1e-5)
    tangents = tuple(_normal(6 + i, a.shape) for i, a in enumerate((q, k, v)))
    f = lambda fn: lambda *a: fn(*a, scale)  # noqa: E731
    chex.assert_trees_all_close(jax.jvp(f(xla_attention), (q, k, v), tangents)[1],
                                jax.jvp(f(_reference), (q, k, v), tangents)[1], atol=1e-5)


def test_xla_attention_is_causal_and_bfloat16_keeps_float32_softmax():
    B, T, N, H = 1, 5, 2, 8
    q, k, v = (_normal(i, (B, T, N, H)) for i in range(3))
    v2 = v.at[:, 3:].set(100.0)  # later positions cannot reach earlier outputs
    np.testing.assert_array_equal(xla_attention(q, k, v)[:, :3], xla_attention(q, k, v2)[:, :3])
    bf = [a.astype(jnp.bfloat16) for a in (q, k, v)]
    out = xla_attention(*bf)
    chex.assert_type(out, jnp.bfloat16)
    chex.assert_trees_all_close(out.astype(jnp.float32), _reference(*bf, None).astype(jnp.float32),
                                atol=2e-2)
