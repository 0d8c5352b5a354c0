"""Parameterisations (jaxdepth.model.parameterization): sp is today's model bit for bit, and
each muP / CompleteP rule (docs/literature.md §8 table) acts on the tensors it names.

The expected multipliers below are written out from the table, not read from
`tensor_rules`, so a wrong rule fails here."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model

from jaxdepth.config import RunConfig, replace
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer
from jaxdepth.model.attention import Attention
from jaxdepth.sweep.spec import run_id
from jaxdepth.train.build import resolve_model
from jaxdepth.train.optim import lr_schedule, make_optimizer, param_labels
from jaxdepth.train.step import TrainState, make_train_step

# Measured with the code before parameterisations existed (commit d2bfa51), on this
# project's 2-core CPU: the sum of squares of the parameters at init and after 4 AdamW steps
# (warmup 1, clipping, weight decay) and the loss of each step, depth 3, width 32, on a fixed
# random batch. sp must reproduce them.
SP_GOLDEN = {
    ("pre", True): (244.3474578857422, 246.1722869873047,
                    [4.185362339019775, 4.185362339019775, 4.011533260345459, 3.9237215518951416]),
    ("layerscale", False): (245.15390014648438, 246.7938232421875,
                            [4.182310581207275, 4.182310581207275, 4.059113502502441,
                             3.967707395553589]),
}
# run ids of sp configs written before the parameterisation keys existed (d2bfa51)
SP_RUN_IDS = {(): "pre_d4_w128_5c57a856", (("depth", 8), ("scheme", "lns")): "lns_d8_w128_bff1cf46"}


@pytest.mark.parametrize("scheme,tied", list(SP_GOLDEN))
def test_sp_reproduces_the_model_before_parameterisations(scheme, tied):
    cfg = replace(RunConfig(), model=dict(depth=3, width=32, heads=2, scheme=scheme,
                                          tied_embeddings=tied, dtype="float32"),
                  data=dict(seq_len=16, batch_size=4), train=dict(steps=4, warmup_steps=1))
    assert cfg.model.parameterization == "sp"
    mcfg = resolve_model(cfg.model, 64)
    model, tx = Transformer(mcfg), make_optimizer(mcfg, cfg.train)
    step = jax.jit(make_train_step(model, tx, lr_schedule(cfg.train), -1, 3))
    toks = jnp.asarray(np.random.default_rng(0).integers(0, 64, (4, 17)), jnp.int32)
    params = nn.unbox(model.init(jax.random.key(0), toks[:, :-1])["params"])
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.key(0))
    sumsq = lambda p: float(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p)))  # noqa: E731
    sq0 = sumsq(params)
    losses = []
    for _ in range(4):
        state, m = step(state, {"tokens": toks})
        losses.append(float(m["loss"]))
    want0, want1, want_losses = SP_GOLDEN[(scheme, tied)]
    np.testing.assert_allclose([sq0, sumsq(state.params), *losses],
                               [want0, want1, *want_losses], rtol=1e-6)


def test_sp_run_ids_unchanged_and_mu_runs_tagged():
    for changes, want in SP_RUN_IDS.items():
        cfg = replace(RunConfig(), model=dict(changes))
        assert run_id(cfg) == want
        # the parameterisation's keys do not act under sp, so they do not change its id
        assert run_id(replace(cfg, model=dict(base_width=32, depth_alpha=0.5))) == want
    mu = replace(RunConfig(), model=dict(parameterization="completep"))
    assert run_id(mu).startswith("pre_completep_d4_w128_")
    assert run_id(mu) != run_id(replace(mu, model=dict(base_depth=2)))


# completep, m_W = 64 / 32 = 2, m_L = 4 / 1 = 4, alpha = 1/2 (depth-muP's exponent, so that
# the hidden LR's m_L^(alpha - 1) is not 1): the table's multipliers per role
# The FFN output projection's fan-in is the FFN hidden size, 8/3 W rounded up to a multiple
# of 64: 192 at width 64, 128 at 32, so its own m_W is 1.5 (microsoft/mup: fan-in ratio).
MW, ML, ALPHA, MF = 2.0, 4.0, 0.5, 192 / 128
EXPECTED = {  # role: (lr, weight decay (of the decayed roles), Adam eps)
    "completep": {
        "hidden_matrix": (ML ** (ALPHA - 1) / MW, MW, ML ** -ALPHA / MW),
        "ffn_out": (ML ** (ALPHA - 1) / MF, MF, ML ** -ALPHA / MF),
        "hidden_vector": (ML ** (ALPHA - 1), None, ML ** -ALPHA / MW),
        "embedding": (1.0, 1.0, 1 / MW), "unembedding": (1.0, 1.0, 1 / MW),
        "outer_vector": (1.0, None, 1 / MW)},
    "mup": {
        "hidden_matrix": (1 / MW, 1.0, 1 / MW), "ffn_out": (1 / MF, 1.0, 1 / MF),
        "hidden_vector": (1.0, None, 1 / MW),
        "embedding": (1.0, 1.0, 1 / MW), "unembedding": (1.0, 1.0, 1 / MW),
        "outer_vector": (1.0, None, 1 / MW)},
}
LR, WD, EPS = 1e-2, 0.1, 1e-8


def _mu_run(p, **model):
    return replace(RunConfig(), model=dict(
        depth=4, width=64, heads=4, vocab_size=64, parameterization=p, base_width=32,
        base_depth=1, depth_alpha=ALPHA, tied_embeddings=False, scheme="layerscale", **model),
        train=dict(lr=LR, warmup_steps=0, weight_decay=WD, grad_clip=0.0))


def _first_update(cfg, params, grad_value, weight_decay):
    tx = make_optimizer(cfg.model, dataclasses.replace(cfg.train, weight_decay=weight_decay))
    grads = jax.tree.map(lambda x: jnp.full_like(x, grad_value), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


@pytest.fixture(scope="module")
def mu_params():
    cfg = _mu_run("completep")
    return nn.unbox(Transformer(cfg.model).init(jax.random.key(0),
                                                jnp.zeros((1, 8), jnp.int32))["params"])


@pytest.mark.parametrize("p", ["mup", "completep"])
def test_per_tensor_lr_weight_decay_and_eps_multipliers(p, mu_params):
    cfg = _mu_run(p)
    labels = param_labels(mu_params)
    assert set(jax.tree.leaves(labels)) == set(EXPECTED[p])  # every role occurs in the model
    # Adam's first step moves every coordinate by lr * g / (|g| + eps): 1 for g = 1
    lr_step = _first_update(cfg, mu_params, 1.0, 0.0)
    # with g = 0 only the coupled weight decay moves a parameter: -lr * lr_mult * wd * p
    wd_step = _first_update(cfg, mu_params, 0.0, WD)
    # with g ~ eps the step is lr * lr_mult * g / (g + eps * eps_mult)
    g = EPS
    eps_step = _first_update(cfg, mu_params, g, 0.0)
    checked = set()
    for (path, role), u_lr, u_wd, u_eps, x in zip(
            jax.tree_util.tree_leaves_with_path(labels), jax.tree.leaves(lr_step),
            jax.tree.leaves(wd_step), jax.tree.leaves(eps_step), jax.tree.leaves(mu_params)):
        lr_mult, wd_mult, eps_mult = EXPECTED[p][role]
        np.testing.assert_allclose(np.asarray(u_lr), -LR * lr_mult, rtol=1e-5, err_msg=str(path))
        want_wd = 0.0 if wd_mult is None else -LR * lr_mult * WD * wd_mult
        np.testing.assert_allclose(np.asarray(u_wd), want_wd * np.asarray(x), rtol=1e-5,
                                   atol=1e-12, err_msg=str(path))
        np.testing.assert_allclose(np.asarray(u_eps), -LR * lr_mult * g / (g + EPS * eps_mult),
                                   rtol=1e-4, err_msg=str(path))
        checked.add(role)
    assert checked == set(EXPECTED[p])


def test_hidden_init_variance_scales_with_width():
    """Hidden weights s^2 / m_W, embedding s^2 (muP table rows 1-2); the FFN output
    projection's m_W is its fan-in ratio F / F_base = 704 / 192."""
    cfg = tiny_model(width=256, heads=8, parameterization="mup", base_width=64, depth=1)
    params = nn.unbox(Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
                      ["params"])
    std = cfg.init_std
    # sample stds of 16K-180K draws: within 2% (1%) of the rule; 704/192 vs 4 differ by 4%
    np.testing.assert_allclose(float(jnp.std(params["embed"]["embedding"])), std, rtol=0.02)
    for name in ("query", "key", "value", "out"):
        np.testing.assert_allclose(float(jnp.std(params["layers"]["attn"][name]["kernel"])),
                                   std / 2, rtol=0.01, err_msg=name)
    for name, m in (("gate", 4.0), ("up", 4.0), ("down", 704 / 192)):
        np.testing.assert_allclose(float(jnp.std(params["layers"]["ffn"][name]["kernel"])),
                                   std / np.sqrt(m), rtol=0.01, err_msg=name)


