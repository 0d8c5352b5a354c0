"""Connections beyond the residual stream: DenseFormer DWA (identity at init, scan ==
unrolled, gradients reach its weights), LayerSkip's exit-loss weights, layer dropout and
early-exit loss, and 3 training steps at depth 8 of each option."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_model, tiny_run
from test_model import init, unrolled_params

from jaxdepth.model import Transformer
from jaxdepth.model.dwa import dwa_mask
from jaxdepth.rundir import read_metrics
from jaxdepth.train.loop import train
from jaxdepth.train.step import early_exit_weights, layer_dropout_rates, layer_keep

DEPTH = 8


def test_dwa_equals_base_model_at_init_and_scan_equals_unrolled():
    dilation, period = 2, 2  # DenseFormer 2x2: DWAs after blocks 2 and 4, every other output
    depth = 4  # the unrolled stack's compile time grows with depth
    base = tiny_model(depth=depth)
    dense = dataclasses.replace(base, dwa=True, dwa_dilation=dilation, dwa_period=period)
    params, tokens = init(base)
    dparams, _ = init(dense)
    assert dparams["dwa_weights"].shape == (depth, depth + 1)
    # the same layer parameters (names, shapes, values) as the plain model's
    chex.assert_trees_all_equal({k: v for k, v in dparams.items() if k != "dwa_weights"}, params)
    logits, _ = Transformer(base).apply({"params": params}, tokens)
    dlogits, _ = Transformer(dense).apply({"params": dparams}, tokens)
    chex.assert_trees_all_equal(dlogits, logits)  # exactly: a = I at init
    # trained-looking weights: the scanned history and the unrolled list agree
    dparams["dwa_weights"] = 0.1 * jax.random.normal(jax.random.key(5), (depth, depth + 1))
    out_scan, aux_scan = Transformer(dense, return_hidden=True).apply({"params": dparams}, tokens)
    unrolled = dataclasses.replace(dense, scan_layers=False)
    out_u, aux_u = Transformer(unrolled, return_hidden=True).apply(
        {"params": unrolled_params(dparams, depth)}, tokens)
    chex.assert_trees_all_close(out_scan, out_u, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(aux_scan["hidden"], aux_u["hidden"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out_scan, logits, atol=1e-3)  # the weights do act


def test_dwa_mask_is_denseformer_kxp():
    m = dwa_mask(tiny_model(depth=6, dwa=True, dwa_dilation=2, dwa_period=3))
    # DWAs after blocks 3 and 6 (1-based) only; block i averages j = i, i - 2, ...
    assert m.any(axis=1).tolist() == [False, False, True, False, False, True]
    assert np.flatnonzero(m[2]).tolist() == [1, 3] and np.flatnonzero(m[5]).tolist() == [0, 2, 4, 6]


def test_dwa_gradients_reach_its_weights():
    dense = tiny_model(depth=4, dwa=True, dwa_dilation=2)
    params, tokens = init(dense)
    g = jax.grad(lambda p: jnp.mean(Transformer(dense).apply({"params": p}, tokens)[0] ** 2))(params)
    allowed = dwa_mask(dense).astype(bool)
    gw = np.asarray(g["dwa_weights"])
    assert np.all(gw[~allowed] == 0) and np.all(gw[allowed] != 0)


def test_early_exit_weights_are_layerskips():
    # e = scale * cumsum(l) below the last layer, L - 1 + scale * sum_{i<L-1} i at it
    np.testing.assert_allclose(early_exit_weights(0, 4, 1.0, "none", 100), [0, .1, .3, .6],
                               rtol=1e-6)
    np.testing.assert_allclose(early_exit_weights(0, 4, 0.0, "none", 100), [0, 0, 0, 1])
    # gradual: the last exit from the start, one more every T / (2L) = 12.5 steps
    assert np.count_nonzero(early_exit_weights(0, 4, 1.0, "gradual", 100)) == 1
    np.testing.assert_allclose(early_exit_weights(13, 4, 1.0, "gradual", 100), [0, 0, 1 / 3, 2 / 3],
                               rtol=1e-6)
    np.testing.assert_allclose(early_exit_weights(50, 4, 1.0, "gradual", 100), [0, .1, .3, .6],
                               rtol=1e-6)


def test_layer_dropout_rises_with_depth():
    p = np.asarray(layer_dropout_rates(5, 0.4))
    np.testing.assert_allclose(p, 0.4 * (2 ** (np.arange(5) / 4) - 1), rtol=1e-6)
    assert p[0] == 0 and p[-1] == pytest.approx(0.4)
    keep = np.asarray(layer_keep(jax.random.key(0), 3, 4096, 5, 0.4))
    assert keep.shape == (4096, 5) and keep[:, 0].all()
    np.testing.assert_allclose(keep.mean(axis=0), 1 - p, atol=0.03)


def test_every_option_trains_three_steps_at_depth_8(tmp_path):
    """DenseFormer, Mixture-of-Depths, LayerSkip's exit losses and layer dropout in one run
    (one compile): they compose, train, and log the router's statistics per layer."""
    cfg = tiny_run(model=dict(depth=DEPTH, dwa=True, dwa_dilation=2, mod_capacity=0.25),
                   train=dict(steps=3, eval_every=3, ckpt_every=3, early_exit_scale=1.0,
                              early_exit_curriculum="gradual", layer_dropout=0.2))
    st = train(cfg, tmp_path / "r", progress=False)
    assert st["status"] == "done" and st["step"] == 3 and np.isfinite(st["final_loss"])
    records = read_metrics(tmp_path / "r")
    losses = [m["loss"] for m in records if "loss" in m]
    assert len(losses) == 3 and np.all(np.isfinite(losses))
    layers = [m for m in records if "layers" in m][-1]["layers"]
    bce, acc = np.array(layers["mod_router_bce"]), np.array(layers["mod_router_acc"])
    assert bce.shape == acc.shape == (DEPTH,)  # routed: layers 1, 3, 5, 7
    assert (bce[1::2] > 0).all() and (bce[::2] == 0).all() and (acc[::2] == 0).all()
    assert ((acc >= 0) & (acc <= 1)).all()


