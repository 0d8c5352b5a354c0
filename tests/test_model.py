"""The model: shapes, causality, scan == unrolled, remat, schemes' defining properties."""

from __future__ import annotations

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model

from jaxdepth.model import Transformer
from jaxdepth.model.attention import Attention
from jaxdepth.model.block import Block
from jaxdepth.model.ffn import FFN

B, T = 2, 8


def init(cfg, seed=0):
    tokens = jax.random.randint(jax.random.key(seed + 1), (B, T), 0, cfg.vocab_size)
    params = nn.unbox(Transformer(cfg).init(jax.random.key(seed), tokens)["params"])
    return params, tokens


def unrolled_params(params, depth):
    """Stacked `layers` -> `layers_0..layers_{depth-1}` for the unrolled model."""
    out = {k: v for k, v in params.items() if k != "layers"}
    for i in range(depth):
        out[f"layers_{i}"] = jax.tree.map(lambda p: p[i], params["layers"])
    return out


class TestForward(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @pytest.mark.filterwarnings("ignore")
    def test_shapes_and_dtypes(self):
        cfg = tiny_model()
        params, tokens = init(cfg)
        fwd = self.variant(lambda p, t: Transformer(cfg).apply({"params": p}, t))
        logits, aux = fwd(params, tokens)
        chex.assert_shape(logits, (B, T, cfg.vocab_size))
        chex.assert_type(logits, jnp.float32)
        for name in ("rms_in", "rms_out", "attn_update_ratio", "ffn_update_ratio"):
            chex.assert_shape(aux["stats"][name], (cfg.depth,))
        chex.assert_tree_all_finite((logits, aux))
        chex.assert_shape(params["layers"]["attn"]["query"]["kernel"],
                          (cfg.depth, cfg.width, cfg.heads, cfg.head_dim))


def test_bfloat16_compute_keeps_float32_params_logits_and_residual_stream():
    cfg = tiny_model(dtype="bfloat16", scheme="lns")
    params, tokens = init(cfg)
    chex.assert_trees_all_equal_dtypes(params, jax.tree.map(lambda p: p.astype(jnp.float32), params))
    logits, aux = Transformer(cfg, return_hidden=True).apply({"params": params}, tokens)
    chex.assert_type(logits, jnp.float32)
    chex.assert_type(aux["hidden"], jnp.float32)  # precision.RESIDUAL_DTYPE


def test_causal_through_gradients():
    """d logits[:, t] / d input[:, s] is zero for every s > t and non-zero for s <= t
    (the embedding lookup is replaced by a one-hot matmul so positions get gradients)."""
    cfg = tiny_model()
    params, tokens = init(cfg)
    model = Transformer(cfg)
    t = 3

    def logits_at_t(x_BTV):
        def onehot_embed(f, args, kwargs, ctx):
            if isinstance(ctx.module, nn.Embed) and ctx.method_name == "__call__":
                return x_BTV @ ctx.module.embedding
            return f(*args, **kwargs)

        with nn.intercept_methods(onehot_embed):
            logits, _ = model.apply({"params": params}, tokens)
        return logits[:, t].sum()

    g = jax.grad(logits_at_t)(jax.nn.one_hot(tokens, cfg.vocab_size))
    per_pos = np.asarray(jnp.abs(g).sum(axis=(0, 2)))
    assert np.all(per_pos[t + 1:] == 0.0), per_pos
    assert np.all(per_pos[: t + 1] > 0.0), per_pos


@pytest.mark.parametrize("scheme", ["lns", "lns+mix", "peri"])
def test_scan_equals_unrolled(scheme):
    """Also for Mix-LN's one norm per sublayer run at the active end (flax.linen.cond on the
    layer index, traced in the scan, concrete when unrolled) and Peri-LN's embedding norm."""
    cfg = tiny_model(scheme=scheme)
    params, tokens = init(cfg)
    logits_scan, aux_scan = Transformer(cfg).apply({"params": params}, tokens)
    cfg_u = dataclasses.replace(cfg, scan_layers=False)
    logits_u, aux_u = Transformer(cfg_u).apply(
        {"params": unrolled_params(params, cfg.depth)}, tokens)
    chex.assert_trees_all_close(logits_scan, logits_u, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(aux_scan["stats"], aux_u["stats"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy, scheme", [("full", "pre"), ("dots_saveable", "pre"),
                                            ("full", "mix")])
def test_remat_matches_no_remat(policy, scheme):
    cfg = tiny_model(scheme=scheme)
    params, tokens = init(cfg)

    def loss(p, c):
        logits, _ = Transformer(c).apply({"params": p}, tokens)
        return jnp.mean(jax.nn.logsumexp(logits, -1))

    v0, g0 = jax.value_and_grad(loss)(params, cfg)
    v1, g1 = jax.value_and_grad(loss)(params, dataclasses.replace(cfg, remat=policy))
    chex.assert_trees_all_close(v0, v1, rtol=1e-6)
    chex.assert_trees_all_close(g0, g1, rtol=1e-5, atol=1e-7)


def capture_block(cfg, l):
    """Run one Block at layer index l; record each norm's output and each sublayer's input."""
    x = jax.random.normal(jax.random.key(3), (B, T, cfg.width))
    blk = Block(cfg)
    params = blk.init(jax.random.key(4), x, jnp.int32(l), True)
    seen = []

    def spy(f, args, kwargs, ctx):
        out = f(*args, **kwargs)
        if ctx.method_name == "__call__":
            if isinstance(ctx.module, nn.RMSNorm):
                seen.append(("norm", ctx.module.name, out))
            elif isinstance(ctx.module, (Attention, FFN)):
                seen.append(("in", ctx.module.name, args[0]))
        return out

    with nn.intercept_methods(spy):
        blk.apply(params, x, jnp.int32(l), True)
    return seen


@pytest.mark.parametrize("l", [0, 1, 3])
def test_lns_scales_each_pre_norm_output_by_inverse_sqrt_layer(l):
    """LNS (arXiv 2502.05795): sublayer input = N(x) / sqrt(l + 1), for attention and FFN;
    Pre-LN feeds N(x) itself. Guards against a scheme silently falling back to `pre`."""
    for scheme, factor in (("pre", 1.0), ("lns", 1.0 / np.sqrt(l + 1))):
        seen = capture_block(tiny_model(scheme=scheme, depth=4), l)
        norms = [s for s in seen if s[0] == "norm"]
        inputs = [s for s in seen if s[0] == "in"]
        assert [n[1] for n in norms] == ["attn_norm_in", "ffn_norm_in"]
        assert [i[1] for i in inputs] == ["attn", "ffn"]
        for (_, _, n_out), (_, _, f_in) in zip(norms, inputs):
            np.testing.assert_allclose(f_in, n_out * factor, rtol=1e-6, atol=1e-7)


def test_lns_equals_pre_at_first_layer_and_differs_after():
    cfg = tiny_model(depth=4)
    params, tokens = init(cfg)
    h = {s: Transformer(dataclasses.replace(cfg, scheme=s), return_hidden=True).apply(
        {"params": params}, tokens)[1]["hidden"] for s in ("pre", "lns")}
    np.testing.assert_array_equal(h["pre"][:2], h["lns"][:2])  # embedding and layer 0 out
    for l in range(2, cfg.depth + 1):
        assert not np.allclose(h["pre"][l], h["lns"][l], atol=1e-6), l


def test_zeroed_pre_layer_is_identity_but_none_has_no_residual():
    """With a layer's weights zeroed, a residual stack passes x through; the naive stack
    (`none`) outputs F(x) = 0: it has no skip path."""
    for scheme, expect_identity in (("pre", True), ("none", False)):
        cfg = tiny_model(scheme=scheme)
        params, tokens = init(cfg)
        params = {**params, "layers": jax.tree.map(jnp.zeros_like, params["layers"])}
        h = Transformer(cfg, return_hidden=True).apply({"params": params}, tokens)[1]["hidden"]
        if expect_identity:
            np.testing.assert_array_equal(h[1], h[0])
        else:
            np.testing.assert_array_equal(h[1], np.zeros_like(h[1]))
            assert float(jnp.abs(h[0]).sum()) > 0


def test_layer_mask_skips_layer():
    cfg = tiny_model()
    params, tokens = init(cfg)
    mask = jnp.array([True, False, True])
    h = Transformer(cfg, return_hidden=True).apply({"params": params}, tokens, mask)[1]["hidden"]
    np.testing.assert_array_equal(h[2], h[1])
    assert not np.allclose(h[1], h[0])


def test_scaled_init_shrinks_output_projections_only():
    cfg = tiny_model(depth=8, width=64, init_std=0.02)
    p0, _ = init(cfg)
    p1, _ = init(dataclasses.replace(cfg, scaled_init=True))
    std = lambda p: float(jnp.std(p))  # noqa: E731
    np.testing.assert_allclose(std(p1["layers"]["attn"]["out"]["kernel"]),
                               std(p0["layers"]["attn"]["out"]["kernel"]) / 4.0, rtol=0.05)
    np.testing.assert_allclose(std(p1["layers"]["ffn"]["down"]["kernel"]),
                               std(p0["layers"]["ffn"]["down"]["kernel"]) / 4.0, rtol=0.05)
    np.testing.assert_array_equal(p1["layers"]["attn"]["query"]["kernel"],
                                  p0["layers"]["attn"]["query"]["kernel"])


def test_ffn_hidden_sizes():
    assert tiny_model(width=96).ffn_hidden_size == 256  # 8/3 * 96 = 256, multiple of 64
    assert tiny_model(width=100).ffn_hidden_size == 320  # 266.7 -> 320
    assert tiny_model(width=32, ffn="gelu").ffn_hidden_size == 128
    assert tiny_model(ffn_hidden=48).ffn_hidden_size == 48
