"""Synthetic tasks as training data: the answer-only loss (`data.loss_on`), exact-match
bookkeeping, the on-the-fly stream (deterministic, split by process, checkpointable), a run
that stops once solved (`train.stop_at_accuracy`), and config errors before anything runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_model, tiny_run

from jaxdepth.config import load_config
from jaxdepth.data.pipeline import load_data
from jaxdepth.data.tasks import make_task
from jaxdepth.data.tasks.stream import TaskBatches, batch_arrays
from jaxdepth.errors import UserError
from jaxdepth.model import Transformer
from jaxdepth.rundir import read_json
from jaxdepth.train.build import build
from jaxdepth.train.loop import train
from jaxdepth.train.step import answer_sums

MCFG = tiny_model(depth=1, width=32, heads=2, vocab_size=64, dtype="float32")
T = 16


def _var_chain_examples(n=8):
    return make_task("var_chain", 1, T, "").generate(np.random.default_rng(0), n, "train")


@pytest.fixture(scope="module")
def built():
    from jaxdepth.config import ParallelConfig, TrainConfig

    return build(MCFG, TrainConfig(steps=4, warmup_steps=0, grad_clip=0.0), ParallelConfig(),
                 T, 0)


def _reference_loss(params, batch, weights):
    """Mean cross-entropy of the targets under `weights`, straight from the model's logits."""
    logits = Transformer(MCFG).apply({"params": params}, jnp.asarray(batch["inputs"]))[0]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(batch["targets"]))
    return float(jnp.sum(ce * weights) / jnp.sum(weights))


@pytest.mark.parametrize("loss_on", ["answers", "all"])
def test_train_step_loss_counts_the_chosen_targets(built, loss_on):
    ex = _var_chain_examples()
    batch = batch_arrays(ex, loss_on)
    want_w = ex.answers if loss_on == "answers" else ex.targets != 0
    np.testing.assert_array_equal(batch["weights"], want_w.astype(np.float32))
    state = built.init_state(jax.random.key(0))
    ref = _reference_loss(state.params, batch, want_w)
    _, m = built.train_step(jax.tree.map(jnp.copy, state), jax.device_put(batch))
    np.testing.assert_allclose(float(m["loss"]), ref, rtol=1e-5)
    ev = built.eval_step(state.params, jax.device_put(batch))
    np.testing.assert_allclose(float(ev["loss"]), ref, rtol=1e-5)


def test_answer_only_gradient_ignores_every_other_target(built):
    """Under loss_on=answers, changing a non-answer target changes neither loss nor update."""
    batch = batch_arrays(_var_chain_examples(), "answers")
    other = dict(batch, targets=np.where(batch["answers"], batch["targets"],
                                         (batch["targets"] + 7) % 50 + 1).astype(np.int32))
    assert (other["targets"] != batch["targets"]).any()
    state = built.init_state(jax.random.key(0))
    a, ma = built.train_step(jax.tree.map(jnp.copy, state), jax.device_put(batch))
    b, mb = built.train_step(jax.tree.map(jnp.copy, state), jax.device_put(other))
    assert float(ma["loss"]) == float(mb["loss"])
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    # ... while under loss_on=all those targets count
    c, mc = built.train_step(jax.tree.map(jnp.copy, state),
                             jax.device_put(dict(other, weights=(other["targets"] != 0)
                                                 .astype(np.float32))))
    assert float(mc["loss"]) != float(ma["loss"])


def test_answer_sums_exact_match_needs_every_answer():
    targets = jnp.array([[1, 2, 3], [1, 2, 3], [4, 4, 4]])
    answers = jnp.array([[False, True, True], [False, True, True], [False, False, False]])
    pred = jnp.array([[0, 2, 3], [1, 2, 0], [4, 4, 4]])  # row 0 exact (non-answer wrong), row 1 not
    logits = jax.nn.one_hot(pred, 8)
    s = jax.device_get(answer_sums(logits, targets, answers))
    assert (s["correct"], s["answers"], s["exact"], s["examples"]) == (3, 4, 1, 2)