def test_residual_branch_multiplier_is_a_block_coefficient():
    """completep: layer 0's attention update ||y|| / ||x|| is m_L^(-alpha) times muP's (same
    params, same input); composed with the scheme's own branch coefficient (depth_mup's
    1/sqrt(L))."""
    toks = jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 8)), jnp.int32)

    def update0(**kw):
        cfg = tiny_model(depth=4, base_depth=1, dtype="float32", **kw)
        model = Transformer(cfg)
        params = model.init(jax.random.key(0), toks)["params"]
        return float(model.apply({"params": params}, toks)[1]["stats"]["attn_update_ratio"][0])

    mup = update0(parameterization="mup")
    for alpha in (1.0, 0.5):
        cp = update0(parameterization="completep", depth_alpha=alpha)
        np.testing.assert_allclose(cp, mup * 4.0 ** -alpha, rtol=1e-5)
    both = update0(parameterization="completep", scheme="depth_mup")
    np.testing.assert_allclose(both, mup / 2 / 4, rtol=1e-5)  # 1/sqrt(L) and 1/m_L


def test_attention_logits_over_d_head_under_mup():
    """q.k / d_head = (q / sqrt(d_head)).k / sqrt(d_head): muP's attention equals sp's with
    the query kernel scaled by 1/sqrt(d_head) (RoPE is linear in q)."""
    cfg_sp = tiny_model(width=32, heads=2, dtype="float32", attention="xla")
    cfg_mu = dataclasses.replace(cfg_sp, parameterization="mup", base_width=32)
    x = jax.random.normal(jax.random.key(2), (2, 8, 32))
    attn = lambda c: Attention(c, out_std=0.02, v_std=0.02, qk_std=0.02)  # noqa: E731
    params = attn(cfg_sp).init(jax.random.key(0), x)["params"]
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, v: v / np.sqrt(cfg_sp.head_dim) if "query" in str(path) else v, params)
    np.testing.assert_allclose(attn(cfg_mu).apply({"params": params}, x),
                               attn(cfg_sp).apply({"params": scaled}, x), rtol=1e-5, atol=1e-6)


