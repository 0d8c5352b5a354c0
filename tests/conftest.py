"""Shared fixtures: tiny configs so that every test compiles small programs. Every test
runs with implicit rank promotion forbidden (as nanodo's tests do): `x_BT + y_T` must be
written `x_BT + y_T[None]`; the environment variable reaches the test subprocesses too."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"  # before jax is imported, for subprocesses too
# One persistent compilation cache for the session, fresh each session (subprocesses inherit
# it): the suite is compile-bound, and many tests (and every process of a multi-process test)
# compile the same programs; a cached executable is the one XLA built, so nothing changes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxdepth-tests-xla-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxdepth.config import ModelConfig, RunConfig, replace  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")  # in case jax was imported first

# The read-only shared inputs beside the repository (reference data); tests that need them
# skip when it is absent. Every test reads this path from here.
SHARED = Path(__file__).resolve().parents[2] / "shared"
CHINCHILLA_CSV = SHARED / "data" / "chinchilla_epoch_svg.csv"  # Hoffmann et al. 2022's runs
NEEDS_SHARED = pytest.mark.skipif(not CHINCHILLA_CSV.is_file(),
                                  reason=f"{CHINCHILLA_CSV} absent (the shared inputs are not "
                                         "beside the repository)")


def tiny_model(**kw) -> ModelConfig:
    """A resolved (vocab set) tiny model config."""
    base = dict(depth=3, width=32, heads=2, vocab_size=64)
    base.update(kw)
    return dataclasses.replace(ModelConfig(), **base)


def tiny_run(**sections) -> RunConfig:
    """A tiny run on the embedded corpus: a few steps compile and run in seconds."""
    base = dict(
        model=dict(depth=2, width=32, heads=2),
        data=dict(seq_len=16, batch_size=4),
        train=dict(steps=6, warmup_steps=1, log_every=1, eval_every=3, eval_batches=1,
                   ckpt_every=3),
    )
    for k, v in sections.items():
        base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
    return replace(RunConfig(), **base)