def test_stream_deterministic_and_split_by_process(tmp_path):
    cfg = tiny_run(data=dict(task="khop", difficulty=2, seq_len=T, batch_size=4))
    one = load_data(cfg.data)
    assert one.tokenizer.vocab_size == 6 and one.bytes_per_token("train") is None
    it = one.train_iterator()
    b0, b1 = next(it), next(it)
    again = next(load_data(cfg.data).train_iterator())
    jax.tree.map(np.testing.assert_array_equal, b0, again)
    assert not np.array_equal(b0["inputs"], b1["inputs"])
    halves = [next(one.train_iterator(p, 2)) for p in (0, 1)]
    for k in b0:  # two processes' rows together are the one-process batch
        np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), b0[k])
    val = one.val_batches(2)
    assert len(val) == 2 and not np.array_equal(val[0]["inputs"], b0["inputs"])
    jax.tree.map(np.testing.assert_array_equal, val, load_data(cfg.data).val_batches(2))
    # the iterator's state restores the stream where it was (checkpointing)
    it = one.train_iterator()
    next(it)
    state = it.get_state()
    want = next(it)
    it2 = one.train_iterator()
    it2.set_state(state)
    jax.tree.map(np.testing.assert_array_equal, next(it2), want)
    src = TaskBatches(one.task, "train", 0, 4, "all")
    jax.tree.map(np.testing.assert_array_equal, src[1], b1)


def test_solved_run_stops_at_its_evaluation_and_stays_done(tmp_path):
    """stop_at_accuracy: the first evaluation at or above it ends the run, done, with the
    step recorded; running again trains nothing. (A criterion of 0.01 is reached by the
    first evaluation of any model: this tests the mechanism, not learning.)"""
    cfg = tiny_run(data=dict(task="state_tracking", difficulty=4, seq_len=8, batch_size=8,
                             task_options="group=Z2", loss_on="all"),
                   train=dict(steps=20, eval_every=4, log_every=4, ckpt_every=20,
                              stop_at_accuracy=0.01))
    st = train(cfg, tmp_path / "run", progress=False)
    assert st["status"] == "done" and st["step"] == st["solved_step"] == 4
    assert st["final_val_exact_match"] >= 0.01 and 0 <= st["final_val_accuracy"] <= 1
    assert st["final_val_bpb"] is None  # bits per byte mean nothing for a task
    assert read_json(tmp_path / "run" / "status.json")["solved_step"] == 4
    again = train(cfg, tmp_path / "run", progress=False)
    assert again["step"] == 4 and again["status"] == "done"
    from jaxdepth.diagnostics.run_analysis import analyze_run

    with pytest.raises(UserError, match="synthetic task 'state_tracking', which has no text"):
        analyze_run(tmp_path / "run")  # a task run is the capability report's to analyse


@pytest.mark.parametrize("overrides,words", [
    (["data.loss_on=answers"], "needs a synthetic task"),
    (["data.loss_on=some"], "data.loss_on 'some' is unknown; valid: all, answers"),
    (["train.stop_at_accuracy=0.9"], "stop_at_accuracy needs a synthetic task"),
    (["data.task=kohp"], "data.task 'kohp' is unknown; tasks: khop"),
    (["data.task=khop", "data.task_options=alphabet=1"], "alphabet must be >= 2"),
    (["data.task=khop", "data.task_options=colour=red"], "has no option 'colour'"),
    (["data.task=var_chain", "data.difficulty=8", "data.seq_len=32"], "needs data.seq_len >= 69"),
    (["data.task=khop", "train.stop_at_accuracy=1.5"], "must be in [0, 1]"),
])
def test_bad_task_config_is_one_line_before_anything_runs(overrides, words):
    with pytest.raises(UserError, match=None) as e:
        load_config(None, overrides)
    assert words in str(e.value), str(e.value)
