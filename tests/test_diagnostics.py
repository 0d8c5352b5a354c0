"""Per-layer diagnostics of a trained model: angular distance, layer removal, logit lens,
gradient persistence, and `jaxdepth analyze` end to end. One tiny run is trained once for
the module; the library tests use its restored params (same shapes as the CLI, so the
compiled functions are shared)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.cli import main
from jaxdepth.config import RunConfig, replace
from jaxdepth.data.pipeline import val_batches
from jaxdepth.diagnostics.angular import angular_distance, angular_distances
from jaxdepth.diagnostics.exits import DEFAULT_MEASURE, DEFAULT_THRESHOLDS, exits_of_logits
from jaxdepth.diagnostics.forward import forward_hidden, inputs_targets_mask
from jaxdepth.diagnostics.grad_persistence import fit_grad_persistence, late_layer_grad_norms
from jaxdepth.diagnostics.lens import lens_logits, logit_lens
from jaxdepth.diagnostics.removal import layer_removal
from jaxdepth.diagnostics.run_analysis import restore_run
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer
from jaxdepth.train.loop import train
from jaxdepth.train.step import lm_loss, split_batch

DEPTH = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A depth-3, width-32 `pre` model trained 20 steps; its restored params, config and
    one held-out batch (4, 33)."""
    run_dir = tmp_path_factory.mktemp("diag") / "run"
    cfg = replace(RunConfig(), name="diag", model=dict(depth=DEPTH, width=32, heads=2),
                  data=dict(seq_len=32, batch_size=4),
                  train=dict(steps=20, warmup_steps=2, log_every=5, eval_every=0,
                             eval_batches=1, ckpt_every=10))
    st = train(cfg, run_dir, progress=False)
    assert st["status"] == "done"
    cfg, mcfg, params, step, corpus = restore_run(run_dir, None)
    assert step == 20
    tokens = val_batches(corpus, cfg.data, 1)[0]
    return dict(run_dir=run_dir, mcfg=mcfg, params=params, tokens=tokens,
                pad_id=corpus.tokenizer.pad_id)


@functools.partial(jax.jit, static_argnames="mcfg")
def _logits(params, mcfg, inputs):
    return Transformer(mcfg).apply({"params": params}, inputs)[0]


def _loss(mcfg, params, tokens, pad_id):
    """The model's own loss, without the diagnostics code."""
    inputs, targets = split_batch(jnp.asarray(tokens))
    logits = _logits(params, mcfg, inputs)
    return float(lm_loss(logits, targets, pad_id)), logits


# ------------------------------------------------------------------ angular distance