def test_input_and_output_multipliers():
    """Embedding output x input_mult; logits x output_mult / m_W (muP table)."""
    sp = tiny_model(width=64, heads=4, dtype="float32")
    mu = dataclasses.replace(sp, parameterization="mup", base_width=32, input_mult=2.0,
                             output_mult=3.0)
    toks = jnp.zeros((1, 4), jnp.int32)
    params = Transformer(sp).init(jax.random.key(0), toks)["params"]
    h = jax.random.normal(jax.random.key(1), (1, 4, 64))
    logits = {c.parameterization: Transformer(c).apply({"params": params}, h,
                                                       method=Transformer.unembed)
              for c in (sp, mu)}
    np.testing.assert_allclose(logits["mup"], logits["sp"] * 3.0 / 2.0, rtol=1e-6)
    x0 = {c.parameterization: Transformer(c, return_hidden=True).apply(
        {"params": params}, toks)[1]["hidden"][0] for c in (sp, mu)}
    np.testing.assert_allclose(x0["mup"], 2.0 * x0["sp"], rtol=1e-6)


@pytest.mark.parametrize("changes,match", [
    (dict(parameterization="mu_p"), "model.parameterization 'mu_p' is unknown; valid: sp, mup"),
    (dict(depth_alpha=2.0), "model.depth_alpha must be in \\[0.5, 1\\]"),
    (dict(base_width=0), "model.base_width must be >= 1"),
    (dict(output_mult=0.0), "model.input_mult and model.output_mult must be > 0"),
])
def test_bad_parameterisation_values_are_one_line_errors(changes, match):
    with pytest.raises(UserError, match=match):
        replace(RunConfig(), model=changes)
