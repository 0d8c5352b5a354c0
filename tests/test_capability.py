"""The answer lens and answer removal (`jaxdepth.diagnostics.capability`) on a tiny random
model (width 32, depth 2, vocabulary 64) and k-hop batches: the lens's last index and the
unremoved row are the eval step's own scores, removing an identity layer changes nothing,
and the answer-formation rule on hand-made arrays. The compiled functions are shared by
every test through module-scope fixtures (one shape)."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import tiny_model

from jaxdepth.data.tasks import make_task
from jaxdepth.data.tasks.stream import batch_arrays
from jaxdepth.diagnostics.capability import (
    answer_formation_layer,
    answer_lens,
    answer_removal,
)
from jaxdepth.model import Transformer
from jaxdepth.train.step import make_eval_step

DEPTH, T, B, C = 2, 24, 16, 3


@pytest.fixture(scope="module")
def model():
    """(mcfg, params, batches): a random-init model with large-ish weights (so that its
    argmax varies with the input) and C k-hop (k = 1) batches over 4 symbols."""
    mcfg = tiny_model(depth=DEPTH, width=32, heads=2, vocab_size=64, init_std=0.5)
    task = make_task("khop", 1, T, "")
    rng = np.random.default_rng(0)
    batches = [batch_arrays(task.generate(rng, B, "val"), "all") for _ in range(C)]
    params = nn.unbox(Transformer(mcfg).init(jax.random.key(0), batches[0]["inputs"])["params"])
    return mcfg, params, batches


@pytest.fixture(scope="module")
def eval_scores(model):
    """The eval step's exact match and accuracy over the batches (the train loop's own)."""
    mcfg, params, batches = model
    step = jax.jit(make_eval_step(Transformer(mcfg), pad_id=0))
    s = [jax.device_get(step(params, b)) for b in batches]
    tot = {k: sum(float(x[k]) for x in s) for k in ("exact", "examples", "correct", "answers")}
    return tot["exact"] / tot["examples"], tot["correct"] / tot["answers"]


def test_lens_last_index_is_the_model(model, eval_scores):
    mcfg, params, batches = model
    lens = answer_lens(params, mcfg, batches)
    assert lens.exact_match.shape == lens.accuracy.shape == (DEPTH + 1,)
    assert (lens.n_examples, lens.n_answers) == (B * C, B * C)  # khop: one answer per row
    exact, acc = eval_scores
    np.testing.assert_allclose([lens.exact_match[-1], lens.accuracy[-1]], [exact, acc], atol=1e-6)
    assert 0.0 < acc < 1.0  # the comparison is not vacuous


def test_removal_base_is_the_model(model, eval_scores):
    mcfg, params, batches = model
    rem = answer_removal(params, mcfg, batches)
    assert rem.exact_match.shape == rem.accuracy.shape == (DEPTH,)
    np.testing.assert_allclose([rem.base_exact_match, rem.base_accuracy], eval_scores,
                               atol=1e-6)
    assert np.any(rem.accuracy != rem.base_accuracy)  # a random layer matters


def test_removing_an_identity_layer_changes_nothing(model):
    """Zero output projections (attention `out`, FFN `down`) make a Pre-LN layer the identity:
    removing it leaves exact match and accuracy exactly as they are."""
    mcfg, params, batches = model
    assert mcfg.scheme == "pre"

    def zero_out(path, p):
        names = [getattr(k, "key", "") for k in path]
        return p.at[1].set(0.0) if {"out", "down"} & set(names) else p

    layers = jax.tree_util.tree_map_with_path(zero_out, params["layers"])
    assert not all(np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(layers), jax.tree.leaves(params["layers"])))
    rem = answer_removal({**params, "layers": layers}, mcfg, batches)
    assert rem.exact_match[1] == rem.base_exact_match
    assert rem.accuracy[1] == rem.base_accuracy
    lens = answer_lens({**params, "layers": layers}, mcfg, batches)
    assert lens.accuracy[2] == lens.accuracy[1]  # the stream does not move through layer 1


def test_answer_formation_layer():
    lens = np.array([0.0, 0.1, 0.5, 0.88, 0.97, 1.0])
    assert answer_formation_layer(lens, 1.0) == 4  # first index >= 0.9
    assert answer_formation_layer(lens, 0.96) == 3  # 0.9 * 0.96 = 0.864
    assert answer_formation_layer(lens, 0.5, fraction=1.0) == 2
    assert answer_formation_layer(np.zeros(3), 0.0) is None  # nothing right: nothing formed
    assert answer_formation_layer(np.array([0.1, 0.2]), 1.0) is None  # never reached
    assert answer_formation_layer(np.array([1.0, 1.0]), 1.0) == 0  # readable from embeddings



# ------------------------------------------------------------------ the report's pieces


def test_slope_fit_paths():
    from jaxdepth.report.capability_depth import compare, slope_fit

    boot = slope_fit({0.0: [1, 1], 1.0: [2, 3], 2.0: [3, 3]})  # 2+ seeds at every x
    assert boot["slope"] == pytest.approx(1.0) and "bootstrap" in boot["method"]
    assert boot["lo"] <= 1.0 <= boot["hi"] and boot == slope_fit({0.0: [1, 1], 1.0: [2, 3],
                                                                  2.0: [3, 3]})  # fixed RNG
    t = slope_fit({0.0: [1], 1.0: [2, 2.2], 2.0: [3]})  # a single seed at some x: t interval
    assert "linregress" in t["method"] and t["lo"] < t["slope"] < t["hi"]
    assert compare(t, 1.0).startswith("agrees") and "excludes 0" in compare(t, 0.0)
    two = slope_fit({0.0: [1], 1.0: [3]})
    assert two["slope"] == pytest.approx(2.0) and np.isnan(two["lo"])
    assert compare(two, 1.0).startswith("not tested")
    none = slope_fit({0.0: [], 1.0: []})
    assert none["n"] == 0 and compare(none, "positive").startswith("everything censored")


def synthetic_rows():
    """Rows of the tiny grid with two seeds: khop needs depth log2(k) + 1, facts depth 1,
    the rest is never solved (one of its runs diverged, one pending); no run dirs."""
    from jaxdepth.report.specs import CAPABILITY

    g = CAPABILITY["tiny"]
    need = {"khop": lambda d: int(np.log2(d)) + 1, "facts": lambda d: 1}
    rows = []
    for seed in (0, 1):
        for D, W in [(D, g["width"]) for D in g["depths"]] + [tuple(g["wide"])]:
            for name, ds, T, loss, _ in g["tasks"]:
                for d in ds:
                    ok = D >= need.get(name, lambda d: 99)(d)
                    rows.append(dict(run_id=f"{name}{d}_d{D}_w{W}_s{seed}", task=name,
                                     difficulty=d, loss_on=loss, depth=D, width=W, seed=seed,
                                     steps=40, seq_len=T, batch_size=16, params=1000 * D * W,
                                     tokens=40 * 16 * T, lr=3e-3, status="done",
                                     final_val_exact_match=0.97 if ok else 0.2,
                                     solved_step=20 if ok else None))
    never = [r for r in rows if r["task"] == "var_chain"]
    never[0].update(status="diverged")
    never[1].update(status="pending", final_val_exact_match=None)
    return rows


def test_report_on_a_partial_synthetic_sweep(tmp_path):
    from jaxdepth.report.capability_depth import report

    rows = synthetic_rows()
    md = report(tmp_path, {"size": "tiny"}, rows)
    diverged = next(r for r in rows if r["status"] == "diverged")
    assert "not finished: 1 of" in md and f"`{diverged['run_id']}`" in md  # named
    assert "| khop | log2 difficulty | 4 | 0 | 1.00 | [1.00, 1.00] | 1 per doubling | agrees" in md
    assert "analysis failed" in md  # no checkpoints here: said, not raised
    for png in ("accuracy_heatmap.png", "min_depth_vs_log2_difficulty.png", "depth_vs_width.png"):
        assert f"\n![]({png})\n" in md and (tmp_path / png).is_file()