def test_angular_distance_identical_opposite_orthogonal():
    x = jax.random.normal(jax.random.key(0), (5, 16))
    y = jax.random.normal(jax.random.key(1), (5, 16))
    assert np.all(np.asarray(angular_distance(x, x)) == 0.0)
    assert np.all(np.asarray(angular_distance(x, 3.0 * x)) < 1e-7)  # arccos(cos) is ~1e-4 here
    np.testing.assert_allclose(angular_distance(x, -x), 1.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(angular_distance(jnp.eye(2)[0], jnp.eye(2)[1]), 0.5, atol=1e-7)
    cos = np.sum(x * y, -1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    np.testing.assert_allclose(angular_distance(x, y), np.arccos(cos) / np.pi, atol=1e-6)


def test_padding_not_counted(trained):
    """A padded batch gives the numbers of its unpadded prefixes. The model is causal, so the
    reference is the unpadded batch's own hidden states and lens logits at the positions
    before the padding, averaged here by hand."""
    mcfg, params, pad = trained["mcfg"], trained["params"], trained["pad_id"]
    real = np.asarray(trained["tokens"])  # (4, 33), no padding in held-out windows
    assert not np.any(real == pad)
    lengths = {0: 10, 1: 20, 2: 25}  # real tokens kept per row; row 3 is all padding
    padded = np.full_like(real, pad)
    for r, p in lengths.items():
        padded[r, :p] = real[r, :p]
    counted = {r: p - 1 for r, p in lengths.items()}  # targets before the first pad target

    inputs, targets = split_batch(jnp.asarray(real))
    h = np.asarray(jax.jit(forward_hidden, static_argnums=1)(params, mcfg, inputs)[1])
    last = np.stack([h[:, r, n - 1] for r, n in counted.items()], 1)  # (D+1, 3, W)
    every = np.concatenate([h[:, r, :n] for r, n in counted.items()], 1)  # (D+1, N, W)
    pairs = lambda x: np.asarray(angular_distance(x[:, None], x[None, :])).mean(-1)  # noqa: E731
    ang = angular_distances(params, mcfg, padded, pad)
    assert (ang.n_sequences, ang.n_tokens) == (3, sum(counted.values()))
    np.testing.assert_allclose(ang.last_token, pairs(last), atol=1e-5)
    np.testing.assert_allclose(ang.all_tokens, pairs(every), atol=1e-5)
    assert ang.last_token[0, -1] > 0.01  # the comparison is not vacuous

    logp = jax.nn.log_softmax(lens_logits(params, mcfg, inputs))  # (D+1, 4, 32, V)
    ce = -np.take_along_axis(np.asarray(logp), np.asarray(targets)[None, ..., None], -1)[..., 0]
    ref = np.concatenate([ce[:, r, :n] for r, n in counted.items()], 1).mean(-1)
    lens = logit_lens(params, mcfg, padded, pad)
    np.testing.assert_allclose(lens.loss, ref, rtol=1e-5)
    rem = layer_removal(params, mcfg, padded, pad)
    assert rem.n_tokens == ang.n_tokens
    np.testing.assert_allclose(rem.base_loss, ref[-1], rtol=1e-5)


# ------------------------------------------------------------------ layer removal


def test_zeroed_pre_layer_is_identity(trained):
    mcfg, pad, tokens = trained["mcfg"], trained["pad_id"], trained["tokens"]
    assert mcfg.scheme == "pre"
    params = dict(trained["params"])
    params["layers"] = jax.tree.map(lambda p: p.at[1].set(0.0), params["layers"])
    rem = layer_removal(params, mcfg, tokens, pad)
    assert rem.delta[1] == 0.0
    assert np.all(np.abs(rem.delta[[0, 2]]) > 1e-4)
    ang = angular_distances(params, mcfg, tokens, pad)
    assert ang.last_token[1, 2] == 0.0 and ang.all_tokens[1, 2] == 0.0


def test_removal_matches_deleting_the_layer(trained):
    mcfg, params, pad, tokens = (trained[k] for k in ("mcfg", "params", "pad_id", "tokens"))
    rem = layer_removal(params, mcfg, tokens, pad)
    base, _ = _loss(mcfg, params, tokens, pad)
    np.testing.assert_allclose(rem.base_loss, base, rtol=1e-6)
    short = dataclasses.replace(mcfg, depth=DEPTH - 1)
    for l in range(DEPTH):
        keep = np.arange(DEPTH) != l
        cut = {**params, "layers": jax.tree.map(lambda p: p[keep], params["layers"])}
        loss, _ = _loss(short, cut, tokens, pad)
        np.testing.assert_allclose(rem.loss[l], loss, rtol=1e-5)
    assert np.max(np.abs(rem.delta)) > 1e-3  # the layers matter: the comparison is not vacuous


# ------------------------------------------------------------------ logit lens


def test_lens_at_last_layer_is_the_model(trained):
    mcfg, params, pad, tokens = (trained[k] for k in ("mcfg", "params", "pad_id", "tokens"))
    loss, logits = _loss(mcfg, params, tokens, pad)
    inputs, _ = split_batch(jnp.asarray(tokens))
    lens_all = lens_logits(params, mcfg, inputs)
    assert lens_all.shape == (DEPTH + 1, *logits.shape)
    np.testing.assert_allclose(lens_all[-1], logits, atol=1e-5, rtol=1e-5)
    lens = logit_lens(params, mcfg, tokens, pad)
    np.testing.assert_allclose(lens.loss[-1], loss, rtol=1e-6)
    assert abs(lens.kl[-1]) < 1e-6 and lens.top1_agreement[-1] == 1.0
    assert lens.kl[0] > 1e-3 and lens.top1_agreement[0] < 1.0  # the embeddings differ


# ------------------------------------------------------------------ gradient persistence


@pytest.mark.parametrize("tau", [2.5, 7.0, 40.0])
def test_tau_fit_recovers_known_tau(tau):
    D = 16
    l = np.arange(1, D + 1)
    g = 0.3 * np.exp(-(D - l) / tau)
    exact = fit_grad_persistence(g)
    assert exact.status == "decaying"
    assert abs(exact.tau / tau - 1) < 1e-9 and exact.r2 > 1 - 1e-12
    np.testing.assert_allclose(exact.log_grad_last, np.log(0.3), rtol=1e-9)
    # with 0.3% noise per layer the estimate stays within its own 3 standard errors
    noise = np.exp(np.random.default_rng(0).normal(0, 0.003, D))
    noisy = fit_grad_persistence(g * noise)
    assert 0 < noisy.tau_stderr < 0.05 * tau
    assert abs(noisy.tau - tau) < 3 * noisy.tau_stderr


def test_tau_fit_degenerate_cases():
    D = 8
    l = np.arange(1, D + 1)
    growing = fit_grad_persistence(np.exp(-0.2 * l))  # larger toward the input
    assert growing.status == "growing" and math.isinf(growing.tau)
    np.testing.assert_allclose(growing.slope, -0.2)
    flat = fit_grad_persistence(np.full(D, 0.1))
    assert flat.status == "flat" and math.isinf(flat.tau)
    assert fit_grad_persistence([0.0, 0.0, 1.0]).status == "degenerate"
    assert math.isnan(fit_grad_persistence([1.0]).tau)
    frozen = np.exp((l - D) / 3.0)
    frozen[:2] = 0.0  # frozen layers have no gradient: left out, not log(0)
    f = fit_grad_persistence(frozen)
    assert f.n_layers == D - 2 and abs(f.tau - 3.0) < 1e-9


def test_tau_fit_calls_an_insignificant_slope_flat_and_bounds_tau_below():
    D = 8
    rng = np.random.default_rng(0)
    noisy_flat = 0.1 * np.exp(rng.normal(0, 0.2, D) + 0.005 * np.arange(D))
    f = fit_grad_persistence(noisy_flat)
    assert f.slope > 0  # the sign alone would call this "decaying"; it is within 2 se of 0
    assert f.status == "flat" and math.isinf(f.tau)
    assert np.isfinite(f.tau_lower) and f.tau_lower > 0
    exact = fit_grad_persistence(np.exp(np.arange(1, D + 1) / 5.0))
    assert exact.status == "decaying" and exact.tau_lower == pytest.approx(5.0, rel=1e-9)
    assert math.isinf(fit_grad_persistence(np.exp(-0.2 * np.arange(D))).tau_lower)


def _record(step, attn, ffn):
    return {"step": step, "layers": {"attn_grad_norm": list(attn), "ffn_grad_norm": list(ffn)}}


def test_late_grad_norms_geometric_mean_of_the_last_fraction():
    a, b = np.array([1.0, 4.0]), np.array([4.0, 1.0])
    recs = [_record(10, [100.0, 100.0], [0.0, 0.0]),  # early: left out of the mean
            _record(90, a, 0 * a), _record(100, b, 0 * b), {"step": 100, "loss": 1.0}]
    norms, first, last = late_layer_grad_norms(recs, frac=0.2)
    assert (first, last) == (90, 100)
    np.testing.assert_allclose(norms["attn"], [2.0, 2.0])  # sqrt(1*4), sqrt(4*1)
    np.testing.assert_allclose(norms["layer"], [2.0, 2.0])
    assert np.all(norms["ffn"] == 0.0)  # a zero norm stays zero (left out by the fit)
    with pytest.raises(UserError, match="gradient norms"):
        late_layer_grad_norms([{"step": 1, "loss": 1.0}])


def test_power_law_plot_without_finite_points(tmp_path):
    """tau = inf at every width (Pre-LN at small scale) is a result, not a crash."""
    from jaxdepth.report.plots import power_law_plot

    path = power_law_plot([32, 64], [math.inf, math.inf], {"p": math.nan}, tmp_path / "t.png",
                          "width W", "tau (layers)", 0.44)
    assert path.stat().st_size > 1000


# ------------------------------------------------------------------ jaxdepth analyze


def test_cli_analyze_end_to_end(trained, tmp_path, capsys):
    run_dir = trained["run_dir"]
    assert main(["analyze", str(run_dir), "--batches", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "removable layers" in out and "gradient persistence" in out
    assert "block pruning" in out and "gromov [l*,l*+n)" in out
    a = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert a["step"] == 20 and a["depth"] == DEPTH
    assert len(a["pruning"]["block_influence"]) == DEPTH
    assert a["pruning"]["gromov"]["n"] == a["pruning"]["shortgpt"]["n"] == [1]  # L // 2
    assert np.asarray(a["angular_distance"]["last_token"]).shape == (DEPTH + 1, DEPTH + 1)
    assert len(a["layer_removal"]["delta"]) == DEPTH
    assert len(a["prompt_top_tokens"]) == DEPTH + 1
    assert a["grad_persistence"]["step"] == 20
    assert len(a["grad_persistence"]["over_training"]) == 4  # logged every 5 of 20 steps
    for name in ("angular_distance", "layer_removal", "logit_lens", "grad_persistence",
                 "pruning", "exits"):
        assert (run_dir / "analysis" / f"{name}.png").stat().st_size > 1000
    # early exits: the model's jit path is the core's count on the lens logits of the same
    # tokens (the core itself is checked by brute force in tests/test_exits.py)
    assert "mean layers used" in out and "loss at exit" in out
    ex = a["exits"]
    assert ex["measure"] == DEFAULT_MEASURE and ex["thresholds"] == list(DEFAULT_THRESHOLDS)
    assert np.asarray(ex["histogram"]).shape == (len(DEFAULT_THRESHOLDS), DEPTH)
    assert ex["n_tokens"] == a["n_tokens"] and np.all(np.sum(ex["histogram"], 1) == a["n_tokens"])
    np.testing.assert_allclose(ex["full_loss"], a["layer_removal"]["base_loss"], rtol=1e-5)
    inputs, targets, mask = inputs_targets_mask(jnp.asarray(trained["tokens"]), trained["pad_id"])
    ref = exits_of_logits(lens_logits(trained["params"], trained["mcfg"], inputs), targets, mask)
    np.testing.assert_array_equal(ex["histogram"], ref.histogram)
    for k in ("mean_depth", "exit_loss", "agreement"):
        np.testing.assert_allclose(ex[k], getattr(ref, k), rtol=1e-5, err_msg=k)

    assert main(["analyze", str(run_dir), "--step", "10", "--batches", "1", "--no-progress",
                 "--exit-thresholds", "0.1,0.2,0.3,0.4,1"]) == 0  # as many: no new compile
    a = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert a["step"] == 10 and a["exits"]["thresholds"] == [0.1, 0.2, 0.3, 0.4, 1.0]

    twin = tmp_path / "twin"
    shutil.copytree(run_dir, twin)
    capsys.readouterr()
    assert main(["analyze", "--compare", str(run_dir), str(twin), "--batches", "1",
                 "--out", str(tmp_path / "cmp"), "--no-progress"]) == 0
    assert "d_consec_last3rd" in capsys.readouterr().out
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert len(rows) == 2 and rows[0]["n_removable"] == rows[1]["n_removable"]
    assert (tmp_path / "cmp" / "compare.png").exists()
    assert (tmp_path / "cmp" / "exits.png").exists()


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_cli_bad_inputs(trained, tmp_path, capsys):
    run_dir = trained["run_dir"]
    assert "not a run directory" in _error(capsys, ["analyze", str(tmp_path / "nope")])
    (tmp_path / "file.txt").write_text("x")
    assert "not a run directory" in _error(capsys, ["analyze", str(tmp_path / "file.txt")])
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run_dir / "config.json", empty / "config.json")
    assert "has no checkpoint" in _error(capsys, ["analyze", str(empty)])
    assert "no checkpoint at step 7" in _error(capsys, ["analyze", str(run_dir), "--step", "7"])
    changed = tmp_path / "changed"
    shutil.copytree(run_dir, changed)
    cfg = json.loads((changed / "config.json").read_text())
    cfg["model"]["width"] = 64
    (changed / "config.json").write_text(json.dumps(cfg))
    assert "model.width" in _error(capsys, ["analyze", str(changed)])
    assert "--compare" in _error(capsys, ["analyze", str(run_dir), str(run_dir)])


def test_analyze_a_killed_run_whose_last_metrics_line_is_torn(trained, tmp_path, capsys):
    """A kill mid-write leaves half a line in metrics.jsonl: `jaxdepth analyze` reads the
    complete records (one tolerant reader, jaxdepth.rundir) instead of crashing."""
    killed = tmp_path / "killed"
    shutil.copytree(trained["run_dir"], killed)
    with (killed / "metrics.jsonl").open("a") as f:
        f.write('{"step": 25, "loss": 2.')
    assert main(["analyze", str(killed), "--batches", "1", "--no-progress"]) == 0
    a = json.loads((killed / "analysis" / "analysis.json").read_text())
    assert a["grad_persistence"]["step"] == 20


def test_cached_analysis_answers_only_the_newest_checkpoint_on_the_runs_batches(
        trained, tmp_path, monkeypatch):
    """The reports' cached analysis is reused only when it measured the newest checkpoint on
    the run's own eval batches at the default thresholds, never a `--step N` one, nor one
    written before early exits were measured."""
    from jaxdepth.diagnostics import run_analysis

    run_dir = tmp_path / "cached"
    shutil.copytree(trained["run_dir"], run_dir)
    shutil.rmtree(run_dir / "analysis", ignore_errors=True)
    assert main(["analyze", str(run_dir), "--step", "10", "--no-progress"]) == 0
    a = run_analysis.cached_analysis(run_dir)
    assert a["step"] == 20 and a["requested_batches"] == 1
    assert json.loads((run_dir / "analysis" / "analysis.json").read_text())["step"] == 20

    def fail(*args, **kw):
        raise AssertionError("measured again although the cache answers the question")

    monkeypatch.setattr(run_analysis, "analyze_run", fail)
    assert run_analysis.cached_analysis(run_dir)["step"] == 20
    path = run_dir / "analysis" / "analysis.json"
    old = json.loads(path.read_text())
    del old["exits"]  # written before early exits were measured
    path.write_text(json.dumps(old))
    with pytest.raises(AssertionError, match="measured again"):
        run_analysis.cached_analysis(run_dir)
    monkeypatch.undo()
    assert main(["analyze", str(run_dir), "--threshold", "0.5", "--no-progress"]) == 0
    monkeypatch.setattr(run_analysis, "analyze_run", fail)
    with pytest.raises(AssertionError, match="measured again"):
        run_analysis.cached_analysis(run_dir)


def test_pairwise_angular_sums_never_hold_every_pair_and_token():
    """The docstring's promise, checked on the compiled program: temporary memory stays far
    below the (X, X, Q) distances of every pair of states and every token."""
    from jaxdepth.diagnostics.angular import pairwise_sums

    X, Q, W = 33, 512, 4
    h_XQW = jax.random.normal(jax.random.key(0), (X, Q, W))
    weight_Q = jnp.ones(Q)
    compiled = jax.jit(pairwise_sums).lower(h_XQW, weight_Q).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 0.5 * X * X * Q * 4, temp
    np.testing.assert_allclose(
        compiled(h_XQW, weight_Q),
        np.sum(angular_distance(h_XQW[:, None], h_XQW[None]), axis=-1), rtol=1e-5, atol=1e-5)
