"""Gradient accumulation: k micro-batches give the one-batch update within float tolerance."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_model

from jaxdepth.config import ParallelConfig, TrainConfig
from jaxdepth.model import Transformer
from jaxdepth.train.build import build, resolve_model
from jaxdepth.train.step import TrainState, make_train_step, split_microbatches

PAD = 63
MCFG = resolve_model(tiny_model(depth=2, dtype="float32"), 64)


def _tokens():
    tokens = np.array(jax.random.randint(jax.random.key(1), (8, 9), 0, 64))
    tokens[3, 5:] = PAD  # pads fall unevenly over micro-batches
    return tokens


def test_split_is_strided():
    x = np.arange(12).reshape(6, 2)
    np.testing.assert_array_equal(split_microbatches(x, 3)[1], x[1::3])


@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_gradient_equals_one_batch_gradient(k):
    """Under SGD(lr=1) the update is the gradient itself: compare it element by element."""
    model, tx = Transformer(MCFG), optax.sgd(1.0)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                       opt_state=tx.init(params), rng=jax.random.key(0))
    out = {}
    for n in (1, k):
        step = jax.jit(make_train_step(model, tx, lambda s: 1.0, PAD, MCFG.depth, n))
        new, m = step(state, {"tokens": _tokens()})
        out[n] = (m, jax.tree.map(lambda a, b: a - b, params, new.params))
    np.testing.assert_allclose(out[k][0]["loss"], out[1][0]["loss"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                 out[k][1], out[1][1])


def test_built_step_with_microbatches_matches_loss_and_grad_norm():
    """The configured path (`train.microbatches`, AdamW, the batch sharding) end to end."""
    steps = [build(MCFG, TrainConfig(steps=4, warmup_steps=0, microbatches=k), ParallelConfig(),
                   8, PAD) for k in (1, 2)]
    state = steps[0].init_state(jax.random.key(0))
    m = [b.train_step(jax.tree.map(jnp.copy, state),
                      jax.device_put({"tokens": _tokens()}, b.batch_sharding))[1] for b in steps]
    np.testing.assert_allclose(m[1]["loss"], m[0]["loss"], rtol=1e-6)
    np.testing.assert_allclose(m[1]["grad_norm"], m[0]["grad_norm"], rtol=1e-5)
    # evaluation goes in the same micro-batches, with the whole batch's mean loss
    ev = [b.eval_step(state.params, jax.device_put({"tokens": _tokens()}, b.batch_sharding))["loss"]
          for b in steps]
    np.testing.assert_allclose(ev[1], ev[0], rtol=1e-6)
