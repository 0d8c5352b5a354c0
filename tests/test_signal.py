"""The stacking-failure lab: the tutorial's chains, the trajectory classifier, signal
propagation through real blocks at init, after training, and the `jaxdepth signal` CLI."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import tiny_model, tiny_run
from scipy.stats import spearmanr

from jaxdepth.cli import main
from jaxdepth.diagnostics import signal as S

B, T = 2, 16  # token sequences per measurement
VOCAB = 320  # the byte tokenizer's, as `jaxdepth signal` resolves it: the CLI test reuses compiles


def profile(scheme, depth, init_std=0.02):
    return S.propagate(tiny_model(scheme=scheme, depth=depth, init_std=init_std, vocab_size=VOCAB),
                       batch=B, seq_len=T)


# ------------------------------------------------------------------ chains and labels


def test_tutorial_scalar_chains_to_four_decimals():
    """The published numbers of the "rails" tutorial (docs/literature.md §2)."""
    assert round(S.chain(1.0, 1.8, 6)[6], 4) == 34.0122
    assert round(S.chain(5.0, 1.8, 6)[6], 4) == 170.0611
    assert round(S.chain(10.0, 0.2, 6)[6], 5) == 0.00064
    np.testing.assert_array_equal(np.round(S.chain(5.0, -1.2, 6)[1:], 4),
                                  [-6, 7.2, -8.64, 10.368, -12.4416, 14.9299])


def test_tutorial_vector_chains_norms():
    np.testing.assert_array_equal(np.round(S.norms(S.chain([1, 2], 1.8, 1)), 3), [2.236, 4.025])
    np.testing.assert_array_equal(np.round(S.norms(S.chain([3, 4], 0.2, 4)), 3),
                                  [5, 1, 0.2, 0.04, 0.008])
    np.testing.assert_array_equal(np.round(S.norms(S.chain([2, -1], -1.2, 4)), 3),
                                  [2.236, 2.683, 3.220, 3.864, 4.637])


@pytest.mark.parametrize("label", sorted(S.TUTORIAL_CHAINS))
def test_tutorial_chains_are_labelled_correctly(label):
    c = S.TUTORIAL_CHAINS[label]
    for x0 in (*c["starts"], c["vector"]):
        states = S.chain(x0, c["a"], 6)
        assert S.classify(S.norms(states), S.consecutive_cosines(states)) == label


def test_classifier_thresholds_and_edge_cases():
    assert S.classify([1.0] * 10) == "stable"
    assert S.classify([1.0, 5.0, np.inf, np.nan]) == "explode"  # overflow
    assert S.classify([1.0, 1e-20, 0.0]) == "collapse"  # underflow
    # sqrt(l) growth over 128 layers: 11x overall but only ~2% per layer -> not an explosion
    assert S.classify(np.sqrt(np.arange(1, 130))) == "stable"
    assert S.classify(1.15 ** np.arange(20)) == "explode"
    assert S.classify(0.85 ** np.arange(20)) == "collapse"
    # a random rotation (cos ~ 0, either sign) is not an oscillation; sign flips are
    assert S.classify([1.0] * 7, [0.05, -0.05, 0.1, -0.1, 0.02, -0.02]) == "stable"
    assert S.classify([1.0] * 7, [-0.9, 1, 1, -0.9, 1, 1]) == "oscillate"
    # a matrix chain: a reflection flips every step without changing the norm
    states = S.chain([1.0, 2.0], -np.eye(2), 8)
    assert S.classify(S.norms(states), S.consecutive_cosines(states)) == "oscillate"
    states = S.chain([1.0, 2.0], np.array([[0.0, -2.0], [2.0, 0.0]]), 8)  # rotate 90°, x2
    assert S.classify(S.norms(states), S.consecutive_cosines(states)) == "explode"


# ------------------------------------------------------------------ real blocks at init


def test_naive_stack_explodes_or_collapses_with_init_scale_never_stable():
    small, large = profile("none", 32, init_std=0.02), profile("none", 32, init_std=0.5)
    assert small.summary()["label"] == "collapse"
    assert large.summary()["label"] == "explode"
    assert small.stats["rms_out"][-1] == 0.0  # underflowed
    assert not np.isfinite(large.stats["rms_out"][-1]) or large.stats["rms_out"][-1] > 1e30


def test_pre_ln_residual_grows_with_depth_and_lns_grows_strictly_slower():
    pre, lns = profile("pre", 16), profile("lns", 16)
    r_pre, r_lns = pre.stats["rms_out"], lns.stats["rms_out"]
    assert spearmanr(np.arange(16), r_pre ** 2).statistic > 0.9  # monotone on average
    assert r_pre[-1] > 1.3 * r_pre[0]
    # same weights (same seed, same parameter tree): equal at layer 1, smaller after
    assert r_lns[0] == pytest.approx(r_pre[0], rel=1e-6)
    assert np.all(r_lns[1:] < r_pre[1:])
    assert r_lns[-1] ** 2 - r_lns[0] ** 2 < 0.5 * (r_pre[-1] ** 2 - r_pre[0] ** 2)
    assert np.all(lns.stats["attn_update_ratio"][1:] < pre.stats["attn_update_ratio"][1:])


def test_post_ln_stream_is_bounded_by_construction():
    p = profile("post", 16)
    np.testing.assert_allclose(p.stats["rms_out"], 1.0, atol=1e-3)
    assert p.summary()["label"] == "stable"
    # the norm rescales the tangent with the stream: relative sensitivity stays ~1
    assert p.stats["jvp_gain"][0] == pytest.approx(1 / p.stats["rms_in"][0], rel=0.1)
    np.testing.assert_allclose(p.stats["sensitivity"], 1.0, atol=0.1)


def test_rezero_is_exactly_the_identity_and_deepnorm_nearly():
    rz = profile("rezero", 16)
    np.testing.assert_array_equal(rz.stats["rms_out"], rz.stats["rms_in"][0])
    np.testing.assert_array_equal(rz.stats["jvp_gain"], 1.0)
    np.testing.assert_array_equal(rz.stats["attn_update_ratio"], 0.0)
    np.testing.assert_allclose(rz.stats["cosine"], 1.0, atol=1e-6)
    dn = profile("deepnorm", 16)
    assert np.all(dn.stats["cosine"][1:] > 0.999)
    assert np.all(dn.stats["attn_update_ratio"] < 1e-2)
    assert np.all(dn.stats["ffn_update_ratio"] < 1e-2)
    assert np.ptp(dn.stats["sensitivity"]) < 1e-3  # layers past the first barely act


def test_one_compiled_call_per_model_and_flat_in_depth():
    m = tiny_model(scheme="pre", depth=16)
    S.propagate(m, batch=B, seq_len=T)
    before = S._propagate_fn.cache_info()
    S.propagate(m, batch=B, seq_len=T, seed=1)
    after = S._propagate_fn.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    assert S._propagate_fn(m, B, T)._cache_size() == 1
    # scan: the traced program has the same size at depth 8 and 128
    k = jax.random.key(0)
    sizes = [len(S._propagate_fn(tiny_model(depth=d), B, T).trace(k, k).jaxpr.eqns)
             for d in (8, 128)]
    assert sizes[0] == sizes[1]


# ------------------------------------------------------------------ after training + CLI


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from jaxdepth.train.loop import train

    run_dir = tmp_path_factory.mktemp("signal_run")
    cfg = tiny_run(model=dict(depth=4), train=dict(steps=4, ckpt_every=4, eval_every=4))
    assert train(cfg, run_dir, progress=False)["status"] == "done"
    return run_dir


def test_profile_after_training_from_metrics(trained_run):
    from jaxdepth.rundir import read_metrics

    recs = read_metrics(trained_run)
    p = S.profile_from_record(recs[-1], "pre", 32)
    assert (p.depth, p.when) == (4, "step 4")
    np.testing.assert_array_equal(p.stats["rms_out"], recs[-1]["layers"]["rms_out"])
    s = p.summary()
    assert s["label"] in S.LABELS and np.isnan(s["mean_cosine"])  # no cosine in the metrics


def test_cli_table_figure_and_json(trained_run, tmp_path, capsys):
    out = tmp_path / "sig"
    rc = main(["signal", "--schemes", "pre,lns", "--depths", "16", "--width", "32",
               "--batch", str(B), "--seq-len", str(T), "--run", str(trained_run),
               "--out", str(out), "--no-progress", "--chains"])
    assert rc == 0
    text = capsys.readouterr().out
    assert ("a=+1.8 x0=1.0: 1.0000, 1.8000, 3.2400, 5.8320, 10.4976, 18.8957, 34.0122"
            "  -> explode") in text
    assert "a=-1.2 x0=[2.0, -1.0]: norms 2.236, 2.683, 3.220, 3.864, 4.637" in text
    rows = [ln.split() for ln in text.splitlines() if ln.startswith(("pre ", "lns "))]
    assert [r[:4] for r in rows[:2]] == [["pre", "16", "init", "stable"],
                                         ["lns", "16", "init", "stable"]]
    assert float(rows[1][4]) < float(rows[0][4])  # lns: smaller last/first RMS ratio
    assert [r[:4] for r in rows[2:]] == [["pre", "4", "init", "stable"], ["pre", "4", "step", "4"]]
    png = (out / "signal.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "signal.json").read_text())
    assert [p["when"] for p in data["profiles"]][-2:] == ["init", "step 4"]
    assert all(len(p["stats"]["rms_out"]) == p["depth"] for p in data["profiles"])


def test_cli_rejects_bad_input_before_compiling(capsys):
    assert main(["signal", "--schemes", "pre,bogus"]) == 2
    err = capsys.readouterr().err
    assert "model.scheme 'bogus' is unknown" in err and "deepnorm" in err
    assert main(["signal", "--depths", "8,x"]) == 2
    assert main(["signal", "--run", "/nonexistent/run"]) == 2