def test_early_exit_keeps_the_reported_loss_and_changes_the_update():
    import optax

    from jaxdepth.config import TrainConfig
    from jaxdepth.train.step import TrainState, make_train_step

    cfg = tiny_model(depth=3)  # e(0) = 0: the first exit that counts is layer 1's
    params, tokens = init(cfg)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, rng=jax.random.key(0),
                       opt_state=optax.sgd(1.0).init(params))
    batch = {"tokens": jnp.concatenate([tokens, tokens[:, :1]], axis=1)}
    out = {}
    for scale in (0.0, 1.0):
        tcfg = TrainConfig(early_exit_scale=scale)
        step = make_train_step(Transformer(cfg), optax.sgd(1.0), lambda s: 1.0, -1, cfg.depth,
                               layer_stats=False, tcfg=tcfg)
        out[scale] = jax.jit(step)(state, batch)
    (plain, m0), (exits, m1) = out[0.0], out[1.0]
    assert float(m0["loss"]) == float(m1["loss"])  # the last layer's LM loss either way
    # the exits' gradient reaches the first layers: their update differs from the plain one
    d = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), plain.params, exits.params)
    assert d["layers"]["ffn"]["down"]["kernel"] > 0


def test_connections_run_beside_the_schemes_at_the_same_training_flops():
    from jaxdepth.errors import UserError
    from jaxdepth.report.specs import parse_connections, sweep_spec
    from jaxdepth.sweep import expand, load_spec
    from jaxdepth.sweep.results import variant
    from jaxdepth.sweep.shapes import exact_nonembed, model_train_flops

    runs = lambda *c: {r.name: r for r in expand(  # noqa: E731
        load_spec(sweep_spec("curse_of_depth", "default", c)), check_disk=False)}
    plain, conn = runs(), runs("dwa", "mod")
    assert set(plain) < set(conn)  # the schemes' runs keep their ids
    added = [conn[k] for k in set(conn) - set(plain)]
    assert sorted({variant(r) for r in added}) == ["pre+dwa", "pre+mod0.125"]
    assert len(added) == 2 * 3 * 2  # connections x depths x seeds
    flops = lambda r: r.train.steps * model_train_flops(  # noqa: E731
        r.model, exact_nonembed(r.model), r.data.batch_size * r.data.seq_len, r.data.seq_len)
    for r in added:
        pre = next(p for p in plain.values() if variant(p) == "pre"
                   and (p.model.depth, p.train.seed) == (r.model.depth, r.train.seed))
        if r.model.mod_capacity < 1:  # more steps, the same training FLOPs to one step's
            assert r.train.steps > pre.train.steps
            assert abs(flops(r) / flops(pre) - 1) < 1 / r.train.steps
        else:
            assert r.train.steps == pre.train.steps
    with pytest.raises(UserError, match="valid: dwa, mod, exit"):
        parse_connections("curse_of_depth", "dwa,moe")
    with pytest.raises(UserError, match="not depth_delusion"):
        parse_connections("depth_delusion", "dwa")


def test_curse_report_puts_connections_beside_the_schemes():
    """The report's grouping, verdict and compute note for connection runs, on made-up rows
    (the tiny experiment covers the trained path without them)."""
    from jaxdepth.report.curse_of_depth import compute_note, verdict
    from jaxdepth.report.markdown import pivot

    def run(scheme, variant, seed, loss, steps=300, flops=1.0, exit_scale=0.0):
        return dict(scheme=scheme, variant=variant, depth=12, seed=seed, status="done",
                    final_val_loss=loss, steps=steps, flops=flops, early_exit_scale=exit_scale)

    rows = [run("pre", "pre", s, 2.0 + 0.01 * s) for s in range(3)]
    rows += [run("pre", "pre+mod0.125", s, 1.8 + 0.01 * s, steps=536, flops=0.999)
             for s in range(3)]
    rows += [run("pre", "pre+exit", s, 2.0 + 0.02 * s, exit_scale=0.1) for s in range(3)]
    piv, _ = pivot(rows, "variant", "depth", "final_val_loss")
    assert [r["variant"] for r in piv] == ["pre", "pre+exit", "pre+mod0.125"]
    lines = verdict(rows, 12)
    mod = next(ln for ln in lines if ln.startswith("- pre+mod0.125 at depth 12"))
    assert "-0.2000 vs Pre-LN" in mod and "resolved)" in mod and "not resolved" not in mod
    note = "\n".join(compute_note(rows))
    assert "pre+mod0.125 at depth 12: 536 steps, training FLOPs 0.999 x" in note
    assert "Mixture-of-Depths (arXiv 2404.02258)" in note
    assert "11 exit unembeddings per token not counted" in note and "LayerSkip" in note
